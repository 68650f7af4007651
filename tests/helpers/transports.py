"""The byte pipes tests put between a master and an agent, written once.

- ``Relay`` passes a real transport's bytes through; ``CuttingTransport`` (drops the link
  after a budget of received bytes) and ``TurnCounter`` (counts the master's turns) are relays.
- ``Replay`` plays recorded bytes back in the pieces a test chooses, whatever is sent.
- ``AgentThread`` is the real agent on a socketpair in a thread, as a local peer runs it,
  with the encoder and indicators a test picks.
- ``ScriptedAgent`` answers each master message in memory with what a script returns.
- ``SessionProxy`` is a real session with some of its methods replaced by a test.
- ``answer_bytes`` turns a master's bytes into events and a responder's answers into bytes
  (events through the agent's ``Connection``, or raw bytes no honest agent would send); the
  scripted and the hostile agent (``hostile_agent.py``) both answer through it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from deltastage.agent import serve
from deltastage.delta.codec import DeltaEncoder
from deltastage.errors import ConnectionClosed, TransportTimeout
from deltastage.master.session import PeerSession
from deltastage.protocol import DEFAULT_INDICATOR, NEED_DATA, Connection, Event, Role
from deltastage.transports.base import Transport

__all__ = [
    "AgentInThread",
    "AgentThread",
    "Answer",
    "CuttingTransport",
    "Relay",
    "Replay",
    "ScriptedAgent",
    "SessionProxy",
    "TurnCounter",
    "answer_bytes",
]

# An agent's answer: an event, or raw bytes sent as they are.
Answer = Event | bytes


def answer_bytes(
    conn: Connection, data: bytes, respond: Callable[[Event], Iterable[Answer]]
) -> Iterator[bytes]:
    """Feed the master's ``data`` to the agent's ``conn``; for each whole event, the bytes of
    what ``respond`` answers, one answer at a time (an endless answer streams)."""
    conn.receive_data(data)
    while (event := conn.next_event()) is not NEED_DATA:
        assert isinstance(event, Event)
        for answer in respond(event):
            yield answer if isinstance(answer, bytes) else conn.send(answer)


class Relay(Transport):
    """Passes every byte through to ``inner``, counting them."""

    def __init__(self, inner: Transport) -> None:
        super().__init__()
        self.inner = inner

    def send(self, data: bytes) -> None:
        self.inner.send(data)
        self.bytes_sent += len(data)

    def recv(self, max_bytes: int) -> bytes:
        data = self.inner.recv(max_bytes)
        self.bytes_received += len(data)
        return data

    def close(self) -> None:
        self.inner.close()


class CuttingTransport(Relay):
    """Passes bytes through until ``budget`` bytes were received, then drops the link
    (``None``: never)."""

    def __init__(self, inner: Transport, budget: int | None) -> None:
        super().__init__(inner)
        self.budget = budget

    def recv(self, max_bytes: int) -> bytes:
        if self.budget is None:
            return super().recv(max_bytes)
        if self.budget <= 0:
            self.inner.close()
            raise ConnectionClosed("test: link cut")
        data = super().recv(min(max_bytes, self.budget))
        self.budget -= len(data)
        return data


class TurnCounter(Relay):
    """Counts the master's turns: each wait for the agent after having sent something."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.turns = 0
        self._sent = False

    def send(self, data: bytes) -> None:
        self._sent = True
        super().send(data)

    def recv(self, max_bytes: int) -> bytes:
        if self._sent:
            self.turns += 1
            self._sent = False
        return super().recv(max_bytes)


class Replay(Transport):
    """Plays ``data`` back in the sizes ``pieces`` lists (then as asked), whatever is sent;
    keeps what was sent, and ``log`` the order of sends and receives."""

    def __init__(self, data: bytes = b"", pieces: Sequence[int] = ()) -> None:
        super().__init__()
        self.data = data
        self.pieces = list(pieces)
        self.sent: list[bytes] = []
        self.log: list[str] = []

    def feed(self, data: bytes) -> None:
        """More bytes to play back."""
        self.data += data

    def send(self, data: bytes) -> None:
        self.log.append("send")
        self.sent.append(data)
        self.bytes_sent += len(data)

    def recv(self, max_bytes: int) -> bytes:
        self.log.append("recv")
        size = max(1, min(self.pieces.pop(0) if self.pieces else max_bytes, max_bytes))
        chunk, self.data = self.data[:size], self.data[size:]
        self.bytes_received += len(chunk)
        return chunk

    def close(self) -> None:
        self.data = b""


class AgentInThread(Transport):
    """The master's end of a ``socketpair`` whose other end ``serve_end`` answers in a
    thread of this process, which a test can watch (and whose agent it can replace)."""

    label = "in-process agent"
    join_timeout = 10.0

    def __init__(self, *, idle_timeout: float | None = 300) -> None:
        super().__init__()
        self._sock, agent_sock = socket.socketpair()
        self._sock.settimeout(idle_timeout)
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, args=(agent_sock,), name="deltastage-agent", daemon=True
        )
        self._thread.start()

    @abstractmethod
    def serve_end(self, sock: socket.socket) -> None:
        """Answer the master on ``sock`` until it hangs up."""

    def _run(self, sock: socket.socket) -> None:
        try:
            self.serve_end(sock)
        finally:
            # the master sees end of stream as soon as the agent is done
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def send(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionClosed(f"{self.label}: transport closed")
        try:
            self._sock.sendall(data)
        except TimeoutError:
            raise TransportTimeout(f"{self.label}: not reading (idle timeout)") from None
        except OSError as exc:
            raise ConnectionClosed(f"{self.label}: {exc.strerror or exc}") from None
        self.bytes_sent += len(data)

    def recv(self, max_bytes: int) -> bytes:
        if self._closed:
            raise ConnectionClosed(f"{self.label}: transport closed")
        try:
            data = self._sock.recv(max_bytes)
        except TimeoutError:
            raise TransportTimeout(f"{self.label}: no answer (idle timeout)") from None
        except OSError as exc:
            raise ConnectionClosed(f"{self.label}: {exc.strerror or exc}") from None
        self.bytes_received += len(data)
        return data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # shutdown wakes an agent blocked in recv or sendall, so the thread ends promptly
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(self.join_timeout)

    @property
    def agent_alive(self) -> bool:
        return self._thread.is_alive()

    def join_agent(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the agent to end; whether it did."""
        self._thread.join(timeout)
        return not self.agent_alive


class AgentThread(AgentInThread):
    """The real agent serving ``roots``, with the test's ``encoder`` and ``indicators``."""

    label = "agent thread"

    def __init__(
        self,
        roots: Sequence[str | Path],
        *,
        encoder: type[DeltaEncoder] = DeltaEncoder,
        indicators: Sequence[str] = (DEFAULT_INDICATOR,),
        idle_timeout: float = 300,
    ) -> None:
        self.roots = list(roots)
        self.encoder = encoder
        self.indicators = tuple(indicators)
        super().__init__(idle_timeout=idle_timeout)

    def serve_end(self, sock: socket.socket) -> None:
        serve(self.roots, sock.recv, sock.sendall, indicators=self.indicators, encoder=self.encoder)


class ScriptedAgent(Transport):
    """Answers each master message with whatever ``script`` returns (events or raw bytes)."""

    def __init__(self, script: Callable[[Event], Iterable[Answer]]) -> None:
        super().__init__()
        self.script = script
        self.conn = Connection(Role.AGENT)
        self.outbox = bytearray()
        self.closed = False
        self.seen: list[Event] = []

    def _respond(self, event: Event) -> Iterable[Answer]:
        self.seen.append(event)
        return self.script(event)

    def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionClosed("closed")
        self.bytes_sent += len(data)
        for answer in answer_bytes(self.conn, data, self._respond):
            self.outbox += answer

    def recv(self, max_bytes: int) -> bytes:
        if self.closed:
            raise ConnectionClosed("closed")
        data = bytes(self.outbox[:max_bytes])
        del self.outbox[:max_bytes]
        self.bytes_received += len(data)
        return data

    def close(self) -> None:
        self.closed = True


class SessionProxy:
    """A real session with some methods replaced: what a subclass does not define is
    ``inner``'s."""

    def __init__(self, inner: PeerSession) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def serve_local_peers_in_this_process(monkeypatch: Any) -> None:
    """Make local peers' agents threads of the test's process (``AgentThread``), so what
    the test patches on the agent's side is what the agent runs."""
    monkeypatch.setattr("deltastage.transports.local.LocalTransport", AgentThread)
