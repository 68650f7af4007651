"""SSH transport: a paramiko exec channel to ``deltastage agent`` on a peer.

The only module that imports paramiko and sshtunnel. Security posture, on purpose:

- key authentication only (an explicit identity file, else the ssh-agent and default keys);
- the server's host key must already be in known_hosts (the given file, else
  ``~/.ssh/known_hosts``); unknown or mismatched keys are refused and known_hosts is never
  written, so a first contact cannot silently trust an impostor;
- the same rules hold for a bastion (``gateway``): sshtunnel forwards a local port on
  127.0.0.1 to ``host:port`` through the bastion, and the peer's SSH session runs end to end
  over that forward, host key still checked under the peer's own name.

Every paramiko, socket and sshtunnel failure leaves as a one-line ``ConnectError``,
``ConnectionClosed`` or ``TransportTimeout`` naming ``ssh://user@host:port``; messages never
carry key material, passphrases or the environment.
"""

from __future__ import annotations

import contextlib
import logging
import select
import shlex
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paramiko
from sshtunnel import BaseSSHTunnelForwarderError, SSHTunnelForwarder

from deltastage.errors import ConfigError, ConnectError, ConnectionClosed, TransportTimeout
from deltastage.models import Gateway
from deltastage.transports.base import Transport

__all__ = ["SSHTransport", "known_hosts_name"]

# Keep library logs out of the user's terminal unless the application configures logging:
# without a handler anywhere, Python's last-resort handler would print paramiko's transport
# thread errors (tracebacks included) to stderr.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
_TUNNEL_LOG = logging.getLogger("deltastage.transports.ssh.tunnel")
_TUNNEL_LOG.addHandler(logging.NullHandler())

_BOX_CHARS = " \t\r│┃║╭╮╰╯─━═┌┐└┘┏┓┗┛╔╗╚╝"
STDERR_KEEP = 8192  # bytes of the agent's stderr kept for error messages
EXIT_STATUS_WAIT = 5.0  # seconds to wait for the exit status once stdout hit EOF

# Preference when a bastion has several keys in known_hosts: sshtunnel can pin only one.
_HOST_KEY_PREFERENCE = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)


def known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH files a host key under: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


class _UnknownHostKey(paramiko.SSHException):  # type: ignore[misc]
    pass


class _RefuseUnknownHost(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    """RejectPolicy with a distinct exception type, so the message does not rely on wording."""

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        raise _UnknownHostKey(hostname)


class _Forwarder(SSHTunnelForwarder):  # type: ignore[misc]
    """sshtunnel 0.5.1 with two narrow adjustments, both checked against paramiko 5.1.

    sshtunnel already copes with paramiko >= 4 (it guards every ``DSSKey`` use with
    ``hasattr``), so no DSS patch is needed. What it lacks:
    - a connect timeout: it hands paramiko a ``(host, port)`` tuple, whose TCP connect has
      none, so a dead bastion would hang for the OS timeout;
    - a failure cause: ``start()`` logs why the gateway failed and raises a generic error, so
      the exception is recorded here to map it to a precise one-line message.
    """

    def __init__(self, *args: Any, connect_timeout: float, keepalive: float, **kwargs: Any):
        self.connect_timeout = connect_timeout
        self.failure: BaseException | None = None
        super().__init__(*args, set_keepalive=keepalive, **kwargs)

    def _get_transport(self) -> Any:
        sock = socket.create_connection((self.ssh_host, self.ssh_port), self.connect_timeout)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = self.connect_timeout
        transport.auth_timeout = self.connect_timeout
        if self.set_keepalive:
            transport.set_keepalive(max(1, round(self.set_keepalive)))
        transport.daemon = True
        return transport

    def _connect_to_gateway(self) -> None:
        try:
            super()._connect_to_gateway()
        except BaseException as exc:
            self.failure = exc
            raise

    def abort(self) -> None:
        """Release what a failed ``start()`` left behind.

        ``stop()`` would call ``shutdown()`` on forward servers whose ``serve_forever`` never
        ran (``start()`` creates them even after a swallowed authentication failure), and
        that blocks forever; closing them directly does not.
        """
        servers: list[Any] = getattr(self, "_server_list", [])
        for server in servers:
            server.server_close()
        servers.clear()
        transport = getattr(self, "_transport", None)
        if transport is not None:
            transport.close()


class SSHTransport(Transport):
    """Runs ``command`` on ``user@host:port`` and carries bytes over its stdin/stdout."""

    # sshd's session channel window is 2 MiB: it buffers that much for an agent busy writing
    unread_capacity = 1 << 20

    def __init__(
        self,
        *,
        host: str,
        port: int = 22,
        user: str,
        command: Sequence[str],
        identity_file: Path | None = None,
        known_hosts: Path | None = None,
        gateway: Gateway | None = None,
        connect_timeout: float = 30.0,
        idle_timeout: float = 300.0,
        keepalive: float = 30.0,
    ) -> None:
        super().__init__()
        self.host = host
        self.port = port
        self.user = user
        self.gateway = gateway
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.url = f"ssh://{user}@{host}:{port}"
        if gateway is not None:
            self.url += f" via {gateway.user or user}@{gateway.host}:{gateway.port}"
        if not command:
            raise ConfigError(f"{self.url}: no agent command to run")
        self._stderr = bytearray()
        self._closed = False
        self._eof = False
        self._forwarder: _Forwarder | None = None
        self._client: paramiko.SSHClient | None = None
        self._channel: Any = None
        self._lock = threading.Lock()
        self._known_hosts_path: Path | None = None

        host_keys = self._load_host_keys(known_hosts)
        pkey = self._load_identity(identity_file)
        try:
            sock = self._open_socket(host_keys, pkey, keepalive)
            self._client = self._handshake(sock, pkey, keepalive)
            self._channel = self._exec(command)
        except BaseException:
            self.close()
            raise

    # --- connecting --------------------------------------------------------------------

    def _fail(self, reason: str) -> ConnectError:
        return ConnectError(f"{self.url}: {reason}")

    def _load_host_keys(self, known_hosts: Path | None) -> paramiko.HostKeys:
        path = known_hosts if known_hosts is not None else Path("~/.ssh/known_hosts").expanduser()
        keys = paramiko.HostKeys()
        try:
            keys.load(str(path))
            self._known_hosts_path = path
        except FileNotFoundError:
            if known_hosts is not None:
                raise self._fail(f"known_hosts file {path} does not exist") from None
            # No default file: every host is unknown, and the connect refuses it below.
        except OSError as exc:
            raise self._fail(f"cannot read known_hosts {path}: {exc.strerror}") from None
        except Exception as exc:  # paramiko raises bare ValueErrors/SSHExceptions on junk lines
            raise self._fail(f"known_hosts file {path} is malformed") from exc
        return keys

    def _load_identity(self, identity_file: Path | None) -> Any:
        if identity_file is None:
            return None
        try:
            return paramiko.PKey.from_path(identity_file)
        except (paramiko.PasswordRequiredException, TypeError):
            # cryptography raises TypeError for "encrypted key, no password given".
            raise self._fail(
                f"identity file {identity_file} is passphrase-protected; load it into ssh-agent"
            ) from None
        except FileNotFoundError:
            raise self._fail(f"identity file {identity_file} does not exist") from None
        except OSError as exc:
            raise self._fail(f"cannot read identity file {identity_file}: {exc.strerror}") from None
        except Exception:
            # cryptography's messages can quote the offending bytes: say nothing about them.
            raise self._fail(f"identity file {identity_file} is not a usable private key") from None

    def _open_socket(self, host_keys: paramiko.HostKeys, pkey: Any, keepalive: float) -> Any:
        if self.gateway is None:
            where = f"{self.host}:{self.port}"
            try:
                return socket.create_connection((self.host, self.port), self.connect_timeout)
            except BaseException as exc:
                raise self._map_socket_error(exc, where) from None
        return self._open_tunnel(self.gateway, host_keys, pkey, keepalive)

    def _map_socket_error(self, exc: BaseException, where: str) -> BaseException:
        if isinstance(exc, TimeoutError):
            return self._fail(f"connecting to {where} timed out")
        if isinstance(exc, ConnectionRefusedError):
            return self._fail(f"connection refused by {where}")
        if isinstance(exc, socket.gaierror):
            return self._fail(f"cannot resolve {where.rsplit(':', 1)[0]}")
        if isinstance(exc, OSError):
            return self._fail(f"cannot connect to {where}: {exc.strerror or type(exc).__name__}")
        return exc

    def _open_tunnel(
        self, gateway: Gateway, host_keys: paramiko.HostKeys, pkey: Any, keepalive: float
    ) -> Any:
        gw_name = known_hosts_name(gateway.host, gateway.port)
        gw_where = f"gateway {gateway.host}:{gateway.port}"
        known = host_keys.lookup(gw_name)
        if not known:
            raise self._fail(f"host key for {gw_name} (gateway) is not in known_hosts")
        pinned = next((known[t] for t in _HOST_KEY_PREFERENCE if t in known), None)
        if pinned is None:
            pinned = next(iter(known.values()))
        try:
            forwarder = _Forwarder(
                (gateway.host, gateway.port),
                ssh_username=gateway.user or self.user,
                ssh_pkey=pkey,
                ssh_host_key=pinned,
                ssh_config_file=None,
                allow_agent=pkey is None,
                host_pkey_directories=[] if pkey is not None else None,
                remote_bind_address=(self.host, self.port),
                local_bind_address=("127.0.0.1", 0),
                logger=_TUNNEL_LOG,
                connect_timeout=self.connect_timeout,
                keepalive=keepalive,
            )
        except ValueError:
            # sshtunnel found no key at all (no identity file, agent or ~/.ssh/id_*).
            raise self._fail(f"no SSH key available for {gw_where}") from None
        self._forwarder = forwarder
        try:
            forwarder.start()
        except BaseSSHTunnelForwarderError:
            cause = forwarder.failure
            if cause is None:
                # sshtunnel swallows AuthenticationException per key and tries the next one.
                raise self._fail(f"authentication failed at {gw_where}") from None
            if isinstance(cause, paramiko.SSHException) and "Bad host key" in str(cause):
                raise self._fail(
                    f"host key for {gw_name} (gateway) does not match known_hosts"
                ) from None
            raise self._map_handshake_error(cause, gw_where) from None
        where = f"127.0.0.1:{forwarder.local_bind_port} (tunnel)"
        try:
            return socket.create_connection(
                ("127.0.0.1", forwarder.local_bind_port), self.connect_timeout
            )
        except BaseException as exc:
            raise self._map_socket_error(exc, where) from None

    def _handshake(self, sock: Any, pkey: Any, keepalive: float) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self._known_hosts_path is not None:
            # "System" host keys are never saved back: known_hosts is only ever read.
            client.load_system_host_keys(str(self._known_hosts_path))
        client.set_missing_host_key_policy(_RefuseUnknownHost())
        self._client = client
        name = known_hosts_name(self.host, self.port)
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                pkey=pkey,
                allow_agent=pkey is None,
                look_for_keys=pkey is None,
                sock=sock,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.connect_timeout,
                compress=False,  # literals are already zstd-compressed
            )
        except _UnknownHostKey:
            sock.close()
            raise self._fail(f"host key for {name} is not in known_hosts") from None
        except paramiko.BadHostKeyException:
            sock.close()
            raise self._fail(f"host key for {name} does not match known_hosts") from None
        except BaseException as exc:
            sock.close()
            raise self._map_handshake_error(exc, f"{self.host}:{self.port}") from None
        transport = client.get_transport()
        if keepalive > 0:
            transport.set_keepalive(max(1, round(keepalive)))
        return client

    def _map_handshake_error(self, exc: BaseException, where: str) -> BaseException:
        if isinstance(exc, paramiko.AuthenticationException):
            return self._fail(f"authentication failed at {where}")
        if isinstance(exc, paramiko.SSHException):
            if isinstance(exc.__context__, TimeoutError):
                return self._fail(f"timed out waiting for the SSH banner from {where}")
            if (
                "banner" in str(exc)
                and self.gateway is not None
                and where.endswith(f"{self.host}:{self.port}")
            ):
                return self._fail(
                    f"gateway {self.gateway.host}:{self.gateway.port} could not "
                    f"reach {where} (closed before the SSH banner)"
                )
            if "banner" in str(exc):
                return self._fail(f"connection closed by {where} before the SSH banner")
            if "No existing session" in str(exc):
                # paramiko's start_client returns silently on timeout; the next step says this.
                return self._fail(
                    f"SSH handshake with {where} timed out after {self.connect_timeout:g}s"
                )
            if "No authentication methods" in str(exc):
                return self._fail(f"authentication failed at {where}: no SSH key available")
            return self._fail(f"SSH negotiation with {where} failed: {_first_line(str(exc))}")
        if isinstance(exc, EOFError):
            return self._fail(f"connection closed by {where} during the SSH handshake")
        if isinstance(exc, OSError):
            return self._map_socket_error(exc, where)
        if isinstance(exc, Exception):
            return self._fail(f"SSH negotiation with {where} failed ({type(exc).__name__})")
        return exc

    def _exec(self, command: Sequence[str]) -> Any:
        assert self._client is not None
        where = f"{self.host}:{self.port}"
        try:
            channel = self._client.get_transport().open_session(timeout=self.connect_timeout)
            channel.exec_command(shlex.join(command))
        except BaseException as exc:
            raise self._map_handshake_error(exc, where) from None
        return channel

    # --- the byte pipe -----------------------------------------------------------------

    def send(self, data: bytes) -> None:
        channel = self._live_channel()
        channel.settimeout(self.idle_timeout)
        try:
            channel.sendall(data)
        except TimeoutError:
            raise TransportTimeout(
                f"{self.url}: peer accepted no data for {self.idle_timeout:g}s"
            ) from None
        except OSError:
            raise ConnectionClosed(self._closed_message("stopped reading")) from None
        except paramiko.SSHException:
            raise ConnectionClosed(self._closed_message("connection lost")) from None
        self.bytes_sent += len(data)

    def recv(self, max_bytes: int) -> bytes:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        channel = self._live_channel()
        if self._eof:
            return b""
        deadline = time.monotonic() + self.idle_timeout
        while True:
            self._drain_stderr()
            if channel.recv_ready():
                data: bytes = channel.recv(max_bytes)
                self.bytes_received += len(data)
                return data
            if channel.eof_received or channel.closed:
                return self._at_eof()
            transport = self._client.get_transport() if self._client is not None else None
            if transport is None or not transport.is_active():
                raise ConnectionClosed(self._closed_message("connection lost"))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportTimeout(f"{self.url}: nothing received for {self.idle_timeout:g}s")
            # The channel's fileno is a pipe paramiko signals for stdout, stderr and EOF alike.
            select.select([channel], [], [], min(remaining, 5.0))

    def _at_eof(self) -> bytes:
        channel = self._channel
        # sshd sends EOF first and the exit status just after; closing also sets the event.
        reported = channel.status_event.wait(min(EXIT_STATUS_WAIT, self.idle_timeout))
        self._drain_stderr()
        self._eof = True
        status = channel.exit_status if reported else None
        if status == -1:
            raise ConnectionClosed(self._closed_message("agent ended without an exit status"))
        if status is not None and status != 0:
            raise ConnectionClosed(self._closed_message(f"agent exited with status {status}"))
        if self.bytes_received == 0:
            raise ConnectionClosed(self._closed_message("agent exited without output"))
        return b""

    def _drain_stderr(self) -> None:
        channel = self._channel
        while channel.recv_stderr_ready():
            self._stderr += channel.recv_stderr(4096)
            if len(self._stderr) > STDERR_KEEP:
                del self._stderr[:-STDERR_KEEP]

    def _live_channel(self) -> Any:
        if self._closed or self._channel is None:
            raise ConnectionClosed(f"{self.url}: transport is closed")
        return self._channel

    def _closed_message(self, what: str) -> str:
        line = self.stderr_tail()
        return f"{self.url}: {what}: {line}" if line else f"{self.url}: {what}"

    def stderr_tail(self) -> str:
        """The agent's last non-empty stderr line (printable, at most 300 characters)."""
        text = self._stderr.decode("utf-8", "replace")
        # Click/rich draw usage errors in boxes; the frame lines carry no words.
        lines = [ln.strip(_BOX_CHARS) for ln in text.splitlines() if ln.strip(_BOX_CHARS)]
        if not lines:
            return ""
        cleaned = "".join(ch if ch.isprintable() else "?" for ch in lines[-1])
        return cleaned[:300]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        channel, client, forwarder = self._channel, self._client, self._forwarder
        self._channel = None
        # Close failures mean the pipe is already gone, which is all close() promises.
        with contextlib.suppress(Exception):
            if channel is not None:
                channel.close()
        with contextlib.suppress(Exception):
            if client is not None:
                client.close()
        with contextlib.suppress(Exception):
            if forwarder is not None and forwarder.is_alive:
                forwarder.stop(force=True)
            elif forwarder is not None:
                forwarder.abort()


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line[:200]
