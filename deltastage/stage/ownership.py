"""The modes and owners of what is staged: files, the directories made for them, indicators."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from deltastage.config import Options
from deltastage.errors import DeltastageError
from deltastage.models import shared_mode
from deltastage.safefs import DIR_FLAGS

__all__ = ["Ownership", "make_dirs"]


@dataclass(frozen=True)
class Ownership:
    uid: int | None
    gid: int | None
    file_mode: int | None
    dir_mode: int

    @classmethod
    def from_options(cls, options: Options) -> Ownership:
        uid = gid = None
        if os.geteuid() == 0:
            if options.backup_user:
                uid = pwd.getpwnam(options.backup_user).pw_uid
            if options.backup_group:
                gid = grp.getgrnam(options.backup_group).gr_gid
        dir_mode = options.dir_mode
        if dir_mode is None:
            if options.file_mode is None:
                dir_mode = 0o755
            else:  # directories need x wherever files are readable
                fm = options.file_mode
                dir_mode = fm | ((fm & 0o444) >> 2) | 0o700
        return cls(uid, gid, options.file_mode, dir_mode)

    @property
    def owner(self) -> tuple[int, int] | None:
        if self.uid is None and self.gid is None:
            return None
        return (-1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid)

    def staged_mode(self, source_mode: int | None) -> int:
        mode = self.file_mode if self.file_mode is not None else (source_mode or 0o644)
        return shared_mode(mode & 0o7777 & ~0o6000)  # never stage setuid/setgid bits

    def apply_fd(self, fd: int, *, source_mode: int | None = None, is_dir: bool = False) -> None:
        os.fchmod(fd, self.dir_mode if is_dir else self.staged_mode(source_mode))
        if self.owner is not None:
            os.fchown(fd, *self.owner)

    def give_staged(self, fd: int, source_mode: int, mtime_ns: int) -> None:
        """The mode, owner and mtime a staged copy of a file has (what a link's basis must
        already have, see ``localcopy``)."""
        self.apply_fd(fd, source_mode=source_mode)
        os.utime(fd, ns=(mtime_ns, mtime_ns))

    def matches(self, st: os.stat_result, source_mode: int, parent: os.stat_result) -> bool:
        """Whether a file with ``st`` already has the mode and owner a staged copy would get
        (a new file in ``parent`` is owned by us, its group set by a setgid parent)."""
        if stat.S_IMODE(st.st_mode) != self.staged_mode(source_mode):
            return False
        default_gid = parent.st_gid if parent.st_mode & stat.S_ISGID else os.getegid()
        uid = self.uid if self.uid is not None else os.geteuid()
        gid = self.gid if self.gid is not None else default_gid
        return st.st_uid == uid and st.st_gid == gid

    def apply_path(self, path: Path) -> None:
        fd = os.open(path, DIR_FLAGS)
        try:
            self.apply_fd(fd, is_dir=True)
        finally:
            os.close(fd)


def make_dirs(path: Path, ownership: Ownership) -> None:
    """mkdir -p, applying ownership and mode to every directory it creates."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
            ownership.apply_path(directory)
    if path.is_symlink() or not path.is_dir():
        raise DeltastageError(f"{path} is not a directory")
