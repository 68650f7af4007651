"""Key material, passphrases and the environment never reach logs, errors, JSON or tracebacks.

Each case runs the real CLI in a subprocess with a secret in its environment and a
passphrase-protected, junk, or unauthorised key, or makes it crash while a key is loaded,
then searches stdout, stderr and the log file for the key's base64 body, the passphrase
and the environment's secret.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.site import write_config
from tests.helpers.sshd import SSHServer

PASSPHRASE = "correct horse battery staple 7351"
ENV_SECRET = "env-secret-5a1f09c3d2"
AGENT = shlex.join([sys.executable, "-m", "deltastage", "agent"])

CRASH = """
import socket
import sys
from deltastage.cli.main import app

def connect(*args, **kwargs):
    raise RuntimeError("crash with the key loaded")

socket.create_connection = connect
socket.socket.connect = connect
sys.argv = ["deltastage", *sys.argv[1:]]
app()
"""


def make_key(path: Path, passphrase: str = "") -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "", "-f", str(path)],
        check=True,
    )
    return path.read_text()


def key_body_pieces(key_text: str) -> list[str]:
    """Every base64 line of the key, and every 16-character window of its body."""
    lines = [line for line in key_text.splitlines() if line and not line.startswith("-----")]
    body = "".join(lines)
    return lines + [body[i : i + 16] for i in range(0, len(body) - 16, 8)]


def remote_site(tmp: Path, peer: dict[str, object]) -> Path:
    """One remote peer with the given settings, never retried."""
    settings = {"type": "remote", "collect_dir": "/collect", **peer}
    return write_config(tmp, {"p": settings}, options={"retries": 0}, staging="s")


def run_cli(tmp: Path, config: Path, *, crash: bool = False) -> str:
    log = tmp / "run.log"
    args = ["stage", "--config", str(config), "--json", "--log-file", str(log)]
    argv = [sys.executable, "-c", CRASH, *args] if crash else [sys.executable, "-m", "deltastage"]
    if not crash:
        argv += args
    env = {**os.environ, "DELTASTAGE_SECRET": ENV_SECRET, "SSH_PASSPHRASE": PASSPHRASE}
    result = subprocess.run(argv, capture_output=True, env=env, timeout=120, check=False)
    assert result.returncode != 0
    text = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    if log.exists():
        text += log.read_text(errors="replace")
    return text


def assert_clean(output: str, key_text: str) -> None:
    assert output.strip(), "the run must have said something"
    for piece in key_body_pieces(key_text):
        assert piece not in output, f"key material leaked: {piece!r}"
    assert PASSPHRASE not in output
    assert ENV_SECRET not in output


def test_passphrase_protected_identity(tmp_path: Path) -> None:
    key = make_key(tmp_path / "id", PASSPHRASE)
    config = remote_site(tmp_path, {"host": "127.0.0.1", "identity_file": str(tmp_path / "id")})
    output = run_cli(tmp_path, config)
    assert "passphrase-protected" in output
    assert_clean(output, key)


def test_junk_identity(tmp_path: Path) -> None:
    real = make_key(tmp_path / "real")
    lines = real.splitlines()
    # a real key's body with its middle scrambled: parsers choke half way through it
    junk = "\n".join([lines[0], *(line[::-1] for line in lines[1:-1]), lines[-1]]) + "\n"
    (tmp_path / "junk").write_text(junk)
    config = remote_site(tmp_path, {"host": "127.0.0.1", "identity_file": str(tmp_path / "junk")})
    output = run_cli(tmp_path, config)
    assert "not a usable private key" in output
    assert_clean(output, junk)
    assert_clean(output, real)


def test_crash_with_a_key_loaded(tmp_path: Path) -> None:
    key = make_key(tmp_path / "id")
    config = remote_site(tmp_path, {"host": "127.0.0.1", "identity_file": str(tmp_path / "id")})
    output = run_cli(tmp_path, config, crash=True)
    assert "crash with the key loaded" in output and "Traceback" in output
    assert_clean(output, key)


@pytest.mark.ssh
def test_refused_key_over_real_sshd(tmp_path: Path, sshd_server: SSHServer) -> None:
    key = make_key(tmp_path / "stranger")
    config = remote_site(
        tmp_path,
        {
            "host": sshd_server.host,
            "port": sshd_server.port,
            "user": sshd_server.user,
            "identity_file": str(tmp_path / "stranger"),
            "known_hosts": str(sshd_server.known_hosts),
            "agent_command": AGENT,
            "connect_timeout": 10.0,
        },
    )
    output = run_cli(tmp_path, config)
    assert "auth" in output.lower()
    assert_clean(output, key)
    assert_clean(output, Path(sshd_server.client_key).read_text())
