"""Reading staged files back from the disk to verify them: a whole batch after its sync, and
a big file's leading part while the rest of it still arrives (``EarlyCheck``)."""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import Future, ThreadPoolExecutor

from deltastage.hashing import READ_CHUNK, Hasher, hash_bytes, hash_fd
from deltastage.safefs import FILE_READ

__all__ = ["NOTHING_CHECKED", "EarlyCheck", "open_for_reread", "verify_on_disk"]

NOTHING_CHECKED: tuple[int, Hasher | None] = (0, None)


def open_for_reread(dir_fd: int, name: str, start: int = 0) -> int:
    """Open a synced file to read it back: its cached pages from ``start`` on are dropped
    and the kernel reads them back from the disk ahead of ``verify_on_disk``
    (asynchronously: many files are in flight at once). The caller closes the fd."""
    fd = os.open(name, FILE_READ, dir_fd=dir_fd)
    with contextlib.suppress(OSError, AttributeError):  # advice only: the hash still decides
        os.posix_fadvise(fd, start, 0, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(fd, start, 0, os.POSIX_FADV_WILLNEED)
    return fd


def verify_on_disk(
    fd: int,
    size: int,
    digest: bytes,
    start: int = 0,
    hasher: Hasher | None = None,
) -> bool:
    """Whether the file open at ``fd`` is ``size`` bytes hashing to ``digest``; with
    ``hasher``, it holds the hash of the bytes before ``start``, read back already (see
    ``EarlyCheck``)."""
    if hasher is None and size < READ_CHUNK:  # most files: one read (one more byte shows
        data = os.pread(fd, size + 1, 0)  # a longer file)
        return len(data) == size and hash_bytes(data) == digest
    return hash_fd(fd, offset=start, hasher=hasher) == (size, digest)


class EarlyCheck:
    """A big file's leading part, made durable and read back from the disk while the rest
    of it is still being patched, on the attempt's one checker thread.

    Each ``advance(end)`` syncs the file's data (fdatasync), drops the new range from the
    page cache and hashes it as read back, in order. The commit syncs the whole batch as
    usual and re-reads the file from ``checked`` on only, continuing this hash, so every
    byte is still compared as read from the disk after it was synced. Any error just leaves
    more for the commit to read.
    """

    def __init__(self, worker: ThreadPoolExecutor, fd: int) -> None:
        self._worker = worker
        self._fd = os.dup(fd)  # its own: the transfer closes its fd before the commit
        self._hasher = Hasher()
        self._checked = 0
        self._failed = False
        self._last: Future[None] | None = None

    def advance(self, end: int) -> None:
        if not self._failed and self._fd >= 0:
            self._last = self._worker.submit(self._check, end)

    def _check(self, end: int) -> None:
        if self._failed or end <= self._checked:
            return
        try:
            os.fdatasync(self._fd)
            os.posix_fadvise(self._fd, self._checked, end - self._checked, os.POSIX_FADV_DONTNEED)
            offset = self._checked
            while offset < end:
                chunk = os.pread(self._fd, min(READ_CHUNK, end - offset), offset)
                if not chunk:
                    raise OSError("the file is shorter than what was written")
                self._hasher.update(chunk)
                offset += len(chunk)
            self._checked = end
        except OSError:
            self._failed = True

    def finish(self) -> tuple[int, Hasher | None]:
        """Wait for the checks; (bytes checked, their hash), or nothing checked."""
        last, self._last = self._last, None
        if last is not None:
            last.result()  # _check catches what it expects; anything else is a bug
        self._close()
        return NOTHING_CHECKED if self._failed else (self._checked, self._hasher)

    def abandon(self) -> None:
        """The file is dropped: no more checks; its fd is closed once the worker is done."""
        self._failed = True
        if self._fd >= 0:
            try:
                self._worker.submit(self._close)
            except RuntimeError:  # the worker is shut down: nothing else uses the fd
                self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
