"""PipeTransport: a subprocess agent, its timeouts, its last words, its reaping; and the
`deltastage agent` command as a forced command would run it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from deltastage.errors import ConnectError, ConnectionClosed, TransportTimeout
from deltastage.master.session import PeerSession
from deltastage.protocol import CAPABILITIES, PROTOCOL_VERSION, Connection, Hello, HelloReply, Role
from deltastage.transports.local import LocalTransport
from deltastage.transports.pipe import PipeTransport

PY = sys.executable


def test_echo_round_trip_and_byte_counts() -> None:
    transport = PipeTransport([PY, "-c", "import sys; sys.stdout.write(sys.stdin.read(5))"])
    transport.send(b"hello")
    data = b""
    while len(data) < 5:
        data += transport.recv(100)
    assert data == b"hello"
    assert (transport.bytes_sent, transport.bytes_received, transport.wire_bytes) == (5, 5, 10)
    transport.close()
    transport.close()


def test_eof_quotes_the_agents_stderr_and_exit_status() -> None:
    script = "import sys; sys.stderr.write('line1\\nroot /x: no such directory\\n'); sys.exit(3)"
    transport = PipeTransport([PY, "-c", script])
    with pytest.raises(ConnectionClosed, match=r"exit status 3\): line1 \| root /x: no such"):
        transport.recv(10)
    transport.close()


def test_idle_timeout_on_read() -> None:
    transport = PipeTransport([PY, "-c", "import time; time.sleep(30)"], idle_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(TransportTimeout, match="sent nothing"):
        transport.recv(10)
    assert time.monotonic() - started < 5
    transport.close()


def test_idle_timeout_on_write() -> None:
    transport = PipeTransport([PY, "-c", "import time; time.sleep(30)"], idle_timeout=0.2)
    with pytest.raises(TransportTimeout, match="did not read"):
        transport.send(b"x" * (4 << 20))  # more than any pipe buffer holds
    transport.close()


def test_writing_to_an_exited_agent() -> None:
    transport = PipeTransport([PY, "-c", "import sys; sys.stderr.write('bye\\n')"])
    time.sleep(0.3)
    with pytest.raises(ConnectionClosed, match="bye"):
        for _ in range(100):
            transport.send(b"x" * 65536)
    transport.close()


def test_a_missing_command_is_a_connect_error(tmp_path: Path) -> None:
    with pytest.raises(ConnectError, match="cannot start agent"):
        PipeTransport([str(tmp_path / "no-such-agent")])


def test_close_reaps_even_a_stubborn_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("deltastage.transports.pipe.REAP_TIMEOUT", 0.2)
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)"
    transport = PipeTransport([PY, "-c", script])
    started = time.monotonic()
    transport.close()
    assert time.monotonic() - started < 5
    assert transport._proc.returncode is not None
    with pytest.raises(ConnectionClosed):
        transport.send(b"x")


def test_the_agent_command_speaks_the_protocol(tmp_path: Path) -> None:
    conn = Connection(Role.MASTER)
    proc = subprocess.run(
        [PY, "-m", "deltastage", "agent", "--root", str(tmp_path)],
        input=conn.send(Hello(PROTOCOL_VERSION, "t", CAPABILITIES)),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    conn.receive_data(proc.stdout)
    reply = conn.next_event()
    assert isinstance(reply, HelloReply) and reply.roots == (str(tmp_path),)


def test_the_agent_command_needs_a_root() -> None:
    proc = subprocess.run(
        [PY, "-m", "deltastage", "agent"], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert b"--root" in proc.stderr


def test_stray_prints_do_not_corrupt_the_stream(tmp_path: Path) -> None:
    # run_stdio points fd 1 at stderr, so only protocol frames reach the master
    script = (
        "import sys; from deltastage import agent; from deltastage.agent.rootfs import RootFS; "
        "real = RootFS.listing; "
        "RootFS.listing = lambda self, root, **kw: "
        "(print('noise', flush=True), real(self, root, **kw))[1]; "
        f"sys.exit(agent.run_stdio([{str(tmp_path)!r}]))"
    )
    session = PeerSession(PipeTransport([PY, "-c", script]))
    assert session.handshake().roots == (str(tmp_path),)
    assert session.list_files(str(tmp_path)) == []
    session.close()


def test_local_transport_runs_the_agent_as_a_child_and_reaps_it(tmp_path: Path) -> None:
    transport = LocalTransport([str(tmp_path)])
    session = PeerSession(transport)
    assert session.handshake().roots == (str(tmp_path),)
    assert transport._proc.poll() is None
    session.close()
    assert transport._proc.poll() == 0
    with pytest.raises(ConnectionClosed):
        transport.recv(1)
