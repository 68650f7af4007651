"""A gzip or bzip2 file's decompressed content, streamed and bounded.

``inflate`` reads the file through ``read_at(offset, n)`` and yields its content in pieces
of at most ``OUT_CHUNK`` bytes, every member (gzip) or stream (bzip2) one after the other,
as ``gzip``/``bz2`` would give it whole. It never yields more than ``bound`` bytes in all:
one byte more and it raises ``ContentTooBig``, so a bomb costs at most ``bound`` bytes of
work and one piece of memory. A stream that is corrupt, truncated or followed by anything
but another member raises ``DeltaFormatError``.
"""

from __future__ import annotations

import bz2
import zlib
from collections.abc import Callable, Iterator

from deltastage.errors import DeltaFormatError
from deltastage.transform.gzipheader import MAX_HEADER_SIZE, gzip_header_length
from deltastage.transform.recipe import Kind

__all__ = ["IN_CHUNK", "OUT_CHUNK", "ContentTooBig", "Inflater", "inflate"]

ReadAt = Callable[[int, int], bytes]

IN_CHUNK = 1 << 16
OUT_CHUNK = 1 << 20
_GZIP_TRAILER = 8


class ContentTooBig(DeltaFormatError):
    """The content is longer than the bound it was read with."""


class Inflater:
    """zlib's (raw deflate) and bz2's decompressors behind one bounded-output interface;
    ``decompress`` raises ``DeltaFormatError`` for a corrupt stream."""

    def __init__(self, kind: Kind) -> None:
        self._d: zlib._Decompress | bz2.BZ2Decompressor = (
            zlib.decompressobj(-15) if kind == Kind.GZIP else bz2.BZ2Decompressor()
        )

    @property
    def needs_input(self) -> bool:
        if isinstance(self._d, bz2.BZ2Decompressor):
            return self._d.needs_input
        return not self._d.unconsumed_tail

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def decompress(self, data: bytes) -> bytes:
        try:
            if isinstance(self._d, bz2.BZ2Decompressor):
                return self._d.decompress(data, OUT_CHUNK)
            return self._d.decompress(data or self._d.unconsumed_tail, OUT_CHUNK)
        except (zlib.error, OSError, EOFError, ValueError) as exc:
            raise DeltaFormatError(f"corrupt compressed stream: {exc}") from None


def inflate(read_at: ReadAt, size: int, kind: Kind, bound: int) -> Iterator[bytes]:
    """The content of the ``size``-byte ``kind`` file behind ``read_at``, in pieces."""
    offset = 0
    produced = 0
    while offset < size or not offset:
        if kind == Kind.GZIP:
            try:
                header = read_at(offset, MAX_HEADER_SIZE)
                offset += gzip_header_length(header)
            except DeltaFormatError as exc:
                raise DeltaFormatError(f"gzip member at {offset}: {exc}") from None
        inflater = Inflater(kind)
        crc = 0
        length = 0
        while not inflater.eof:
            data = b""
            if inflater.needs_input:
                data = read_at(offset, min(IN_CHUNK, max(size - offset, 0)))
                offset += len(data)
            out = inflater.decompress(data)
            if not data and not out and inflater.needs_input:
                raise DeltaFormatError("the file ends inside a compressed stream")
            produced += len(out)
            if produced > bound:
                raise ContentTooBig(f"content longer than {bound} bytes")
            if kind == Kind.GZIP:
                crc = zlib.crc32(out, crc)
                length += len(out)
            if out:
                yield out
        offset -= len(inflater.unused_data)
        if kind == Kind.GZIP:
            trailer = read_at(offset, _GZIP_TRAILER)
            expected = crc.to_bytes(4, "little") + (length & 0xFFFFFFFF).to_bytes(4, "little")
            if trailer != expected:
                raise DeltaFormatError("gzip member's CRC or length is wrong, or cut short")
            offset += _GZIP_TRAILER
        if offset > size:
            raise DeltaFormatError("the file ends inside a compressed stream")
