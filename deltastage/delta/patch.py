"""The master's side of a delta: encoded delta bytes in (any split), rebuilt file out.

Every count and length is bounded before anything is buffered or read from the basis, and
the patcher hashes what it writes: a stream that passes all checks but rebuilds the wrong
bytes still fails on the trailer's hash (see ``wire`` for the format).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, overload

from deltastage.delta.params import (
    MAX_LITERAL,
    check_basis_count,
    check_block_size,
    count_blocks,
)
from deltastage.delta.wire import (
    COPY,
    DELTA_MAGIC,
    END,
    HEADER,
    LIT,
    MAX_ZERO_RUN,
    MAX_ZLEN,
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
from deltastage.errors import DeltaFormatError, IntegrityError
from deltastage.hashing import READ_CHUNK, Hasher, hash_zeros

__all__ = ["MAX_READ", "PatchResult", "Patcher"]

# Largest basis read (and so write) a copy is split into: big enough that per-call overhead
# vanishes, small enough to stay in L2 between the read, the two hashes and the write.
MAX_READ = 1 << 20
_WRONG_BASIS = "delta was made against a different basis (xxh3-128 differs)"


class PatchResult(NamedTuple):
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

    Several bases (a multi-basis delta) come as sequences: one ``read_at``, size and hash
    (or None) per basis, in the order of the signature the delta answers; everything above
    holds for each basis.

    A zero run (a hole of a sparse file) goes to ``zeros(count)`` when one is given, before
    it is hashed, so the caller can refuse it (a budget) or leave a hole instead of writing;
    without it, the zeros reach ``write`` as ``bytes``.
    """

    @overload
    def __init__(
        self,
        read_at: Callable[[int, int], bytes] | Sequence[Callable[[int, int], bytes]],
        write: Callable[[bytes], None],
        *,
        basis_size: int | Sequence[int],
        basis_hash: bytes | Sequence[bytes | None] | None = None,
        verify_basis: bool = False,
        zeros: Callable[[int], None] | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        read_at: Callable[[int, int], memoryview] | Sequence[Callable[[int, int], memoryview]],
        write: Callable[[bytes | memoryview], None],
        *,
        basis_size: int | Sequence[int],
        basis_hash: bytes | Sequence[bytes | None] | None = None,
        verify_basis: bool = False,
        zeros: Callable[[int], None] | None = None,
    ) -> None: ...

    def __init__(
        self,
        read_at: Callable[[int, int], bytes]
        | Callable[[int, int], memoryview]
        | Sequence[Callable[[int, int], bytes]]
        | Sequence[Callable[[int, int], memoryview]],
        write: Callable[[bytes], None] | Callable[[bytes | memoryview], None],
        *,
        basis_size: int | Sequence[int],
        basis_hash: bytes | Sequence[bytes | None] | None = None,
        verify_basis: bool = False,
        zeros: Callable[[int], None] | None = None,
    ) -> None:
        reads: list[Callable[[int, int], bytes | memoryview]] = (
            list(read_at) if isinstance(read_at, Sequence) else [read_at]
        )
        sizes = [basis_size] if isinstance(basis_size, int) else list(basis_size)
        hashes: list[bytes | None] = (
            [basis_hash]
            if basis_hash is None or isinstance(basis_hash, bytes)
            else list(basis_hash)
        )
        if basis_hash is None:
            hashes *= len(sizes)
        check_basis_count(len(sizes))
        if not len(reads) == len(sizes) == len(hashes):
            raise ValueError("one read_at, basis size and basis hash per basis")
        self._reads = reads
        # The overloads pair a bytes-only write with a bytes-only read_at, and write only
        # ever gets literals (bytes) or what read_at returned.
        self._write: Callable[[Any], None] = write
        self._zeros = zeros
        self._sizes = sizes
        self._hashes = hashes
        self._basis_hashers = [Hasher() for _ in sizes] if verify_basis else None
        self._basis_hashed = [0] * len(sizes)
        self._header_hashes: list[bytes] = []
        self._buf = bytearray()
        self._block_size = 0
        self._n_blocks: list[int] = []
        self._multi = False
        self._header_done = False
        self._trailer: tuple[int, bytes] | None = None
        self._size = 0
        self._hasher = Hasher()
        self._zstd: Any = None  # a zstandard.ZstdDecompressor once a literal needs one
        self._result: PatchResult | None = None

    def output_digest(self) -> bytes:
        """The xxh3-128 of the output written so far (as ``write`` has been given it)."""
        digest: bytes = self._hasher.digest()
        return digest

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
            at = self._parse_header()
            if not at:
                return 0
        size = len(buf)
        copy = MULTI_COPY if self._multi else COPY
        while at < size:
            if self._trailer is not None:
                raise DeltaFormatError("data after the end of the delta")
            op = buf[at]
            if op == OP_COPY:
                if size - at < 1 + copy.size:
                    break
                if self._multi:
                    basis, start, count = MULTI_COPY.unpack_from(buf, at + 1)
                else:
                    basis, (start, count) = 0, COPY.unpack_from(buf, at + 1)
                self._copy(basis, start, count)
                at += 1 + copy.size
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
            elif op == OP_ZERO:
                if size - at < 1 + ZERO.size:
                    break
                (length,) = ZERO.unpack_from(buf, at + 1)
                if not 1 <= length <= MAX_ZERO_RUN:
                    raise DeltaFormatError(f"zero run of {length} bytes outside 1..{MAX_ZERO_RUN}")
                self._zero_run(length)
                at += 1 + ZERO.size
            elif op == OP_END:
                if size - at < 1 + END.size:
                    break
                self._trailer = END.unpack_from(buf, at + 1)
                at += 1 + END.size
            else:
                raise DeltaFormatError(f"unknown delta op 0x{op:02x}")
        return at

    def _parse_header(self) -> int:
        """Bytes of the header once it is all in and checked, else 0."""
        buf = self._buf
        if len(buf) >= 4 and buf[:4] == MULTI_DELTA_MAGIC:
            if len(buf) < MULTI_HEADER.size:
                return 0
            _, version, n_bases, reserved, block_size = MULTI_HEADER.unpack_from(buf)
            self._check_version(version, reserved, block_size)
            check_basis_count(n_bases)
            end: int = MULTI_HEADER.size + n_bases * MULTI_BASIS.size
            if len(buf) < end:
                return 0
            bases = [
                MULTI_BASIS.unpack_from(buf, MULTI_HEADER.size + k * MULTI_BASIS.size)
                for k in range(n_bases)
            ]
            self._multi = True
        else:
            if len(buf) < HEADER.size:
                return 0
            magic, version, flags, reserved, block_size, size, digest = HEADER.unpack_from(buf)
            if magic != DELTA_MAGIC:
                raise DeltaFormatError("not a deltastage delta (bad magic)")
            self._check_version(version, flags | reserved, block_size)
            bases, end = [(size, digest)], HEADER.size
        if len(bases) != len(self._sizes):
            raise IntegrityError(
                f"delta was made against {len(bases)} bases, {len(self._sizes)} given"
            )
        for (basis_size, basis_hash), size, known in zip(
            bases, self._sizes, self._hashes, strict=True
        ):
            if basis_size != size:
                raise IntegrityError(
                    f"delta was made against a {basis_size}-byte basis, this basis has {size} bytes"
                )
            if known is not None and basis_hash != known:
                raise IntegrityError(_WRONG_BASIS)
        self._header_hashes = [basis_hash for _, basis_hash in bases]
        self._block_size = block_size
        self._n_blocks = [count_blocks(size, block_size) for size in self._sizes]
        self._header_done = True
        return end

    @staticmethod
    def _check_version(version: int, reserved: int, block_size: int) -> None:
        if version != VERSION:
            raise DeltaFormatError(f"unsupported delta version {version}")
        if reserved:
            raise DeltaFormatError("reserved delta header fields are not zero")
        check_block_size(block_size)

    def _inflate(self, packed: bytearray, length: int) -> bytes:
        # Loaded only for a delta that carries compressed literals: a patch whose literals
        # did not compress (or that has none) starts without it.
        import zstandard

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

    def _zero_run(self, count: int) -> None:
        if self._zeros is None:
            while count:
                step = min(count, READ_CHUNK)
                self._emit(bytes(step))
                count -= step
            return
        self._zeros(count)
        hash_zeros(self._hasher, count)
        self._size += count

    def _copy(self, basis: int, start: int, count: int) -> None:
        if count == 0:
            raise DeltaFormatError("copy of zero blocks")
        if basis >= len(self._sizes):
            raise DeltaFormatError(f"copy from basis {basis} of {len(self._sizes)}")
        n_blocks = self._n_blocks[basis]
        if start >= n_blocks or count > n_blocks - start:
            raise DeltaFormatError(
                f"copy of blocks {start}..{start + count - 1} past the basis' {n_blocks}"
            )
        offset = start * self._block_size
        stop = min((start + count) * self._block_size, self._sizes[basis])
        hasher = None if self._basis_hashers is None else self._basis_hashers[basis]
        hashed = self._basis_hashed
        if hasher is not None and offset > hashed[basis]:
            self._hash_basis(basis, offset)
        while offset < stop:
            want = min(MAX_READ, stop - offset)
            data = self._read_basis(basis, offset, want)
            # A copy that continues where the basis hash stands feeds it from the same read;
            # one that goes back is already hashed.
            if hasher is not None and offset + want > hashed[basis]:
                skip = hashed[basis] - offset
                hasher.update(memoryview(data)[skip:] if skip else data)
                hashed[basis] = offset + want
            self._emit(data)
            offset += want

    def _read_basis(self, basis: int, offset: int, want: int) -> bytes | memoryview:
        data = self._reads[basis](offset, want)
        if len(data) != want:
            raise IntegrityError(f"basis ended early: read {len(data)} of {want} at {offset}")
        return data

    def _hash_basis(self, basis: int, stop: int) -> None:
        """Hash basis ``basis`` up to ``stop`` from where the copies left it."""
        assert self._basis_hashers is not None
        hasher, hashed = self._basis_hashers[basis], self._basis_hashed
        while hashed[basis] < stop:
            want = min(MAX_READ, stop - hashed[basis])
            hasher.update(self._read_basis(basis, hashed[basis], want))
            hashed[basis] += want

    def finish(self) -> PatchResult:
        if self._result is not None:
            return self._result
        if self._trailer is None or self._buf:
            raise DeltaFormatError("delta is truncated (no end marker)")
        if self._basis_hashers is not None:
            for basis, hasher in enumerate(self._basis_hashers):
                self._hash_basis(basis, self._sizes[basis])
                if hasher.digest() != self._header_hashes[basis]:
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
