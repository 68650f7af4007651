"""Fixed-width, big-endian field codec for message payloads.

``Reader`` turns every short read, overlong field and leftover byte into a
``RemoteProtocolError`` so that malformed input never surfaces as ``struct.error``
or ``IndexError``; ``Writer`` raises ``LocalProtocolError`` for values we must not send.
"""

from __future__ import annotations

import struct
from typing import Any

from deltastage.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["Reader", "Writer"]

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")


class Writer:
    """Append fields to a payload; every value is range-checked before it is packed."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def _pack(self, fmt: struct.Struct, value: int, what: str) -> None:
        try:
            self._parts.append(fmt.pack(value))
        except struct.error:
            raise LocalProtocolError(f"{what} out of range: {value}") from None

    def u8(self, value: int, what: str = "u8") -> None:
        self._pack(_U8, value, what)

    def u16(self, value: int, what: str = "u16") -> None:
        self._pack(_U16, value, what)

    def u32(self, value: int, what: str = "u32") -> None:
        self._pack(_U32, value, what)

    def u64(self, value: int, what: str = "u64") -> None:
        self._pack(_U64, value, what)

    def i64(self, value: int, what: str = "i64") -> None:
        self._pack(_I64, value, what)

    def raw(self, data: bytes) -> None:
        self._parts.append(data)

    def blob(self, data: bytes, limit: int, what: str) -> None:
        """A u32 length prefix, then ``data``."""
        if len(data) > limit:
            raise LocalProtocolError(f"{what} too long: {len(data)} bytes (limit {limit})")
        self.u32(len(data), what)
        self._parts.append(data)

    def text(self, value: str, limit: int, what: str) -> None:
        # surrogateescape keeps non-UTF-8 file names (bytes on POSIX) lossless on the wire
        try:
            data = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise LocalProtocolError(f"{what} is not encodable text: {value!r}") from None
        self.blob(data, limit, what)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Consume fields from one payload; ``finish`` insists nothing is left over."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data if type(data) is bytes else bytes(data)
        self._pos = 0
        self._what = what

    def _take(self, n: int, field: str) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise RemoteProtocolError(f"{self._what}: truncated at {field}")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def fields(self, fmt: struct.Struct, field: str) -> tuple[Any, ...]:
        """Several fixed-size fields at once, as ``fmt`` unpacks them."""
        start, end = self._pos, self._pos + fmt.size
        if end > len(self._data):
            raise RemoteProtocolError(f"{self._what}: truncated at {field}")
        self._pos = end
        return fmt.unpack_from(self._data, start)

    def _unpack(self, fmt: struct.Struct, field: str) -> int:
        value: int = self.fields(fmt, field)[0]
        return value

    def u8(self, field: str) -> int:
        return self._unpack(_U8, field)

    def u16(self, field: str) -> int:
        return self._unpack(_U16, field)

    def u32(self, field: str) -> int:
        return self._unpack(_U32, field)

    def u64(self, field: str) -> int:
        return self._unpack(_U64, field)

    def i64(self, field: str) -> int:
        return self._unpack(_I64, field)

    def raw(self, n: int, field: str) -> bytes:
        return self._take(n, field)

    def blob(self, limit: int, field: str) -> bytes:
        length = self.u32(field)
        if length > limit:
            raise RemoteProtocolError(
                f"{self._what}: {field} too long: {length} bytes (limit {limit})"
            )
        return self._take(length, field)

    def text(self, limit: int, field: str) -> str:
        # surrogateescape accepts any byte string, so a name is never refused for its encoding
        return self.blob(limit, field).decode("utf-8", "surrogateescape")

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def finish(self) -> None:
        left = len(self._data) - self._pos
        if left:
            raise RemoteProtocolError(f"{self._what}: {left} unexpected trailing bytes")
