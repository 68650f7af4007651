"""Content in, compressed bytes out: a proven recipe applied to the decompressed content.

``Rebuilder`` is push-style and streaming: each ``write`` of content returns the compressed
bytes it completes, ``close`` the rest. ``MemberWriter`` is the same for one member; the
search proves a candidate recipe with it, so what is proven is exactly what is rebuilt.

A compressor's output may depend on how its input is cut into calls (zlib's level 0 cuts
its stored blocks where a call's input ends), so ``MemberWriter`` hands its compressor the
content in ``FEED``-byte pieces whatever pieces it is given: the proof and the rebuild then
make the same calls.
"""

from __future__ import annotations

import bz2
import struct
import zlib
from collections.abc import Iterator

from deltastage.errors import DeltaFormatError
from deltastage.transform.recipe import GzipMember, Member, Recipe

__all__ = ["FEED", "MemberWriter", "Rebuilder"]

FEED = 1 << 16
_TRAILER = struct.Struct("<II")


class MemberWriter:
    """One member: ``start`` (its header), ``write`` content, ``finish`` (flush, trailer)."""

    def __init__(self, member: Member) -> None:
        self._gzip = isinstance(member, GzipMember)
        if isinstance(member, GzipMember):
            p = member.params
            self._header = member.header
            self._compressor: zlib._Compress | bz2.BZ2Compressor = zlib.compressobj(
                p.level, zlib.DEFLATED, -p.wbits, p.mem_level, p.strategy
            )
        else:
            self._header = b""
            self._compressor = bz2.BZ2Compressor(member.level)
        self._crc = 0
        self._size = 0
        self._pending = bytearray()

    def start(self) -> bytes:
        return self._header

    def write(self, content: bytes | memoryview) -> bytes:
        if self._gzip:
            self._crc = zlib.crc32(content, self._crc)
            self._size += len(content)
        self._pending += content
        if len(self._pending) < FEED:
            return b""
        whole = len(self._pending) - len(self._pending) % FEED
        with memoryview(self._pending) as view:
            out = [self._compressor.compress(view[i : i + FEED]) for i in range(0, whole, FEED)]
        del self._pending[:whole]
        return b"".join(out)

    def finish(self) -> bytes:
        tail = self._compressor.compress(self._pending) + self._compressor.flush()
        self._pending.clear()
        if self._gzip:
            tail += _TRAILER.pack(self._crc, self._size & 0xFFFFFFFF)
        return tail


class Rebuilder:
    """The compressed file of ``recipe`` from its content, streamed.

    Raises ``DeltaFormatError`` when the content is longer or shorter than the recipe says.
    """

    def __init__(self, recipe: Recipe) -> None:
        self._members: Iterator[Member] = iter(recipe.members)
        self._writer: MemberWriter | None = None
        self._left = 0

    def write(self, content: bytes | memoryview) -> bytes:
        out: list[bytes] = []
        view = memoryview(content)
        pos = 0
        while pos < len(view):
            if self._writer is None or not self._left:
                self._next(out, "content longer than its recipe")
            assert self._writer is not None
            take = min(self._left, len(view) - pos)
            out.append(self._writer.write(view[pos : pos + take]))
            self._left -= take
            pos += take
        return b"".join(out)

    def close(self) -> bytes:
        out: list[bytes] = []
        if self._left:
            raise DeltaFormatError("content shorter than its recipe")
        while self._next(out, None):
            if self._left:
                raise DeltaFormatError("content shorter than its recipe")
        return b"".join(out)

    def _next(self, out: list[bytes], missing: str | None) -> bool:
        """Finish the current member, start the next; False (or ``missing`` raised) when
        the recipe has none left."""
        if self._writer is not None:
            out.append(self._writer.finish())
            self._writer = None
        member = next(self._members, None)
        if member is None:
            if missing is not None:
                raise DeltaFormatError(missing)
            return False
        self._writer = MemberWriter(member)
        self._left = member.size
        out.append(self._writer.start())
        return True
