"""The agent as a subprocess over its stdin/stdout: tests, and anything that spawns a command.

Reads and writes go through ``poll`` with the idle timeout, so a hung agent becomes a
``TransportTimeout`` instead of a hung master. The agent's stderr goes to an anonymous
temporary file (a pipe could fill and stall it); its last lines are quoted when the agent
goes away, since they usually say why.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import tempfile
from collections.abc import Sequence

from deltastage.errors import ConnectError, ConnectionClosed, TransportTimeout
from deltastage.transports.base import Transport

__all__ = ["PipeTransport"]

STDERR_TAIL_LINES = 5
STDERR_TAIL_BYTES = 4096
REAP_TIMEOUT = 5.0
EXIT_GRACE = 1.0  # after stdout ends, time for the agent to finish its stderr and exit


class PipeTransport(Transport):
    def __init__(self, argv: Sequence[str], *, idle_timeout: float = 300) -> None:
        super().__init__()
        self._argv = list(argv)
        self._idle_timeout = idle_timeout
        self._closed = False
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the agent
        try:
            self._proc = subprocess.Popen(
                self._argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                bufsize=0,
            )
        except OSError as exc:
            self._stderr.close()
            raise ConnectError(
                f"cannot start agent {self._argv[0]}: {exc.strerror or exc}"
            ) from None
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin = self._proc.stdin
        self._stdout = self._proc.stdout
        os.set_blocking(self._stdin.fileno(), False)

    def stderr_tail(self) -> str:
        """The last lines the agent wrote to stderr, one line, for error messages."""
        try:
            size = self._stderr.seek(0, os.SEEK_END)
            self._stderr.seek(max(0, size - STDERR_TAIL_BYTES))
            text = self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        lines = [line for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-STDERR_TAIL_LINES:])

    def _gone(self, what: str) -> ConnectionClosed:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(EXIT_GRACE)
        status = self._proc.poll()
        message = f"agent {what}"
        if status is not None:
            message += f" (exit status {status})"
        tail = self.stderr_tail()
        if tail:
            message += f": {tail}"
        return ConnectionClosed(message)

    def _wait(self, fd: int, event: int) -> bool:
        """Whether ``fd`` became ready (or failed) within the idle timeout."""
        # poll, not select: a master with many open files may hold descriptors above 1023
        poller = select.poll()
        poller.register(fd, event)
        return bool(poller.poll(self._idle_timeout * 1000))

    def send(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionClosed("agent pipe already closed")
        fd = self._stdin.fileno()
        view = memoryview(data)
        while view:
            if not self._wait(fd, select.POLLOUT):
                raise TransportTimeout(f"agent did not read for {self._idle_timeout:g}s")
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                continue
            except OSError:
                raise self._gone("closed its input") from None
            view = view[written:]
            self.bytes_sent += written

    def recv(self, max_bytes: int) -> bytes:
        if self._closed:
            raise ConnectionClosed("agent pipe already closed")
        fd = self._stdout.fileno()
        if not self._wait(fd, select.POLLIN):
            raise TransportTimeout(f"agent sent nothing for {self._idle_timeout:g}s")
        try:
            data = os.read(fd, max_bytes)
        except OSError as exc:
            raise ConnectionClosed(f"agent output: {exc.strerror or exc}") from None
        if not data:
            raise self._gone("closed the connection")
        self.bytes_received += len(data)
        return data

    def close(self) -> None:
        """Close the pipes, give the agent a moment to exit on end of input, then reap it."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._stdin.close()
        with contextlib.suppress(OSError):
            self._stdout.close()
        try:
            self._proc.wait(REAP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._stderr.close()
