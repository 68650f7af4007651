"""A peer's staging dir as a tree: temp names, what a crashed run left, what the peer no
longer has, interrupted transfers kept as partials (``Inflight``: also those of a run
killed outright), and its directories' ownership."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator

from deltastage.errors import DeltastageError
from deltastage.hashing import hash_fd
from deltastage.manifest import INTERNAL_PREFIX, MANIFEST_NAME
from deltastage.models import json_text
from deltastage.safefs import (
    DIR_FLAGS,
    FILE_READ,
    check_relative_path,
    open_parent_beneath,
    remove_tree_beneath,
    walk_files,
)
from deltastage.stage.basis import PARTIAL_DIR
from deltastage.stage.ownership import Ownership

__all__ = [
    "INFLIGHT_NAME",
    "TMP_PREFIX",
    "Inflight",
    "apply_dir_ownership",
    "clear_name",
    "is_fresh",
    "keep_partial",
    "remove_extras",
    "sweep_temp_files",
    "temp_name",
]

TMP_PREFIX = f"{INTERNAL_PREFIX}tmp-"
INFLIGHT_NAME = f"{INTERNAL_PREFIX}inflight"
_INFLIGHT_MAX = 64 << 20  # bytes of journal read back: far more than a run writes
_PARTIAL_OPEN = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


# a temp name is this process's random part and a count: one random draw per run, not one
# per file (each is created O_EXCL all the same)
_TEMP_RUN = secrets.token_hex(6)
_TEMP_COUNT = itertools.count()


def temp_name() -> str:
    """A new temp file's name: never a staged file's, swept if a run crashes."""
    return f"{TMP_PREFIX}{_TEMP_RUN}-{next(_TEMP_COUNT)}"


def is_fresh(peer_fd: int) -> bool:
    """A new day's dir holds nothing an earlier run could have staged: no need to look."""
    return not any(not name.startswith(INTERNAL_PREFIX) for name in os.listdir(peer_fd))


def clear_name(dir_fd: int, name: str) -> bool:
    """Make room for a file where an earlier run left a directory of the same name."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        remove_tree_beneath(dir_fd, name)
        return True
    return False


def keep_partial(peer_fd: int, dir_fd: int, tmp: str, parts: list[str]) -> None:
    """An interrupted transfer's output becomes an extra basis for the next attempt."""
    partial_parts = [PARTIAL_DIR, *parts]
    try:
        with open_parent_beneath(peer_fd, partial_parts, create=True, mode=0o700) as partial_fd:
            clear_name(partial_fd, partial_parts[-1])
            os.rename(tmp, partial_parts[-1], src_dir_fd=dir_fd, dst_dir_fd=partial_fd)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)


class Inflight:
    """The journal of the transfers in flight in a peer's staging dir.

    A run killed outright (SIGKILL, OOM killer, a reboot) runs no handler: its temp files
    are nameless to the next run, which would have to sweep them and fetch everything again.
    So as a fetched file is written, each chunk handed to the disk is recorded here: the
    temp file, the path it is for, and the size and xxh3-128 of what was written up to then.
    ``recover`` gives the next run, before anything else, each such temp file as a partial
    (a basis) for its path: cut to the last recorded size, and kept only if its bytes
    re-hash to what was recorded. Any basis is safe (the signature is made from its bytes,
    and the result verified against the source's hash); the check keeps one whose data
    never reached the disk from costing a transfer nothing is gained from.
    """

    def __init__(self, peer_fd: int) -> None:
        self._peer_fd = peer_fd
        self._fd = -1  # made by the first record: a peer with no big fetch gets none

    def record(self, parts: list[str], tmp: str, size: int, digest: bytes) -> None:
        """``tmp``, the temp file for ``parts``, holds ``size`` bytes hashing to ``digest``."""
        if self._fd < 0:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_NOFOLLOW
            self._fd = os.open(INFLIGHT_NAME, flags | os.O_CLOEXEC, 0o600, dir_fd=self._peer_fd)
        line = {"tmp": "/".join([*parts[:-1], tmp]), "path": "/".join(parts), "size": size}
        line["xxh3_128"] = digest.hex()
        os.write(self._fd, (json_text(line, indent=None) + "\n").encode("utf-8"))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        """The peer is staged: nothing is in flight, and no stray may stay in its dir."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(INFLIGHT_NAME, dir_fd=self._peer_fd)

    @staticmethod
    def recover(peer_fd: int) -> None:
        """Keep the temp files the last run's journal vouches for as partials; remove the
        journal. The rest of what that run left is swept as usual."""
        try:
            fd = os.open(INFLIGHT_NAME, FILE_READ, dir_fd=peer_fd)
        except FileNotFoundError:
            return
        with os.fdopen(fd, "rb") as stream:
            data = stream.read(_INFLIGHT_MAX)
        os.unlink(INFLIGHT_NAME, dir_fd=peer_fd)
        last: dict[str, tuple[list[str], int, bytes]] = {}
        for line in data.splitlines():
            try:
                record = json.loads(line)
                tmp_parts = check_relative_path(record["tmp"])
                parts = check_relative_path(record["path"])
                size, digest = int(record["size"]), bytes.fromhex(record["xxh3_128"])
            except (ValueError, KeyError, TypeError, DeltastageError):
                continue  # a line cut short by the kill
            if tmp_parts[:-1] == parts[:-1] and tmp_parts[-1].startswith(TMP_PREFIX):
                last[record["tmp"]] = (parts, size, digest)
        for tmp_rel, (parts, size, digest) in last.items():
            with contextlib.suppress(OSError, DeltastageError):
                _keep_if_intact(peer_fd, tmp_rel.rpartition("/")[2], parts, size, digest)


def _keep_if_intact(peer_fd: int, tmp: str, parts: list[str], size: int, digest: bytes) -> None:
    """Keep ``tmp`` as the partial for ``parts`` if its first ``size`` bytes hash to
    ``digest``; what was written after the record is cut off. Anything else is left to the
    sweep."""
    with open_parent_beneath(peer_fd, parts, create=False) as dir_fd:
        fd = os.open(tmp, _PARTIAL_OPEN, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size < size:
                return
            os.ftruncate(fd, size)
            if hash_fd(fd) != (size, digest):
                return
        finally:
            os.close(fd)
        keep_partial(peer_fd, dir_fd, tmp, parts)


def _unlink_files(peer_fd: int, doomed: Callable[[list[str]], bool]) -> None:
    """Remove every non-directory beneath the peer dir whose path parts ``doomed`` picks."""
    for rel, _ in list(walk_files(peer_fd)):
        parts = rel.split("/")
        if not doomed(parts):
            continue
        with (
            open_parent_beneath(peer_fd, parts, create=False) as dir_fd,
            contextlib.suppress(FileNotFoundError),
        ):
            os.unlink(parts[-1], dir_fd=dir_fd)


def sweep_temp_files(peer_fd: int) -> None:
    """Temp files of a crashed run are never mistaken for staged ones: remove them."""
    _unlink_files(
        peer_fd, lambda parts: parts[0] != PARTIAL_DIR and parts[-1].startswith(TMP_PREFIX)
    )


def remove_extras(peer_fd: int, keep: set[str]) -> None:
    """A re-run after the peer removed a file: today's tree must match the peer's."""

    def doomed(parts: list[str]) -> bool:
        rel = "/".join(parts)
        return not (parts[0].startswith(INTERNAL_PREFIX) or rel == MANIFEST_NAME or rel in keep)

    _unlink_files(peer_fd, doomed)


def apply_dir_ownership(peer_fd: int, ownership: Ownership) -> None:
    """The peer dir and every directory beneath it get the staged mode and owner."""
    ownership.apply_fd(peer_fd, is_dir=True)
    for directory_fd in _walk_dirs(peer_fd):
        try:
            ownership.apply_fd(directory_fd, is_dir=True)
        finally:
            os.close(directory_fd)


def _walk_dirs(dir_fd: int) -> Iterator[int]:
    """Yield an fd for every subdirectory (not links), depth first; the caller closes each."""
    # the entries' types come with the listing: a file costs no stat
    with os.scandir(dir_fd) as scan:
        names = sorted(e.name for e in scan if e.is_dir(follow_symlinks=False))
    for name in names:
        if not name.startswith(INTERNAL_PREFIX):
            sub = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
            yield from _walk_dirs(sub)
            yield sub
