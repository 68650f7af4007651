"""Turn a new file into COPY/LITERAL ops against a signature: the rsync search, vectorised.

The search is shared by the native format and the pyrsync2-compatible module through the
small :class:`BlockIndex` protocol: an index knows how to hash every window of a chunk at
once (``scan``) and how to confirm a candidate by its strong hash.

Strategy, fastest case first:

1. Expected block: after a match at block ``i`` the next bytes are most likely block
   ``i + 1``. Compare its strong hash directly (xxh3 is far faster than rolling), no rolling at all.
2. Otherwise hash every window of a chunk with numpy, keep offsets whose weak hash is in the
   signature, and confirm those in offset order by strong hash. The chunk starts small
   (one edit usually re-synchronises within a block or two) and doubles while nothing
   matches, so scattered edits cost little and a file with no match at all streams through
   large chunks.

The result is the greedy textbook rsync parse: at every offset a full-size block match is
taken if there is one, and the basis' short final block may match only the new file's last
bytes (as in rsync), so the literal bytes equal a naive implementation's.

Several bases are searched at once: :class:`PolyIndex` numbers all their blocks in one
sequence (basis 0's first), and the matcher keeps copies and runs of expected blocks
within one basis' span of that sequence, naming the basis in each Copy.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from deltastage.delta.ops import Copy, Literal, Op
from deltastage.delta.params import MAX_CHAIN, MAX_LITERAL
from deltastage.delta.rolling import WEAK_SHIFT, WindowHasher, window_hashes
from deltastage.delta.signature import Signature, strong_hash
from deltastage.errors import DeltaFormatError

__all__ = [
    "BlockIndex",
    "Candidates",
    "Copy",
    "Literal",
    "Matcher",
    "Op",
    "PolyIndex",
    "Span",
    "iter_ops",
]

U8 = npt.NDArray[np.uint8]

_MIN_WINDOW = 1 << 14
_MAX_WINDOW = 1 << 18
_COMPACT_AT = 1 << 22


@dataclass(slots=True)
class Candidates:
    """Offsets (ascending) whose weak hash matches, and an index-specific chain handle each."""

    offsets: list[int]
    chain: list[int]


@dataclass(frozen=True, slots=True)
class Span:
    """One basis' blocks in an index's numbering: ``[start, stop)``, the last ``last_len``
    bytes long (only it may be shorter than a block; 0 for an empty basis)."""

    start: int
    stop: int
    last_len: int


class BlockIndex(Protocol):
    block_size: int
    n_blocks: int
    last_len: int

    def scan(self, data: U8, count: int) -> Candidates:
        """Candidates among the ``count`` full-block windows of ``data`` (len >= count+bs-1)."""
        ...

    def lookup(self, chain: int, window: memoryview) -> int:
        """Block index whose strong hash matches ``window`` (chain from scan), or -1."""
        ...

    def is_block(self, index: int, window: memoryview) -> bool:
        """Whether ``window`` has the strong hash of block ``index``."""
        ...


class PolyIndex:
    """Block index for native signatures (polynomial weak hash, xxh3 strong): one basis', or
    several bases' (same block size and strong length) in one index, numbered one after the
    other (see ``spans``)."""

    def __init__(self, sig: Signature | Sequence[Signature]) -> None:
        sigs = (sig,) if isinstance(sig, Signature) else tuple(sig)
        head = sigs[0]
        if any((s.block_size, s.strong_len) != (head.block_size, head.strong_len) for s in sigs):
            raise DeltaFormatError("the bases' signatures differ in block size or strong length")
        self.block_size = bs = head.block_size
        self.strong_len = sl = head.strong_len
        spans: list[Span] = []
        for s in sigs:
            start = spans[-1].stop if spans else 0
            spans.append(Span(start, start + s.n_blocks, s.last_block_size))
        self.spans: tuple[Span, ...] = tuple(spans)
        self.n_blocks = spans[-1].stop
        self.last_len = spans[-1].last_len
        if len(sigs) == 1:
            self._strong = head.strong
            weak = head.weak_array()
            nf = head.basis_size // bs
            full: npt.NDArray[np.intp] | None = None
        else:
            self._strong = b"".join(s.strong for s in sigs)
            weak = np.concatenate([s.weak_array() for s in sigs])
            # Only full blocks are searched anywhere (see _match_tail for the short ones).
            full = np.concatenate(
                [
                    np.arange(sp.start, sp.start + s.basis_size // bs)
                    for sp, s in zip(spans, sigs, strict=True)
                ]
            ).astype(np.intp)
            nf = len(full)
        strong = np.frombuffer(self._strong, dtype=f"S{sl}") if self.n_blocks else np.empty(0, "S1")
        self._n_full = nf
        if full is None:
            w_full, s_full = weak[:nf], strong[:nf]
        else:
            w_full, s_full = weak[full], strong[full]
        order = np.lexsort((s_full, w_full)).astype(np.intp)
        w_sorted = w_full[order]
        s_sorted = s_full[order]
        if full is not None:
            order = full[order]
        # Identical blocks (same weak and strong) are one candidate: keep the lowest index.
        keep = np.ones(nf, dtype=bool)
        if nf > 1:
            keep[1:] = (w_sorted[1:] != w_sorted[:-1]) | (s_sorted[1:] != s_sorted[:-1])
        order, w_sorted = order[keep], w_sorted[keep]
        self._blocks: list[int] = order.tolist()
        self._strong_sorted = s_sorted[keep].tobytes()
        self._uniq, first = np.unique(w_sorted, return_index=True)
        self._first: list[int] = first.tolist()
        self._end: list[int] = [*self._first[1:], len(order)]
        bits = max(16, min(20, (max(nf, 1) * 64).bit_length()))
        self._key_shift = np.uint64(64 - bits)
        self._bitmap = np.zeros(1 << bits, dtype=bool)
        self._bitmap[self._uniq >> np.uint32(32 - bits)] = True
        self._hasher = WindowHasher()
        self._h: npt.NDArray[np.uint64] = np.empty(0, dtype=np.uint64)
        self._keys: npt.NDArray[np.uint64] = np.empty(0, dtype=np.uint64)

    def scan(self, data: U8, count: int) -> Candidates:
        bs = self.block_size
        nf = min(count, len(data) - bs + 1)
        if nf <= 0 or not self._n_full:
            return Candidates([], [])
        q = self._hasher.prefix(data)
        if len(self._h) < nf:
            self._h = np.empty(nf, dtype=np.uint64)
            self._keys = np.empty(nf, dtype=np.uint64)
        h = window_hashes(q, bs, nf, out=self._h[:nf])
        keys = np.right_shift(h, self._key_shift, out=self._keys[:nf])
        hit = np.flatnonzero(self._bitmap[keys.view(np.int64)])
        weak = (h[hit] >> np.uint64(WEAK_SHIFT)).astype(np.uint32)
        pos = np.searchsorted(self._uniq, weak)
        pos[pos == len(self._uniq)] = 0
        ok = self._uniq[pos] == weak
        return Candidates(hit[ok].tolist(), pos[ok].tolist())

    def lookup(self, chain: int, window: memoryview) -> int:
        digest = strong_hash(window, self.strong_len)
        sl, blob = self.strong_len, self._strong_sorted
        first = self._first[chain]
        for at in range(first, min(self._end[chain], first + MAX_CHAIN)):
            if blob[at * sl : at * sl + sl] == digest:
                return self._blocks[at]
        return -1

    def is_block(self, index: int, window: memoryview) -> bool:
        sl = self.strong_len
        return strong_hash(window, sl) == self._strong[index * sl : index * sl + sl]


class Matcher:
    """Streaming search: feed new-file bytes in any split, collect ops."""

    def __init__(self, index: BlockIndex) -> None:
        self.index = index
        self._bs = index.block_size
        spans = (
            index.spans
            if isinstance(index, PolyIndex)
            else (Span(0, index.n_blocks, index.last_len),)
        )
        self._spans = spans
        self._starts = [span.start for span in spans]
        # Per basis, the end of its full blocks: a run of expected blocks stops there.
        self._full_ends = [span.stop - (0 < span.last_len < self._bs) for span in spans]
        # The basis of the copy being extended, and where it starts and ends.
        self._basis = 0
        self._span_start = 0
        self._span_stop = spans[0].stop
        self._expected_end = self._full_ends[0]
        self._lookahead = _MAX_WINDOW + self._bs
        self._buf = bytearray()
        self._base = 0
        self._pos = 0
        self._lit = 0
        self._expected = 0
        self._misses = 0
        self._win_start = 0
        self._win_end = 0
        self._cand = Candidates([], [])
        self._copy_start = -1
        self._copy_count = 0
        self._ops: list[Op] = []
        self._finished = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[Op]:
        self._buf += data
        if len(self._buf) - (self._pos - self._base) >= self._lookahead:
            self._run(final=False)
        return self._take()

    def finish(self) -> list[Op]:
        if not self._finished:
            self._finished = True
            self._run(final=True)
            self._flush_literal(self._base + len(self._buf))
            self._flush_copy()
            self._buf = bytearray()
        return self._take()

    def _take(self) -> list[Op]:
        ops, self._ops = self._ops, []
        return ops

    def _flush_copy(self) -> None:
        if self._copy_count:
            start = self._copy_start - self._span_start
            self._ops.append(Copy(start, self._copy_count, self._basis))
            self._copy_count = 0

    def _flush_literal(self, upto: int) -> None:
        if upto <= self._lit:
            return
        self._flush_copy()
        base, buf = self._base, self._buf
        for start in range(self._lit, upto, MAX_LITERAL):
            stop = min(start + MAX_LITERAL, upto)
            self._ops.append(Literal(bytes(buf[start - base : stop - base])))
        self._lit = upto

    def _copy(self, block: int, at: int, length: int, count: int = 1) -> None:
        self._flush_literal(at)
        if (
            self._copy_count
            and block == self._copy_start + self._copy_count
            and block < self._span_stop
        ):
            self._copy_count += count
        else:
            self._flush_copy()
            self._copy_start, self._copy_count = block, count
            if len(self._starts) > 1:
                # The last span starting at or before the block: empty bases' spans share
                # their start with the next one, so this is never an empty basis.
                k = bisect_right(self._starts, block) - 1
                span = self._spans[k]
                self._basis, self._span_start, self._span_stop = k, span.start, span.stop
                self._expected_end = self._full_ends[k]
        self._pos = self._lit = at + length
        self._expected = block + count

    def _run(self, *, final: bool) -> None:
        index, bs = self.index, self._bs
        is_block = index.is_block
        with memoryview(self._buf) as mv:
            base, end = self._base, self._base + len(mv)
            while True:
                p = self._pos
                avail = end - p
                if avail < bs:
                    if final:
                        self._match_tail(mv, end)
                    break
                if not final and avail < self._lookahead:
                    break
                e, n_full = self._expected, self._expected_end
                if e < n_full and is_block(e, mv[p - base : p - base + bs]):
                    # Unchanged stretches are the common case: walk them block by block here,
                    # one strong hash each and none of the loop's bookkeeping. A block match
                    # depends on its own bytes only, so this needs no lookahead.
                    k, q, limit = 1, p + bs, n_full - e
                    while (
                        k < limit
                        and end - q >= bs
                        and is_block(e + k, mv[q - base : q - base + bs])
                    ):
                        k += 1
                        q += bs
                    self._copy(e, p, q - p, k)
                    continue
                if not self._win_start <= p < self._win_end:
                    self._scan(mv, p, avail)
                if not self._search(mv, p):
                    self._pos = self._win_end
                    self._misses += 1
                    if self._pos - self._lit >= MAX_LITERAL:
                        self._flush_literal(self._pos - (self._pos - self._lit) % MAX_LITERAL)
        if self._lit - self._base >= _COMPACT_AT:
            del self._buf[: self._lit - self._base]
            self._base = self._lit

    def _match_tail(self, mv: memoryview, end: int) -> None:
        # Like rsync, the basis' short final block can only match the new file's last bytes:
        # anywhere else a full-size window would have had priority at that offset.
        for span in self._spans:
            r, last = span.last_len, span.stop - 1
            if 0 < r < self._bs and r <= end - self._pos:
                at = end - r - self._base
                if self.index.is_block(last, mv[at : at + r]):
                    self._copy(last, end - r, r)
                    return

    def _scan(self, mv: memoryview, p: int, avail: int) -> None:
        bs = self._bs
        size = min(_MAX_WINDOW, max(_MIN_WINDOW, 2 * bs) << min(self._misses, 8))
        count = min(size, avail - bs + 1)
        data = np.frombuffer(mv, dtype=np.uint8, count=count + bs - 1, offset=p - self._base)
        cand = self.index.scan(data, count)
        del data
        cand.offsets = [p + k for k in cand.offsets]
        self._cand, self._win_start, self._win_end = cand, p, p + count

    def _search(self, mv: memoryview, p: int) -> bool:
        offsets, chains = self._cand.offsets, self._cand.chain
        index, base, bs = self.index, self._base, self._bs
        for i in range(bisect_left(offsets, p), len(offsets)):
            k = offsets[i]
            block = index.lookup(chains[i], mv[k - base : k - base + bs])
            if block >= 0:
                self._misses = 0
                self._copy(block, k, bs)
                return True
        return False


def iter_ops(
    index: BlockIndex | Signature | Sequence[Signature], chunks: Iterable[bytes]
) -> Iterator[Op]:
    """Ops that rebuild the concatenation of ``chunks`` from the indexed basis (or bases)."""
    if isinstance(index, Signature | Sequence):
        index = PolyIndex(index)
    matcher = Matcher(index)
    for chunk in chunks:
        yield from matcher.feed(chunk)
    yield from matcher.finish()
