"""The transport interface: a reliable, ordered, blocking byte pipe to one agent.

A transport knows nothing about frames or messages; ``master/session.py`` drives the protocol over
it. Every implementation counts the bytes it moved so the stage report can show what really
crossed the wire, and maps its library's exceptions to ``TransportError`` subclasses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType

__all__ = ["Transport"]


class Transport(ABC):
    """A duplex byte stream. Not thread-safe: one session drives one transport."""

    # Bytes a sender may leave unread at the other end without blocking, whatever the
    # other end is doing meanwhile: a pipe holds 64 KiB.
    unread_capacity = 48 << 10

    def __init__(self) -> None:
        self.bytes_sent = 0
        self.bytes_received = 0

    @property
    def wire_bytes(self) -> int:
        """Bytes that crossed the transport, both directions."""
        return self.bytes_sent + self.bytes_received

    @abstractmethod
    def send(self, data: bytes) -> None:
        """Send all of ``data``; raise ConnectionClosed / TransportTimeout on failure."""

    @abstractmethod
    def recv(self, max_bytes: int) -> bytes:
        """Return 1..max_bytes bytes, or b"" at end of stream; raise TransportTimeout when idle."""

    @abstractmethod
    def close(self) -> None:
        """Release the pipe; safe to call twice."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
