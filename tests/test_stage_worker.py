"""The commit worker process through a real stage: a peer of more small files than one
batch has them committed there (written, synced, read back, verified, renamed), and a
worker that dies fails its peer only, never leaving an indicator that lies."""

from __future__ import annotations

import os
import signal
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deltastage.cli.main import app
from deltastage.config import load_config
from deltastage.manifest import MANIFEST_NAME
from deltastage.stage import commitworker
from deltastage.stage.committer import Committer
from deltastage.stage.peerdir import TMP_PREFIX
from deltastage.stage.run import run_stage
from tests.helpers.site import (
    interruptible_stage,
    make_peer,
    source_tree,
    stage_json,
    staged,
    tree,
    write_config,
)

DAY1 = "2026-11-23"
FILES = 1500  # more than one batch (BATCH_FILES) of small files


def _many_files(tmp_path: Path) -> dict[str, bytes]:
    # every 97th bigger than a small file (its temp file made by the receiver, in this
    # process) in the same directories as the small ones the worker writes
    files = {
        f"d{i % 37:02d}/f{i:05d}.txt": f"file {i}\n".encode()
        * (3000 if i % 97 == 0 else i % 50 + 1)
        for i in range(FILES)
    }
    make_peer(tmp_path, "many", files)
    return files


def test_a_peer_of_many_small_files_is_committed_by_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _many_files(tmp_path)
    config = write_config(tmp_path, ["many"])
    started: list[commitworker.WorkerSetup] = []
    real_start = commitworker.start_worker

    def spy(setup: commitworker.WorkerSetup) -> Any:
        started.append(setup)
        return real_start(setup)

    monkeypatch.setattr(commitworker, "start_worker", spy)
    code, report = stage_json(config, "--date", DAY1)
    assert code == 0, report
    assert report["peers"][0]["files"] == FILES
    assert len(started) == 1 and started[0].fresh
    day = staged(tmp_path, DAY1, "many")
    assert tree(day) == source_tree(tmp_path / "collect/many")
    assert (tmp_path / "collect/many/cback.stage").exists()
    result = CliRunner().invoke(app, ["verify", "--config", str(config), "--date", DAY1])
    assert result.exit_code == 0, result.output


def test_a_worker_killed_mid_run_fails_its_peer_and_leaves_no_indicator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL of the worker (the OOM killer, say): the peer fails with a clear error, with
    no manifest and no indicator, and whatever took a final name was verified first; the
    next run stages the peer."""
    _many_files(tmp_path)
    config = load_config(write_config(tmp_path, ["many"]))
    real_collect = Committer._collect

    def kill_then_collect(self: Committer, batch: Any, future: Any) -> None:
        if self._worker is not None:
            for process in list(self._worker._processes.values()):  # type: ignore[union-attr]
                if process.pid is not None and process.is_alive():
                    os.kill(process.pid, signal.SIGKILL)
        real_collect(self, batch, future)

    monkeypatch.setattr(Committer, "_collect", kill_then_collect)
    report = run_stage(config, run_date=date(2026, 11, 23))
    peer = report.peers[0]
    assert peer.status == "failed" and peer.attempts == 1
    assert peer.error is not None and "commit worker process ended" in peer.error
    day = staged(tmp_path, DAY1, "many")
    assert not (day / MANIFEST_NAME).exists()
    assert not (tmp_path / "collect/many/cback.stage").exists()
    # whatever took a final name was verified first: it holds its source's bytes
    for path, data in tree(day).items():
        if Path(path).name.startswith(TMP_PREFIX):
            continue  # a temp file never renamed: the next run sweeps it
        assert data == (tmp_path / "collect/many" / path).read_bytes(), path
    monkeypatch.undo()
    report = run_stage(config, run_date=date(2026, 11, 23))
    assert report.peers[0].status == "staged", report.peers[0].error
    assert tree(day) == source_tree(tmp_path / "collect/many")
    assert (tmp_path / "collect/many/cback.stage").exists()


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        if f"\nPPid:\t{pid}\n" in status:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_sigint_stops_the_run_and_its_worker(tmp_path: Path) -> None:
    """Ctrl-C in the middle of a many-files peer: the run ends with 130 and no indicator,
    and its worker process (which ignores SIGINT itself) is gone with it."""
    files = {f"d{i % 50:02d}/f{i:05d}": f"{i}\n".encode() * 20 for i in range(20_000)}
    make_peer(tmp_path, "many", files)
    config = write_config(tmp_path, ["many"])
    process = interruptible_stage(config, "--date", DAY1)
    workers: list[int] = []
    deadline = time.monotonic() + 60
    while not workers and process.poll() is None and time.monotonic() < deadline:
        workers = [
            pid
            for pid in _children(process.pid)
            if b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        time.sleep(0.02)
    assert workers, "the worker started before the run ended"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if _alive(pid)], "no worker left behind"
    assert not (tmp_path / "collect/many/cback.stage").exists()
    assert not (staged(tmp_path, DAY1, "many") / MANIFEST_NAME).exists()
