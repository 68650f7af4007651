"""The in-process agent: a local peer takes the same protocol path as a remote one.

``agent.serve`` runs in a daemon thread on one end of a ``socketpair``; the master's
session talks to the other end. Local peers therefore get the same path checks, the same
verification and the same byte accounting as SSH peers.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

from deltastage.agent import serve
from deltastage.errors import ConnectionClosed, TransportTimeout
from deltastage.protocol import DEFAULT_INDICATOR
from deltastage.transports.base import Transport

__all__ = ["InProcessTransport", "LocalTransport"]

JOIN_TIMEOUT = 10.0


class InProcessTransport(Transport):
    """The master's end of a ``socketpair`` whose other end ``serve_end`` answers in a thread.

    Subclasses say who answers; this class owns the pipe, the timeouts and the byte count.
    """

    label = "in-process agent"

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
        self._thread.join(JOIN_TIMEOUT)


class LocalTransport(InProcessTransport):
    """A local peer: the real agent, in-process, on the same protocol path as SSH peers."""

    label = "local agent"

    def __init__(
        self,
        roots: Sequence[str | Path],
        *,
        indicators: Sequence[str] = (DEFAULT_INDICATOR,),
        idle_timeout: float | None = 300,
    ) -> None:
        self._roots = list(roots)
        self._indicators = tuple(indicators)
        super().__init__(idle_timeout=idle_timeout)

    def serve_end(self, sock: socket.socket) -> None:
        def write(data: bytes) -> None:
            sock.sendall(data)

        serve(self._roots, sock.recv, write, indicators=self._indicators)
