"""Where a file's holes lie (``SEEK_DATA``/``SEEK_HOLE``), and its bytes read hole by hole.

A hole reads as zeros, so a sparse file (a VM image of a few allocated blocks) can be hashed,
signed and sent without its holes ever being read from the disk: ``read_sparse`` hands out
data as read and each hole as a count of zero bytes. Where the filesystem cannot tell (no
``SEEK_DATA`` support), the whole file counts as data and is read as before.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Generator, Iterator

from deltastage.hashing import READ_CHUNK

__all__ = ["DENSE_READ_MAX", "pread_sparse", "read_listed", "read_sparse", "segments"]

# A file smaller than this whose allocated blocks cover its size is read straight, without
# asking where its holes are (two lseeks a file, for a tree of many small files).
DENSE_READ_MAX = 1 << 20


def segments(fd: int, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
    """``(start, stop, is_data)`` runs that cover ``[start, end)`` of the open file, in order.

    Past the file's current end counts as a hole (a file that shrank is caught by the
    caller's stat of it, as a change, not by a short read)."""
    offset = start
    while offset < end:
        try:
            data = min(os.lseek(fd, offset, os.SEEK_DATA), end)
        except OSError as exc:
            # ENXIO: nothing but a hole from here on; anything else: no hole search here
            yield offset, end, exc.errno != errno.ENXIO
            return
        if data > offset:
            yield offset, data, False
        if data >= end:
            return
        try:
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        except OSError:
            hole = end
        if hole <= data:  # it changed between the two calls: read the rest
            hole = end
        yield data, hole, True
        offset = hole


def read_sparse(fd: int, size: int) -> Iterator[bytes | int]:
    """The file's first ``size`` bytes in order: data as read (at most ``READ_CHUNK`` at a
    time), each hole as the number of zero bytes it holds. Ends early where a read does (the
    file shrank): the caller counts what it got."""
    for start, stop, is_data in segments(fd, 0, size):
        if not is_data:
            yield stop - start
        elif not (yield from _read(fd, start, stop)):
            return


def _read(fd: int, start: int, stop: int) -> Generator[bytes, None, bool]:
    """The bytes from ``start`` to ``stop``, as read; False if the file ended before."""
    offset = start
    while offset < stop:
        chunk = os.pread(fd, min(READ_CHUNK, stop - offset), offset)
        if not chunk:
            return False
        yield chunk
        offset += len(chunk)
    return True


def read_listed(fd: int, st: os.stat_result) -> Iterator[bytes | int]:
    """``read_sparse`` of the first ``st.st_size`` bytes of the file ``st`` is the stat of;
    a small file with a block allocated for every byte is read without a hole search (should
    it have a hole all the same, blocks allocated past its end, it reads as its zeros)."""
    size = st.st_size
    if size >= DENSE_READ_MAX or st.st_blocks * 512 < size:
        yield from read_sparse(fd, size)
    else:
        yield from _read(fd, 0, size)


def pread_sparse(fd: int, n: int, offset: int) -> bytes:
    """Like ``os.pread``, but what lies in a hole is zeros made here, not read (and, as in
    ``segments``, so is what lies past the file's current end)."""
    out = bytearray()
    for start, stop, is_data in segments(fd, offset, offset + n):
        if not is_data:
            out += bytes(stop - start)
            continue
        chunk = os.pread(fd, stop - start, start)
        out += chunk
        if len(chunk) < stop - start:
            break  # the file ends here
    return bytes(out)
