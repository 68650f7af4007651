"""The master's side of a delta: encoded delta bytes in (any split), rebuilt file out.

Every count and length is bounded before anything is buffered or read from the basis, and
the patcher hashes what it writes: a stream that passes all checks but rebuilds the wrong
bytes still fails on the trailer's hash (see ``wire`` for the format).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

import zstandard

from deltastage.delta.params import MAX_LITERAL, check_block_size, count_blocks
from deltastage.delta.wire import (
    COPY,
    DELTA_MAGIC,
    END,
    HEADER,
    LIT,
    MAX_ZLEN,
    OP_COPY,
    OP_END,
    OP_LIT,
    OP_ZLIT,
    VERSION,
    ZLIT,
)
from deltastage.errors import DeltaFormatError, IntegrityError
from deltastage.hashing import Hasher

__all__ = ["MAX_READ", "PatchResult", "Patcher"]

# Largest basis read (and so write) a copy is split into: big enough that per-call overhead
# vanishes, small enough to stay in L2 between the read, the two hashes and the write.
MAX_READ = 1 << 20
_WRONG_BASIS = "delta was made against a different basis (xxh3-128 differs)"


@dataclass(frozen=True, slots=True)
class PatchResult:
    """The rebuilt file's size and xxh3-128 (both checked against the delta's trailer)."""

    size: int
    xxh3_128: bytes


class Patcher:
    """Master side: encoded delta bytes in (any split), rebuilt file out through ``write``.

    ``read_at(offset, n)`` returns basis bytes (at most ``MAX_READ`` are asked for at once);
    what it returns is hashed and then passed to ``write`` as is, so a ``read_at`` that
    fills reused buffers gets them back in ``write`` and learns when they are free.
    Literals reach ``write`` as ``bytes``.

    ``basis_hash`` (the caller hashed the basis beforehand) is checked against the delta's
    header before anything is written. ``verify_basis=True`` checks the header's hash
    instead while patching: copies usually walk the basis in order, so hashing the bytes
    they read anyway saves a whole pass over the basis; ``finish`` hashes whatever the
    copies skipped and fails on a mismatch, after the output was written (so the caller
    must be able to discard it).
    """

    @overload
    def __init__(
        self,
        read_at: Callable[[int, int], bytes],
        write: Callable[[bytes], None],
        *,
        basis_size: int,
        basis_hash: bytes | None = None,
        verify_basis: bool = False,
    ) -> None: ...

    @overload
    def __init__(
        self,
        read_at: Callable[[int, int], memoryview],
        write: Callable[[bytes | memoryview], None],
        *,
        basis_size: int,
        basis_hash: bytes | None = None,
        verify_basis: bool = False,
    ) -> None: ...

    def __init__(
        self,
        read_at: Callable[[int, int], bytes] | Callable[[int, int], memoryview],
        write: Callable[[bytes], None] | Callable[[bytes | memoryview], None],
        *,
        basis_size: int,
        basis_hash: bytes | None = None,
        verify_basis: bool = False,
    ) -> None:
        self._read_at = read_at
        # The overloads pair a bytes-only write with a bytes-only read_at, and write only
        # ever gets literals (bytes) or what read_at returned.
        self._write: Callable[[Any], None] = write
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
        self._zstd: zstandard.ZstdDecompressor | None = None
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
            if len(buf) < HEADER.size:
                return 0
            self._check_header(*HEADER.unpack_from(buf))
            at = HEADER.size
        size = len(buf)
        while at < size:
            if self._trailer is not None:
                raise DeltaFormatError("data after the end of the delta")
            op = buf[at]
            if op == OP_COPY:
                if size - at < 1 + COPY.size:
                    break
                start, count = COPY.unpack_from(buf, at + 1)
                self._copy(start, count)
                at += 1 + COPY.size
            elif op == OP_LIT:
                if size - at < 1 + LIT.size:
                    break
                (length,) = LIT.unpack_from(buf, at + 1)
                if not 1 <= length <= MAX_LITERAL:
                    raise DeltaFormatError(f"literal length {length} outside 1..{MAX_LITERAL}")
                stop = at + 1 + LIT.size + length
                if size < stop:
                    break
                self._emit(bytes(buf[at + 1 + LIT.size : stop]))
                at = stop
            elif op == OP_ZLIT:
                if size - at < 1 + ZLIT.size:
                    break
                length, zlen = ZLIT.unpack_from(buf, at + 1)
                if not 1 <= length <= MAX_LITERAL:
                    raise DeltaFormatError(f"literal length {length} outside 1..{MAX_LITERAL}")
                if not 1 <= zlen <= MAX_ZLEN:
                    raise DeltaFormatError(f"compressed literal length {zlen} out of bounds")
                stop = at + 1 + ZLIT.size + zlen
                if size < stop:
                    break
                self._emit(self._inflate(buf[at + 1 + ZLIT.size : stop], length))
                at = stop
            elif op == OP_END:
                if size - at < 1 + END.size:
                    break
                self._trailer = END.unpack_from(buf, at + 1)
                at += 1 + END.size
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
        if version != VERSION:
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
        if self._zstd is None:
            self._zstd = zstandard.ZstdDecompressor()
        try:
            data: bytes = self._zstd.decompress(bytes(packed), max_output_size=length)
        except zstandard.ZstdError as exc:
            raise DeltaFormatError(f"corrupt compressed literal: {exc}") from exc
        if len(data) != length:
            raise DeltaFormatError(f"compressed literal holds {len(data)} bytes, not {length}")
        return data

    def _emit(self, data: bytes | memoryview) -> None:
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
            want = min(MAX_READ, stop - offset)
            data = self._read_basis(offset, want)
            # A copy that continues where the basis hash stands feeds it from the same read;
            # one that goes back is already hashed.
            if hasher is not None and offset + want > self._basis_hashed:
                skip = self._basis_hashed - offset
                hasher.update(memoryview(data)[skip:] if skip else data)
                self._basis_hashed = offset + want
            self._emit(data)
            offset += want

    def _read_basis(self, offset: int, want: int) -> bytes | memoryview:
        data = self._read_at(offset, want)
        if len(data) != want:
            raise IntegrityError(f"basis ended early: read {len(data)} of {want} at {offset}")
        return data

    def _hash_basis(self, stop: int) -> None:
        """Hash the basis up to ``stop`` from where the copies left it."""
        assert self._basis_hasher is not None
        while self._basis_hashed < stop:
            want = min(MAX_READ, stop - self._basis_hashed)
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
