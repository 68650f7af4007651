"""Unchanged files hard-linked to yesterday's copy, presigned bases, retries of a connect."""

from __future__ import annotations

import os
import threading
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from deltastage.config import Options, PeerConfig, load_config
from deltastage.delta.signature import SignatureBuilder
from deltastage.errors import ConnectError
from deltastage.master.connect import EarlySessions, open_peer_session
from deltastage.master.session import PeerSession
from deltastage.stage.presign import Presigner
from deltastage.stage.run import run_stage
from tests.helpers.site import (
    make_peer,
    peer_json,
    random_bytes,
    source_tree,
    stage_json,
    staged,
    tree,
    write_config,
)

DAY1 = "2026-11-23"
DAY2 = "2026-11-24"

MTIME = 1_700_000_000


def _site(tmp: Path, **options: object) -> Path:
    """Peer web1 with two files that never change and a dump that will, all a day old."""
    collect = make_peer(
        tmp,
        "web1",
        {
            "same.log": b"unchanged line\n" * 4000,
            "etc/same.conf": b"listen 80;\n",
            "dump.sql": random_bytes(2 << 20, 7),
        },
    )
    for path in collect.rglob("*"):
        if path.is_file():
            os.utime(path, (MTIME, MTIME))
    return write_config(tmp, ["web1"], options=options)


def _edit_dump(tmp: Path) -> None:
    dump = tmp / "collect/web1/dump.sql"
    data = bytearray(dump.read_bytes())
    data[1000:1010] = b"X" * 10
    dump.write_bytes(bytes(data))


def test_unchanged_files_are_hard_links_to_yesterdays_copy(tmp_path: Path) -> None:
    config = _site(tmp_path)
    assert stage_json(config, "--date", DAY1)[0] == 0
    _edit_dump(tmp_path)
    code, report = stage_json(config, "--date", DAY2)
    assert code == 0 and peer_json(report, "web1")["status"] == "staged"
    day1, day2 = (
        staged(tmp_path, DAY1, "web1"),
        staged(tmp_path, DAY2, "web1"),
    )
    for rel in ("same.log", "etc/same.conf"):
        assert (day1 / rel).stat().st_ino == (day2 / rel).stat().st_ino, rel
        assert (day2 / rel).stat().st_nlink == 2
    assert (day1 / "dump.sql").stat().st_ino != (day2 / "dump.sql").stat().st_ino
    assert (day2 / "dump.sql").stat().st_nlink == 1
    assert tree(day2) == source_tree(tmp_path / "collect/web1")
    assert int((day2 / "same.log").stat().st_mtime) == MTIME


def test_link_unchanged_false_copies(tmp_path: Path) -> None:
    config = _site(tmp_path, link_unchanged=False)
    assert load_config(config).options.link_unchanged is False
    stage_json(config, "--date", DAY1)
    assert stage_json(config, "--date", DAY2)[0] == 0
    day1, day2 = (
        staged(tmp_path, DAY1, "web1"),
        staged(tmp_path, DAY2, "web1"),
    )
    assert (day1 / "same.log").stat().st_ino != (day2 / "same.log").stat().st_ino
    assert tree(day2) == source_tree(tmp_path / "collect/web1")


def test_new_mtime_or_new_mode_gets_a_copy_not_a_link(tmp_path: Path) -> None:
    config = _site(tmp_path)
    stage_json(config, "--date", DAY1)
    os.utime(tmp_path / "collect/web1/same.log", (MTIME + 60, MTIME + 60))  # touched, same bytes
    os.chmod(tmp_path / "collect/web1/etc/same.conf", 0o600)
    assert stage_json(config, "--date", DAY2)[0] == 0
    day1, day2 = (
        staged(tmp_path, DAY1, "web1"),
        staged(tmp_path, DAY2, "web1"),
    )
    for rel in ("same.log", "etc/same.conf"):
        assert (day1 / rel).stat().st_ino != (day2 / rel).stat().st_ino, rel
        assert (day1 / rel).stat().st_nlink == 1
    assert int((day2 / "same.log").stat().st_mtime) == MTIME + 60
    assert int((day1 / "same.log").stat().st_mtime) == MTIME, "yesterday's copy untouched"
    assert (day2 / "etc/same.conf").stat().st_mode & 0o777 == 0o600
    assert (day1 / "etc/same.conf").stat().st_mode & 0o777 == 0o644


def test_a_rerun_with_new_file_mode_never_chmods_yesterdays_inode(tmp_path: Path) -> None:
    config = _site(tmp_path)
    stage_json(config, "--date", DAY1)
    stage_json(config, "--date", DAY2)
    day1, day2 = (
        staged(tmp_path, DAY1, "web1"),
        staged(tmp_path, DAY2, "web1"),
    )
    assert (day1 / "same.log").stat().st_ino == (day2 / "same.log").stat().st_ino
    config = _site(tmp_path, file_mode="0600")
    assert stage_json(config, "--date", DAY2)[0] == 0
    assert (day2 / "same.log").stat().st_mode & 0o777 == 0o600
    assert (day1 / "same.log").stat().st_mode & 0o777 == 0o644
    assert (day1 / "same.log").stat().st_ino != (day2 / "same.log").stat().st_ino


def test_a_corrupted_earlier_copy_is_not_linked_into_today(tmp_path: Path) -> None:
    config = _site(tmp_path)
    stage_json(config, "--date", DAY1)
    yesterday = staged(tmp_path, DAY1, "web1") / "same.log"
    stat_before = yesterday.stat()
    with open(yesterday, "r+b") as handle:  # bit rot: same size, same mtime, other bytes
        handle.write(b"U")
    os.utime(yesterday, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))
    code, report = stage_json(config, "--date", DAY2)
    assert code == 0, report
    today = staged(tmp_path, DAY2, "web1") / "same.log"
    assert today.read_bytes() == (tmp_path / "collect/web1/same.log").read_bytes()
    assert today.stat().st_ino != yesterday.stat().st_ino


# --- the presigner ------------------------------------------------------------------------


def _signature(path: Path) -> bytes:
    data = path.read_bytes()
    builder = SignatureBuilder(len(data))
    return builder.update(data) + builder.finish()


def test_presigner_signs_the_biggest_files_exactly_as_a_fetch_would(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    files = {"big": 3 << 20, "sub/mid": 2 << 20, "small": 1000, "tiny": 10}
    for rel, size in files.items():
        (tmp_path / rel).write_bytes(random_bytes(size, size))
    presigner = Presigner(tmp_path, min_size=1 << 20)
    try:
        for rel in ("big", "sub/mid"):
            presigned = presigner.take(rel)
            assert presigned is not None, rel
            assert b"".join(presigned.chunks) == _signature(tmp_path / rel)
            st = (tmp_path / rel).stat()
            assert presigned.identity[1:3] == (st.st_ino, st.st_size)
        assert presigner.take("small") is None  # below min_size: the fetch signs it
        assert presigner.take("big") is None  # handed over once
    finally:
        presigner.close()


def test_presigner_keep_only_and_close(tmp_path: Path) -> None:
    for i in range(4):
        (tmp_path / f"f{i}").write_bytes(random_bytes((2 << 20) + i, i))
    presigner = Presigner(tmp_path, min_size=1 << 20, max_files=3)
    presigner.keep_only({"f3"})
    presigned = presigner.take("f3")
    assert presigned is None or b"".join(presigned.chunks) == _signature(tmp_path / "f3")
    assert presigner.take("f1") is None  # dropped by keep_only or never handed out
    assert presigner.take("f0") is None  # max_files=3 keeps the 3 biggest: f3, f2, f1
    presigner.close()
    presigner.close()  # idempotent


def test_presigner_never_follows_links_out_of_its_root(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(random_bytes(2 << 20, 1))
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(secret)
    presigner = Presigner(root, min_size=1)
    try:
        assert presigner.take("link") is None
    finally:
        presigner.close()


def test_a_basis_changed_after_presigning_still_stages_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _site(tmp_path)
    stage_json(config, "--date", DAY1)
    _edit_dump(tmp_path)
    yesterday = staged(tmp_path, DAY1, "web1") / "dump.sql"
    original = Presigner.take

    def take_then_touch(self: Presigner, path: str) -> object:
        presigned = original(self, path)
        # the basis changes between presigning and the fetch: a new inode, other bytes
        data = bytearray(yesterday.read_bytes())
        data[:4] = b"ZZZZ"
        yesterday.unlink()
        yesterday.write_bytes(bytes(data))
        return presigned

    monkeypatch.setattr(Presigner, "take", take_then_touch)
    code, report = stage_json(config, "--date", DAY2)
    assert code == 0, report
    assert tree(staged(tmp_path, DAY2, "web1")) == source_tree(tmp_path / "collect/web1")


# --- opening sessions --------------------------------------------------------------------


def test_a_failure_to_connect_counts_as_an_attempt_and_is_retried(tmp_path: Path) -> None:
    config = load_config(_site(tmp_path))
    calls: list[str] = []

    def flaky(peer: PeerConfig, options: Options) -> PeerSession:
        calls.append(peer.name)
        if len(calls) == 1:
            raise ConnectError("web1:22: connection refused")
        return open_peer_session(peer, options)

    report = run_stage(config, run_date=date.fromisoformat(DAY1), session_factory=flaky)
    result = report.peers[0]
    assert (result.status, result.attempts) == ("staged", 2)
    assert calls == ["web1", "web1"]


def test_an_early_session_serves_the_first_attempt(tmp_path: Path) -> None:
    config = load_config(_site(tmp_path))
    opened: list[str] = []

    def factory(peer: PeerConfig, options: Options) -> PeerSession:
        opened.append(threading.current_thread().name)
        return open_peer_session(peer, options)

    with EarlySessions(config.peers, config.options, factory) as early:
        report = run_stage(
            config, run_date=date.fromisoformat(DAY1), session_factory=early.session_factory
        )
    assert report.peers[0].status == "staged"
    assert opened == ["connect"], "one session, opened on the early thread"


def test_an_early_session_has_sent_its_survey_when_the_attempt_takes_it(tmp_path: Path) -> None:
    config = load_config(_site(tmp_path))
    with EarlySessions(config.peers, config.options) as early:
        session = early.session_factory(config.peers[0], config.options)
        assert session.wire_bytes > 0, "the survey went out on the early thread"
        sent = session.wire_bytes
        report = run_stage(
            config, run_date=date.fromisoformat(DAY1), session_factory=lambda p, o: session
        )
    assert report.peers[0].status == "staged" and report.peers[0].wire_bytes > sent


def test_an_early_open_failure_is_the_first_attempt_and_is_retried(tmp_path: Path) -> None:
    config = load_config(_site(tmp_path))
    calls: list[str] = []

    def flaky(peer: PeerConfig, options: Options) -> PeerSession:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            raise ConnectError("web1:22: connection refused")
        return open_peer_session(peer, options)

    with EarlySessions(config.peers, config.options, flaky) as early:
        report = run_stage(
            config, run_date=date.fromisoformat(DAY1), session_factory=early.session_factory
        )
    assert (report.peers[0].status, report.peers[0].attempts) == ("staged", 2)
    assert calls == ["connect", "MainThread"]


def test_early_sessions_nobody_took_are_closed(tmp_path: Path) -> None:
    config = load_config(_site(tmp_path))
    sessions: list[PeerSession] = []

    def factory(peer: PeerConfig, options: Options) -> PeerSession:
        session = open_peer_session(peer, options)
        sessions.append(session)
        return session

    EarlySessions(config.peers, config.options, factory).close()
    for _ in range(200):
        if sessions and sessions[0]._closed:
            break
        threading.Event().wait(0.01)
    assert sessions and sessions[0]._closed


# --- the console script's exit -----------------------------------------------------------


def test_the_console_script_leaves_whole_json_a_log_file_and_exit_codes(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    config = _site(tmp_path)
    log = tmp_path / "stage.log"
    argv = ["stage", "--config", str(config), "--json", "--date", DAY1, "--log-file", str(log)]
    run = subprocess.run(
        [sys.executable, "-m", "deltastage", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert peer_json(report, "web1")["status"] == "staged"
    assert "peer=web1 status=staged" in log.read_text()
    bad = subprocess.run(
        [sys.executable, "-m", "deltastage", "stage", "--config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "nope.toml" in bad.stderr


# --- the speculative fetch of the likeliest changed big file ------------------------------


@pytest.fixture
def requested(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path the master requests a fetch of, in order."""
    seen: list[str] = []
    real = PeerSession.request_fetch

    def spy(self: PeerSession, root: str, path: str, *args: object, **kw: object) -> object:
        seen.append(path)
        return real(self, root, path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(PeerSession, "request_fetch", spy)
    return seen


def test_a_changed_big_file_is_requested_once_before_the_listing(
    tmp_path: Path, requested: list[str]
) -> None:
    config = _site(tmp_path)
    stage_json(config, "--date", DAY1)
    _edit_dump(tmp_path)
    requested.clear()
    assert stage_json(config, "--date", DAY2)[0] == 0
    assert requested == ["dump.sql"], "speculated, then adopted: not requested again"
    assert tree(staged(tmp_path, DAY2, "web1")) == source_tree(tmp_path / "collect/web1")


@pytest.mark.parametrize("change", ["unchanged", "removed"])
def test_a_speculative_fetch_nobody_needs_is_dropped(
    tmp_path: Path, requested: list[str], change: str
) -> None:
    config = _site(tmp_path)
    stage_json(config, "--date", DAY1)
    if change == "removed":
        (tmp_path / "collect/web1/dump.sql").unlink()
    requested.clear()
    code, report = stage_json(config, "--date", DAY2)
    assert code == 0, report
    assert requested == ["dump.sql"]
    day1, day2 = (
        staged(tmp_path, DAY1, "web1"),
        staged(tmp_path, DAY2, "web1"),
    )
    assert tree(day2) == source_tree(tmp_path / "collect/web1")
    if change == "unchanged":
        assert (day1 / "dump.sql").stat().st_ino == (day2 / "dump.sql").stat().st_ino
    assert not [p for p in day2.rglob("*") if p.name.startswith(".deltastage-tmp-")]


def test_no_speculation_for_an_unready_peer_leaves_anything_behind(
    tmp_path: Path, requested: list[str]
) -> None:
    config = _site(tmp_path)
    stage_json(config, "--date", DAY1)
    (tmp_path / "collect/web1/cback.collect").unlink()
    code, report = stage_json(config, "--date", DAY2)
    assert code == 1 and peer_json(report, "web1")["status"] == "not-ready"
    day2 = staged(tmp_path, DAY2, "web1")
    assert not [p for p in day2.rglob("*") if p.is_file()], "no temp file, nothing staged"


def test_a_same_day_rerun_does_not_speculate(tmp_path: Path, requested: list[str]) -> None:
    config = _site(tmp_path)
    stage_json(config, "--date", DAY1)
    _edit_dump(tmp_path)
    stage_json(config, "--date", DAY2)
    requested.clear()
    assert stage_json(config, "--date", DAY2)[0] == 0  # everything is already staged
    assert requested == []


@pytest.mark.parametrize("touched", [False, True], ids=["same-mtime", "new-mtime"])
def test_a_basis_changed_between_listing_and_linking_is_not_linked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, touched: bool
) -> None:
    """Yesterday's copy is altered after the plan chose it and before the link: with its
    size and mtime kept, the link is made and the re-read catches it (the name is unlinked
    and the file fetched again); with a new mtime, it is not linked at all."""
    from deltastage.stage.batchcommit import BatchCommitter

    config = _site(tmp_path)
    assert stage_json(config, "--date", DAY1)[0] == 0
    day1 = staged(tmp_path, DAY1, "web1")
    real = BatchCommitter._make_local
    altered: list[bool] = []

    def alter_then_make(self: BatchCommitter, batch: list[Any]) -> None:
        if not altered:
            target = day1 / "same.log"
            data = bytearray(target.read_bytes())
            data[10] ^= 1
            target.write_bytes(bytes(data))
            mtime = MTIME + 60 if touched else MTIME
            os.utime(target, (mtime, mtime))
            altered.append(True)
        real(self, batch)

    monkeypatch.setattr(BatchCommitter, "_make_local", alter_then_make)
    report = run_stage(load_config(config), run_date=date(2026, 11, 24))
    assert report.peers[0].status == "staged", report.peers[0].error
    assert altered
    day2 = staged(tmp_path, DAY2, "web1")
    assert tree(day2) == source_tree(tmp_path / "collect/web1")
    assert (day2 / "same.log").stat().st_ino != (day1 / "same.log").stat().st_ino
    assert (day2 / "same.log").stat().st_nlink == 1
    assert (day2 / "etc/same.conf").stat().st_nlink == 2, "the untouched one is still linked"
    assert not [p for p in day2.rglob(".deltastage-*")], "nothing left behind"
