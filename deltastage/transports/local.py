"""The in-process agent: a local peer takes the same protocol path as a remote one.

``agent.serve`` runs in a daemon thread on one end of a ``socketpair``; the master's
session talks to the other end. Local peers therefore get the same path checks, the same
verification and the same byte accounting as SSH peers.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

from deltastage.agent import serve
from deltastage.errors import ConnectionClosed, TransportTimeout
from deltastage.transports.base import Transport

__all__ = ["LocalTransport"]

JOIN_TIMEOUT = 10.0


class LocalTransport(Transport):
    def __init__(self, roots: Sequence[str | Path], *, idle_timeout: float | None = 300) -> None:
        super().__init__()
        self._sock, agent_sock = socket.socketpair()
        self._sock.settimeout(idle_timeout)
        self._agent_sock = agent_sock
        self._closed = False
        self._thread = threading.Thread(
            target=self._run_agent, args=(list(roots),), name="deltastage-agent", daemon=True
        )
        self._thread.start()

    def _run_agent(self, roots: list[str | Path]) -> None:
        sock = self._agent_sock

        def write(data: bytes) -> None:
            sock.sendall(data)

        try:
            serve(roots, sock.recv, write)
        finally:
            # the master sees end of stream as soon as the agent is done
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def send(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionClosed("local agent: transport closed")
        try:
            self._sock.sendall(data)
        except TimeoutError:
            raise TransportTimeout("local agent: not reading (idle timeout)") from None
        except OSError as exc:
            raise ConnectionClosed(f"local agent: {exc.strerror or exc}") from None
        self.bytes_sent += len(data)

    def recv(self, max_bytes: int) -> bytes:
        if self._closed:
            raise ConnectionClosed("local agent: transport closed")
        try:
            data = self._sock.recv(max_bytes)
        except TimeoutError:
            raise TransportTimeout("local agent: no answer (idle timeout)") from None
        except OSError as exc:
            raise ConnectionClosed(f"local agent: {exc.strerror or exc}") from None
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
        if self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT)
