"""A delta refined around its edits: finer basis blocks where the coarse ones did not match.

An edit costs a whole block of literal; in a big file's large blocks that is mostly old bytes
the basis already holds. ``refined_delta`` matches the new file against the coarse signature
once (hashing it on the way), then asks, through a callback, for finer hashes of the basis
blocks no copy covers (around the edits), and matches only the bytes between the copies again,
against those fine blocks. The copies stay as they are, in fine units.

Pure: the new file is read through ``read_at(offset, n)`` and the fine hashes come from the
``fine_hashes`` callback (on the agent, a round trip to the master); nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from deltastage.delta.codec import encode_ops
from deltastage.delta.matcher import Matcher, PolyIndex
from deltastage.delta.ops import Copy, Literal, Op
from deltastage.delta.params import choose_strong_len, count_blocks
from deltastage.delta.signature import Signature
from deltastage.hashing import READ_CHUNK, Hasher

__all__ = ["MAX_LITERAL_HELD", "MIN_FINE_BLOCK", "SPLIT", "FineHashes", "ReadAt", "refined_delta"]

SPLIT = 16  # a coarse block is refined into blocks of 1/SPLIT its size
MIN_FINE_BLOCK = 512  # ... but never smaller than this
MAX_LITERAL_HELD = 32 << 20  # literal bytes held in memory for a refinement before giving up

ReadAt = Callable[[int, int], bytes]  # read_at(offset, n): up to n bytes of the new file
# fine_hashes(block_size, strong_len, ranges): the weak hashes (u32 little-endian), then the
# strong ones, of the basis blocks of ``block_size`` in ``ranges`` ((first block, count), in
# order); b"" to do without them. Anything else must be refused by the callback.
FineHashes = Callable[[int, int, tuple[tuple[int, int], ...]], bytes]

# a run of the new file: a coarse copy as (basis offset, length, new-file offset), or literal
_Segment = tuple[int, int, int] | bytes


def refined_delta(
    coarse: Signature,
    size: int,
    read_at: ReadAt,
    fine_hashes: FineHashes,
    *,
    max_blocks: int,
) -> tuple[bytes, int] | None:
    """The whole raw delta of the new file's first ``size`` bytes, refined around its edits,
    and the bytes read; None when refining cannot pay (then make the delta as usual).

    ``fine_hashes`` is called at most once, and not at all when the coarse blocks left
    nothing to refine. The fine signature holds at most ``max_blocks`` blocks.
    """
    fine = max(MIN_FINE_BLOCK, coarse.block_size // SPLIT // 64 * 64)
    if (
        coarse.basis_size == 0
        or coarse.block_size < 2 * fine
        or size == 0
        or count_blocks(coarse.basis_size, fine) > max_blocks
    ):
        return None  # nothing to refine, or the fine tables would not fit in memory
    coarse_pass = _coarse_segments(coarse, size, read_at)
    if coarse_pass is None:
        return None
    segments, offset, new_hash = coarse_pass

    def coarse_delta() -> tuple[bytes, int]:
        ops = [
            Literal(seg)
            if isinstance(seg, bytes)
            else Copy(seg[0] // coarse.block_size, -(-seg[1] // coarse.block_size))
            for seg in segments
        ]
        return encode_ops(coarse, ops, new_size=offset, new_hash=new_hash), offset

    if all(not isinstance(seg, bytes) for seg in segments):
        return coarse_delta()
    n_fine = count_blocks(coarse.basis_size, fine)
    strong_len = choose_strong_len(coarse.basis_size, fine)
    covered = np.zeros(n_fine, dtype=bool)
    for seg in segments:
        if not isinstance(seg, bytes):
            first, last = _fine_span(seg[0], seg[1], fine, coarse.basis_size, n_fine)
            covered[first:last] = True
    missing = np.flatnonzero(~covered)
    if len(missing) == 0:
        return coarse_delta()
    breaks = np.flatnonzero(np.diff(missing) != 1) + 1
    starts = np.concatenate(([0], breaks)).tolist()
    ends = np.concatenate((breaks, [len(missing)])).tolist()
    ranges = tuple((int(missing[a]), int(b - a)) for a, b in zip(starts, ends, strict=True))
    hashes = fine_hashes(fine, strong_len, ranges)
    if not hashes:
        return coarse_delta()
    # Blocks no copy covers get the basis's hashes; the covered ones stay all-zero (folded
    # into one candidate): the bytes between copies rarely match them anyway.
    split = 4 * len(missing)
    weak = np.zeros(n_fine, dtype="<u4")
    strong = np.zeros((n_fine, strong_len), dtype=np.uint8)
    weak[missing] = np.frombuffer(hashes[:split], dtype="<u4")
    strong[missing] = np.frombuffer(hashes[split:], dtype=np.uint8).reshape(-1, strong_len)
    refined = Signature(
        block_size=fine,
        strong_len=strong_len,
        basis_size=coarse.basis_size,
        basis_hash=coarse.basis_hash,
        weak=weak.tobytes(),
        strong=strong.tobytes(),
    )
    ops = _rematch(segments, refined, n_fine, read_at)
    return encode_ops(refined, ops, new_size=offset, new_hash=new_hash), offset


def _coarse_segments(
    coarse: Signature, size: int, read_at: ReadAt
) -> tuple[list[_Segment], int, bytes] | None:
    """The new file matched against the coarse blocks: its segments, the bytes read and
    its hash; None when it holds more literal than a refinement may keep."""
    matcher = Matcher(PolyIndex(coarse))
    hasher = Hasher()
    segments: list[_Segment] = []
    literal = 0
    position = offset = 0
    done = False
    while not done:
        chunk = b""
        if offset < size:
            # the size seen first bounds the read: a file that keeps growing still ends
            chunk = read_at(offset, min(READ_CHUNK, size - offset))
            offset += len(chunk)
            hasher.update(chunk)
        done = not chunk
        for op in matcher.finish() if done else matcher.feed(chunk):
            if isinstance(op, Copy):
                start = op.start * coarse.block_size
                stop = min((op.start + op.count) * coarse.block_size, coarse.basis_size)
                segments.append((start, stop - start, position))
                position += stop - start
            else:
                segments.append(op.data)
                literal += len(op.data)
                position += len(op.data)
        if literal > MAX_LITERAL_HELD:
            return None  # mostly new data: refining would not pay for the memory
    return segments, offset, hasher.digest()


def _rematch(
    segments: Sequence[_Segment],
    refined: Signature,
    n_fine: int,
    read_at: ReadAt,
) -> list[Op]:
    """The ops of the new file in fine blocks: each coarse copy keeps the fine blocks lying
    wholly inside it, and the bytes between those are matched again."""
    fine = refined.block_size
    index = PolyIndex(refined)
    ops: list[Op] = []
    between = bytearray()

    def match_between() -> None:
        if between:
            matcher = Matcher(index)
            ops.extend(matcher.feed(between))
            ops.extend(matcher.finish())
            between.clear()

    for seg in segments:
        if isinstance(seg, bytes):
            between += seg
            continue
        start, length, at = seg
        first, last = _fine_span(start, length, fine, refined.basis_size, n_fine)
        if last <= first:
            between += read_at(at, length)
            continue
        head = first * fine - start
        tail = min(last * fine, refined.basis_size) - start
        between += read_at(at, head)
        match_between()
        ops.append(Copy(first, last - first))
        between += read_at(at + tail, length - tail)
    match_between()
    return _merge_copies(ops)


def _fine_span(start: int, length: int, fine: int, basis_size: int, n_fine: int) -> tuple[int, int]:
    """The fine blocks lying wholly inside basis bytes [start, start + length)."""
    end = start + length
    return -(-start // fine), n_fine if end == basis_size else end // fine


def _merge_copies(ops: list[Op]) -> list[Op]:
    """Adjacent copies of consecutive blocks as one op (the rematched pieces end and start
    at the copies between them)."""
    merged: list[Op] = []
    for op in ops:
        last = merged[-1] if merged else None
        if isinstance(op, Copy) and isinstance(last, Copy) and last.start + last.count == op.start:
            merged[-1] = Copy(last.start, last.count + op.count)
        else:
            merged.append(op)
    return merged
