"""The agent's end of the byte pipe, and the two ways a request can fail.

``Conversation`` drives the agent's ``Connection`` over a ``Channel``; a failure of the pipe
itself becomes ``MasterGone`` (nothing more can be said). While the agent waits for a
RefineReply, the requests the master sent ahead of it are read and set aside, to be answered
next. ``Refusal`` is a request answered with an ``Error``; the conversation goes on.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable

from deltastage.errors import LocalProtocolError, RemoteProtocolError
from deltastage.protocol import Connection, Error, ErrorCode, Event, RefineReply, Role, SigData
from deltastage.protocol.channel import Channel
from deltastage.protocol.events import MAX_REASON

__all__ = ["MAX_SET_ASIDE_BYTES", "Conversation", "MasterGone", "Refusal", "clip_reason"]

MAX_SET_ASIDE_BYTES = 16 << 20  # signature bytes of requests read ahead (a master sends 1 MiB)


class Refusal(Exception):
    """A request that is answered with an Error message; the conversation goes on."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    @classmethod
    def io(cls, what: str, exc: OSError) -> Refusal:
        """An OS error, with its cause: permission denied (``denied``: fix the
        permissions, not the data) or another I/O error (``io``)."""
        if isinstance(exc, PermissionError):
            return cls(ErrorCode.DENIED, f"{what}: permission denied")
        return cls(ErrorCode.IO, f"{what}: {exc.strerror or exc}")


class MasterGone(Exception):
    """The byte pipe to the master failed; nothing more can be said."""


def clip_reason(text: str) -> str:
    """Clip a reason to what an Error message may carry, on a character boundary."""
    data = text.encode("utf-8", "surrogateescape")
    if len(data) <= MAX_REASON:
        return text
    return data[: MAX_REASON - 3].decode("utf-8", "ignore") + "..."


class Conversation:
    """The master's requests in, the agent's answers out (batched, see ``Channel``)."""

    def __init__(self, read: Callable[[int], bytes], write: Callable[[bytes], None]) -> None:
        def read_master(n: int) -> bytes:
            try:
                return read(n)
            except OSError as exc:
                raise MasterGone(str(exc)) from None

        def write_master(data: bytes) -> None:
            try:
                write(data)
            except OSError as exc:
                raise MasterGone(str(exc)) from None

        self.connection = Connection(Role.AGENT)
        self._channel = Channel(self.connection, read_master, write_master)
        self._set_aside: deque[Event] = deque()
        self._set_aside_bytes = 0

    def send(self, event: Event) -> None:
        self._channel.send(event)

    def flush(self) -> None:
        self._channel.flush()

    def next_event(self) -> Event | None:
        """The master's next message, or None when it closed the stream."""
        if self._set_aside:
            event = self._set_aside.popleft()
            if not self._set_aside:
                self._set_aside_bytes = 0
            return event
        return self._channel.receive()

    def refine_reply(self) -> RefineReply:
        """The master's RefineReply. The requests it sent ahead before the reply are read
        and set aside for ``next_event``."""
        while True:
            event = self._channel.receive()
            if event is None:
                raise MasterGone("stream ended inside a refinement")
            if isinstance(event, RefineReply):
                return event
            self._set_aside.append(event)
            self._set_aside_bytes += len(event.data) if isinstance(event, SigData) else 1
            if self._set_aside_bytes > MAX_SET_ASIDE_BYTES:
                raise RemoteProtocolError(
                    f"master sent more than {MAX_SET_ASIDE_BYTES} bytes of requests ahead"
                )

    def last_word(self, reason: str) -> None:
        """A protocol Error, the conversation's end, sent if the pipe still takes it."""
        with contextlib.suppress(MasterGone, LocalProtocolError):
            self.send(Error(ErrorCode.PROTOCOL, clip_reason(reason)))
        with contextlib.suppress(MasterGone):
            self.flush()
