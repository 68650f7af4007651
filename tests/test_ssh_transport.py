"""SSHTransport against real OpenSSH daemons on 127.0.0.1 (fixtures in tests/helpers/sshd.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deltastage.errors import (
    AgentError,
    ConfigError,
    ConnectError,
    ConnectionClosed,
    TransportTimeout,
)
from deltastage.master.session import PeerSession
from deltastage.models import Gateway
from deltastage.transports.ssh import SSHTransport, known_hosts_name
from tests.helpers.sshd import SSHServer, agent_command, free_port, keygen, public_key

pytestmark = pytest.mark.ssh


def recv_exactly(transport: SSHTransport, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = transport.recv(n - len(out))
        assert chunk, f"EOF after {len(out)} of {n} bytes"
        out += chunk
    return bytes(out)


def test_known_hosts_name_follows_openssh() -> None:
    assert known_hosts_name("peer.example", 22) == "peer.example"
    assert known_hosts_name("127.0.0.1", 2222) == "[127.0.0.1]:2222"


def test_cat_echoes_bytes_both_ways_and_counts_them(sshd_server: SSHServer) -> None:
    payload = os.urandom(1 << 20)
    with sshd_server.transport(["cat"]) as transport:
        transport.send(b"hello")
        assert recv_exactly(transport, 5) == b"hello"
        # Interleave so neither direction's window fills while the other is not drained.
        for offset in range(0, len(payload), 64 * 1024):
            transport.send(payload[offset : offset + 64 * 1024])
            assert recv_exactly(transport, 64 * 1024) == payload[offset : offset + 64 * 1024]
        assert transport.bytes_sent == 5 + len(payload)
        assert transport.bytes_received == 5 + len(payload)
        assert transport.wire_bytes == 2 * (5 + len(payload))


def test_command_argv_is_quoted_not_reinterpreted_by_the_shell(sshd_server: SSHServer) -> None:
    with sshd_server.transport(["printf", "%s|", "a b", "$HOME", "'q'"]) as transport:
        assert recv_exactly(transport, len(b"a b|$HOME|'q'|")) == b"a b|$HOME|'q'|"
        assert transport.recv(10) == b""  # clean EOF after a zero exit status
        assert transport.recv(10) == b""


def test_nonzero_exit_reports_the_last_stderr_line(sshd_server: SSHServer) -> None:
    script = "echo warming up >&2; echo 'agent: root /nope is not allowed' >&2; exit 3"
    with (
        sshd_server.transport(["sh", "-c", script]) as transport,
        pytest.raises(ConnectionClosed) as info,
    ):
        transport.recv(100)
    message = str(info.value)
    assert f"ssh://{sshd_server.user}@127.0.0.1:{sshd_server.port}" in message
    assert "status 3" in message
    assert message.endswith("agent: root /nope is not allowed")
    assert "\n" not in message


def test_exit_without_any_output_is_connection_closed(sshd_server: SSHServer) -> None:
    with (
        sshd_server.transport(["true"]) as transport,
        pytest.raises(ConnectionClosed, match="without output"),
    ):
        transport.recv(100)


def test_stderr_kept_is_bounded(sshd_server: SSHServer) -> None:
    script = "{ head -c 200000 /dev/zero | tr '\\0' x; echo; echo last words; } >&2; exit 1"
    with sshd_server.transport(["sh", "-c", script]) as transport:
        with pytest.raises(ConnectionClosed, match=r"last words$"):
            while transport.recv(65536):
                pass
        assert len(transport._stderr) <= 8192


def test_idle_timeout_raises_transport_timeout(sshd_server: SSHServer) -> None:
    with sshd_server.transport(["sleep", "30"], idle_timeout=0.5) as transport:
        started = time.monotonic()
        with pytest.raises(TransportTimeout, match=r"nothing received for 0\.5s"):
            transport.recv(10)
        assert 0.4 < time.monotonic() - started < 5


def test_unknown_host_key_is_refused_and_known_hosts_untouched(
    sshd_server: SSHServer, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(ConnectError) as info:
        sshd_server.transport(["cat"], known_hosts=empty)
    assert str(info.value) == (
        f"ssh://{sshd_server.user}@127.0.0.1:{sshd_server.port}: "
        f"host key for [127.0.0.1]:{sshd_server.port} is not in known_hosts"
    )
    assert empty.read_text() == ""


def test_host_key_listed_under_another_port_is_unknown(
    sshd_server: SSHServer, tmp_path: Path
) -> None:
    other_port = tmp_path / "known_hosts"
    other_port.write_text(f"127.0.0.1 {public_key(sshd_server.host_key)}\n")
    with pytest.raises(ConnectError, match="not in known_hosts"):
        sshd_server.transport(["cat"], known_hosts=other_port)


def test_mismatched_host_key_is_refused(sshd_server: SSHServer, tmp_path: Path) -> None:
    impostor = keygen(tmp_path / "impostor")
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd_server.port} {public_key(impostor)}\n")
    with pytest.raises(ConnectError) as info:
        sshd_server.transport(["cat"], known_hosts=wrong)
    message = str(info.value)
    assert message.endswith(
        f"host key for [127.0.0.1]:{sshd_server.port} does not match known_hosts"
    )
    for key in (impostor, sshd_server.host_key):
        assert public_key(key).split()[1] not in message


def test_hashed_known_hosts_entries_are_accepted(sshd_server: SSHServer, tmp_path: Path) -> None:
    hashed = tmp_path / "known_hosts"
    hashed.write_text(sshd_server.known_hosts.read_text())
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(hashed)], check=True, capture_output=True)
    assert "|1|" in hashed.read_text()
    with sshd_server.transport(["echo", "ok"], known_hosts=hashed) as transport:
        assert recv_exactly(transport, 3) == b"ok\n"


def test_missing_known_hosts_file_is_a_connect_error(
    sshd_server: SSHServer, tmp_path: Path
) -> None:
    with pytest.raises(ConnectError, match=r"known_hosts file .* does not exist"):
        sshd_server.transport(["cat"], known_hosts=tmp_path / "absent")


def test_unauthorised_client_key_is_refused(sshd_server: SSHServer, tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger")
    with pytest.raises(ConnectError) as info:
        sshd_server.transport(["cat"], identity_file=stranger)
    assert str(info.value).endswith(f"authentication failed at 127.0.0.1:{sshd_server.port}")


def test_passphrase_protected_identity_names_no_secret(
    sshd_server: SSHServer, tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret-phrase", "-f", str(locked)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    with pytest.raises(ConnectError, match="passphrase-protected") as info:
        sshd_server.transport(["cat"], identity_file=locked)
    assert "s3cret" not in str(info.value)


def test_garbage_identity_file_says_nothing_about_its_content(
    sshd_server: SSHServer, tmp_path: Path
) -> None:
    junk = tmp_path / "junk"
    junk.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nTOPSECRETBYTES\n")
    with pytest.raises(ConnectError, match="not a usable private key") as info:
        sshd_server.transport(["cat"], identity_file=junk)
    assert "TOPSECRET" not in str(info.value)


def test_closed_port_is_connection_refused(sshd_server: SSHServer) -> None:
    port = free_port()
    with pytest.raises(ConnectError) as info:
        sshd_server.transport(["cat"], port=port)
    assert str(info.value) == (
        f"ssh://{sshd_server.user}@127.0.0.1:{port}: connection refused by 127.0.0.1:{port}"
    )


def test_silent_server_times_out_during_connect() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel completes the TCP handshake; nobody ever speaks
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ConnectError, match="timed out"):
            SSHTransport(
                host="127.0.0.1",
                port=port,
                user="nobody",
                command=["cat"],
                known_hosts=Path(os.devnull),
                connect_timeout=0.5,
            )
        assert time.monotonic() - started < 5


def test_empty_command_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no agent command"):
        SSHTransport(host="127.0.0.1", port=1, user="u", command=[])


def test_send_and_recv_after_close_are_connection_closed(sshd_server: SSHServer) -> None:
    transport = sshd_server.transport(["cat"])
    transport.close()
    transport.close()
    with pytest.raises(ConnectionClosed):
        transport.send(b"x")
    with pytest.raises(ConnectionClosed):
        transport.recv(1)


def test_gateway_hop_through_the_bastion(sshd_server: SSHServer, sshd_bastion: SSHServer) -> None:
    with sshd_server.transport(["cat"], gateway=sshd_bastion.as_gateway()) as transport:
        assert "via" in transport.url
        transport.send(b"through the bastion")
        assert recv_exactly(transport, 19) == b"through the bastion"
        assert transport.bytes_sent == transport.bytes_received == 19
    assert transport._forwarder is not None
    assert not transport._forwarder.is_active


def test_gateway_with_unknown_host_key_is_refused(
    sshd_server: SSHServer, sshd_bastion: SSHServer, tmp_path: Path
) -> None:
    only_peer = tmp_path / "known_hosts"
    only_peer.write_text(f"[127.0.0.1]:{sshd_server.port} {public_key(sshd_server.host_key)}\n")
    with pytest.raises(ConnectError, match=r"\(gateway\) is not in known_hosts"):
        sshd_server.transport(["cat"], gateway=sshd_bastion.as_gateway(), known_hosts=only_peer)


def test_gateway_with_mismatched_host_key_is_refused(
    sshd_server: SSHServer, sshd_bastion: SSHServer, tmp_path: Path
) -> None:
    impostor = keygen(tmp_path / "impostor")
    wrong = tmp_path / "known_hosts"
    wrong.write_text(
        f"[127.0.0.1]:{sshd_server.port} {public_key(sshd_server.host_key)}\n"
        f"[127.0.0.1]:{sshd_bastion.port} {public_key(impostor)}\n"
    )
    with pytest.raises(ConnectError, match=r"\(gateway\) does not match known_hosts"):
        sshd_server.transport(["cat"], gateway=sshd_bastion.as_gateway(), known_hosts=wrong)


def test_gateway_authentication_failure(
    sshd_server: SSHServer, sshd_bastion: SSHServer, tmp_path: Path
) -> None:
    stranger = keygen(tmp_path / "stranger")
    with pytest.raises(
        ConnectError, match=f"authentication failed at gateway 127.0.0.1:{sshd_bastion.port}"
    ):
        sshd_server.transport(["cat"], gateway=sshd_bastion.as_gateway(), identity_file=stranger)


def test_gateway_refused_is_named(sshd_server: SSHServer, tmp_path: Path) -> None:
    port = free_port()
    known = tmp_path / "known_hosts"
    known.write_text(
        sshd_server.known_hosts.read_text()
        + f"[127.0.0.1]:{port} {public_key(sshd_server.host_key)}\n"
    )
    with pytest.raises(ConnectError, match=f"127.0.0.1:{port}") as info:
        sshd_server.transport(
            ["cat"], gateway=Gateway("127.0.0.1", port, sshd_server.user), known_hosts=known
        )
    assert "refused" in str(info.value)


def test_gateway_cannot_reach_the_peer(sshd_bastion: SSHServer) -> None:
    closed = free_port()
    known = sshd_bastion.known_hosts
    with pytest.raises(ConnectError, match=f"@127.0.0.1:{closed} via .* could not reach"):
        SSHTransport(
            host="127.0.0.1",
            port=closed,
            user=sshd_bastion.user,
            command=["cat"],
            identity_file=sshd_bastion.client_key,
            known_hosts=known,
            gateway=sshd_bastion.as_gateway(),
            connect_timeout=5.0,
        )


def test_forced_command_overrides_the_requested_one(sshd_server: SSHServer) -> None:
    key = sshd_server.forced_key(["echo", "forced"], name="echo")
    with sshd_server.transport(["cat"], identity_file=key) as transport:
        assert recv_exactly(transport, 7) == b"forced\n"


# --- the real agent over SSH ------------------------------------------------------------


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "daily.tar": os.urandom(300_000),
        "etc/hosts": b"127.0.0.1 localhost\n",
        "deep/er/notes.txt": b"x" * 5000,
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_agent_handshake_and_listing_over_ssh(sshd_server: SSHServer, tmp_path: Path) -> None:
    collect = tmp_path / "collect"
    files = make_tree(collect)
    transport = sshd_server.transport(agent_command(collect))
    session = PeerSession(transport)
    try:
        info = session.handshake()
        assert info.roots == (str(collect),)
        entries = session.list_files(str(collect))
        assert {e.path: e.size for e in entries} == {p: len(d) for p, d in files.items()}
        assert all(e.kind == "file" and e.xxh3_128 is not None for e in entries)
        assert transport.bytes_sent > 0 and transport.bytes_received > 0
        assert session.wire_bytes == transport.wire_bytes
    finally:
        session.close()


def test_agent_failing_to_start_reports_its_last_stderr_line(
    sshd_server: SSHServer, tmp_path: Path
) -> None:
    bogus = [sys.executable, "-m", "deltastage", "agent", "--no-such-option"]
    transport = sshd_server.transport(bogus)
    session = PeerSession(transport)
    try:
        with pytest.raises(ConnectionClosed, match=r"agent exited with status 2: .*no-such-option"):
            session.handshake()
    finally:
        session.close()


def test_forced_command_confines_the_key_to_its_root(
    sshd_server: SSHServer, tmp_path: Path
) -> None:
    allowed = tmp_path / "allowed"
    other = tmp_path / "other"
    make_tree(allowed)
    make_tree(other)
    key = sshd_server.forced_key(agent_command(allowed), name="agent-allowed")
    # The master asks for another root; sshd runs the forced command regardless.
    transport = sshd_server.transport(agent_command(other), identity_file=key)
    session = PeerSession(transport)
    try:
        assert session.handshake().roots == (str(allowed),)
        with pytest.raises(AgentError, match="is not one of this agent's roots") as info:
            session.list_files(str(other))
        assert info.value.code == "not-a-root"
        assert len(session.list_files(str(allowed))) == 3
    finally:
        session.close()
