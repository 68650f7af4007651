"""Files the master holds already: today's copy from an earlier run of the day, kept as it
is, and an earlier day's copy with the source's content, hard-linked or copied in."""

from __future__ import annotations

import os
import stat

from deltastage.hashing import hash_fd
from deltastage.models import RemoteEntry
from deltastage.safefs import FILE_READ, create_private
from deltastage.stage.basis import Basis, BasisOpener
from deltastage.stage.ownership import Ownership
from deltastage.stage.sparse import copy_sparse

__all__ = ["LocalCopier"]


class LocalCopier:
    """Stages files from the master's own copies; used from the committer thread too."""

    def __init__(self, bases: BasisOpener, ownership: Ownership, *, link: bool) -> None:
        self._bases = bases
        self._ownership = ownership
        self._link = link

    def already_staged(self, dir_fd: int, name: str, entry: RemoteEntry) -> bool:
        """A same-day re-run: the file is there with the right content; fix perms only."""
        try:
            fd = os.open(name, FILE_READ, dir_fd=dir_fd)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
                return False
            if hash_fd(fd) != (entry.size, entry.xxh3_128):
                return False
            if st.st_nlink > 1 and not self._ownership.matches(st, entry.mode, os.fstat(dir_fd)):
                return False  # linked to an earlier day's copy: a new copy gets the new perms
            self._ownership.apply_fd(fd, source_mode=entry.mode)
            return True
        finally:
            os.close(fd)

    def copy_into_temp(self, dir_fd: int, tmp: str, entry: RemoteEntry, basis: Basis) -> None:
        """Copy a basis whose recorded hash is the source's into the temp file ``tmp``."""
        basis_fd = self._bases.open(basis)
        try:
            out_fd = create_private(dir_fd, tmp)
            try:
                # a short copy fails the re-read, not here
                copy_sparse(basis_fd, out_fd, os.fstat(basis_fd).st_size)
                self._ownership.give_staged(out_fd, entry.mode, entry.mtime_ns)
            finally:
                os.close(out_fd)
        finally:
            os.close(basis_fd)

    def link(
        self, dir_fd: int, name: str, entry: RemoteEntry, basis: Basis, parent: os.stat_result
    ) -> bool:
        """Hard-link as ``name`` an earlier day's copy that already is what today's copy
        would be: same content (by its manifest's hash; the re-read verifies it), mtime, mode
        and owner (``parent``: the stat of the dir ``dir_fd``).

        Like ``rsync --link-dest``: no data written, no space used. False (copy instead)
        when linking is off, anything differs or the filesystem refuses the link.
        """
        if not self._link or basis.kind not in ("previous", "similar"):
            return False
        with self._bases.parent(basis) as (parent_fd, basis_name):
            try:
                st = os.stat(basis_name, dir_fd=parent_fd, follow_symlinks=False)
                if not (
                    stat.S_ISREG(st.st_mode)
                    and st.st_size == entry.size
                    and st.st_mtime_ns == entry.mtime_ns
                    and self._ownership.matches(st, entry.mode, parent)
                ):
                    return False
                os.link(
                    basis_name,
                    name,
                    src_dir_fd=parent_fd,
                    dst_dir_fd=dir_fd,
                    follow_symlinks=False,
                )
            except OSError:  # EXDEV, EMLINK, EPERM, a vanished basis: fall back to a copy
                return False
        return True
