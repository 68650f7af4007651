"""Signatures: what the master knows about its basis, built and encoded as a stream.

Wire format (little-endian)::

    header   b"DSIG" | version u8 | strong_len u8 | 0 u16 | block_size u32 | basis_size u64
    records  ceil(basis_size / block_size) x (weak u32 | strong[strong_len])
    trailer  basis xxh3-128 (16) | xxh3-64 of every byte before this field (8)

The block count follows from the header, so a decoder knows exactly how many bytes to expect
and bounds them before buffering anything; the trailing checksum turns any bit flip into a
clean DeltaFormatError instead of a silently worse delta.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import xxhash

from deltastage.delta.params import (
    DEFAULT_MAX_BASIS_SIZE,
    DEFAULT_MAX_BLOCKS,
    check_block_size,
    check_strong_len,
    choose_block_size,
    choose_strong_len,
    count_blocks,
)
from deltastage.delta.rolling import block_weaks
from deltastage.errors import DeltaFormatError
from deltastage.hashing import HASH_SIZE, Hasher

__all__ = [
    "SIGNATURE_MAGIC",
    "Signature",
    "SignatureBuilder",
    "SignatureDecoder",
    "decode_signature",
    "encode_signature",
    "signature_of",
    "strong_hash",
]

SIGNATURE_MAGIC = b"DSIG"
_VERSION = 1
_HEADER = struct.Struct("<4sBBHIQ")
_CHECK = struct.Struct("<Q")
_TRAILER_SIZE = HASH_SIZE + _CHECK.size
# Blocks hashed per numpy call: large enough to amortise the call, small enough for cache.
_BATCH_BYTES = 1 << 20


def strong_hash(block: bytes | bytearray | memoryview, strong_len: int) -> bytes:
    return xxhash.xxh3_128_digest(block)[:strong_len]


@dataclass(frozen=True)
class Signature:
    """Per-block hashes of a basis.

    ``weak`` holds one little-endian u32 per block, ``strong`` ``strong_len`` bytes per
    block; only the last block may be shorter than ``block_size``.
    """

    block_size: int
    strong_len: int
    basis_size: int
    basis_hash: bytes
    weak: bytes
    strong: bytes

    @property
    def n_blocks(self) -> int:
        return count_blocks(self.basis_size, self.block_size)

    @property
    def last_block_size(self) -> int:
        """Length of the final block (``block_size`` when it is full, 0 for an empty basis)."""
        if self.basis_size == 0:
            return 0
        return self.basis_size - (self.n_blocks - 1) * self.block_size

    def weak_array(self) -> npt.NDArray[np.uint32]:
        return np.frombuffer(self.weak, dtype="<u4").astype(np.uint32, copy=False)

    def strong_of(self, index: int) -> bytes:
        return self.strong[index * self.strong_len : (index + 1) * self.strong_len]

    def block_range(self, index: int) -> tuple[int, int]:
        start = index * self.block_size
        return start, min(start + self.block_size, self.basis_size)


def _records(data: memoryview, block_size: int, strong_len: int) -> tuple[bytes, bytes, bytes]:
    """(wire records, weak bytes, strong bytes) for whole blocks of ``data`` (+ a short tail)."""
    weaks = block_weaks(np.frombuffer(data, dtype=np.uint8), block_size)
    digest = xxhash.xxh3_128_digest
    strongs = b"".join(
        [digest(data[i : i + block_size])[:strong_len] for i in range(0, len(data), block_size)]
    )
    rec = np.empty(len(weaks), dtype=[("w", "<u4"), ("s", f"V{strong_len}")])
    rec["w"] = weaks
    rec["s"] = np.frombuffer(strongs, dtype=f"V{strong_len}")
    return rec.tobytes(), weaks.astype("<u4").tobytes(), strongs


class SignatureBuilder:
    """Build a signature from a basis fed in any split; encoded bytes come out as they are ready."""

    def __init__(
        self, basis_size: int, *, block_size: int | None = None, strong_len: int | None = None
    ) -> None:
        if basis_size < 0:
            raise DeltaFormatError(f"negative basis size {basis_size}")
        self.basis_size = basis_size
        self.block_size = check_block_size(
            choose_block_size(basis_size) if block_size is None else block_size
        )
        self.strong_len = check_strong_len(
            choose_strong_len(basis_size, self.block_size) if strong_len is None else strong_len
        )
        self._pending = bytearray()
        self._fed = 0
        self._hasher = Hasher()
        self._check = xxhash.xxh3_64()
        self._weak: list[bytes] = []
        self._strong: list[bytes] = []
        self._header_sent = False
        self._signature: Signature | None = None

    def _emit(self, out: bytes) -> bytes:
        if not self._header_sent:
            self._header_sent = True
            header = _HEADER.pack(
                SIGNATURE_MAGIC, _VERSION, self.strong_len, 0, self.block_size, self.basis_size
            )
            out = header + out
        self._check.update(out)
        return out

    def _blocks(self, data: memoryview) -> bytes:
        wire, weak, strong = _records(data, self.block_size, self.strong_len)
        self._weak.append(weak)
        self._strong.append(strong)
        return wire

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._signature is not None:
            raise DeltaFormatError("signature already finished")
        view = memoryview(data).cast("B")
        self._fed += len(view)
        if self._fed > self.basis_size:
            raise DeltaFormatError(f"basis is longer than the declared {self.basis_size} bytes")
        self._hasher.update(view)
        bs = self.block_size
        out: list[bytes] = []
        if self._pending:
            take = min(bs - len(self._pending), len(view))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) == bs:
                out.append(self._blocks(memoryview(bytes(self._pending))))
                self._pending.clear()
        batch = max(bs, _BATCH_BYTES // bs * bs)
        whole = len(view) // bs * bs
        for start in range(0, whole, batch):
            out.append(self._blocks(view[start : min(start + batch, whole)]))
        self._pending += view[whole:]
        return self._emit(b"".join(out))

    def finish(self) -> bytes:
        if self._signature is not None:
            raise DeltaFormatError("signature already finished")
        if self._fed != self.basis_size:
            raise DeltaFormatError(
                f"basis ended after {self._fed} of the declared {self.basis_size} bytes"
            )
        tail = self._blocks(memoryview(bytes(self._pending))) if self._pending else b""
        self._pending.clear()
        basis_hash = self._hasher.digest()
        out = self._emit(tail + basis_hash)
        out += _CHECK.pack(self._check.intdigest())
        self._signature = Signature(
            block_size=self.block_size,
            strong_len=self.strong_len,
            basis_size=self.basis_size,
            basis_hash=basis_hash,
            weak=b"".join(self._weak),
            strong=b"".join(self._strong),
        )
        return out

    @property
    def signature(self) -> Signature:
        if self._signature is None:
            raise DeltaFormatError("signature not finished yet")
        return self._signature

    @property
    def encoded_size(self) -> int:
        """Bytes of the whole encoded signature, known before the basis is read."""
        blocks = count_blocks(self.basis_size, self.block_size)
        return _HEADER.size + blocks * (4 + self.strong_len) + _TRAILER_SIZE


def signature_of(
    basis: bytes | bytearray | memoryview,
    *,
    block_size: int | None = None,
    strong_len: int | None = None,
) -> Signature:
    builder = SignatureBuilder(len(basis), block_size=block_size, strong_len=strong_len)
    builder.update(basis)
    builder.finish()
    return builder.signature


def encode_signature(sig: Signature) -> bytes:
    n = sig.n_blocks
    if len(sig.weak) != 4 * n or len(sig.strong) != sig.strong_len * n:
        raise DeltaFormatError("signature arrays do not match its block count")
    rec = np.empty(n, dtype=[("w", "<u4"), ("s", f"V{sig.strong_len}")])
    rec["w"] = np.frombuffer(sig.weak, dtype="<u4")
    rec["s"] = np.frombuffer(sig.strong, dtype=f"V{sig.strong_len}")
    body = (
        _HEADER.pack(SIGNATURE_MAGIC, _VERSION, sig.strong_len, 0, sig.block_size, sig.basis_size)
        + rec.tobytes()
        + sig.basis_hash
    )
    return body + _CHECK.pack(xxhash.xxh3_64_intdigest(body))


class SignatureDecoder:
    """Incremental signature decoder; every length is bounded before anything is buffered."""

    def __init__(
        self,
        *,
        max_blocks: int = DEFAULT_MAX_BLOCKS,
        max_basis_size: int = DEFAULT_MAX_BASIS_SIZE,
    ) -> None:
        self._max_blocks = max_blocks
        self._max_basis_size = max_basis_size
        self._buf = bytearray()
        self._need: int | None = None
        self._header: tuple[int, int, int] | None = None
        self._result: Signature | None = None

    @property
    def done(self) -> bool:
        return self._result is not None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._result is not None:
            if len(data):
                raise DeltaFormatError("data after the end of the signature")
            return
        self._buf += data
        if self._header is None:
            if len(self._buf) < _HEADER.size:
                return
            self._parse_header()
        assert self._need is not None
        if len(self._buf) > self._need:
            raise DeltaFormatError("data after the end of the signature")
        if len(self._buf) == self._need:
            self._parse_body()

    def _parse_header(self) -> None:
        magic, version, strong_len, reserved, block_size, basis_size = _HEADER.unpack_from(
            self._buf
        )
        if magic != SIGNATURE_MAGIC:
            raise DeltaFormatError("not a deltastage signature (bad magic)")
        if version != _VERSION:
            raise DeltaFormatError(f"unsupported signature version {version}")
        if reserved != 0:
            raise DeltaFormatError("reserved signature header field is not zero")
        check_strong_len(strong_len)
        check_block_size(block_size)
        if basis_size > self._max_basis_size:
            raise DeltaFormatError(
                f"basis size {basis_size} exceeds the limit of {self._max_basis_size}"
            )
        n = count_blocks(basis_size, block_size)
        if n > self._max_blocks:
            raise DeltaFormatError(f"{n} signature blocks exceed the limit of {self._max_blocks}")
        self._header = (strong_len, block_size, basis_size)
        self._need = _HEADER.size + n * (4 + strong_len) + _TRAILER_SIZE

    def _parse_body(self) -> None:
        assert self._header is not None
        strong_len, block_size, basis_size = self._header
        body = memoryview(self._buf)
        (check,) = _CHECK.unpack_from(body, len(body) - _CHECK.size)
        if xxhash.xxh3_64_intdigest(body[: -_CHECK.size]) != check:
            raise DeltaFormatError("signature checksum mismatch (corrupted signature)")
        records = body[_HEADER.size : len(body) - _TRAILER_SIZE]
        rec = np.frombuffer(records, dtype=[("w", "<u4"), ("s", f"V{strong_len}")])
        self._result = Signature(
            block_size=block_size,
            strong_len=strong_len,
            basis_size=basis_size,
            basis_hash=bytes(body[len(body) - _TRAILER_SIZE : len(body) - _CHECK.size]),
            weak=rec["w"].tobytes(),
            strong=rec["s"].tobytes(),
        )
        del body, records, rec
        self._buf = bytearray()

    def result(self) -> Signature:
        if self._result is None:
            raise DeltaFormatError("signature is truncated")
        return self._result


def decode_signature(data: bytes | bytearray | memoryview) -> Signature:
    decoder = SignatureDecoder()
    decoder.feed(data)
    return decoder.result()
