"""A week in Cedar's shape, staged day by day through the real CLI on real dirs: an archive
collected in full on the week's first day and incrementally (the changed members only,
under the same name) on the others, and a file collected weekly. Bases come from every
earlier day within basis_days, several per fetch; the same over a pipe to a real agent
process and over real sshd."""

from __future__ import annotations

import os
import random
import shlex
import shutil
import stat
import sys
from collections.abc import Callable, Collection, Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from deltastage.config import Options, PeerConfig, load_config
from deltastage.hashing import hash_bytes
from deltastage.manifest import MANIFEST_NAME
from deltastage.master.connect import bounded_session
from deltastage.master.session import PeerSession
from deltastage.models import RemoteEntry
from deltastage.stage.basis import BasisFinder
from deltastage.stage.plan import plan_bases
from deltastage.stage.run import run_stage
from deltastage.transports.pipe import PipeTransport
from tests.helpers.site import make_peer, source_tree, stage_json, staged, tree, write_config
from tests.helpers.sshd import SSHServer

MONDAY = date(2026, 11, 16)
MEMBERS = 48
MEMBER = 8 << 10


class Client:
    """A client's collect dir, day by day: ``lib.tar`` (full on day 0 and 7, else the
    members changed that day) and ``mail.mbox`` (weekly: days 0 and 7 only)."""

    def __init__(self) -> None:
        rng = random.Random(12)
        self.members = [rng.randbytes(MEMBER) for _ in range(MEMBERS)]
        self.mail = rng.randbytes(96 << 10)
        self.rng = rng

    def files(self, day: int) -> dict[str, bytes]:
        full = day % 7 == 0
        changed = [] if full else self.rng.sample(range(MEMBERS), 3)
        for index in changed:
            data = bytearray(self.members[index])
            data[100:116] = self.rng.randbytes(16)
            self.members[index] = bytes(data)
        shown = range(MEMBERS) if full else changed
        files = {"lib.tar": b"".join(self.members[i] for i in shown)}
        if full:
            self.mail += self.rng.randbytes(4 << 10)  # a week of mail
            files["mail.mbox"] = self.mail
        return files


def collect_day(tmp: Path, files: Mapping[str, bytes]) -> Path:
    """The collect dir holding only ``files`` (Cedar purges it after each stage)."""
    collect = tmp / "collect" / "p"
    shutil.rmtree(collect, ignore_errors=True)
    return make_peer(tmp, "p", files)


def stage_cli(config: Path, day: date) -> dict[str, Any]:
    code, report = stage_json(config, "--date", day.isoformat())
    (peer,) = report["peers"]
    assert (code, peer["status"]) == (0, "staged"), peer
    return dict(peer)


def week(
    tmp: Path, stage: Callable[[date], dict[str, Any]], days: Collection[int] = range(8)
) -> dict[int, dict[str, Any]]:
    """Each day of ``days`` collected and staged; each staged copy checked."""
    client = Client()
    reports = {}
    for day in range(max(days) + 1):
        files = client.files(day)
        if day not in days:
            continue
        collect = collect_day(tmp, files)
        when = MONDAY + timedelta(days=day)
        reports[day] = stage(when)
        assert tree(staged(tmp, when, "p")) == source_tree(collect)
    return reports


def test_a_full_day_copies_from_last_weeks_full_archive(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    reports = week(tmp_path, lambda day: stage_cli(config, day))
    full = reports[7]
    size = MEMBERS * MEMBER + len(Client().mail) + 8 * (4 << 10)
    # without last week's copies the full archive and the mailbox would cross nearly whole
    assert full["wire_bytes"] < 0.15 * size, full
    assert full["older_basis_files"] == 2, "lib.tar and mail.mbox: from day 0"
    assert all(reports[day]["older_basis_files"] == 0 for day in range(1, 7))


def test_a_weekly_file_is_delta_d_against_last_weeks_copy(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    reports = week(tmp_path, lambda day: stage_cli(config, day), days=(0, 7))
    assert reports[7]["older_basis_files"] == 0, "day 0 is the most recent earlier day"
    mail = tree(staged(tmp_path, MONDAY + timedelta(days=7), "p"))["mail.mbox"]
    # random mail: without last week's copy, the mailbox alone would cross whole
    assert reports[7]["wire_bytes"] < 0.5 * len(mail), reports[7]
    # with days between that lack it, the weekly file still finds last week's copy
    other = tmp_path / "other"
    other.mkdir()
    config = write_config(other)
    reports = week(other, lambda day: stage_cli(config, day))
    assert reports[7]["older_basis_files"] == 2


def test_a_purged_middle_day(tmp_path: Path) -> None:
    """Cedar's purge removed a middle day, and a file of another under its manifest: the
    remaining days serve, nothing fails."""
    config = write_config(tmp_path)

    def stage(day: date) -> dict[str, Any]:
        if day == MONDAY + timedelta(days=7):
            shutil.rmtree(staged(tmp_path, MONDAY + timedelta(days=3), "p"))
            (staged(tmp_path, MONDAY + timedelta(days=2), "p") / "lib.tar").unlink()
        return stage_cli(config, day)

    reports = week(tmp_path, stage)
    assert reports[7]["older_basis_files"] == 2
    assert reports[7]["wire_bytes"] < 0.2 * MEMBERS * MEMBER


def test_basis_days_bounds_the_search(tmp_path: Path) -> None:
    config = write_config(tmp_path, options={"basis_days": 3})
    reports = week(tmp_path, lambda day: stage_cli(config, day))
    assert reports[7]["older_basis_files"] == 1, "only lib.tar's incrementals of days 4 and 5"
    assert reports[7]["wire_bytes"] > 0.5 * MEMBERS * MEMBER, "last week's archive is too old"


AGENT = [sys.executable, "-m", "deltastage", "agent"]


def test_the_week_over_a_pipe_to_an_agent_process(tmp_path: Path) -> None:
    collect = tmp_path / "collect" / "p"
    peer = {"type": "remote", "host": "example.invalid", "collect_dir": str(collect)}
    config = load_config(write_config(tmp_path, {"p": peer}), check_accounts=False)

    def factory(peer: PeerConfig, options: Options) -> PeerSession:
        return bounded_session(PipeTransport([*AGENT, "--root", str(collect)]), options)

    def stage(day: date) -> dict[str, Any]:
        report = run_stage(config, run_date=day, session_factory=factory)
        (peer,) = report.peers
        assert peer.status == "staged", peer.error
        return peer.as_json()

    reports = week(tmp_path, stage)
    assert reports[7]["older_basis_files"] == 2
    assert reports[7]["wire_bytes"] < 0.2 * MEMBERS * MEMBER


@pytest.mark.ssh
def test_the_full_day_over_sshd(tmp_path: Path, sshd_server: SSHServer) -> None:
    collect = tmp_path / "collect" / "p"
    peer = {
        **sshd_server.peer_settings(collect),
        "agent_command": shlex.join(AGENT),
        "idle_timeout": 30.0,
    }
    config = write_config(tmp_path, {"p": peer}, options={"retries": 0})
    reports = week(tmp_path, lambda day: stage_cli(config, day), days=(0, 6, 7))
    assert reports[7]["older_basis_files"] == 2
    assert reports[7]["wire_bytes"] < 0.2 * MEMBERS * MEMBER


def test_choosing_reads_only_manifests_never_earlier_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning the full day opens directories and manifests, never an earlier day's file:
    choosing among a week of copies costs what their manifests cost."""
    config = write_config(tmp_path)
    week(tmp_path, lambda day: stage_cli(config, day), days=range(7))
    client = Client()
    for day in range(7):
        client.files(day)
    full = MONDAY + timedelta(days=7)
    finder = BasisFinder(tmp_path / "staging", "p", full, staged(tmp_path, full, "p"))
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            opened.append(os.fsdecode(path))
        return fd

    monkeypatch.setattr(os, "open", counting_open)
    chosen = {}
    for name, data in client.files(7).items():
        entry = RemoteEntry(name, "file", len(data), 0, 0o644, hash_bytes(data))
        chosen[name] = plan_bases(entry, finder)
    monkeypatch.undo()
    assert len(chosen["lib.tar"]) > 2 and chosen["mail.mbox"], chosen
    assert opened and all(os.path.basename(p) == MANIFEST_NAME for p in opened), opened
