"""The delta stream: encoder (peer side) and, re-exported from ``patch``, the patcher.

The wire format is described in ``wire``. The encoder bounds what it emits by the same limits
the patcher enforces; the patcher hashes what it writes, so a stream that passes all checks
but rebuilds the wrong bytes still fails on the trailer's hash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zstandard

from deltastage.delta.ops import Copy, Literal, Op
from deltastage.delta.params import MAX_LITERAL, check_basis_count
from deltastage.delta.patch import Patcher, PatchResult
from deltastage.delta.wire import (
    COPY,
    DELTA_MAGIC,
    END,
    HEADER,
    LIT,
    MAX_ZERO_RUN,
    MULTI_BASIS,
    MULTI_COPY,
    MULTI_DELTA_MAGIC,
    MULTI_HEADER,
    OP_COPY,
    OP_END,
    OP_LIT,
    OP_ZERO,
    OP_ZLIT,
    VERSION,
    ZERO,
    ZLIT,
)
from deltastage.errors import DeltaFormatError
from deltastage.hashing import Hasher, hash_zeros

if TYPE_CHECKING:
    from deltastage.delta.signature import Signature

__all__ = [
    "DELTA_MAGIC",
    "DeltaEncoder",
    "DeltaStats",
    "PatchResult",
    "Patcher",
    "apply_delta",
    "encode_ops",
    "make_delta",
]

# Literals this short gain nothing from a zstd frame's own overhead.
_MIN_COMPRESS = 64


@dataclass
class DeltaStats:
    literal_bytes: int = 0
    copied_bytes: int = 0
    new_size: int = 0
    new_hash: bytes = b""
    delta_bytes: int = 0
    copy_ops: int = 0
    literal_ops: int = 0
    zero_bytes: int = 0
    zero_ops: int = 0


class DeltaEncoder:
    """Peer side: new-file bytes in (any split), encoded delta bytes out.

    Given several bases' signatures (a multi-basis signature decoded), the delta copies from
    all of them and has the multi-basis format; one signature gives the single-basis one.

    ``zeros(n)`` stands for ``n`` zero bytes the caller knows of without reading them (a
    hole of a sparse file): they go out as zero-run ops, and matching starts afresh after
    them, as at the start of a file.
    """

    def __init__(self, signature: Signature | Sequence[Signature], *, level: int = 3) -> None:
        if not 0 <= level <= 22:
            raise DeltaFormatError(f"zstd level {level} outside 0..22")
        # The matcher needs numpy; importing it here keeps the patch side free of it.
        from deltastage.delta.matcher import Matcher, PolyIndex

        sigs = tuple(signature) if isinstance(signature, Sequence) else (signature,)
        check_basis_count(len(sigs))
        self.signature = sigs[0]
        self.signatures = sigs
        self._multi = len(sigs) > 1
        # with no basis blocks there is nothing to match: every byte is literal, and no
        # index needs building (most small files of a first day)
        self._matcher = Matcher(PolyIndex(sigs)) if any(s.n_blocks for s in sigs) else None
        self._zstd = zstandard.ZstdCompressor(level=level, write_checksum=False) if level else None
        self._hasher = Hasher()
        self._started = False
        self._done = False
        self.stats = DeltaStats()

    def _header(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        sig = self.signature
        if self._multi:
            sigs = self.signatures
            head = MULTI_HEADER.pack(MULTI_DELTA_MAGIC, VERSION, len(sigs), 0, sig.block_size)
            return head + b"".join(MULTI_BASIS.pack(s.basis_size, s.basis_hash) for s in sigs)
        return HEADER.pack(
            DELTA_MAGIC, VERSION, 0, 0, sig.block_size, sig.basis_size, sig.basis_hash
        )

    def _encode(self, ops: list[Op]) -> bytes:
        out = [self._header()]
        stats, sigs, multi = self.stats, self.signatures, self._multi
        for op in ops:
            if isinstance(op, Copy):
                if multi:
                    out.append(bytes((OP_COPY,)) + MULTI_COPY.pack(op.basis, op.start, op.count))
                else:
                    out.append(bytes((OP_COPY,)) + COPY.pack(op.start, op.count))
                sig = sigs[op.basis]
                end = min((op.start + op.count) * sig.block_size, sig.basis_size)
                stats.copied_bytes += end - op.start * sig.block_size
                stats.copy_ops += 1
                continue
            data = op.data
            stats.literal_bytes += len(data)
            stats.literal_ops += 1
            if self._zstd is not None and len(data) >= _MIN_COMPRESS:
                packed = self._zstd.compress(data)
                if len(packed) < len(data):
                    out.append(bytes((OP_ZLIT,)) + ZLIT.pack(len(data), len(packed)))
                    out.append(packed)
                    continue
            out.append(bytes((OP_LIT,)) + LIT.pack(len(data)))
            out.append(data)
        encoded = b"".join(out)
        stats.delta_bytes += len(encoded)
        return encoded

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._done:
            raise DeltaFormatError("delta already finished")
        self._hasher.update(data)
        self.stats.new_size += len(data)
        if self._matcher is None:
            view = memoryview(data)
            literals: list[Op] = [
                Literal(bytes(view[at : at + MAX_LITERAL]))
                for at in range(0, len(view), MAX_LITERAL)
            ]
            return self._encode(literals)
        return self._encode(self._matcher.feed(data))

    def zeros(self, count: int) -> bytes:
        """Encode ``count`` zero bytes as zero-run ops, after what was fed before them."""
        if self._done:
            raise DeltaFormatError("delta already finished")
        if count <= 0:
            return b""
        matcher = self._matcher
        body = self._encode(matcher.finish() if matcher is not None else [])
        if matcher is not None:  # matching starts afresh after the run
            self._matcher = type(matcher)(matcher.index)
        hash_zeros(self._hasher, count)
        stats = self.stats
        stats.new_size += count
        stats.zero_bytes += count
        runs = []
        while count:
            run = min(count, MAX_ZERO_RUN)
            runs.append(bytes((OP_ZERO,)) + ZERO.pack(run))
            stats.zero_ops += 1
            count -= run
        encoded = b"".join(runs)
        stats.delta_bytes += len(encoded)
        return body + encoded

    def finish(self) -> bytes:
        if self._done:
            raise DeltaFormatError("delta already finished")
        self._done = True
        body = self._encode(self._matcher.finish() if self._matcher is not None else [])
        self.stats.new_hash = self._hasher.digest()
        trailer = bytes((OP_END,)) + END.pack(self.stats.new_size, self.stats.new_hash)
        self.stats.delta_bytes += len(trailer)
        return body + trailer


def encode_ops(sig: Signature, ops: Iterable[Op], *, new_size: int, new_hash: bytes) -> bytes:
    """A whole raw delta (no compression) from ops found by the caller, e.g. composed from
    a coarse and a fine pass; ``new_size`` and ``new_hash`` describe the rebuilt file.

    Nothing here re-checks the ops against the new file: the trailer's hash does that on
    the master, so a wrong op fails there as a hash mismatch.
    """
    n_blocks = sig.n_blocks
    out = [HEADER.pack(DELTA_MAGIC, VERSION, 0, 0, sig.block_size, sig.basis_size, sig.basis_hash)]
    for op in ops:
        if isinstance(op, Copy):
            if op.basis != 0:
                raise DeltaFormatError(f"copy from basis {op.basis} in a single-basis delta")
            if op.count < 1 or op.start + op.count > n_blocks:
                raise DeltaFormatError(f"copy of blocks {op.start}+{op.count} past {n_blocks}")
            out.append(bytes((OP_COPY,)) + COPY.pack(op.start, op.count))
        else:
            if not 1 <= len(op.data) <= MAX_LITERAL:
                raise DeltaFormatError(f"literal of {len(op.data)} bytes outside 1..{MAX_LITERAL}")
            out.append(bytes((OP_LIT,)) + LIT.pack(len(op.data)))
            out.append(op.data)
    out.append(bytes((OP_END,)) + END.pack(new_size, new_hash))
    return b"".join(out)


def make_delta(
    sig: Signature | Sequence[Signature], new: bytes | bytearray | memoryview, level: int = 3
) -> bytes:
    encoder = DeltaEncoder(sig, level=level)
    return encoder.update(new) + encoder.finish()


def apply_delta(
    basis: bytes | bytearray | memoryview | Sequence[bytes],
    delta: bytes | bytearray | memoryview,
) -> bytes:
    """The file ``delta`` rebuilds from ``basis`` (or from several, in their signature's order)."""
    views = (
        [memoryview(basis)]
        if isinstance(basis, bytes | bytearray | memoryview)
        else [memoryview(b) for b in basis]
    )
    out: list[bytes] = []
    patcher = Patcher(
        [_reader(view) for view in views],
        out.append,
        basis_size=[len(view) for view in views],
        basis_hash=None,
    )
    patcher.feed(delta)
    patcher.finish()
    return b"".join(out)


def _reader(view: memoryview) -> Callable[[int, int], bytes]:
    return lambda offset, n: bytes(view[offset : offset + n])
