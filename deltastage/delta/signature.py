"""Signatures: what the master knows about its basis, built and encoded as a stream.

Wire format (little-endian)::

    header   b"DSIG" | version u8 | strong_len u8 | 0 u16 | block_size u32 | basis_size u64
    records  ceil(basis_size / block_size) x (weak u32 | strong[strong_len])
    trailer  basis xxh3-128 (16) | xxh3-64 of every byte before this field (8)

Several bases (2..MAX_BASES) share one block size and strong length in a signature of its own
magic; the single-basis format above is unchanged::

    header   b"DSGM" | version u8 | strong_len u8 | n_bases u16 | block_size u32
             | n_bases x basis_size u64
    records  basis 0's records, then basis 1's, ... (as above)
    trailer  n_bases x basis xxh3-128 (16) | xxh3-64 of every byte before this field (8)

The block count follows from the header, so a decoder knows exactly how many bytes to expect
and bounds them before buffering anything; the trailing checksum turns any bit flip into a
clean DeltaFormatError instead of a silently worse delta.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import xxhash

from deltastage.delta.params import (
    DEFAULT_MAX_BASIS_SIZE,
    DEFAULT_MAX_BLOCKS,
    check_basis_count,
    check_block_size,
    check_strong_len,
    choose_bases_block_size,
    choose_block_size,
    choose_strong_len,
    count_blocks,
    fit_to_new_file,
)
from deltastage.delta.rolling import block_weaks
from deltastage.errors import DeltaFormatError
from deltastage.hashing import HASH_SIZE, Hasher, hash_zeros

__all__ = [
    "MULTI_SIGNATURE_MAGIC",
    "SIGNATURE_MAGIC",
    "MultiSignatureBuilder",
    "Signature",
    "SignatureBuilder",
    "SignatureDecoder",
    "decode_signature",
    "decode_signatures",
    "encode_signature",
    "encode_signatures",
    "signature_of",
    "signature_size",
    "strong_hash",
]

SIGNATURE_MAGIC = b"DSIG"
_VERSION = 1
_HEADER = struct.Struct("<4sBBHIQ")
MULTI_SIGNATURE_MAGIC = b"DSGM"
_MULTI_HEADER = struct.Struct("<4sBBHI")
_SIZE = struct.Struct("<Q")
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
    """Build a signature from a basis fed in any split; encoded bytes come out as they are ready.

    ``framed=False`` leaves out the header and the trailer: only the block records come out
    (one basis' part of a multi-basis signature).
    """

    def __init__(
        self,
        basis_size: int,
        *,
        block_size: int | None = None,
        strong_len: int | None = None,
        framed: bool = True,
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
        self._header_sent = not framed
        self._framed = framed
        self._signature: Signature | None = None
        self._zero_block: tuple[bytes, bytes, bytes] | None = None  # see zeros()

    def _emit(self, out: bytes) -> bytes:
        if not self._framed:
            return out
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

    def zeros(self, count: int) -> bytes:
        """Feed ``count`` zero bytes (a hole of the basis), as ``update`` would, without
        hashing each block: a whole block of zeros has the same record every time."""
        if self._signature is not None:
            raise DeltaFormatError("signature already finished")
        if count < 0 or self._fed + count > self.basis_size:
            raise DeltaFormatError(f"basis is longer than the declared {self.basis_size} bytes")
        self._fed += count
        hash_zeros(self._hasher, count)
        bs = self.block_size
        out: list[bytes] = []
        if self._pending:
            take = min(bs - len(self._pending), count)
            self._pending += bytes(take)
            count -= take
            if len(self._pending) == bs:
                out.append(self._blocks(memoryview(bytes(self._pending))))
                self._pending.clear()
        whole = count // bs
        if whole:
            if self._zero_block is None:
                self._zero_block = _records(memoryview(bytes(bs)), bs, self.strong_len)
            wire, weak, strong = self._zero_block
            self._weak.append(weak * whole)
            self._strong.append(strong * whole)
            out.append(wire * whole)
        self._pending += bytes(count - whole * bs)
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
        if self._framed:
            out = self._emit(tail + basis_hash) + _CHECK.pack(self._check.intdigest())
        else:
            out = tail
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


class MultiSignatureBuilder:
    """A signature of several bases, fed one after the other (``update`` then ``end_basis``
    for each, then ``finish``); one basis gives the single-basis format, byte for byte.

    The default block size is ``choose_bases_block_size``'s; the default strong length counts
    the blocks of all of them, since a new-file window is compared with every one. Given
    ``new_size``, the size of the file the signature is for, both are fitted to it too: a
    small file cannot use most blocks of big bases (``params.fit_to_new_file``).
    """

    def __init__(
        self,
        basis_sizes: Sequence[int],
        *,
        block_size: int | None = None,
        strong_len: int | None = None,
        new_size: int | None = None,
    ) -> None:
        check_basis_count(len(basis_sizes))
        if min(basis_sizes) < 0:
            raise DeltaFormatError(f"negative basis size {min(basis_sizes)}")
        bs, sl = _parameters(basis_sizes, block_size, strong_len, new_size)
        bs, sl = check_block_size(bs), check_strong_len(sl)
        self.block_size, self.strong_len = bs, sl
        framed = len(basis_sizes) == 1
        self._parts = [
            SignatureBuilder(size, block_size=bs, strong_len=sl, framed=framed)
            for size in basis_sizes
        ]
        self._current = 0
        self._check = xxhash.xxh3_64()
        self._header = b"" if framed else _multi_header(sl, bs, basis_sizes)

    def _emit(self, out: bytes) -> bytes:
        if len(self._parts) == 1:
            return out
        out, self._header = self._header + out, b""
        self._check.update(out)
        return out

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._current >= len(self._parts):
            raise DeltaFormatError("every basis has already ended")
        return self._emit(self._parts[self._current].update(data))

    def zeros(self, count: int) -> bytes:
        """``count`` zero bytes of the current basis (see ``SignatureBuilder.zeros``)."""
        if self._current >= len(self._parts):
            raise DeltaFormatError("every basis has already ended")
        return self._emit(self._parts[self._current].zeros(count))

    def end_basis(self) -> bytes:
        if self._current >= len(self._parts):
            raise DeltaFormatError("every basis has already ended")
        self._current += 1
        return self._emit(self._parts[self._current - 1].finish())

    def finish(self) -> bytes:
        if self._current != len(self._parts):
            raise DeltaFormatError(f"only {self._current} of {len(self._parts)} bases ended")
        if len(self._parts) == 1:
            return b""
        out = self._emit(b"".join(part.signature.basis_hash for part in self._parts))
        return out + _CHECK.pack(self._check.intdigest())

    @property
    def signatures(self) -> tuple[Signature, ...]:
        return tuple(part.signature for part in self._parts)

    @property
    def encoded_size(self) -> int:
        """Bytes of the whole encoded signature, known before any basis is read."""
        sizes = [part.basis_size for part in self._parts]
        return signature_size(sizes, block_size=self.block_size, strong_len=self.strong_len)


def signature_size(
    basis_sizes: Sequence[int],
    *,
    block_size: int | None = None,
    strong_len: int | None = None,
    new_size: int | None = None,
) -> int:
    """Bytes of the encoded signature of bases of these sizes (``MultiSignatureBuilder``'s
    defaults for the block size and strong length, for a new file of ``new_size`` bytes
    when given), known before any basis is read."""
    check_basis_count(len(basis_sizes))
    bs, sl = _parameters(basis_sizes, block_size, strong_len, new_size)
    blocks = sum(count_blocks(size, bs) for size in basis_sizes)
    if len(basis_sizes) == 1:
        return _HEADER.size + blocks * (4 + sl) + _TRAILER_SIZE
    head = _MULTI_HEADER.size + len(basis_sizes) * (_SIZE.size + HASH_SIZE)
    return head + blocks * (4 + sl) + _CHECK.size


def _parameters(
    basis_sizes: Sequence[int],
    block_size: int | None,
    strong_len: int | None,
    new_size: int | None,
) -> tuple[int, int]:
    """The block size and strong length of a signature of these bases (either given)."""
    signed = sum(basis_sizes)
    if block_size is None:
        block_size = choose_bases_block_size(basis_sizes, new_size)
        if new_size is not None:
            block_size = fit_to_new_file(block_size, signed, new_size)
    if strong_len is None:
        strong_len = choose_strong_len(signed, block_size, new_size)
    return block_size, strong_len


def _multi_header(strong_len: int, block_size: int, sizes: Sequence[int]) -> bytes:
    head = _MULTI_HEADER.pack(MULTI_SIGNATURE_MAGIC, _VERSION, strong_len, len(sizes), block_size)
    return head + b"".join(_SIZE.pack(size) for size in sizes)


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


def encode_signatures(sigs: Sequence[Signature]) -> bytes:
    """One signature of all ``sigs`` (the single-basis format for one of them)."""
    check_basis_count(len(sigs))
    if len(sigs) == 1:
        return encode_signature(sigs[0])
    first = sigs[0]
    if any((s.block_size, s.strong_len) != (first.block_size, first.strong_len) for s in sigs):
        raise DeltaFormatError("the bases' signatures differ in block size or strong length")
    head = _multi_header(first.strong_len, first.block_size, [s.basis_size for s in sigs])
    # Each part framed alone, stripped back to its records: one record layout to maintain.
    records = [encode_signature(s)[_HEADER.size : -_TRAILER_SIZE] for s in sigs]
    body = head + b"".join(records) + b"".join(s.basis_hash for s in sigs)
    return body + _CHECK.pack(xxhash.xxh3_64_intdigest(body))


class SignatureDecoder:
    """Incremental signature decoder; every length is bounded before anything is buffered.

    ``multi=True`` also reads a multi-basis signature (``results`` then gives each basis');
    otherwise its magic is refused like any other. ``max_blocks`` bounds all bases' blocks
    together, ``max_basis_size`` each basis.
    """

    def __init__(
        self,
        *,
        max_blocks: int = DEFAULT_MAX_BLOCKS,
        max_basis_size: int = DEFAULT_MAX_BASIS_SIZE,
        multi: bool = False,
    ) -> None:
        self._max_blocks = max_blocks
        self._max_basis_size = max_basis_size
        self._multi = multi
        self._buf = bytearray()
        self._need: int | None = None
        self._header: tuple[int, int, int] | None = None
        self._sizes: tuple[int, ...] = ()
        self._results: tuple[Signature, ...] | None = None

    @property
    def done(self) -> bool:
        return self._results is not None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._results is not None:
            if len(data):
                raise DeltaFormatError("data after the end of the signature")
            return
        self._buf += data
        if self._header is None:
            if self._multi and self._buf[:4] == MULTI_SIGNATURE_MAGIC:
                if not self._parse_multi_header():
                    return
            elif len(self._buf) < _HEADER.size:
                return
            else:
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
        n = self._count_blocks((basis_size,), block_size)
        self._header = (strong_len, block_size, _HEADER.size)
        self._sizes = (basis_size,)
        self._need = _HEADER.size + n * (4 + strong_len) + _TRAILER_SIZE

    def _parse_multi_header(self) -> bool:
        """Whether the whole multi-basis header is in (and checked); False: wait for more."""
        if len(self._buf) < _MULTI_HEADER.size:
            return False
        _, version, strong_len, n_bases, block_size = _MULTI_HEADER.unpack_from(self._buf)
        if version != _VERSION:
            raise DeltaFormatError(f"unsupported signature version {version}")
        check_basis_count(n_bases)
        check_strong_len(strong_len)
        check_block_size(block_size)
        size = _MULTI_HEADER.size + n_bases * _SIZE.size
        if len(self._buf) < size:
            return False
        sizes = struct.unpack_from(f"<{n_bases}Q", self._buf, _MULTI_HEADER.size)
        n = self._count_blocks(sizes, block_size)
        self._header = (strong_len, block_size, size)
        self._sizes = sizes
        self._need = size + n * (4 + strong_len) + n_bases * HASH_SIZE + _CHECK.size
        return True

    def _count_blocks(self, sizes: Sequence[int], block_size: int) -> int:
        for basis_size in sizes:
            if basis_size > self._max_basis_size:
                raise DeltaFormatError(
                    f"basis size {basis_size} exceeds the limit of {self._max_basis_size}"
                )
        n = sum(count_blocks(size, block_size) for size in sizes)
        if n > self._max_blocks:
            raise DeltaFormatError(f"{n} signature blocks exceed the limit of {self._max_blocks}")
        return n

    def _parse_body(self) -> None:
        assert self._header is not None
        strong_len, block_size, header_size = self._header
        body = memoryview(self._buf)
        (check,) = _CHECK.unpack_from(body, len(body) - _CHECK.size)
        if xxhash.xxh3_64_intdigest(body[: -_CHECK.size]) != check:
            raise DeltaFormatError("signature checksum mismatch (corrupted signature)")
        hashes_at = len(body) - _CHECK.size - len(self._sizes) * HASH_SIZE
        records = body[header_size:hashes_at]
        rec = np.frombuffer(records, dtype=[("w", "<u4"), ("s", f"V{strong_len}")])
        results: list[Signature] = []
        first = 0
        for k, basis_size in enumerate(self._sizes):
            part = rec[first : first + count_blocks(basis_size, block_size)]
            first += len(part)
            at = hashes_at + k * HASH_SIZE
            results.append(
                Signature(
                    block_size=block_size,
                    strong_len=strong_len,
                    basis_size=basis_size,
                    basis_hash=bytes(body[at : at + HASH_SIZE]),
                    weak=part["w"].tobytes(),
                    strong=part["s"].tobytes(),
                )
            )
        self._results = tuple(results)
        del body, records, rec
        self._buf = bytearray()

    def result(self) -> Signature:
        """The signature of the one basis (a multi-basis signature is refused here)."""
        results = self.results()
        if len(results) != 1:
            raise DeltaFormatError(f"a signature of {len(results)} bases where one was expected")
        return results[0]

    def results(self) -> tuple[Signature, ...]:
        """Each basis' signature, in order (one for a single-basis signature)."""
        if self._results is None:
            raise DeltaFormatError("signature is truncated")
        if len(self._results) != 1 and not self._multi:
            raise DeltaFormatError("a multi-basis signature where one basis was expected")
        return self._results


def decode_signature(data: bytes | bytearray | memoryview) -> Signature:
    decoder = SignatureDecoder()
    decoder.feed(data)
    return decoder.result()


def decode_signatures(data: bytes | bytearray | memoryview) -> tuple[Signature, ...]:
    """Each basis' signature from a single- or multi-basis signature."""
    decoder = SignatureDecoder(multi=True)
    decoder.feed(data)
    return decoder.results()
