"""The stage action end to end: the real CLI on real directories with local peers."""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import stat
from collections.abc import Generator, Iterable
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
from tests.helpers.transports import SessionProxy

runner = CliRunner()
DAY1 = "2026-11-23"  # a Monday
DAY2 = "2026-11-24"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    make_peer(
        tmp_path,
        "web1",
        {
            "access.log": b"GET /\n" * 5000,
            "etc/nginx.conf": b"worker_processes 2;\n",
            ".hidden": b"dot files are staged too\n",
            "big.bin": random_bytes(3 << 20, 1),
        },
    )
    make_peer(tmp_path, "db1", {"db1-2026-11-23.sql": b"INSERT 1;\n" * 20000})
    make_peer(tmp_path, "mail1", {"spool": b"mail\n"}, ready=False)
    return write_config(tmp_path, {"web1": {}, "db1": {}, "mail1": {}})


def test_first_stage_copies_verifies_and_writes_indicators(site: Path) -> None:
    tmp = site.parent
    code, report = stage_json(site, "--date", DAY1)
    assert report["date"] == DAY1
    assert report["daily_dir"] == str(tmp / "staging/2026/11/23")
    web, db, mail = (peer_json(report, n) for n in ("web1", "db1", "mail1"))
    assert (web["status"], db["status"], mail["status"]) == ("staged", "staged", "not-ready")
    assert code == 1, "a not-ready peer whose failure is not ignored fails the run"
    assert web["files"] == 4 and web["bytes"] == sum(
        len(v) for v in tree(tmp / "collect/web1").values() if v != b""
    )
    for key in ("name", "status", "files", "bytes", "wire_bytes", "seconds", "error"):
        assert key in web
    for name in ("web1", "db1"):
        collect = tmp / "collect" / name
        source = source_tree(collect)
        assert tree(staged(tmp, DAY1, name)) == source
        assert (collect / "cback.stage").exists()
        manifest = json.loads((staged(tmp, DAY1, name) / MANIFEST_NAME).read_text())
        assert sorted(f["path"] for f in manifest["files"]) == sorted(source)
        assert all(len(f["xxh3_128"]) == 32 and f["size"] >= 0 for f in manifest["files"])
    mail_dir = staged(tmp, DAY1, "mail1")
    assert mail_dir.is_dir() and list(mail_dir.iterdir()) == []
    assert not (tmp / "collect/mail1/cback.stage").exists()
    assert (tmp / "staging/2026/11/23/cback.stage").exists()


def test_ignored_failure_gives_exit_zero(tmp_path: Path) -> None:
    make_peer(tmp_path, "a", {"f": b"x"})
    make_peer(tmp_path, "b", {"f": b"y"}, ready=False)
    config = write_config(tmp_path, {"a": {}, "b": {"ignore_failures": "all"}})
    code, report = stage_json(config, "--date", DAY1)
    assert code == 0
    assert peer_json(report, "b")["status"] == "not-ready"
    assert peer_json(report, "b")["ignored"] is True


def test_daily_ignore_rule_follows_starting_day(tmp_path: Path) -> None:
    make_peer(tmp_path, "b", {"f": b"y"}, ready=False)
    config = write_config(tmp_path, {"b": {"ignore_failures": "daily"}})
    assert stage_json(config, "--date", DAY2)[0] == 0  # Tuesday: daily failures are ignored
    assert stage_json(config, "--date", DAY1)[0] == 1  # Monday is the starting day: not ignored
    assert stage_json(config, "--date", DAY2, "--full")[0] == 1


def test_second_day_moves_only_changed_blocks(site: Path) -> None:
    tmp = site.parent
    stage_json(site, "--date", DAY1)
    big = tmp / "collect/web1/big.bin"
    data = bytearray(big.read_bytes())
    for offset in (1000, 1_500_000, 3_000_000):
        data[offset : offset + 10] = b"EDITEDEDIT"
    big.write_bytes(bytes(data))
    os.rename(tmp / "collect/db1/db1-2026-11-23.sql", tmp / "collect/db1/db1-2026-11-24.sql")
    (tmp / "collect/db1/db1-2026-11-24.sql").write_bytes(b"INSERT 1;\n" * 20000 + b"INSERT 2;\n")
    _code, report = stage_json(site, "--date", DAY2)
    web, db = peer_json(report, "web1"), peer_json(report, "db1")
    assert web["status"] == db["status"] == "staged"
    assert web["wire_bytes"] < 0.05 * web["bytes"], web
    assert db["wire_bytes"] < 0.2 * db["bytes"], "a similar name is used as the basis"
    assert tree(staged(tmp, DAY2, "web1"))["big.bin"] == bytes(data)


def test_same_day_rerun_is_cheap_and_replaces_changed_files(site: Path) -> None:
    tmp = site.parent
    stage_json(site, "--date", DAY1)
    _, again = stage_json(site, "--date", DAY1)
    web = peer_json(again, "web1")
    assert web["status"] == "staged" and web["reused"] == web["files"] == 4
    assert web["wire_bytes"] < 20_000
    (tmp / "collect/web1/access.log").write_bytes(b"changed\n")
    (tmp / "collect/web1/etc/nginx.conf").unlink()
    _, third = stage_json(site, "--date", DAY1)
    assert peer_json(third, "web1")["files"] == 3
    staged_tree = tree(staged(tmp, DAY1, "web1"))
    assert staged_tree["access.log"] == b"changed\n"
    assert "etc/nginx.conf" not in staged_tree
    assert runner.invoke(app, ["verify", str(tmp / "staging/2026/11/23")]).exit_code == 0


def test_verify_finds_corrupt_missing_and_extra_files(site: Path) -> None:
    tmp = site.parent
    stage_json(site, "--date", DAY1)
    result = runner.invoke(app, ["verify", "--config", str(site), "--date", DAY1, "--json"])
    assert result.exit_code == 0, result.output
    web = staged(tmp, DAY1, "web1")
    with open(web / "big.bin", "r+b") as f:
        f.seek(12345)
        byte = f.read(1)
        f.seek(12345)
        f.write(bytes([byte[0] ^ 1]))
    (web / "etc/nginx.conf").unlink()
    (web / "stray.txt").write_bytes(b"?")
    result = runner.invoke(app, ["verify", "--config", str(site), "--date", DAY1, "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    web_result = peer_json(report, "web1")
    assert web_result["corrupt"] == ["big.bin"]
    assert web_result["missing"] == ["etc/nginx.conf"]
    assert web_result["extra"] == ["stray.txt"]
    assert peer_json(report, "db1")["status"] == "ok"


def test_stale_lock_is_taken_over_and_live_lock_refuses(site: Path) -> None:
    tmp = site.parent
    (tmp / "staging").mkdir()
    (tmp / "staging/.deltastage.lock").write_text("999999\n")  # left by a dead run
    assert stage_json(site, "--date", DAY1)[1]["peers"][0]["status"] == "staged"
    fd = os.open(tmp / "staging/.deltastage.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, b"4242\n", 0)
        result = runner.invoke(app, ["stage", "--config", str(site), "--date", DAY2])
        assert result.exit_code != 0
        assert "another deltastage run (pid 4242)" in result.output
        assert not (tmp / "staging/2026/11/24").exists()
    finally:
        os.close(fd)


def test_symlinks_and_specials_are_skipped_not_followed(tmp_path: Path) -> None:
    collect = make_peer(tmp_path, "p", {"real.txt": b"real"})
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"do not copy")
    (collect / "link.txt").symlink_to(outside)
    (collect / "linkdir").symlink_to(tmp_path)
    os.mkfifo(collect / "fifo")
    config = write_config(tmp_path, {"p": {}})
    code, report = stage_json(config, "--date", DAY1)
    assert code == 0
    peer = peer_json(report, "p")
    assert sorted(peer["skipped"]) == ["fifo (special)", "link.txt (symlink)", "linkdir (symlink)"]
    assert tree(staged(tmp_path, DAY1, "p")) == {"real.txt": b"real"}
    assert not any(p.is_symlink() for p in staged(tmp_path, DAY1, "p").rglob("*"))


def test_awkward_names_round_trip(tmp_path: Path) -> None:
    names = {"with space.txt": b"1", "ünïcødé/файл.txt": b"2", "new\nline": b"3", "-dash": b"4"}
    make_peer(tmp_path, "p", names)
    config = write_config(tmp_path, {"p": {}})
    assert stage_json(config, "--date", DAY1)[0] == 0
    assert tree(staged(tmp_path, DAY1, "p")) == names
    assert runner.invoke(app, ["verify", str(tmp_path / "staging/2026/11/23")]).exit_code == 0


def test_dry_run_touches_nothing(site: Path) -> None:
    tmp = site.parent
    _code, report = stage_json(site, "--date", DAY1, "--dry-run")
    assert peer_json(report, "web1")["status"] == "would-stage"
    assert peer_json(report, "web1")["files"] == 4
    assert not (tmp / "staging").exists()
    assert not (tmp / "collect/web1/cback.stage").exists()


def test_peer_selection(site: Path) -> None:
    tmp = site.parent
    code, report = stage_json(site, "--date", DAY1, "--peer", "db1")
    assert [p["name"] for p in report["peers"]] == ["db1"] and code == 0
    assert not staged(tmp, DAY1, "web1").exists()
    result = runner.invoke(app, ["stage", "--config", str(site), "--peer", "nope"])
    assert result.exit_code == 2 and "nope" in result.output


def test_parallel_jobs_stage_every_peer(site: Path) -> None:
    _code, report = stage_json(site, "--date", DAY1, "--jobs", "3")
    assert [p["status"] for p in report["peers"]] == ["staged", "staged", "not-ready"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_ownership_and_mode_as_root(tmp_path: Path) -> None:
    make_peer(tmp_path, "p", {"a/b.txt": b"data", "c.txt": b"more"})
    nobody = pwd.getpwnam("nobody")
    config = write_config(
        tmp_path,
        {"p": {}},
        options={
            "backup_user": "nobody",
            "backup_group": _group_name(nobody.pw_gid),
            "file_mode": "0640",
        },
    )
    assert stage_json(config, "--date", DAY1)[0] == 0
    peer_dir = staged(tmp_path, DAY1, "p")
    for path in [peer_dir / "a/b.txt", peer_dir / "c.txt"]:
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
            nobody.pw_uid,
            nobody.pw_gid,
            0o640,
        )
    for directory in [peer_dir, peer_dir / "a"]:
        st = directory.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (nobody.pw_uid, 0o750)


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


def test_source_mode_kept_without_file_mode(tmp_path: Path) -> None:
    collect = make_peer(tmp_path, "p", {"x.sh": b"#!/bin/sh\n"})
    os.chmod(collect / "x.sh", 0o751)
    config = write_config(tmp_path, {"p": {}})
    stage_json(config, "--date", DAY1)
    assert stat.S_IMODE((staged(tmp_path, DAY1, "p") / "x.sh").stat().st_mode) == 0o751


# --- failures injected through a wrapping session ----------------------------------------


class CorruptingSession(SessionProxy):
    """Flips one bit of every delta stream the real session receives."""

    def request_fetch(
        self, root: str, path: str, signature: Iterable[bytes], **kw: Any
    ) -> Generator[bytes, None, None]:
        return self.flipped(self.inner.request_fetch(root, path, signature, **kw))

    def request_fetch_many(
        self, root: str, paths: list[str], **kw: Any
    ) -> list[Generator[bytes, None, None]]:
        return [self.flipped(a) for a in self.inner.request_fetch_many(root, paths, **kw)]

    @staticmethod
    def flipped(answer: Iterable[bytes]) -> Generator[bytes, None, None]:
        data = bytearray(b"".join(answer))
        data[len(data) // 2] ^= 0x40
        yield bytes(data)


def test_hash_mismatch_fails_peer_without_manifest_or_indicator(tmp_path: Path) -> None:
    make_peer(tmp_path, "bad", {"f.bin": random_bytes(200_000, 3)})
    make_peer(tmp_path, "good", {"g.bin": random_bytes(1000, 4)})
    config = load_config(write_config(tmp_path, {"bad": {}, "good": {}}))

    def factory(peer: Any, options: Any) -> Any:
        session = open_peer_session(peer, options)
        return CorruptingSession(session) if peer.name == "bad" else session

    report = run_stage(config, run_date=date(2026, 11, 23), session_factory=factory)
    bad, good = report.peers
    assert bad.status == "failed" and bad.error
    assert good.status == "staged"
    assert not (staged(tmp_path, DAY1, "bad") / MANIFEST_NAME).exists()
    assert not (tmp_path / "collect/bad/cback.stage").exists()
    assert tree(staged(tmp_path, DAY1, "bad")) == {}
    assert (tmp_path / "collect/good/cback.stage").exists()
    assert report.exit_code == 1


class VanishingSession(SessionProxy):
    """The listed file disappears before it is fetched (unreadable / removed source)."""

    def __init__(self, inner: PeerSession, victim: Path) -> None:
        super().__init__(inner)
        self.victim = victim

    def read_survey(self, root: str, hello: bool) -> Any:
        surveyed = self.inner.read_survey(root, hello)
        self.victim.unlink()
        return surveyed


def test_unreadable_file_fails_only_its_peer(tmp_path: Path) -> None:
    collect = make_peer(tmp_path, "a", {"one": b"1", "two": b"2"})
    make_peer(tmp_path, "b", {"three": b"3"})
    config = load_config(write_config(tmp_path, {"a": {}, "b": {}}))

    def factory(peer: Any, options: Any) -> Any:
        session = open_peer_session(peer, options)
        return VanishingSession(session, collect / "two") if peer.name == "a" else session

    report = run_stage(config, run_date=date(2026, 11, 23), session_factory=factory)
    assert [p.status for p in report.peers] == ["failed", "staged"]
    assert "two" in (report.peers[0].error or "")
    assert not (staged(tmp_path, DAY1, "a") / MANIFEST_NAME).exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_mode_fails_peer(tmp_path: Path) -> None:
    collect = make_peer(tmp_path, "a", {"one": b"1"})
    os.chmod(collect / "one", 0)
    make_peer(tmp_path, "b", {"three": b"3"})
    config = write_config(tmp_path, {"a": {}, "b": {}})
    code, report = stage_json(config, "--date", DAY1)
    assert code == 1 and [p["status"] for p in report["peers"]] == ["failed", "staged"]


def test_bad_config_exits_2_before_touching_anything(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[stage]\nstaging_dir = "s"\n[[peers]]\nname = "x"\ntype = "floppy"\ncollect_dir = "c"\n'
    )
    result = runner.invoke(app, ["stage", "--config", str(path)])
    assert result.exit_code == 2
    assert "bad.toml" in result.output and "type" in result.output
    assert not (tmp_path / "s").exists()


def test_check_reports_peer_state(site: Path) -> None:
    result = runner.invoke(app, ["check", "--config", str(site), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    states = {p["name"]: p["state"] for p in report["peers"]}
    assert states == {"web1": "ready", "db1": "ready", "mail1": "not-ready"}
    missing = write_config(site.parent, {"web1": {}, "ghost": {}})
    result = runner.invoke(app, ["check", "--config", str(missing), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["peers"][1]["usable"] is False


class ChangingSession(SessionProxy):
    """The agent reports the source changed while read, ``times`` times, then behaves."""

    def __init__(self, inner: PeerSession, times: int) -> None:
        super().__init__(inner)
        self.times = times

    def request_fetch(
        self, root: str, path: str, signature: Iterable[bytes], **kw: Any
    ) -> Generator[bytes, None, None]:
        return self.changed(path, self.inner.request_fetch(root, path, signature, **kw))

    def request_fetch_many(
        self, root: str, paths: list[str], **kw: Any
    ) -> list[Generator[bytes, None, None]]:
        answers = self.inner.request_fetch_many(root, paths, **kw)
        return [self.changed(p, a) for p, a in zip(paths, answers, strict=True)]

    def changed(
        self, path: str, answer: Generator[bytes, None, None]
    ) -> Generator[bytes, None, None]:
        """The answer, or (``times`` times) its data dropped and a change reported."""
        from deltastage.errors import SourceChangedError

        if self.times <= 0:
            return answer
        self.times -= 1

        def changed() -> Generator[bytes, None, None]:
            for _ in answer:  # read to its end, as the session expects, and dropped
                pass
            raise SourceChangedError(f"{path}: size or mtime changed while read")
            yield b""  # a generator, as the session's answers are

        return changed()


@pytest.mark.parametrize(("times", "status"), [(1, "staged"), (2, "failed")])
def test_source_changing_while_read_is_retried_then_failed(
    tmp_path: Path, times: int, status: str
) -> None:
    make_peer(tmp_path, "p", {"live.log": b"growing\n" * 100})
    config = load_config(write_config(tmp_path, {"p": {}}))

    def factory(peer: Any, options: Any) -> Any:
        return ChangingSession(open_peer_session(peer, options), times)

    report = run_stage(config, run_date=date(2026, 11, 23), session_factory=factory)
    peer = report.peers[0]
    assert peer.status == status, peer.error
    if status == "failed":
        assert "changed" in (peer.error or "")
        assert not (staged(tmp_path, DAY1, "p") / MANIFEST_NAME).exists()
        assert not (tmp_path / "collect/p/cback.stage").exists()
    else:
        assert tree(staged(tmp_path, DAY1, "p")) == {"live.log": b"growing\n" * 100}


@pytest.mark.parametrize(("failures", "status"), [(1, "staged"), (99, "failed")])
def test_staged_copy_that_does_not_verify_on_disk_is_refetched_then_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int, status: str
) -> None:
    """The re-read after syncfs disagrees with the source's hash (a bad disk, say)."""
    from deltastage.stage import readback

    make_peer(tmp_path, "p", {"a.bin": random_bytes(100_000, 5), "b.txt": b"b"})
    config = load_config(write_config(tmp_path, {"p": {}}))
    real = readback.verify_on_disk
    left = {"n": failures}

    def flaky(fd: int, size: int, digest: bytes, *checked: Any) -> bool:
        if size == 100_000 and left["n"] > 0:
            left["n"] -= 1
            return False
        return real(fd, size, digest, *checked)

    monkeypatch.setattr(readback, "verify_on_disk", flaky)
    report = run_stage(config, run_date=date(2026, 11, 23))
    peer = report.peers[0]
    assert peer.status == status, peer.error
    peer_dir = staged(tmp_path, DAY1, "p")
    if status == "staged":
        assert tree(peer_dir)["a.bin"] == random_bytes(100_000, 5)
    else:
        assert "does not match" in (peer.error or "")
        assert not (peer_dir / MANIFEST_NAME).exists()
        assert "a.bin" not in tree(peer_dir)
        assert not (tmp_path / "collect/p/cback.stage").exists()
    assert not [p for p in peer_dir.rglob(".deltastage-tmp-*")], "no temp file left behind"


@pytest.fixture
def small_early_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Early checks from 256 KiB on, in 64 KiB chunks, so that a test file can be small."""
    from deltastage.stage import receiver

    monkeypatch.setattr(receiver, "WRITEBACK_CHUNK", 64 << 10)
    monkeypatch.setattr(receiver, "EARLY_CHECK_MIN", 256 << 10)


def test_a_big_fetched_file_is_read_back_while_it_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_early_check: None
) -> None:
    """Its commit re-reads only the end, continuing the hash of what was read back already."""
    from deltastage.stage import readback

    data = random_bytes(3_000_000, 11)  # patched in 1 MiB writes
    make_peer(tmp_path, "p", {"big.bin": data, "small.txt": b"small"})
    config = load_config(write_config(tmp_path, {"p": {}}))
    real = readback.verify_on_disk
    starts: dict[int, int] = {}

    def spy(fd: int, size: int, digest: bytes, start: int = 0, *rest: Any) -> bool:
        starts[size] = start
        return real(fd, size, digest, start, *rest)

    monkeypatch.setattr(readback, "verify_on_disk", spy)
    report = run_stage(config, run_date=date(2026, 11, 23))
    assert report.peers[0].status == "staged", report.peers[0].error
    assert starts[5] == 0
    assert 0 < starts[3_000_000] < 3_000_000, "the leading part was checked early"
    assert tree(staged(tmp_path, DAY1, "p"))["big.bin"] == data


def test_a_bad_read_back_of_the_leading_part_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_early_check: None
) -> None:
    """What the early check reads back counts: a flipped byte there fails the file, which is
    then fetched again without a basis, and verifies."""
    from deltastage.hashing import Hasher
    from deltastage.stage import readback

    data = random_bytes(3_000_000, 12)
    make_peer(tmp_path, "p", {"big.bin": data})
    config = load_config(write_config(tmp_path, {"p": {}}))
    bad_reads = {"left": 1}

    class BadDisk:
        def __init__(self) -> None:
            self.real = Hasher()

        def update(self, chunk: bytes) -> None:
            if bad_reads["left"]:
                bad_reads["left"] -= 1
                chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
            self.real.update(chunk)

        def digest(self) -> bytes:
            return self.real.digest()

    real = readback.verify_on_disk
    verdicts: list[bool] = []

    def spy(*args: Any) -> bool:
        verdicts.append(real(*args))
        return verdicts[-1]

    monkeypatch.setattr(readback, "Hasher", BadDisk)
    monkeypatch.setattr(readback, "verify_on_disk", spy)
    report = run_stage(config, run_date=date(2026, 11, 23))
    assert bad_reads["left"] == 0
    assert verdicts == [False, True], "failed, fetched again, verified"
    assert report.peers[0].status == "staged", report.peers[0].error
    assert tree(staged(tmp_path, DAY1, "p"))["big.bin"] == data


def test_only_the_fetch_being_waited_for_may_be_refined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetch requested while another answer is still being read is sent refine=0 when its
    blocks are small: a refinement would stall the agent until that answer is read. A file
    of a few MiB (a dump, say) may still be refined."""
    big, mid = random_bytes(4 << 20, 21), random_bytes(1 << 20, 22)
    dump = random_bytes((4 << 20) - 1, 23)  # blocks of 2 KiB, signed after big.bin's
    make_peer(tmp_path, "p", {"big.bin": big, "mid.bin": mid, "dump.bin": dump})
    config = load_config(write_config(tmp_path, {"p": {}}))
    assert run_stage(config, run_date=date(2026, 11, 23)).peers[0].status == "staged"
    edited = {"big.bin": big[:5000] + b"edit" + big[5000:], "mid.bin": b"e" + mid}
    make_peer(tmp_path, "p", {**edited, "dump.bin": b"e" + dump})
    asked: dict[str, tuple[bool, int]] = {}
    real = PeerSession.request_fetch

    def spy(self: PeerSession, root: str, path: str, *args: Any, **kw: Any) -> Any:
        asked[path] = (kw["refine"], self.unread_answers)
        return real(self, root, path, *args, **kw)

    monkeypatch.setattr(PeerSession, "request_fetch", spy)
    report = run_stage(config, run_date=date(2026, 11, 24))
    assert report.peers[0].status == "staged", report.peers[0].error
    assert asked["big.bin"] == (True, 0)
    assert not asked["mid.bin"][0] and asked["mid.bin"][1] >= 1
    assert asked["dump.bin"][0] and asked["dump.bin"][1] >= 1
    assert tree(staged(tmp_path, DAY2, "p"))["mid.bin"] == b"e" + mid


def test_the_configured_indicators_are_left_out_and_other_names_staged(tmp_path: Path) -> None:
    collect = make_peer(tmp_path, "p", {"cback.notes": b"a file", "sub/ready.flag": b"nested"})
    (collect / "cback.collect").unlink()
    (collect / "ready.flag").touch()
    (collect / "done.flag").touch()  # left by an earlier night
    config = write_config(
        tmp_path,
        {"p": {}},
        options={"collect_indicator": "ready.flag", "stage_indicator": "done.flag"},
    )
    code, report = stage_json(config, "--date", DAY1)
    assert code == 0, report
    assert peer_json(report, "p")["files"] == 2
    assert tree(staged(tmp_path, DAY1, "p")) == {
        "cback.notes": b"a file",
        "sub/ready.flag": b"nested",
    }
    (collect / "ready.flag").unlink()
    code, report = stage_json(config, "--date", DAY2)
    assert peer_json(report, "p")["status"] == "not-ready"
    assert "no ready.flag in" in peer_json(report, "p")["error"]


def test_small_files_received_into_memory_are_written_by_the_committer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small fetched file has no temp file until its batch is committed (its zeros
    still a hole at its end); one that grew past SMALL_FILE since it was listed goes to
    its temp file once it outgrows memory; both verify and stage as the source now is."""
    from deltastage.stage import attempt, generator

    grown = random_bytes(3 * generator.SMALL_FILE, 9)
    files = {
        "a.txt": b"small",
        "tail.bin": b"x" * 100 + bytes(8192),  # a trailing run of zeros: a hole
        "sub/grows.bin": b"small at first",
    }
    collect = make_peer(tmp_path, "p", files)
    config = load_config(write_config(tmp_path, {"p": {}}))
    plan = attempt.Attempt._plan
    created_early: list[str] = []

    def plan_then_grow(self: attempt.Attempt, entries: Any) -> Any:
        planned = plan(self, entries)
        (collect / "sub/grows.bin").write_bytes(grown)  # listed small, fetched big
        return planned

    create = generator.Transfer.create_output

    def spy(transfer: generator.Transfer) -> None:
        created_early.append(transfer.job.entry.path)
        create(transfer)

    monkeypatch.setattr(attempt.Attempt, "_plan", plan_then_grow)
    monkeypatch.setattr(generator.Transfer, "create_output", spy)
    report = run_stage(config, run_date=date.fromisoformat(DAY1))
    assert report.peers[0].status == "staged", report.peers[0].error
    peer_dir = staged(tmp_path, DAY1, "p")
    assert tree(peer_dir) == {**files, "sub/grows.bin": grown}
    assert created_early == ["sub/grows.bin"], "only the file that outgrew memory"
    assert (peer_dir / "tail.bin").stat().st_blocks * 512 < 8192, "its zeros left a hole"
    assert not [p for p in peer_dir.rglob(".deltastage-tmp-*")], "no temp file left behind"


def test_a_peer_of_exactly_max_files_per_peer_files_stages(tmp_path: Path) -> None:
    """The listing also names the collect and stage indicators (day 2 has both): they do
    not count as files; one more file fails the peer."""
    config = write_config(tmp_path, options={"max_files_per_peer": 3})
    files = {f"f{i}": b"x%d" % i for i in range(3)}
    make_peer(tmp_path, "p", files)
    for day in ("2026-11-23", "2026-11-24"):
        code, report = stage_json(config, "--date", day)
        assert code == 0, report
    (tmp_path / "collect/p/f3").write_bytes(b"one more")
    code, report = stage_json(config, "--date", "2026-11-25")
    assert code == 1 and "more than" in peer_json(report, "p")["error"]
