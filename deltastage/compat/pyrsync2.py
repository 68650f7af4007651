"""pyrsync2 0.2.6's API to the letter, with the block search vectorised.

``blockchecksums`` yields ``(weak, md5 digest)`` per block with pyrsync2's weak checksum
``(b << 16) | a`` (``a`` the byte sum, ``b`` the sum of ``(len - i) * x[i]``, no modulus);
``rsyncdelta`` yields the very sequence pyrsync2 yields: the same block indices (ints) and the
same literal chunks (bytes), cut where pyrsync2 cuts them; ``patchstream``,
``patchstream_block``, ``weakchecksum`` and ``rollingchecksum`` compute what pyrsync2's do.
Signatures stored by pyrsync2 and code written against it therefore keep working.

What pyrsync2 does, and this module reproduces:

* Its signature table is ``{weak: (index, strong)}``, so of several blocks sharing a weak
  checksum only the last one can match; the others come out as literal bytes.
* The new file is searched greedily, one full-size window at a time. Literal bytes gather in
  a buffer that is yielded whenever ``max_buffer`` bytes are followed by another literal byte,
  before each block index, and at the end (with ``max_buffer <= 0``, a run starts with an
  empty chunk and goes on one byte per chunk).
* At the end of the stream the window shrinks byte by byte while its checksum keeps rolling
  as though zeros came in, until at most ``tell() % blocksize`` bytes are left: those are
  yielded as a chunk of their own. A shrinking window can still match a (short) block, which
  is then the stream's last element.

Where pyrsync2 breaks, this module does not: after such an end-of-stream match pyrsync2 raises
``AttributeError`` and here the sequence ends; a signature entry for an empty block (which
``blockchecksums`` never produces) makes pyrsync2 loop forever at the end of the stream and
is ignored here; a block size below 1 or a negative block index raises DeltaFormatError.

The search runs through :class:`deltastage.delta.matcher.Matcher`. It takes a window whose
md5 is that of a signature entry to have that entry's weak checksum too, as every signature
from ``blockchecksums`` does. The stream is read as a buffered file reads: ``read(n)``
returns ``n`` bytes until the end.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Iterator
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from deltastage.delta.matcher import Candidates, Copy, Matcher, Op
from deltastage.errors import DeltaFormatError

__all__ = [
    "blockchecksums",
    "patchstream",
    "patchstream_block",
    "rollingchecksum",
    "rsyncdelta",
    "weakchecksum",
]

_READ = 1 << 20
_MIX = np.uint64(0x9E3779B97F4A7C15)
_MASK64 = (1 << 64) - 1
# Up to this block size b < 2^47, so (b << 16) | a fits in an int64 and a uint64 scan of the
# weak checksums is exact; beyond it the scan sees them modulo 2^64 and candidates are
# recomputed exactly.
_INT64_BLOCK = 1 << 20

U8 = npt.NDArray[np.uint8]


def _check_blocksize(blocksize: int) -> None:
    if blocksize <= 0:
        raise DeltaFormatError(f"block size {blocksize} must be positive")


def weakchecksum(data: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """pyrsync2's weak checksum of ``data``: ``((b << 16) | a, a, b)``."""
    x = np.frombuffer(data, dtype=np.uint8)
    n = len(x)
    a = int(x.sum(dtype=np.int64))
    b = 0
    # Pieces of 2^20 bytes keep every partial sum of b inside an int64.
    for start in range(0, n, _INT64_BLOCK):
        piece = x[start : start + _INT64_BLOCK].astype(np.int64)
        b += int(piece @ np.arange(n - start, n - start - len(piece), -1, dtype=np.int64))
    return (b << 16) | a, a, b


def rollingchecksum(
    removed: int, new: int, a: int, b: int, blocksize: int = 4096
) -> tuple[int, int, int]:
    """pyrsync2's rolling update: the window loses byte ``removed`` and gains byte ``new``."""
    a = a - removed + new
    b = b - removed * blocksize + a
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
    _check_blocksize(blocksize)
    chunk = max(blocksize, _READ // blocksize * blocksize)
    while data := instream.read(chunk):
        view = memoryview(data)
        if blocksize > _INT64_BLOCK:
            weaks = [
                weakchecksum(view[i : i + blocksize])[0] for i in range(0, len(data), blocksize)
            ]
        else:
            weaks = _block_weaks(np.frombuffer(data, dtype=np.uint8), blocksize)
        for i, weak in enumerate(weaks):
            yield weak, hashlib.md5(view[i * blocksize : (i + 1) * blocksize]).digest()
        if len(data) < chunk:
            break


def _key64(weak: object) -> int | None:
    """``weak`` modulo 2^64 if an integer checksum can equal it (as a dict key), else None."""
    try:
        value = int(weak)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return None
    return value & _MASK64 if value == weak else None


class _SignatureTable:
    """:class:`deltastage.delta.matcher.BlockIndex` answering as pyrsync2's table does.

    pyrsync2 keeps ``{weak: (index, strong)}``: a block matches a window only if it is the
    last one listed with the window's weak checksum and its md5 is the window's.
    """

    def __init__(self, signatures: Iterable[tuple[Hashable, object]], blocksize: int) -> None:
        self.block_size = blocksize
        self.table: dict[Hashable, tuple[int, object]] = {}
        pairs = list(signatures)
        for index, (weak, strong) in enumerate(pairs):
            self.table[weak] = (index, strong)
        self._strongs = [strong for _, strong in pairs]
        # The shadowed blocks never match: the matcher's "next block" guess must not either.
        self._listed = [self.table[weak][0] == index for index, (weak, _) in enumerate(pairs)]
        self.n_blocks = len(pairs)
        # Every block counts as full-size for the matcher: the end of the stream, where
        # pyrsync2 compares shorter windows, is shaped by rsyncdelta itself.
        self.last_len = blocksize if pairs else 0
        self._exact = blocksize <= _INT64_BLOCK
        keys = [key for key in map(_key64, self.table) if key is not None]
        uniq = np.unique(np.array(keys, dtype=np.uint64))
        bits = max(16, min(20, (max(len(uniq), 1) * 64).bit_length()))
        self._uniq = uniq
        self._shift = np.uint64(64 - bits)
        self._bitmap = np.zeros(1 << bits, dtype=bool)
        self._bitmap[((uniq * _MIX) >> self._shift).astype(np.intp)] = True

    def match(self, weak: int, window: bytes | memoryview) -> int:
        """The block pyrsync2 matches ``window`` (weak checksum ``weak``) with, or -1."""
        entry = self.table.get(weak)
        if entry is not None and entry[1] == hashlib.md5(window).digest():
            return entry[0]
        return -1

    def scan(self, data: U8, count: int) -> Candidates:
        bs = self.block_size
        # Modulo 2^64 throughout (uint64 wraps), which is exact when self._exact.
        x = data.astype(np.uint64)
        s1 = np.zeros(len(x) + 1, dtype=np.uint64)
        np.cumsum(x, out=s1[1:])
        s2 = np.zeros(len(x) + 1, dtype=np.uint64)
        np.cumsum(x * np.arange(len(x), dtype=np.uint64), out=s2[1:])
        a = s1[bs : bs + count] - s1[:count]
        b = np.arange(bs, bs + count, dtype=np.uint64) * a - (s2[bs : bs + count] - s2[:count])
        weak = (b << np.uint64(16)) | a
        hit = np.flatnonzero(self._bitmap[((weak * _MIX) >> self._shift).astype(np.intp)])
        found = weak[hit]
        pos = np.searchsorted(self._uniq, found)
        pos[pos == len(self._uniq)] = 0
        ok = self._uniq[pos] == found
        return Candidates(hit[ok].tolist(), found[ok].tolist())

    def lookup(self, chain: int, window: memoryview) -> int:
        return self.match(chain if self._exact else weakchecksum(window)[0], window)

    def is_block(self, index: int, window: memoryview) -> bool:
        return self._listed[index] and self._strongs[index] == hashlib.md5(window).digest()


class _LiteralRun:
    """The literal bytes since the last match, cut into chunks where pyrsync2 cuts them.

    The last ``hold`` bytes stay pending, since the end of the stream may take them from the
    run (see :func:`_stream_end`).
    """

    def __init__(self, max_buffer: int, hold: int) -> None:
        self._size = max(1, max_buffer)
        self._opening = max_buffer <= 0
        self._hold = hold
        self.pending = bytearray()
        self.length = 0
        self._started = False

    def add(self, data: bytes) -> Iterator[bytes]:
        self.pending += data
        self.length += len(data)
        cut = len(self.pending) - self._hold
        if cut >= self._size:
            yield from self._chunks(cut - cut % self._size)

    def close(self, upto: int) -> Iterator[bytes]:
        """Yield the run's first ``upto`` pending bytes and start a new run."""
        yield from self._chunks(upto)
        self.pending.clear()
        self.length = 0
        self._started = False

    def _chunks(self, upto: int) -> Iterator[bytes]:
        if not upto:
            return
        if self._opening and not self._started:
            yield b""
        self._started = True
        data = bytes(self.pending[:upto])
        del self.pending[:upto]
        for start in range(0, upto, self._size):
            yield data[start : start + self._size]


def _stream_end(
    table: _SignatureTable, window: bytes, fresh: bool, tailsize: int
) -> tuple[int, int]:
    """Where pyrsync2's last literal run stops: ``(rest, block)``.

    ``window`` is the stream's last full-size window (which did not match), or, if
    ``fresh``, the shorter remainder after the last match. pyrsync2 checks a fresh window as
    it is, then drops its first byte and rolls zeros in, checking each shorter window, until at
    most ``tailsize`` bytes are left. The window's last ``rest`` bytes are then basis block
    ``block``, or, if ``block`` is -1, the final literal chunk.
    """
    checksum, a, b = weakchecksum(window)
    view, size = memoryview(window), len(window)
    for dropped in range(size + 1):
        if dropped:
            checksum, a, b = rollingchecksum(window[dropped - 1], 0, a, b, table.block_size)
        # An empty fresh window is never matched: pyrsync2 would match it again forever.
        if dropped or (fresh and size):
            block = table.match(checksum, view[dropped:])
            if block >= 0:
                return size - dropped, block
        if size - dropped <= tailsize:
            return size - dropped, -1
    raise AssertionError("unreachable: the empty window is within any tail size")


def rsyncdelta(
    datastream: BinaryIO,
    remotesignatures: Iterable[tuple[int, bytes]],
    blocksize: int = 4096,
    max_buffer: int = 4096,
) -> Iterator[int | bytes]:
    """Yield block indices and literal bytes that rebuild ``datastream`` from the basis."""
    _check_blocksize(blocksize)
    table = _SignatureTable(remotesignatures, blocksize)
    matcher = Matcher(table)
    run = _LiteralRun(max_buffer, blocksize)

    def shape(ops: list[Op]) -> Iterator[int | bytes]:
        for op in ops:
            if isinstance(op, Copy):
                yield from run.close(len(run.pending))
                yield from range(op.start, op.start + op.count)
            else:
                yield from run.add(op.data)

    while data := datastream.read(_READ):
        yield from shape(matcher.feed(data))
    yield from shape(matcher.finish())
    tailsize = datastream.tell() % blocksize
    fresh = run.length < blocksize
    window = bytes(run.pending if fresh else run.pending[-blocksize:])
    rest, block = _stream_end(table, window, fresh, tailsize)
    last = bytes(run.pending[len(run.pending) - rest :])
    yield from run.close(len(run.pending) - rest)
    if block >= 0:
        yield block
    elif last:
        yield last


def patchstream_block(
    instream: BinaryIO, outstream: BinaryIO, delta_block: int | bytes, blocksize: int = 4096
) -> None:
    """Write one element of a delta: basis block ``delta_block`` if an int, else the bytes."""
    if isinstance(delta_block, int):
        _check_blocksize(blocksize)
        if delta_block < 0:
            raise DeltaFormatError(f"negative block index {delta_block}")
        instream.seek(delta_block * blocksize)
        delta_block = instream.read(blocksize)
    outstream.write(delta_block)


def patchstream(
    instream: BinaryIO, outstream: BinaryIO, delta: Iterable[int | bytes], blocksize: int = 4096
) -> None:
    """Write the file ``delta`` describes (basis block indices, literals) to ``outstream``."""
    for element in delta:
        patchstream_block(instream, outstream, element, blocksize)
