"""Content sketches: a few bytes per file that tell which earlier files share its content.

A file is cut into content-defined chunks: a boundary follows every 8-byte window whose hash
falls in a narrow range (one offset in 4096 of random data), so an insertion or a shift moves the
boundaries with the content and leaves the chunks around it as they were. The sketch keeps
the smallest 32-bit hashes of the distinct chunks (a bottom-k min-hash, k = ``SAMPLES``):
a uniform sample of the chunks, the same sample wherever two files share chunks. Encoded it
is at most ``MAX_SKETCH_BYTES``.

The window test is vectorised over every offset of a piece with numpy: four views of the
bytes as little-endian u32 words (one per alignment), one multiply and one comparison per
word pass a window on to the second test, done only where the first held (one offset in
1024). A run of one repeated byte never passes (the multiplier is chosen so), so holes
and padding cost nothing. A boundary closer than ``MIN_GAP`` bytes to the window before it
is dropped, which bounds the chunks a piece can have and so the per-chunk work in Python.

``Sketcher`` takes a file's bytes in the pieces a reader already hashes, in order, with no
other state than the open chunk's hasher, the last few bytes and the sample so far. A hole
comes as a count of zeros (``zeros``): hashed into its chunk, never searched for boundaries.

Comparing: of the new file's sampled chunks, those below both sketches' thresholds (a
sketch's largest sample, or every value when it holds all its file's chunks) are known to be
in the candidate or not; the share found there, times the new file's size, estimates the
bytes the candidate can supply. ``choose`` adds candidates greedily by the estimated bytes
each adds to those already chosen.

Wire format: ``version u8 (1) | flags u8 (bit 0: complete) | n x u32 LE``, strictly
ascending, 1 <= n <= SAMPLES, n == SAMPLES unless complete.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import xxhash

from deltastage.delta.params import MAX_SKETCH_BYTES
from deltastage.errors import DeltaFormatError
from deltastage.hashing import hash_zeros

__all__ = [
    "MIN_GAP",
    "SAMPLES",
    "Sketch",
    "Sketcher",
    "choose",
    "decode_sketch",
    "estimate_overlap",
    "sketch_of",
]

VERSION = 1
SAMPLES = (MAX_SKETCH_BYTES - 2) // 4
MIN_GAP = 1024
WINDOW = 8
_FULL = 1 << 32  # the threshold of a complete sketch: every chunk hash is below it

# First test: the window's first word times _C1 lands in the top 1/1024 of u32. _C1 is
# chosen so that no word of four equal bytes does (zeros above all): runs of one byte never
# pass. The first test is the one made at every offset, so it is the sparse one: the fewer
# offsets pass it, the less the second test and the index arrays cost.
_C1 = np.uint32(0x797D76DF)
_HI1 = np.uint32((1 << 32) - (1 << 22))
# Second test, on the windows that passed the first: both words mixed, top 1/4.
_C2 = np.uint32(0x85EBCA77)
_HI2 = np.uint32((1 << 32) - (1 << 30))

_U8 = npt.NDArray[np.uint8]
_I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Sketch:
    """The smallest chunk hashes of a file, ascending; ``complete``: all of its chunks."""

    samples: tuple[int, ...]
    complete: bool

    @property
    def threshold(self) -> int:
        """Every chunk hash of the file below this is in ``samples``."""
        return _FULL if self.complete else self.samples[-1] + 1

    def encode(self) -> bytes:
        return struct.pack(f"<BB{len(self.samples)}I", VERSION, int(self.complete), *self.samples)


def decode_sketch(data: bytes) -> Sketch:
    """The sketch ``data`` encodes; ``DeltaFormatError`` naming what is wrong otherwise."""
    if len(data) > MAX_SKETCH_BYTES:
        raise DeltaFormatError(f"sketch of {len(data)} bytes (limit {MAX_SKETCH_BYTES})")
    if len(data) < 6 or (len(data) - 2) % 4:
        raise DeltaFormatError(f"sketch of {len(data)} bytes is not 2 + 4n, n >= 1")
    version, flags = data[0], data[1]
    if version != VERSION:
        raise DeltaFormatError(f"sketch version {version} (this build reads {VERSION})")
    if flags > 1:
        raise DeltaFormatError(f"sketch flags {flags:#x} unknown")
    samples = struct.unpack_from(f"<{(len(data) - 2) // 4}I", data, 2)
    if any(a >= b for a, b in itertools.pairwise(samples)):
        raise DeltaFormatError("sketch samples are not strictly ascending")
    complete = flags == 1
    if not complete and len(samples) != SAMPLES:
        raise DeltaFormatError(f"an incomplete sketch holds {SAMPLES} samples, not {len(samples)}")
    return Sketch(samples, complete)


def _window_starts(data: bytes) -> _I64:
    """Offsets ``k`` (ascending) whose window ``data[k:k+8]`` is a boundary."""
    found = []
    n_words = (len(data) - WINDOW) // 4 + 2
    scratch = np.empty(n_words, dtype=np.uint32)
    flags = np.empty(n_words, dtype=np.bool_)
    for align in range(4):
        count = (len(data) - align) // 4
        if count < 2:
            continue
        words = np.frombuffer(data, dtype="<u4", count=count, offset=align)
        mixed = scratch[: count - 1]
        np.multiply(words[:-1], _C1, out=mixed)
        first = np.flatnonzero(np.greater_equal(mixed, _HI1, out=flags[: count - 1]))
        second = (mixed[first] ^ words[first + 1]) * _C2
        found.append(first[second >= _HI2] * 4 + align)
    if not found:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(found))


class Sketcher:
    """Builds one file's sketch from its bytes, given in order in pieces of any size."""

    def __init__(self) -> None:
        self._offset = 0  # bytes taken so far
        self._tail = b""  # the last WINDOW - 1 bytes taken: windows across pieces
        self._last_window = -MIN_GAP  # start of the last boundary window seen, kept or not
        self._chunk = xxhash.xxh3_64()  # the open chunk, since the last boundary
        self._open = 0  # bytes in the open chunk
        self._hashes: list[int] = []  # chunk hashes not yet merged into the sample
        self._sample: set[int] = set()
        self._truncated = False  # some chunk hash was left out of the sample

    def update(self, piece: bytes) -> None:
        if not piece:
            return
        starts = self._starts_from_tail(piece[: WINDOW - 1])
        starts += (_window_starts(piece) + self._offset).tolist()
        view, chunk = memoryview(piece), self._chunk
        self._take(len(piece), piece[-(WINDOW - 1) :], starts, lambda a, b: chunk.update(view[a:b]))

    def zeros(self, count: int) -> None:
        """Take ``count`` zero bytes (a hole), exactly as ``update(bytes(count))`` would.

        A window that starts in a run of zeros begins with a zero word, which is never a
        boundary, so only the windows that start in the bytes before the run are searched:
        a hole costs the open chunk's hash of its zeros and nothing else.
        """
        if count <= 0:
            return
        head = bytes(min(count, WINDOW - 1))
        starts = self._starts_from_tail(head)
        chunk = self._chunk
        self._take(count, head, starts, lambda a, b: hash_zeros(chunk, b - a))

    def _starts_from_tail(self, head: bytes) -> list[int]:
        """Boundary windows (file offsets) that start in the bytes taken before and end in
        the next ones, whose first bytes are ``head``."""
        if not self._tail:
            return []
        joint = _window_starts(self._tail + head)
        starts: list[int] = (
            joint[joint < len(self._tail)] + (self._offset - len(self._tail))
        ).tolist()
        return starts

    def _take(
        self,
        size: int,
        last: bytes,
        starts: list[int],
        hash_part: Callable[[int, int], None],
    ) -> None:
        """Advance over the next ``size`` bytes, ending with ``last``, cutting a chunk after
        each window that starts at ``starts`` (ascending, file offsets) at least ``MIN_GAP``
        after the one before; ``hash_part(a, b)`` feeds the open chunk's hasher their bytes
        from ``a`` to ``b``."""
        base = self._offset
        self._offset += size
        self._tail = (self._tail + last)[-(WINDOW - 1) :]
        cut = 0  # where the open chunk's bytes start within these
        for start in starts:
            gap = start - self._last_window
            self._last_window = start
            if gap < MIN_GAP:
                continue
            end = start + WINDOW - base  # the boundary follows the window
            hash_part(cut, end)
            self._hashes.append(self._chunk.intdigest() >> 32)
            self._chunk.reset()
            self._open = 0
            cut = end
        hash_part(cut, size)
        self._open += size - cut
        if len(self._hashes) >= 4 * SAMPLES:
            self._merge()

    def _merge(self) -> None:
        merged = self._sample.union(self._hashes)
        self._hashes.clear()
        if len(merged) > SAMPLES:
            merged = set(sorted(merged)[:SAMPLES])
            self._truncated = True
        self._sample = merged

    def finish(self) -> Sketch:
        """The sketch of every byte given (the last chunk ends at the last byte; an empty
        file is one empty chunk)."""
        if self._open or not self._offset:
            self._hashes.append(self._chunk.intdigest() >> 32)
        self._merge()
        return Sketch(tuple(sorted(self._sample)), not self._truncated)


def sketch_of(data: bytes) -> Sketch:
    sketcher = Sketcher()
    sketcher.update(data)
    return sketcher.finish()


def _known(new: Sketch, other: Sketch) -> frozenset[int]:
    """The new file's samples whose presence in ``other``'s file its sketch decides."""
    bound = min(new.threshold, other.threshold)
    return frozenset(h for h in new.samples if h < bound)


def estimate_overlap(new: Sketch, new_size: int, candidate: Sketch) -> int | None:
    """Estimated bytes of the new file found in the candidate; None when the sketches
    cannot tell (no sample of the new file falls below the candidate's threshold)."""
    known = _known(new, candidate)
    if not known:
        return None
    return new_size * len(known.intersection(candidate.samples)) // len(known)


def choose(
    new: Sketch, new_size: int, candidates: Sequence[Sketch], costs: Sequence[int], limit: int
) -> list[int]:
    """Indexes of up to ``limit`` candidates, chosen greedily: each time the one whose
    estimated added bytes (over those chosen before it) most exceed its ``costs``; none that
    adds less than it costs. Candidates the sketches cannot judge are never chosen; ties go
    to the earlier candidate.

    The added bytes are counted one sample short: one sample in common may be a single
    shared chunk as well as a sixtieth of the file, and a basis chosen on so little would
    displace the one the caller's other rules pick."""
    known = [_known(new, c) for c in candidates]
    hits = [k.intersection(c.samples) for k, c in zip(known, candidates, strict=True)]
    chosen: list[int] = []
    common: frozenset[int] | None = None  # samples every chosen candidate can judge
    covered: set[int] = set()  # of those, the ones a chosen candidate holds
    while len(chosen) < limit:
        best: tuple[float, int] | None = None
        for index, judged in enumerate(known):
            if index in chosen:
                continue
            sample = judged if common is None else common & judged
            if not sample:
                continue
            added = len((hits[index] & sample) - covered)
            net = new_size * (added - 1) / len(sample) - costs[index]
            if net > 0 and (best is None or net > best[0]):
                best = (net, index)
        if best is None:
            break
        index = best[1]
        chosen.append(index)
        common = known[index] if common is None else common & known[index]
        covered = (covered | hits[index]) & common
    return chosen
