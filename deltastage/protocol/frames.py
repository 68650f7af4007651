"""Framing: a type byte, a big-endian u32 payload length, then the payload.

``FrameDecoder`` is a partial-read buffer: feed it bytes split anywhere (one at a time
works) and pull whole frames out. It rejects an unknown type or an oversize length as
soon as the five header bytes are in, before buffering the payload, so a hostile peer
cannot make us hold more than one maximum-size frame.
"""

from __future__ import annotations

import struct
from collections.abc import Container

from deltastage.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["HEADER_SIZE", "MAX_FRAME", "FrameDecoder", "encode_frame"]

_HEADER = struct.Struct(">BI")
HEADER_SIZE = _HEADER.size
MAX_FRAME = 1 << 20  # payload bytes


def encode_frame(frame_type: int, payload: bytes, max_payload: int = MAX_FRAME) -> bytes:
    if not 0 <= frame_type <= 0xFF:
        raise LocalProtocolError(f"frame type out of range: {frame_type}")
    if len(payload) > max_payload:
        raise LocalProtocolError(
            f"frame too large to send: {len(payload)} bytes (limit {max_payload})"
        )
    return _HEADER.pack(frame_type, len(payload)) + payload


class FrameDecoder:
    def __init__(self, known_types: Container[int], max_payload: int = MAX_FRAME) -> None:
        self._known = known_types
        self._max = max_payload
        self._buffer = bytearray()
        self._header: tuple[int, int] | None = None
        self._seen_frame = False

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buffer)

    def next_frame(self) -> tuple[int, bytes] | None:
        """The next whole frame as (type, payload), or None until more bytes arrive."""
        if self._header is None:
            if len(self._buffer) < HEADER_SIZE:
                return None
            frame_type, length = _HEADER.unpack_from(self._buffer)
            if frame_type not in self._known:
                raise RemoteProtocolError(self._describe_bad_type(frame_type))
            if length > self._max:
                raise RemoteProtocolError(f"frame too large: {length} bytes (limit {self._max})")
            del self._buffer[:HEADER_SIZE]
            self._header = (frame_type, length)
        frame_type, length = self._header
        if len(self._buffer) < length:
            return None
        payload = bytes(self._buffer[:length])
        del self._buffer[:length]
        self._header = None
        self._seen_frame = True
        return frame_type, payload

    def _describe_bad_type(self, frame_type: int) -> str:
        message = f"unknown frame type 0x{frame_type:02x}"
        if not self._seen_frame:
            # the first bytes are most often a login banner or a shell error, not a frame
            start = bytes(self._buffer[:40])
            message += f" at stream start (got {start!r}); not a deltastage peer?"
        return message
