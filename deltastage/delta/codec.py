"""The delta stream: encoder (peer side) and patcher (master side), both streaming.

Wire format (little-endian)::

    header   b"DDLT" | version u8 | 0 u8 | 0 u16 | block_size u32 | basis_size u64
             | basis xxh3-128 (16)          -- copied from the signature it answers
    ops      b"C" start u32 count u32       copy blocks [start, start+count) of the basis
             b"L" len u32 bytes             raw literal, 1..MAX_LITERAL bytes
             b"Z" len u32 zlen u32 bytes    zstd-compressed literal of len raw bytes
    trailer  b"E" new_size u64 | new xxh3-128 (16)

Every count and length is bounded before anything is buffered or read from the basis, and
the patcher hashes what it writes: a stream that passes all checks but rebuilds the wrong
bytes still fails on the trailer's hash.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zstandard

from deltastage.delta.ops import Copy, Op
from deltastage.delta.params import MAX_LITERAL, check_block_size, count_blocks
from deltastage.errors import DeltaFormatError, IntegrityError
from deltastage.hashing import HASH_SIZE, Hasher

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

DELTA_MAGIC = b"DDLT"
_VERSION = 1
_HEADER = struct.Struct(f"<4sBBHIQ{HASH_SIZE}s")
_COPY = struct.Struct("<II")
_LIT = struct.Struct("<I")
_ZLIT = struct.Struct("<II")
_END = struct.Struct(f"<Q{HASH_SIZE}s")
_OP_COPY, _OP_LIT, _OP_ZLIT, _OP_END = b"C"[0], b"L"[0], b"Z"[0], b"E"[0]
# zstd never expands incompressible input by more than this (ZSTD_COMPRESSBOUND).
_MAX_ZLEN = MAX_LITERAL + (MAX_LITERAL >> 8) + 64
# Literals this short gain nothing from a zstd frame's own overhead.
_MIN_COMPRESS = 64
_WRITE_CHUNK = 1 << 20
_WRONG_BASIS = "delta was made against a different basis (xxh3-128 differs)"


@dataclass
class DeltaStats:
    literal_bytes: int = 0
    copied_bytes: int = 0
    new_size: int = 0
    new_hash: bytes = b""
    delta_bytes: int = 0
    copy_ops: int = 0
    literal_ops: int = 0


@dataclass(frozen=True)
class PatchResult:
    size: int
    xxh3_128: bytes


class DeltaEncoder:
    """Peer side: new-file bytes in (any split), encoded delta bytes out."""

    def __init__(self, signature: Signature, *, level: int = 3) -> None:
        if not 0 <= level <= 22:
            raise DeltaFormatError(f"zstd level {level} outside 0..22")
        # The matcher needs numpy; importing it here keeps the patch side free of it.
        from deltastage.delta.matcher import Matcher, PolyIndex

        self.signature = signature
        self._matcher = Matcher(PolyIndex(signature))
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
        return _HEADER.pack(
            DELTA_MAGIC, _VERSION, 0, 0, sig.block_size, sig.basis_size, sig.basis_hash
        )

    def _encode(self, ops: list[Op]) -> bytes:
        out = [self._header()]
        stats, sig = self.stats, self.signature
        for op in ops:
            if isinstance(op, Copy):
                out.append(bytes((_OP_COPY,)) + _COPY.pack(op.start, op.count))
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
                    out.append(bytes((_OP_ZLIT,)) + _ZLIT.pack(len(data), len(packed)))
                    out.append(packed)
                    continue
            out.append(bytes((_OP_LIT,)) + _LIT.pack(len(data)))
            out.append(data)
        encoded = b"".join(out)
        stats.delta_bytes += len(encoded)
        return encoded

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._done:
            raise DeltaFormatError("delta already finished")
        self._hasher.update(data)
        self.stats.new_size += len(data)
        return self._encode(self._matcher.feed(data))

    def finish(self) -> bytes:
        if self._done:
            raise DeltaFormatError("delta already finished")
        self._done = True
        body = self._encode(self._matcher.finish())
        self.stats.new_hash = self._hasher.digest()
        trailer = bytes((_OP_END,)) + _END.pack(self.stats.new_size, self.stats.new_hash)
        self.stats.delta_bytes += len(trailer)
        return body + trailer


class Patcher:
    """Master side: encoded delta bytes in (any split), rebuilt file out through ``write``.

    ``basis_hash`` (the caller hashed the basis beforehand) is checked against the delta's
    header before anything is written. ``verify_basis=True`` checks the header's hash
    instead while patching: copies usually walk the basis in order, so hashing the bytes
    they read anyway saves a whole pass over the basis; ``finish`` hashes whatever the
    copies skipped and fails on a mismatch, after the output was written (so the caller
    must be able to discard it).
    """

    def __init__(
        self,
        read_at: Callable[[int, int], bytes],
        write: Callable[[bytes], None],
        *,
        basis_size: int,
        basis_hash: bytes | None = None,
        verify_basis: bool = False,
    ) -> None:
        self._read_at = read_at
        self._write = write
        self._basis_size = basis_size
        self._basis_hash = basis_hash
        self._basis_hasher = Hasher() if verify_basis else None
        self._basis_hashed = 0
        self._header_basis_hash = b""
        self._buf = bytearray()
        self._block_size = 0
        self._n_blocks = 0
        self._header_done = False
        self._trailer: tuple[int, bytes] | None = None
        self._size = 0
        self._hasher = Hasher()
        self._zstd = zstandard.ZstdDecompressor()
        self._result: PatchResult | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._trailer is not None:
            if len(data):
                raise DeltaFormatError("data after the end of the delta")
            return
        self._buf += data
        consumed = self._parse()
        if consumed:
            del self._buf[:consumed]

    def _parse(self) -> int:
        buf = self._buf
        at = 0
        if not self._header_done:
            if len(buf) < _HEADER.size:
                return 0
            self._check_header(*_HEADER.unpack_from(buf))
            at = _HEADER.size
        size = len(buf)
        while at < size:
            if self._trailer is not None:
                raise DeltaFormatError("data after the end of the delta")
            op = buf[at]
            if op == _OP_COPY:
                if size - at < 1 + _COPY.size:
                    break
                start, count = _COPY.unpack_from(buf, at + 1)
                self._copy(start, count)
                at += 1 + _COPY.size
            elif op == _OP_LIT:
                if size - at < 1 + _LIT.size:
                    break
                (length,) = _LIT.unpack_from(buf, at + 1)
                if not 1 <= length <= MAX_LITERAL:
                    raise DeltaFormatError(f"literal length {length} outside 1..{MAX_LITERAL}")
                stop = at + 1 + _LIT.size + length
                if size < stop:
                    break
                self._emit(bytes(buf[at + 1 + _LIT.size : stop]))
                at = stop
            elif op == _OP_ZLIT:
                if size - at < 1 + _ZLIT.size:
                    break
                length, zlen = _ZLIT.unpack_from(buf, at + 1)
                if not 1 <= length <= MAX_LITERAL:
                    raise DeltaFormatError(f"literal length {length} outside 1..{MAX_LITERAL}")
                if not 1 <= zlen <= _MAX_ZLEN:
                    raise DeltaFormatError(f"compressed literal length {zlen} out of bounds")
                stop = at + 1 + _ZLIT.size + zlen
                if size < stop:
                    break
                self._emit(self._inflate(buf[at + 1 + _ZLIT.size : stop], length))
                at = stop
            elif op == _OP_END:
                if size - at < 1 + _END.size:
                    break
                self._trailer = _END.unpack_from(buf, at + 1)
                at += 1 + _END.size
            else:
                raise DeltaFormatError(f"unknown delta op 0x{op:02x}")
        return at

    def _check_header(
        self,
        magic: bytes,
        version: int,
        flags: int,
        reserved: int,
        block_size: int,
        basis_size: int,
        basis_hash: bytes,
    ) -> None:
        if magic != DELTA_MAGIC:
            raise DeltaFormatError("not a deltastage delta (bad magic)")
        if version != _VERSION:
            raise DeltaFormatError(f"unsupported delta version {version}")
        if flags or reserved:
            raise DeltaFormatError("reserved delta header fields are not zero")
        check_block_size(block_size)
        if basis_size != self._basis_size:
            raise IntegrityError(
                f"delta was made against a {basis_size}-byte basis, this basis has "
                f"{self._basis_size} bytes"
            )
        if self._basis_hash is not None and basis_hash != self._basis_hash:
            raise IntegrityError(_WRONG_BASIS)
        self._header_basis_hash = basis_hash
        self._block_size = block_size
        self._n_blocks = count_blocks(basis_size, block_size)
        self._header_done = True

    def _inflate(self, packed: bytearray, length: int) -> bytes:
        try:
            data: bytes = self._zstd.decompress(bytes(packed), max_output_size=length)
        except zstandard.ZstdError as exc:
            raise DeltaFormatError(f"corrupt compressed literal: {exc}") from exc
        if len(data) != length:
            raise DeltaFormatError(f"compressed literal holds {len(data)} bytes, not {length}")
        return data

    def _emit(self, data: bytes) -> None:
        self._hasher.update(data)
        self._size += len(data)
        self._write(data)

    def _copy(self, start: int, count: int) -> None:
        if count == 0:
            raise DeltaFormatError("copy of zero blocks")
        if start >= self._n_blocks or count > self._n_blocks - start:
            raise DeltaFormatError(
                f"copy of blocks {start}..{start + count - 1} past the basis' {self._n_blocks}"
            )
        offset = start * self._block_size
        stop = min((start + count) * self._block_size, self._basis_size)
        hasher = self._basis_hasher
        if hasher is not None and offset > self._basis_hashed:
            self._hash_basis(offset)
        while offset < stop:
            want = min(_WRITE_CHUNK, stop - offset)
            data = self._read_basis(offset, want)
            # A copy that continues where the basis hash stands feeds it from the same read;
            # one that goes back is already hashed.
            if hasher is not None and offset + want > self._basis_hashed:
                skip = self._basis_hashed - offset
                hasher.update(memoryview(data)[skip:] if skip else data)
                self._basis_hashed = offset + want
            self._emit(data)
            offset += want

    def _read_basis(self, offset: int, want: int) -> bytes:
        data = self._read_at(offset, want)
        if len(data) != want:
            raise IntegrityError(f"basis ended early: read {len(data)} of {want} at {offset}")
        return data

    def _hash_basis(self, stop: int) -> None:
        """Hash the basis up to ``stop`` from where the copies left it."""
        assert self._basis_hasher is not None
        while self._basis_hashed < stop:
            want = min(_WRITE_CHUNK, stop - self._basis_hashed)
            self._basis_hasher.update(self._read_basis(self._basis_hashed, want))
            self._basis_hashed += want

    def finish(self) -> PatchResult:
        if self._result is not None:
            return self._result
        if self._trailer is None or self._buf:
            raise DeltaFormatError("delta is truncated (no end marker)")
        if self._basis_hasher is not None:
            self._hash_basis(self._basis_size)
            if self._basis_hasher.digest() != self._header_basis_hash:
                raise IntegrityError(_WRONG_BASIS)
        size, digest = self._trailer
        actual = self._hasher.digest()
        if size != self._size or digest != actual:
            raise IntegrityError(
                f"rebuilt file differs from the peer's: {self._size} bytes, expected {size}"
                if size != self._size
                else "rebuilt file differs from the peer's (xxh3-128 mismatch)"
            )
        self._result = PatchResult(size=self._size, xxh3_128=actual)
        return self._result


def encode_ops(sig: Signature, ops: Iterable[Op], *, new_size: int, new_hash: bytes) -> bytes:
    """A whole raw delta (no compression) from ops found by the caller, e.g. composed from
    a coarse and a fine pass; ``new_size`` and ``new_hash`` describe the rebuilt file.

    Nothing here re-checks the ops against the new file: the trailer's hash does that on
    the master, so a wrong op fails there as a hash mismatch.
    """
    n_blocks = sig.n_blocks
    out = [
        _HEADER.pack(DELTA_MAGIC, _VERSION, 0, 0, sig.block_size, sig.basis_size, sig.basis_hash)
    ]
    for op in ops:
        if isinstance(op, Copy):
            if op.count < 1 or op.start + op.count > n_blocks:
                raise DeltaFormatError(f"copy of blocks {op.start}+{op.count} past {n_blocks}")
            out.append(bytes((_OP_COPY,)) + _COPY.pack(op.start, op.count))
        else:
            if not 1 <= len(op.data) <= MAX_LITERAL:
                raise DeltaFormatError(f"literal of {len(op.data)} bytes outside 1..{MAX_LITERAL}")
            out.append(bytes((_OP_LIT,)) + _LIT.pack(len(op.data)))
            out.append(op.data)
    out.append(bytes((_OP_END,)) + _END.pack(new_size, new_hash))
    return b"".join(out)


def make_delta(sig: Signature, new: bytes | bytearray | memoryview, level: int = 3) -> bytes:
    encoder = DeltaEncoder(sig, level=level)
    return encoder.update(new) + encoder.finish()


def apply_delta(
    basis: bytes | bytearray | memoryview, delta: bytes | bytearray | memoryview
) -> bytes:
    view = memoryview(basis)
    out: list[bytes] = []
    patcher = Patcher(
        lambda offset, n: bytes(view[offset : offset + n]),
        out.append,
        basis_size=len(view),
        basis_hash=None,
    )
    patcher.feed(delta)
    patcher.finish()
    return b"".join(out)
