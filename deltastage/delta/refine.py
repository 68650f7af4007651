"""A delta refined around its edits: finer basis blocks where the coarse ones did not match.

An edit costs a whole block of literal; in a big file's large blocks that is mostly old bytes
the basis already holds. ``refined_delta`` matches the new file against the coarse signature
once (hashing it on the way), then asks, through a callback, for finer hashes of the basis
ranges that can still match (``refinement``), and matches only the bytes between the copies
again, against those fine blocks. The copies stay as they are, in fine units.

The ranges that can still match are the basis bytes beside a copy, on the side of a literal
run and as long as it: an edit inside a block, or a run that starts or ends where a copy
does. A run with no copy beside it (a new member of an archive, a file with no match) would
need the whole basis at the fine size, which costs more than it can save. What is asked must
pay: its request, its reply and a round trip (``refinement_cost``) against the literal bytes
it may turn into copies, counted as they would cross the link, compressed
(``expected_saving``); when it does not pay, the coarse delta is sent as it is.

Pure: the new file is read through ``read_at(offset, n)`` and the fine hashes come from the
``fine_hashes`` callback (on the agent, a round trip to the master); nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import zstandard

from deltastage.delta.codec import encode_ops
from deltastage.delta.matcher import Matcher, PolyIndex
from deltastage.delta.ops import Copy, Literal, Op
from deltastage.delta.params import choose_strong_len, count_blocks
from deltastage.delta.signature import Signature
from deltastage.hashing import READ_CHUNK, Hasher

__all__ = [
    "MAX_LITERAL_HELD",
    "MIN_FINE_BLOCK",
    "ROUND_TRIP_BYTES",
    "SPLIT",
    "FineHashes",
    "Ranges",
    "ReadAt",
    "expected_saving",
    "refined_delta",
    "refinement",
    "refinement_cost",
]

SPLIT = 16  # a coarse block is refined into blocks of 1/SPLIT its size
MIN_FINE_BLOCK = 512  # ... but never smaller than this
MAX_LITERAL_HELD = 32 << 20  # literal bytes held in memory for a refinement before giving up
# What the round trip of a refinement counts for, in link bytes: the file's answer waits for
# the reply, so a refinement must save clearly more than its request and reply.
ROUND_TRIP_BYTES = 4 << 10
# Wire bytes of a RefineRequest (frame header, block size, strong length, range count), of
# each of its ranges, and of the RefineReply's frame header: the cost the agent weighs.
REQUEST_BYTES = 14
RANGE_BYTES = 12
REPLY_BYTES = 5
# Literal bytes compressed to estimate how much smaller the rest crosses the link.
_SAMPLE = 1 << 20
_SAMPLE_LEVEL = 1

ReadAt = Callable[[int, int], bytes]  # read_at(offset, n): up to n bytes of the new file
Ranges = tuple[tuple[int, int], ...]  # basis blocks: (first block, count), in order
# fine_hashes(block_size, strong_len, ranges): the weak hashes (u32 little-endian), then the
# strong ones, of the basis blocks of ``block_size`` in ``ranges``; b"" to do without them.
# Anything else must be refused by the callback.
FineHashes = Callable[[int, int, Ranges], bytes]

# a run of the new file: a coarse copy as (basis offset, length, new-file offset), or literal
_Segment = tuple[int, int, int] | bytes


def refinement_cost(n_blocks: int, n_ranges: int, strong_len: int, round_trip: int) -> int:
    """Link bytes a refinement of ``n_blocks`` fine blocks in ``n_ranges`` ranges costs."""
    request = REQUEST_BYTES + RANGE_BYTES * n_ranges
    return request + REPLY_BYTES + n_blocks * (4 + strong_len) + round_trip


def expected_saving(literal: int, runs: int, fine: int, packed_ratio: float) -> int:
    """Link bytes that fine blocks may save on ``literal`` bytes in ``runs`` runs beside
    copies: all but about one fine block per run (the edit itself), as they would have
    crossed the link (``packed_ratio``: compressed size over raw size)."""
    return int(max(0, literal - runs * fine) * packed_ratio)


def refined_delta(
    coarse: Signature,
    size: int,
    read_at: ReadAt,
    fine_hashes: FineHashes,
    *,
    max_blocks: int,
    round_trip: int = ROUND_TRIP_BYTES,
) -> tuple[bytes, int] | None:
    """The whole raw delta of the new file's first ``size`` bytes, refined around its edits,
    and the bytes read; None when refining cannot pay (then make the delta as usual).

    ``fine_hashes`` is called at most once, and only when what it is asked for may save
    more than it costs (``round_trip``: the link bytes its round trip counts for). The fine
    signature holds at most ``max_blocks`` blocks.
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
    plan = refinement(coarse, segments, fine, round_trip=round_trip)
    hashes = fine_hashes(fine, *plan) if plan else b""
    if plan is None or not hashes:
        ops = [
            Literal(seg)
            if isinstance(seg, bytes)
            else Copy(seg[0] // coarse.block_size, -(-seg[1] // coarse.block_size))
            for seg in segments
        ]
        return encode_ops(coarse, ops, new_size=offset, new_hash=new_hash), offset
    n_fine = count_blocks(coarse.basis_size, fine)
    strong_len, ranges = plan
    asked = np.concatenate([np.arange(first, first + n) for first, n in ranges])
    # The blocks not asked for stay all-zero (folded into one candidate): the copies hold
    # some, and the bytes between the copies were not expected to match the others.
    split = 4 * len(asked)
    weak = np.zeros(n_fine, dtype="<u4")
    strong = np.zeros((n_fine, strong_len), dtype=np.uint8)
    weak[asked] = np.frombuffer(hashes[:split], dtype="<u4")
    strong[asked] = np.frombuffer(hashes[split:], dtype=np.uint8).reshape(-1, strong_len)
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


def refinement(
    coarse: Signature,
    segments: Sequence[_Segment],
    fine: int,
    *,
    round_trip: int = ROUND_TRIP_BYTES,
) -> tuple[int, Ranges] | None:
    """The strong length and the ranges of the fine blocks (of ``fine`` bytes) worth asking
    for beside the literal runs of ``segments``; None when there are none or they would
    cost more than they may save."""
    n_fine = count_blocks(coarse.basis_size, fine)
    covered = np.zeros(n_fine, dtype=bool)
    wanted = np.zeros(n_fine, dtype=bool)
    runs: list[tuple[int, int | None, int | None]] = []  # (length, basis before, after)
    before: int | None = None
    length = 0
    for seg in segments:
        if isinstance(seg, bytes):
            length += len(seg)
            continue
        start, span, _ = seg
        first, last = _fine_span(start, span, fine, coarse.basis_size, n_fine)
        covered[first:last] = True
        if length:
            runs.append((length, before, start))
            length = 0
        before = start + span
    if length:
        runs.append((length, before, None))
    literal = anchored = 0
    for length, after_copy, before_copy in runs:
        # a literal run may match the basis bytes it would have been, beside its copies
        reach = length + fine
        sides = []
        if after_copy is not None:
            sides.append(_blocks_of(after_copy, after_copy + reach, fine, n_fine))
        if before_copy is not None:
            sides.append(_blocks_of(before_copy - reach, before_copy, fine, n_fine))
        if any(not covered[first:last].all() for first, last in sides):
            for first, last in sides:
                wanted[first:last] = True
            literal += length
            anchored += 1
    missing = np.flatnonzero(wanted & ~covered)
    if not len(missing):
        return None
    breaks = np.flatnonzero(np.diff(missing) != 1) + 1
    starts = np.concatenate(([0], breaks)).tolist()
    ends = np.concatenate((breaks, [len(missing)])).tolist()
    ranges = tuple((int(missing[a]), int(b - a)) for a, b in zip(starts, ends, strict=True))
    strong_len = choose_strong_len(coarse.basis_size, fine)
    cost = refinement_cost(len(missing), len(ranges), strong_len, round_trip)
    saving = expected_saving(literal, anchored, fine, _packed_ratio(segments))
    if saving <= cost:
        return None
    return strong_len, ranges


def _blocks_of(start: int, stop: int, fine: int, n_fine: int) -> tuple[int, int]:
    """The fine blocks [first, last) holding any of the basis bytes [start, stop)."""
    first = max(0, start // fine)
    return first, max(first, min(n_fine, -(-stop // fine)))


def _packed_ratio(segments: Sequence[_Segment]) -> float:
    """Compressed over raw size of the first literal bytes (up to ``_SAMPLE``)."""
    sample = bytearray()
    for seg in segments:
        if isinstance(seg, bytes):
            sample += seg[: _SAMPLE - len(sample)]
            if len(sample) >= _SAMPLE:
                break
    if not sample:
        return 1.0
    packed = zstandard.ZstdCompressor(level=_SAMPLE_LEVEL).compress(bytes(sample))
    return min(1.0, len(packed) / len(sample))


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
