"""The blocking driver of a ``Connection``, written once for both ends of a conversation.

A ``Channel`` gathers the bytes of the events sent and writes them in batches: on a WAN link
every write is an SSH packet and a TCP segment of its own, so a small file's Fetch, SigData
and SigEnd, or a delta's last DeltaData and its DeltaEnd, should travel together. Whatever
is gathered is written before the channel waits for the other end, so neither end can wait
for an answer to a request still sitting in its own buffer.

The channel does no I/O itself: ``read(n)`` (up to n bytes, b"" at the end of the stream) and
``write(data)`` (all of it) are the caller's. Whatever they raise, and the connection's
protocol errors, reach the caller unchanged: what a failure means (a closed session, a
master gone) is the caller's to say.
"""

from __future__ import annotations

from collections.abc import Callable

from deltastage.protocol.connection import EOF, NEED_DATA, Connection
from deltastage.protocol.events import Event

__all__ = ["READ_SIZE", "WRITE_BATCH", "Channel"]

WRITE_BATCH = 64 << 10  # bytes gathered before a write, unless a wait comes first
READ_SIZE = 64 << 10  # bytes asked of ``read`` at a time


class Channel:
    """A ``Connection`` driven over a blocking ``read``/``write`` pair; not thread-safe."""

    def __init__(
        self,
        connection: Connection,
        read: Callable[[int], bytes],
        write: Callable[[bytes], None],
        *,
        batch: int = WRITE_BATCH,
        read_size: int = READ_SIZE,
    ) -> None:
        self.connection = connection
        self._read = read
        self._write = write
        self._batch = batch
        self._read_size = read_size
        self._out = bytearray()

    def send(self, event: Event) -> int:
        """Encode ``event`` (the state table may refuse it) and gather its bytes, writing
        the batch once it holds ``batch`` bytes; return how many bytes the event took."""
        data = self.connection.send(event)
        self._out += data
        if len(self._out) >= self._batch:
            self.flush()
        return len(data)

    def flush(self) -> None:
        """Write everything gathered so far."""
        if self._out:
            data, self._out = bytes(self._out), bytearray()
            self._write(data)

    def receive(self) -> Event | None:
        """The other end's next event, or None when it closed the stream cleanly.

        An event already buffered is returned without writing anything; the gathered bytes
        are written only when the channel has to wait for more input.
        """
        while True:
            event = self.connection.next_event()
            if event is NEED_DATA:
                self.flush()
                self.connection.receive_data(self._read(self._read_size))
            elif event is EOF:
                return None
            else:
                assert isinstance(event, Event)
                return event
