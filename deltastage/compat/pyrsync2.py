"""pyrsync2 0.2.x compatible API, vectorised, without its duplicate-weak-hash bug.

Same shapes and values as pyrsync2: ``blockchecksums`` yields ``(weak, md5 digest)`` per
block with pyrsync2's weak checksum ``(b << 16) | a`` (``a`` the byte sum, ``b`` the sum of
``(len - i) * x[i]``, no modulus), ``rsyncdelta`` yields block indices (ints) and literal
bytes, and ``patchstream`` seeks the basis for every index. Signatures stored by pyrsync2
therefore keep working. Differences, all fixes: blocks sharing a weak checksum are all kept
(pyrsync2's dict keeps only the last one and sends the others as literals), the basis' short
final block can match the new file's tail, and the search runs vectorised through
:mod:`deltastage.delta.matcher`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from deltastage.delta.matcher import Candidates, Copy, Literal, Matcher, Op
from deltastage.errors import DeltaFormatError

__all__ = ["blockchecksums", "patchstream", "rsyncdelta", "weakchecksum"]

_READ = 1 << 20
_MIX = np.uint64(0x9E3779B97F4A7C15)
# b grows like 255 * L^2 / 2 and must stay below 2^47 for (b << 16) to fit in an int64.
_MAX_VECTOR_BLOCK = 1 << 20

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]


def weakchecksum(data: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """pyrsync2's weak checksum of ``data``: ``((b << 16) | a, a, b)``."""
    x = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    a = int(x.sum())
    b = int((x * np.arange(len(x), 0, -1, dtype=np.int64)).sum())
    return (b << 16) | a, a, b


def _block_weaks(data: U8, blocksize: int) -> list[int]:
    n_full = len(data) // blocksize
    weights = np.arange(blocksize, 0, -1, dtype=np.int64)
    rows = data[: n_full * blocksize].reshape(n_full, blocksize).astype(np.int64)
    a = rows.sum(axis=1)
    b = rows @ weights
    out: list[int] = ((b << 16) | a).tolist()
    if len(data) % blocksize:
        out.append(weakchecksum(data[n_full * blocksize :].tobytes())[0])
    return out


def blockchecksums(instream: BinaryIO, blocksize: int = 4096) -> Iterator[tuple[int, bytes]]:
    """Yield ``(weak, md5 digest)`` for each ``blocksize`` block of ``instream``."""
    if blocksize <= 0:
        raise DeltaFormatError(f"block size {blocksize} must be positive")
    chunk = max(blocksize, _READ // blocksize * blocksize)
    while data := instream.read(chunk):
        arr = np.frombuffer(data, dtype=np.uint8)
        if blocksize > _MAX_VECTOR_BLOCK:
            weaks = [
                weakchecksum(data[i : i + blocksize])[0] for i in range(0, len(data), blocksize)
            ]
        else:
            weaks = _block_weaks(arr, blocksize)
        view = memoryview(data)
        for i, weak in enumerate(weaks):
            yield weak, hashlib.md5(view[i * blocksize : (i + 1) * blocksize]).digest()
        if len(data) < chunk:
            break


class _AdlerIndex:
    """:class:`deltastage.delta.matcher.BlockIndex` over pyrsync2 (weak, md5) pairs."""

    def __init__(self, pairs: Iterable[tuple[int, bytes]], blocksize: int) -> None:
        self.block_size = blocksize
        self._blocks: dict[tuple[int, bytes], int] = {}
        self.weaks: list[int] = []
        self.strongs: list[bytes] = []
        for index, (weak, strong) in enumerate(pairs):
            self.weaks.append(int(weak))
            self.strongs.append(bytes(strong))
            # Every (weak, strong) pair is kept; an identical block keeps its first index.
            self._blocks.setdefault((int(weak), bytes(strong)), index)
        self.n_blocks = len(self.weaks)
        # The short final block's length is not in a pyrsync2 signature; the tail is matched
        # separately (see rsyncdelta), so every block counts as full-size here.
        self.last_len = blocksize if self.n_blocks else 0
        uniq = np.unique(np.array(self.weaks, dtype=np.uint64))
        self._uniq = uniq
        bits = max(16, min(20, (max(len(uniq), 1) * 64).bit_length()))
        self._shift = np.uint64(64 - bits)
        self._bitmap = np.zeros(1 << bits, dtype=bool)
        self._bitmap[((uniq * _MIX) >> self._shift).astype(np.intp)] = True

    def scan(self, data: U8, count: int) -> Candidates:
        bs = self.block_size
        x = data.astype(np.int64)
        s1 = np.zeros(len(x) + 1, dtype=np.int64)
        np.cumsum(x, out=s1[1:])
        s2 = np.zeros(len(x) + 1, dtype=np.int64)
        np.cumsum(x * np.arange(len(x), dtype=np.int64), out=s2[1:])
        a = s1[bs : bs + count] - s1[:count]
        b = (bs + np.arange(count, dtype=np.int64)) * a - (s2[bs : bs + count] - s2[:count])
        weak = ((b << 16) | a).astype(np.uint64)
        hit = np.flatnonzero(self._bitmap[((weak * _MIX) >> self._shift).astype(np.intp)])
        found = weak[hit]
        pos = np.searchsorted(self._uniq, found)
        pos[pos == len(self._uniq)] = 0
        ok = self._uniq[pos] == found
        return Candidates(hit[ok].tolist(), found[ok].astype(np.int64).tolist())

    def lookup(self, chain: int, window: memoryview) -> int:
        return self._blocks.get((chain, hashlib.md5(window).digest()), -1)

    def is_block(self, index: int, window: memoryview) -> bool:
        return hashlib.md5(window).digest() == self.strongs[index]


def _tail_block(index: _AdlerIndex, literal: bytes) -> int:
    """Length of the basis' last block if ``literal`` ends with it (short final block), or 0."""
    if not index.n_blocks or not literal:
        return 0
    target = index.weaks[-1]
    z = np.frombuffer(literal[-index.block_size :], dtype=np.uint8)[::-1].astype(np.int64)
    a = np.cumsum(z)
    b = np.cumsum(z * np.arange(1, len(z) + 1, dtype=np.int64))
    for r in (np.flatnonzero(((b << 16) | a) == target) + 1).tolist():
        if hashlib.md5(literal[-r:]).digest() == index.strongs[-1]:
            return int(r)
    return 0


def rsyncdelta(
    datastream: BinaryIO,
    remotesignatures: Iterable[tuple[int, bytes]],
    blocksize: int = 4096,
    max_buffer: int = 4096,
) -> Iterator[int | bytes]:
    """Yield block indices and literal bytes that rebuild ``datastream`` from the basis."""
    if blocksize <= 0 or blocksize > _MAX_VECTOR_BLOCK:
        raise DeltaFormatError(f"block size {blocksize} outside 1..{_MAX_VECTOR_BLOCK}")
    index = _AdlerIndex(remotesignatures, blocksize)
    matcher = Matcher(index)

    def emit(ops: list[Op]) -> Iterator[int | bytes]:
        for op in ops:
            if isinstance(op, Copy):
                yield from range(op.start, op.start + op.count)
            else:
                for i in range(0, len(op.data), max(1, max_buffer)):
                    yield op.data[i : i + max(1, max_buffer)]

    while data := datastream.read(_READ):
        yield from emit(matcher.feed(data))
    last = matcher.finish()
    if last and isinstance(last[-1], Literal):
        r = _tail_block(index, last[-1].data)
        if r:
            head = last[-1].data[:-r]
            last[-1:] = [Literal(head)] if head else []
            last.append(Copy(index.n_blocks - 1, 1))
    yield from emit(last)


def patchstream(
    instream: BinaryIO, outstream: BinaryIO, delta: Iterable[int | bytes], blocksize: int = 4096
) -> None:
    """Write the file ``delta`` describes (basis block indices, literals) to ``outstream``."""
    for element in delta:
        if isinstance(element, int):
            if element < 0:
                raise DeltaFormatError(f"negative block index {element}")
            instream.seek(element * blocksize)
            element = instream.read(blocksize)
        outstream.write(element)
