"""Sparse files staged sparse: zero blocks left as holes when a new file is written, and
only the data segments copied when a staged file is copied.

A VM image or a database file of a few allocated blocks reads as gigabytes of zeros; written
out byte for byte it would fill the staging disk. Holes read back as zeros, so every hash
and check sees the same bytes as before.
"""

from __future__ import annotations

import contextlib
import os
import re

from deltastage.holes import segments

__all__ = ["HOLE_BLOCK", "copy_sparse", "write_new", "write_sparse"]

HOLE_BLOCK = 4096  # the filesystems' block: a run of zeros this long is left unwritten
_ZEROS = bytes(HOLE_BLOCK)
_ZERO_RUN = re.compile(b"\\x00{%d,}" % HOLE_BLOCK)


def write_sparse(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write ``data`` at ``offset`` of a new file, leaving out every run of at least
    ``HOLE_BLOCK`` zeros (a hole reads as zeros); the caller sets the final size with
    ``ftruncate``, which a trailing hole needs."""
    raw = data if isinstance(data, bytes) else bytes(data)
    if _ZEROS not in raw:  # the usual case, found at C speed
        _pwrite_all(fd, raw, offset)
        return
    view = memoryview(raw)
    start = 0  # the first byte not yet written
    for run in _ZERO_RUN.finditer(raw):
        # the whole run is left out, aligned or not: the new file reads zeros there, and
        # a block that data written beside it allocates gets zeros where nothing was written
        _pwrite_all(fd, view[start : run.start()], offset + start)
        start = run.end()
    _pwrite_all(fd, view[start:], offset + start)


def write_new(fd: int, data: bytes) -> None:
    """Write ``data`` as the whole of a new file, runs of zeros left as holes (a trailing
    one by setting the size)."""
    write_sparse(fd, data, 0)
    if data.endswith(_ZEROS):
        os.ftruncate(fd, len(data))


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def copy_sparse(src_fd: int, dst_fd: int, size: int) -> None:
    """Copy ``size`` bytes of a file into a new one, its holes left holes: each data segment
    (``holes.segments``) is copied in the kernel (a reflink where the filesystem can), in
    user space where it cannot."""
    for start, stop, is_data in segments(src_fd, 0, size):
        if is_data:
            _copy_range(src_fd, dst_fd, start, stop)
    os.ftruncate(dst_fd, size)


def _copy_range(src_fd: int, dst_fd: int, start: int, end: int) -> None:
    offset = start
    with contextlib.suppress(OSError):  # not supported here: finish in user space below
        while offset < end and (
            copied := os.copy_file_range(src_fd, dst_fd, end - offset, offset, offset)
        ):
            offset += copied
    while offset < end and (chunk := os.pread(src_fd, min(8 << 20, end - offset), offset)):
        write_sparse(dst_fd, chunk, offset)
        offset += len(chunk)
