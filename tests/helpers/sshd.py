"""Real OpenSSH daemons on 127.0.0.1 for the SSH transport tests (a pytest plugin module).

``sshd_server`` is the peer, ``sshd_bastion`` a second daemon allowing TCP forwarding for
gateway tests. Both run as the current user (root in CI) with generated host keys, a generated
client key and their own authorized_keys; ``known_hosts`` lists both as ``[127.0.0.1]:port``.
Missing OpenSSH tools skip the tests locally and fail them when ``CI`` is set, so CI never
passes by skipping.
"""

from __future__ import annotations

import ctypes
import getpass
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deltastage.models import Gateway

SSHD = "/usr/sbin/sshd"
REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

__all__ = ["SSHServer", "sshd_bastion", "sshd_keys", "sshd_server"]


def _need(tool: str) -> str:
    found = tool if os.path.isabs(tool) and os.access(tool, os.X_OK) else shutil.which(tool)
    if not found:
        message = f"{tool} is not installed; the ssh tests need OpenSSH"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def keygen(path: Path, comment: str = "deltastage-test") -> Path:
    """An unencrypted ed25519 key pair at ``path`` / ``path.pub``."""
    subprocess.run(
        [_need("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


def public_key(private: Path) -> str:
    """``type base64`` of the key pair's public half, without the comment."""
    kind, blob = Path(f"{private}.pub").read_text().split()[:2]
    return f"{kind} {blob}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SSHKeys:
    """Key material shared by the session's daemons."""

    root: Path
    client_key: Path
    known_hosts: Path


@dataclass
class SSHServer:
    """A running sshd and what a test needs to reach it."""

    name: str
    workdir: Path
    host: str
    port: int
    user: str
    host_key: Path
    client_key: Path
    known_hosts: Path
    authorized_keys: Path
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def transport(self, command: Sequence[str], **overrides: Any) -> Any:
        """An SSHTransport to this daemon running ``command``, with test-friendly timeouts."""
        from deltastage.transports.ssh import SSHTransport

        settings: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "identity_file": self.client_key,
            "known_hosts": self.known_hosts,
            "connect_timeout": 10.0,
            "idle_timeout": 30.0,
            "keepalive": 5.0,
        }
        settings.update(overrides)
        return SSHTransport(command=list(command), **settings)

    def peer_settings(self, collect_dir: Path) -> dict[str, Any]:
        """A remote ``[[peers]]`` entry (config keys) that reaches this daemon."""
        return {
            "type": "remote",
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "collect_dir": str(collect_dir),
            "identity_file": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            "agent_command": agent_command(collect_dir),
        }

    def as_gateway(self) -> Gateway:
        return Gateway(host=self.host, port=self.port, user=self.user)

    def forced_key(self, command: Sequence[str] | str, name: str) -> Path:
        """A new client key confined by ``command="..."`` in authorized_keys; returns its path.

        Each call appends a line instead of rewriting the file, so keys handed to other tests
        stay valid for the whole session.
        """
        line_command = command if isinstance(command, str) else shlex.join(command)
        if '"' in line_command or "\n" in line_command:
            raise ValueError("forced commands with double quotes or newlines are not supported")
        key = keygen(self.workdir / f"forced_{name}")
        options = f'command="{line_command}",no-port-forwarding,no-pty,no-agent-forwarding'
        with self.authorized_keys.open("a") as out:
            out.write(f"{options} {public_key(key)} forced-{name}\n")
        return key

    def log_tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def agent_command(root: Path) -> list[str]:
    """How the master starts the agent on a peer (same interpreter, repo on PYTHONPATH)."""
    return [sys.executable, "-m", "deltastage", "agent", "--root", str(root)]


SSHD_CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {workdir}/sshd.pid
AuthorizedKeysFile {authorized_keys}
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowTcpForwarding {forwarding}
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
PrintMotd no
UseDNS no
MaxStartups 50:30:100
LogLevel VERBOSE
SetEnv PYTHONPATH={repo_root}
Subsystem sftp internal-sftp
"""


def start_sshd(name: str, workdir: Path, keys: SSHKeys, *, forwarding: bool) -> SSHServer:
    """Start ``sshd -D -e`` on a free 127.0.0.1 port and wait until it sends its banner."""
    sshd = _need(SSHD)
    workdir.mkdir(parents=True, exist_ok=True)
    # sshd refuses to start without its privilege separation directory.
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    host_key = keygen(workdir / "host_ed25519", comment=f"{name}-host")
    authorized = workdir / "authorized_keys"
    authorized.write_text(f"{public_key(keys.client_key)} client\n")
    log = workdir / "sshd.log"
    last_error = ""
    for _attempt in range(5):
        port = free_port()
        config = workdir / "sshd_config"
        config.write_text(
            SSHD_CONFIG.format(
                port=port,
                host_key=host_key,
                workdir=workdir,
                authorized_keys=authorized,
                forwarding="yes" if forwarding else "no",
                repo_root=REPO_ROOT,
            )
        )
        with log.open("ab") as log_out:
            process = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_out,
                stderr=log_out,
                preexec_fn=_die_with_parent,
            )
        if _wait_for_banner(port, process):
            with keys.known_hosts.open("a") as out:
                out.write(f"[127.0.0.1]:{port} {public_key(host_key)}\n")
            return SSHServer(
                name=name,
                workdir=workdir,
                host="127.0.0.1",
                port=port,
                user=getpass.getuser(),
                host_key=host_key,
                client_key=keys.client_key,
                known_hosts=keys.known_hosts,
                authorized_keys=authorized,
                log=log,
                process=process,
            )
        _stop(process)
        last_error = (log.read_text(errors="replace").strip().splitlines() or [""])[-1]
    pytest.fail(f"sshd ({name}) did not start: {last_error}")


def _die_with_parent() -> None:
    """In the child: get SIGTERM when pytest dies, so a killed run leaves no daemon behind."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_for_banner(port: int, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False  # exited: most likely the port was taken in the meantime
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return True
        except OSError:
            time.sleep(0.05)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def sshd_keys(tmp_path_factory: pytest.TempPathFactory) -> SSHKeys:
    root = tmp_path_factory.mktemp("sshd")
    _need(SSHD)
    return SSHKeys(
        root=root, client_key=keygen(root / "client_ed25519"), known_hosts=root / "known_hosts"
    )


@pytest.fixture(scope="session")
def sshd_server(sshd_keys: SSHKeys) -> Iterator[SSHServer]:
    server = start_sshd("peer", sshd_keys.root / "peer", sshd_keys, forwarding=False)
    try:
        yield server
    finally:
        _stop(server.process)


@pytest.fixture(scope="session")
def sshd_bastion(sshd_keys: SSHKeys) -> Iterator[SSHServer]:
    server = start_sshd("bastion", sshd_keys.root / "bastion", sshd_keys, forwarding=True)
    try:
        yield server
    finally:
        _stop(server.process)
