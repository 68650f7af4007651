"""Stage over a real OpenSSH sshd on 127.0.0.1: remote peers on the same path as local ones."""

from __future__ import annotations

import json
import shlex
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deltastage.cli.main import app
from deltastage.config import load_config
from deltastage.manifest import MANIFEST_NAME
from deltastage.master.connect import open_peer_session
from deltastage.master.session import PeerSession
from deltastage.stage.run import run_stage
from tests.helpers.site import make_peer, random_bytes, stage_json, staged, tree, write_config
from tests.helpers.sshd import SSHServer
from tests.helpers.transports import CuttingTransport

pytestmark = pytest.mark.ssh
runner = CliRunner()
AGENT = shlex.join([sys.executable, "-m", "deltastage", "agent"])
# One retry: enough for the tests that count on it, quick where a peer must fail.
ONE_RETRY = {"retries": 1}


def remote_peer(server: SSHServer, collect: Path, **extra: Any) -> dict[str, Any]:
    return {
        **server.peer_settings(collect),
        "agent_command": AGENT,
        "connect_timeout": 10.0,
        "idle_timeout": 30.0,
        **extra,
    }


def test_remote_peer_first_day_second_day_and_rerun(tmp_path: Path, sshd_server: SSHServer) -> None:
    files = {
        "dump.bin": random_bytes(2 << 20, 1),
        "etc/app.conf": b"key = value\n",
        "with space": b"x",
    }
    collect = make_peer(tmp_path, "web1", files)
    config = write_config(tmp_path, {"web1": remote_peer(sshd_server, collect)}, options=ONE_RETRY)

    code, first = stage_json(config, "--date", "2026-11-23")
    web = first["peers"][0]
    assert (code, web["status"], web["files"]) == (0, "staged", 3), web
    assert tree(staged(tmp_path, date(2026, 11, 23), "web1")) == files
    assert (collect / "cback.stage").exists(), "indicator written on the peer through the agent"
    assert web["stage_indicator"] == "peer"
    assert web["wire_bytes"] > 2 << 20 and web["wire_bytes"] < (2 << 20) * 1.05

    edited = bytearray(files["dump.bin"])
    edited[1_000_000:1_000_004] = b"EDIT"
    (collect / "dump.bin").write_bytes(bytes(edited))
    (collect / "cback.stage").unlink()
    code, second = stage_json(config, "--date", "2026-11-24")
    web = second["peers"][0]
    assert code == 0 and web["status"] == "staged"
    assert web["wire_bytes"] < 0.05 * web["bytes"], web
    assert tree(staged(tmp_path, date(2026, 11, 24), "web1"))["dump.bin"] == bytes(edited)

    code, rerun = stage_json(config, "--date", "2026-11-24")
    web = rerun["peers"][0]
    assert code == 0 and web["reused"] == 3 and web["wire_bytes"] < 20_000, web


def test_unknown_host_key_is_refused(tmp_path: Path, sshd_server: SSHServer) -> None:
    collect = make_peer(tmp_path, "p", {"f": b"data"})
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    config = write_config(
        tmp_path,
        {"p": remote_peer(sshd_server, collect, known_hosts=str(empty))},
        options={"retries": 0},
    )
    code, report = stage_json(config, "--date", "2026-11-23")
    peer = report["peers"][0]
    assert code == 1 and peer["status"] == "failed"
    assert "host key" in peer["error"] and str(sshd_server.port) in peer["error"]
    assert not (collect / "cback.stage").exists()
    assert tree(staged(tmp_path, date(2026, 11, 23), "p")) == {}


def test_wrong_client_key_is_refused(tmp_path: Path, sshd_server: SSHServer) -> None:
    from tests.helpers.sshd import keygen

    stranger = keygen(tmp_path / "stranger")
    collect = make_peer(tmp_path, "p", {"f": b"data"})
    config = write_config(
        tmp_path,
        {"p": remote_peer(sshd_server, collect, identity_file=str(stranger))},
        options={"retries": 0},
    )
    code, report = stage_json(config, "--date", "2026-11-23")
    assert code == 1 and report["peers"][0]["status"] == "failed"
    assert "authentication" in report["peers"][0]["error"].lower()


def test_gateway_hop_through_a_bastion(
    tmp_path: Path, sshd_server: SSHServer, sshd_bastion: SSHServer
) -> None:
    collect = make_peer(tmp_path, "far", {"f.txt": b"behind the bastion\n"})
    gateway = f"{sshd_bastion.user}@{sshd_bastion.host}:{sshd_bastion.port}"
    config = write_config(
        tmp_path, {"far": remote_peer(sshd_server, collect, gateway=gateway)}, options=ONE_RETRY
    )
    code, report = stage_json(config, "--date", "2026-11-23")
    assert code == 0, report
    assert tree(staged(tmp_path, date(2026, 11, 23), "far")) == {"f.txt": b"behind the bastion\n"}


def cutting_factory(cuts: list[int]) -> Any:
    """Each new session to the peer gets the next budget from ``cuts`` (none: uncut)."""

    def factory(peer: Any, options: Any) -> PeerSession:
        session = open_peer_session(peer, options)
        if not cuts:
            return session
        return PeerSession(CuttingTransport(session.transport, cuts.pop(0)))

    return factory


def test_connection_killed_mid_file_then_completed_on_retry(
    tmp_path: Path, sshd_server: SSHServer
) -> None:
    data = random_bytes(3 << 20, 7)
    collect = make_peer(tmp_path, "p", {"big.bin": data, "small.txt": b"s"})
    config = load_config(
        write_config(tmp_path, {"p": remote_peer(sshd_server, collect)}, options={"retries": 0})
    )
    day = date(2026, 11, 23)

    report = run_stage(config, run_date=day, session_factory=cutting_factory([2_200_000]))
    peer = report.peers[0]
    assert peer.status == "failed" and "cut" in (peer.error or "")
    peer_dir = tmp_path / "staging/2026/11/23/p"
    assert not (peer_dir / MANIFEST_NAME).exists()
    assert not (collect / "cback.stage").exists(), "no indicator may lie"
    assert "big.bin" not in tree(staged(tmp_path, day, "p"))
    partial = peer_dir / ".deltastage-partial/big.bin"
    assert partial.exists() and 0 < partial.stat().st_size < len(data)
    assert data.startswith(partial.read_bytes())

    report = run_stage(config, run_date=day, session_factory=cutting_factory([]))
    peer = report.peers[0]
    assert peer.status == "staged", peer.error
    assert peer.wire_bytes < len(data) * 0.8, "the partial served as a basis"
    assert tree(staged(tmp_path, day, "p")) == {"big.bin": data, "small.txt": b"s"}
    assert (collect / "cback.stage").exists()
    assert not partial.exists()


def test_retry_after_cut_within_one_run(tmp_path: Path, sshd_server: SSHServer) -> None:
    data = random_bytes(1 << 20, 9)
    collect = make_peer(tmp_path, "p", {"big.bin": data})
    config = load_config(
        write_config(tmp_path, {"p": remote_peer(sshd_server, collect)}, options={"retries": 2})
    )
    report = run_stage(
        config, run_date=date(2026, 11, 23), session_factory=cutting_factory([300_000, 100])
    )
    peer = report.peers[0]
    assert peer.status == "staged" and peer.attempts == 3, peer
    assert tree(staged(tmp_path, date(2026, 11, 23), "p")) == {"big.bin": data}


def test_check_reports_remote_agent_version(tmp_path: Path, sshd_server: SSHServer) -> None:
    collect = make_peer(tmp_path, "p", {"f": b"1"})
    config = write_config(tmp_path, {"p": remote_peer(sshd_server, collect)}, options=ONE_RETRY)
    result = runner.invoke(app, ["check", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    peer = json.loads(result.stdout)["peers"][0]
    assert peer["state"] == "ready" and peer["agent_version"]


def test_check_gives_the_forced_command_for_an_agent_refusing_the_stage_indicator(
    tmp_path: Path, sshd_server: SSHServer
) -> None:
    collect = make_peer(tmp_path, "p", {"f": b"1"})
    # the peer's authorized_keys lets the key run the agent for Cedar's indicator only
    key = sshd_server.forced_key([*shlex.split(AGENT), "--root", str(collect)], "cedar-only")
    peer = remote_peer(sshd_server, collect, identity_file=str(key))
    config = write_config(
        tmp_path, {"p": peer}, options={**ONE_RETRY, "stage_indicator": "done.stage"}
    )
    line = f'command="{AGENT} --root {collect} --indicator done.stage"'

    result = runner.invoke(app, ["check", "--config", str(config), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)["peers"][0]
    assert report["state"] == "unusable" and report["fix"] == line
    assert "writes only the indicators 'cback.stage', not 'done.stage'" in report["error"]

    result = runner.invoke(app, ["check", "--config", str(config)])
    assert result.exit_code == 1 and f"  {line}\n" in result.stdout, result.stdout
    assert not (collect / "done.stage").exists() and not (collect / "cback.stage").exists()

    # that line, in the peer's authorized_keys, makes the peer usable
    fixed = sshd_server.forced_key(shlex.split(line[len('command="') : -1]), "fixed")
    peer["identity_file"] = str(fixed)
    config = write_config(
        tmp_path, {"p": peer}, options={**ONE_RETRY, "stage_indicator": "done.stage"}
    )
    result = runner.invoke(app, ["check", "--config", str(config), "--json"])
    report = json.loads(result.stdout)["peers"][0]
    assert result.exit_code == 0 and report["state"] == "ready", report
    assert report["agent_indicators"] == ["done.stage"] and report["fix"] is None
