"""A peer whose agent runs ``--read-only``, staged end to end: over a pipe and over sshd.

The staged data and the daily indicator are as for any peer; the collect dir is untouched
(bytes, modes, mtimes); the stage indicator is recorded on the master only, in the daily
dir and the peer's manifest, and the run says so in its log and JSON.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deltastage.cli.main import app
from deltastage.config import Options, PeerConfig, load_config
from deltastage.manifest import MANIFEST_NAME, decode_manifest
from deltastage.master.connect import bounded_session
from deltastage.master.session import PeerSession
from deltastage.stage.run import run_stage
from deltastage.transports.pipe import PipeTransport
from deltastage.verify import verify_peer_dir
from tests.helpers.hostile_master import plant, snapshot
from tests.helpers.site import write_config
from tests.helpers.sshd import SSHServer

AGENT = [sys.executable, "-m", "deltastage", "agent"]
DAY = date(2026, 11, 23)
NO_RETRIES = {"retries": 0}
FILES = {"dump.bin": bytes(range(256)) * 4000, "etc/app.conf": b"key = value\n"}


def collect_dir(tmp: Path) -> Path:
    """A collect dir that is ready, holding data and, besides, every kind of thing a
    write could meet (they are skipped, never staged)."""
    (tmp / "peer").mkdir()
    collect = plant(tmp / "peer")
    for rel, data in FILES.items():
        (collect / rel).parent.mkdir(parents=True, exist_ok=True)
        (collect / rel).write_bytes(data)
    return collect


def staged(tmp: Path) -> dict[str, bytes]:
    peer_dir = tmp / "staging" / f"{DAY:%Y/%m/%d}" / "ro"
    return {rel: (peer_dir / rel).read_bytes() for rel in FILES if (peer_dir / rel).is_file()}


def assert_recorded_on_the_master_only(tmp: Path, peer_json: dict[str, Any]) -> None:
    assert peer_json["status"] == "staged", peer_json
    assert peer_json["stage_indicator"] == "master-only"
    assert staged(tmp) == FILES
    daily = tmp / "staging" / f"{DAY:%Y/%m/%d}"
    assert (daily / "cback.stage").read_bytes() == b""
    manifest = decode_manifest((daily / "ro" / MANIFEST_NAME).read_bytes())
    assert manifest.master_only_indicator == "cback.stage"
    planted = {"a.txt", "dump.tar.gz", "hard", "sub/cback.stage"}  # links and specials skipped
    assert {entry.path for entry in manifest.files} == {*FILES, *planted}
    assert verify_peer_dir(daily / "ro").ok


def test_over_a_pipe(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    collect = collect_dir(tmp_path)
    config = load_config(
        write_config(
            tmp_path, {"ro": {"type": "remote", "collect_dir": str(collect)}}, options=NO_RETRIES
        ),
        check_accounts=False,
    )

    def read_only_agent(peer: PeerConfig, options: Options) -> PeerSession:
        argv = [*AGENT, "--root", str(collect), "--read-only"]
        return bounded_session(PipeTransport(argv, idle_timeout=30), options)

    before = snapshot(tmp_path / "peer")
    caplog.set_level(logging.INFO, "deltastage")
    report = run_stage(config, run_date=DAY, session_factory=read_only_agent)
    (peer,) = report.as_json()["peers"]  # type: ignore[misc]
    assert_recorded_on_the_master_only(tmp_path, peer)
    assert snapshot(tmp_path / "peer") == before
    assert any(
        "read-only agent: cback.stage recorded on the master only" in record.getMessage()
        for record in caplog.records
    )


@pytest.mark.ssh
def test_over_sshd(tmp_path: Path, sshd_server: SSHServer) -> None:
    collect = collect_dir(tmp_path)
    forced = sshd_server.forced_key([*AGENT, "--root", str(collect), "--read-only"], "read-only")
    peer = {
        **sshd_server.peer_settings(collect),
        "identity_file": str(forced),
        "agent_command": shlex.join(AGENT),
    }
    config = write_config(tmp_path, {"ro": peer}, options=NO_RETRIES)
    before = snapshot(tmp_path / "peer")
    result = CliRunner().invoke(
        app, ["stage", "--config", str(config), "--date", DAY.isoformat(), "--json"]
    )
    assert result.exit_code == 0, result.output
    (peer_json,) = json.loads(result.stdout)["peers"]
    assert_recorded_on_the_master_only(tmp_path, peer_json)
    assert snapshot(tmp_path / "peer") == before
    # a re-run the same day stages nothing again, and still writes nothing on the peer
    result = CliRunner().invoke(
        app, ["stage", "--config", str(config), "--date", DAY.isoformat(), "--json"]
    )
    (peer_json,) = json.loads(result.stdout)["peers"]
    assert result.exit_code == 0 and peer_json["reused"] == len(FILES) + 4, peer_json
    assert_recorded_on_the_master_only(tmp_path, peer_json)
    assert snapshot(tmp_path / "peer") == before
