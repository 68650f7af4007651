"""Odd trees and every exit path (issue 17): the real CLI on real directories, local peers
(and the agent over a pipe or SSH where it is involved)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import resource
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deltastage.cli.main import app
from deltastage.config import load_config
from deltastage.manifest import MANIFEST_NAME
from deltastage.master.connect import open_peer_session
from deltastage.safefs import MAX_OPEN_DIRS, DirCache
from deltastage.stage.run import run_stage
from deltastage.stage.sparse import copy_sparse, write_sparse
from tests.helpers.site import (
    interruptible_stage,
    make_peer,
    peer_json,
    source_tree,
    sparse_file,
    staged,
    tree,
    write_config,
)
from tests.helpers.site import stage_json as stage
from tests.helpers.sshd import SSHServer
from tests.test_stage import VanishingSession
from tests.test_stage_ssh import remote_peer

runner = CliRunner()
DAY1 = "2026-11-23"  # a Monday
DAY2 = "2026-11-24"

LATIN1 = b"x-\xe9"  # "x-é" written by a Latin-1 host: not UTF-8
INVALID = b"\xff\xfe-bad"
NFC = "caf\u00e9".encode()
NFD = "cafe\u0301".encode()


def _bytes_tree(root: Path) -> dict[bytes, bytes]:
    """Every staged file by its name's bytes (the internal names and manifest left out)."""
    found: dict[bytes, bytes] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not d.startswith(b".deltastage-")]
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), base)
            if rel != MANIFEST_NAME.encode():
                with open(os.path.join(dirpath, name), "rb") as stream:
                    found[rel] = stream.read()
    return found


def _odd_peer(tmp: Path, name: str, files: dict[bytes, bytes]) -> Path:
    collect = make_peer(tmp, name, {})
    for rel, data in files.items():
        target = os.path.join(os.fsencode(collect), rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as stream:
            stream.write(data)
    return collect


ODD = {
    LATIN1: b"latin-1\n",
    INVALID: b"invalid\n",
    NFC: b"composed\n",
    NFD: b"decomposed\n",
    b"dir-\xe9/inner-\xfc": b"nested\n",
}


def test_non_utf8_names_are_staged_under_the_same_bytes(tmp_path: Path) -> None:
    _odd_peer(tmp_path, "old", ODD)
    make_peer(tmp_path, "new", {"plain": b"plain\n"})
    config = write_config(tmp_path, {"old": {}, "new": {}})
    code, report = stage(config, "--date", DAY1, "--jobs", "1")
    assert code == 0, report
    assert [peer_json(report, n)["status"] for n in ("old", "new")] == ["staged", "staged"]
    assert peer_json(report, "old")["files"] == len(ODD)
    assert _bytes_tree(staged(tmp_path, DAY1, "old")) == ODD

    # the manifest is UTF-8 JSON; an undecodable byte is the escape \udcXX (surrogateescape)
    raw = (staged(tmp_path, DAY1, "old") / MANIFEST_NAME).read_bytes()
    raw.decode("utf-8")
    assert b'"x-\\udce9"' in raw
    paths = {os.fsencode(e["path"]) for e in json.loads(raw)["files"]}
    assert paths == set(ODD)

    verified = runner.invoke(app, ["verify", "--config", str(config), "--date", DAY1, "--json"])
    assert verified.exit_code == 0, verified.output
    assert all(p["status"] == "ok" for p in json.loads(verified.stdout)["peers"])

    # the second day: every odd name found in the earlier day, linked, nothing sent again
    code, second = stage(config, "--date", DAY2)
    old = peer_json(second, "old")
    assert code == 0 and old["status"] == "staged", old
    assert _bytes_tree(staged(tmp_path, DAY2, "old")) == ODD
    assert os.stat(os.path.join(os.fsencode(staged(tmp_path, DAY2, "old")), LATIN1)).st_nlink == 2

    history = runner.invoke(app, ["history", "--config", str(config), "--json"])
    assert history.exit_code == 0, history.output


def test_an_odd_name_in_an_error_is_carried_losslessly(tmp_path: Path) -> None:
    collect = _odd_peer(tmp_path, "old", {LATIN1: b"x"})
    make_peer(tmp_path, "new", {"plain": b"plain\n"})
    os.mkfifo(os.path.join(os.fsencode(collect), b"fifo-\xe9"))
    config = write_config(tmp_path, {"old": {}, "new": {}})
    result = runner.invoke(app, ["stage", "--config", str(config), "--date", DAY1, "--json"])
    assert result.exit_code == 0, result.output
    assert "fifo-\\udce9 (special)" in result.stdout  # escaped in the JSON text
    report = json.loads(result.stdout)
    assert peer_json(report, "old")["skipped"] == ["fifo-\udce9 (special)"]
    table = runner.invoke(app, ["stage", "--config", str(config), "--date", DAY1])
    assert table.exit_code == 0, table.output
    assert "fifo-\\xe9" in table.output  # shown with the byte escaped


def test_an_unexpected_error_in_one_peer_fails_only_that_peer(
    tmp_path: Path, monkeypatch: Any
) -> None:
    make_peer(tmp_path, "a", {"one": b"1"})
    make_peer(tmp_path, "b", {"two": b"2"})
    config = write_config(tmp_path, {"a": {}, "b": {}})
    from deltastage.stage import attempt

    real = attempt.Attempt.run

    def broken(self: Any) -> None:
        if self.target.peer.name == "a":
            raise ValueError("a bug near x-\udce9")
        real(self)

    monkeypatch.setattr(attempt.Attempt, "run", broken)
    code, report = stage(config, "--date", DAY1, "--jobs", "1")
    assert code == 1
    a, b = peer_json(report, "a"), peer_json(report, "b")
    assert (a["status"], b["status"]) == ("failed", "staged")
    assert "a bug near x-\udce9" in a["error"]
    with sqlite3.connect(tmp_path / "staging" / ".deltastage-history.sqlite") as db:
        rows = db.execute("SELECT peer, status FROM peer_runs ORDER BY peer").fetchall()
    assert rows == [("a", "failed"), ("b", "staged")]
    # the history keeps the error's odd name losslessly, escaped in its JSON
    history = runner.invoke(app, ["history", "--config", str(config), "--json"])
    assert history.exit_code == 0, history.output
    assert "x-\\udce9" in history.stdout
    errors = [row["error"] for row in json.loads(history.stdout) if row["error"]]
    assert any("a bug near x-\udce9" in error for error in errors)
    table = runner.invoke(app, ["history", "--config", str(config)])
    assert table.exit_code == 0 and "x-\\xe9" in table.output


@pytest.mark.ssh
def test_non_utf8_names_through_the_agent_over_ssh(tmp_path: Path, sshd_server: SSHServer) -> None:
    collect = _odd_peer(tmp_path, "old", ODD)
    config = write_config(tmp_path, {"old": remote_peer(sshd_server, collect)})
    code, report = stage(config, "--date", DAY1)
    assert code == 0, report
    assert report["peers"][0]["files"] == len(ODD)
    assert _bytes_tree(staged(tmp_path, DAY1, "old")) == ODD
    verified = runner.invoke(app, ["verify", "--config", str(config), "--date", DAY1])
    assert verified.exit_code == 0, verified.output


def test_a_repeated_peer_is_staged_once(tmp_path: Path) -> None:
    make_peer(tmp_path, "p", {"big.bin": os.urandom(4 << 20), "small": b"s"})
    config = write_config(tmp_path, {"p": {}})
    code, report = stage(config, "--date", DAY1, "--peer", "p", "--peer", "p", "--jobs", "2")
    assert code == 0, report
    assert [peer["name"] for peer in report["peers"]] == ["p"]
    names = os.listdir(staged(tmp_path, DAY1, "p"))
    assert sorted(names) == ["big.bin", MANIFEST_NAME, "small"]


def test_verify_reports_stray_internal_files_in_a_staged_dir(tmp_path: Path) -> None:
    make_peer(tmp_path, "p", {"data": b"data", "sub/more": b"more"})
    config = write_config(tmp_path, {"p": {}})
    assert stage(config, "--date", DAY1)[0] == 0
    peer_dir = staged(tmp_path, DAY1, "p")
    os.link(peer_dir / "data", peer_dir / ".deltastage-tmp-0123456789abcdef")
    (peer_dir / "sub" / ".deltastage-tmp-fedcba9876543210").write_bytes(b"half")
    result = runner.invoke(app, ["verify", "--config", str(config), "--date", DAY1, "--json"])
    assert result.exit_code == 1, result.output
    peer = json.loads(result.stdout)["peers"][0]
    assert peer["status"] == "damaged"
    assert peer["stray"] == [
        ".deltastage-tmp-0123456789abcdef",
        "sub/.deltastage-tmp-fedcba9876543210",
    ]
    table = runner.invoke(app, ["verify", str(peer_dir)])
    assert table.exit_code == 1 and "status=damaged" in table.output
    assert "extra=0 stray=2" in table.output


def test_sparse_files_are_staged_sparse(tmp_path: Path) -> None:
    size = 1 << 30
    blocks = {0: b"head" * 1024, 300 << 20: os.urandom(8192), size - 4096: b"tail" * 1024}
    collect = make_peer(tmp_path, "vm", {})
    sparse_file(collect / "disk.img", size, blocks)
    sparse_file(collect / "other.img", 64 << 20, {1 << 20: b"x" * 4096})
    assert os.stat(collect / "disk.img").st_blocks * 512 < 1 << 20
    config = write_config(tmp_path, {"vm": {}}, options={"link_unchanged": False})
    code, report = stage(config, "--date", DAY1)
    assert code == 0, report
    image = staged(tmp_path, DAY1, "vm") / "disk.img"
    st = os.stat(image)
    assert st.st_size == size
    assert st.st_blocks * 512 < 1 << 20, f"{st.st_blocks * 512} bytes allocated"
    with open(image, "rb") as stream:
        for offset, data in blocks.items():
            stream.seek(offset)
            assert stream.read(len(data)) == data
    verified = runner.invoke(app, ["verify", "--config", str(config), "--date", DAY1])
    assert verified.exit_code == 0, verified.output

    # the next day: one block changed; a patched copy is sparse too, and so is a local copy
    # (link_unchanged = false) of an unchanged one
    with open(collect / "disk.img", "r+b") as stream:
        stream.seek(600 << 20)
        stream.write(b"new block" * 100)
    code, report = stage(config, "--date", DAY2)
    assert code == 0, report
    assert peer_json(report, "vm")["wire_bytes"] < 1 << 20
    for name in ("disk.img", "other.img"):
        st = os.stat(staged(tmp_path, DAY2, "vm") / name)
        assert st.st_nlink == 1  # other.img: copied, not linked (link_unchanged = false)
        assert st.st_blocks * 512 < 1 << 20, (name, st.st_blocks * 512)
    assert runner.invoke(app, ["verify", "--config", str(config), "--date", DAY2]).exit_code == 0


@pytest.fixture
def few_open_files() -> Iterator[int]:
    """A soft limit of 256 open files for the test (the hard one kept), restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 256 if hard == resource.RLIM_INFINITY else min(256, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_tree_of_more_directories_than_open_files_is_staged(
    tmp_path: Path, few_open_files: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 600
    assert count > few_open_files > MAX_OPEN_DIRS
    files = {f"d{i // 50}/e{i}/f": str(i).encode() * 40 for i in range(count)}
    collect = make_peer(tmp_path, "p", files)
    config = write_config(tmp_path, options={"retries": 0})
    most = 0  # fds any one dir cache held open at once
    lease = DirCache.lease

    @contextlib.contextmanager
    def counted(self: DirCache, dir_parts: Sequence[str]) -> Iterator[int]:
        nonlocal most
        with lease(self, dir_parts) as fd:
            most = max(most, self.open_count)
            yield fd

    monkeypatch.setattr(DirCache, "lease", counted)

    def staged_exactly(day: str) -> dict[str, Any]:
        code, report = stage(config, "--date", day)
        assert code == 0 and peer_json(report, "p")["status"] == "staged", report
        assert tree(staged(tmp_path, day, "p")) == source_tree(collect)
        verified = runner.invoke(app, ["verify", "--config", str(config), "--date", day])
        assert verified.exit_code == 0, verified.output
        return peer_json(report, "p")

    staged_exactly(DAY1)  # each file fetched into its directory
    # the next day: the unchanged files linked from the first (as many directories of
    # bases), the changed ones patched from their copies of the first
    for i in range(0, count, 7):
        (collect / f"d{i // 50}/e{i}/f").write_bytes(b"changed " * 30)
    staged_exactly(DAY2)
    assert staged_exactly(DAY2)["reused"] == count  # a re-run: every file found staged
    assert 0 < most <= MAX_OPEN_DIRS


def test_write_sparse_and_copy_sparse_keep_every_byte(tmp_path: Path) -> None:
    pieces = [b"a" * 100, bytes(5000), b"b", bytes(4095), b"c" * 9000, bytes(3 << 20), b"end"]
    data = b"".join(pieces)
    target = tmp_path / "written"
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        offset = 0
        for piece in [*pieces, bytes(1 << 20)]:  # a trailing hole, sized by ftruncate
            write_sparse(fd, memoryview(piece), offset)
            offset += len(piece)
        os.ftruncate(fd, offset)
    finally:
        os.close(fd)
    assert target.read_bytes() == data + bytes(1 << 20)
    assert os.stat(target).st_blocks * 512 < 256 << 10
    src = os.open(target, os.O_RDONLY)
    dst = os.open(tmp_path / "copied", os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        copy_sparse(src, dst, os.fstat(src).st_size)
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "copied").read_bytes() == target.read_bytes()
    assert os.stat(tmp_path / "copied").st_blocks * 512 < 256 << 10


# root without the capabilities that let it read any file: what a backup user meets
NO_DAC = [
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
]


def _stage_process(config: Path, *args: str, prefix: Sequence[str] = ()) -> tuple[int, str, str]:
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "deltastage", "stage", "--config", str(config), *args],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_a_file_the_peer_may_not_read_is_reported_as_permission_denied(tmp_path: Path) -> None:
    collect = make_peer(tmp_path, "a", {"secret.db": b"secret", "ok": b"ok"})
    make_peer(tmp_path, "b", {"fine": b"fine"})
    os.chmod(collect / "secret.db", 0)
    config = write_config(tmp_path, {"a": {}, "b": {}})
    code, out, err = _stage_process(config, "--date", DAY1, "--json", prefix=NO_DAC)
    assert code == 1, err
    a, b = peer_json(json.loads(out), "a"), peer_json(json.loads(out), "b")
    assert (a["status"], b["status"]) == ("failed", "staged")
    assert "secret.db: permission denied" in a["error"]
    assert "changed" not in a["error"] and "changed" not in err
    assert "peer=a status=failed" in err and "permission denied" in err


@pytest.mark.ssh
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_permission_denied_through_the_agent_over_ssh(
    tmp_path: Path, sshd_server: SSHServer
) -> None:
    collect = make_peer(tmp_path, "a", {"dir/secret.db": b"secret", "ok": b"ok"})
    os.chmod(collect / "dir", 0)
    agent = shlex.join([*NO_DAC, sys.executable, "-m", "deltastage", "agent"])
    config = write_config(tmp_path, {"a": remote_peer(sshd_server, collect, agent_command=agent)})
    code, report = stage(config, "--date", DAY1)
    os.chmod(collect / "dir", 0o755)
    a = peer_json(report, "a")
    assert (code, a["status"]) == (1, "failed")
    assert "dir: permission denied" in a["error"], a["error"]


def test_a_file_removed_after_listing_is_reported_as_vanished(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    collect = make_peer(tmp_path, "a", {"one": b"1", "two": b"2" * 5000})
    make_peer(tmp_path, "b", {"three": b"3"})
    config = load_config(write_config(tmp_path, {"a": {}, "b": {}}))

    def factory(peer: Any, options: Any) -> Any:
        session = open_peer_session(peer, options)
        return VanishingSession(session, collect / "two") if peer.name == "a" else session

    with caplog.at_level(logging.INFO, logger="deltastage"):
        report = run_stage(config, run_date=date(2026, 11, 23), session_factory=factory)
    assert [p.status for p in report.peers] == ["failed", "staged"]
    assert report.peers[0].error == "two: vanished since it was listed"
    assert "changed" not in caplog.text and "retrying" not in caplog.text
    assert "two: vanished since it was listed" in caplog.text


def _layout_refused(tmp: Path, staging: Path) -> str:
    config = write_config(tmp, {"p": {}}, staging=staging)
    result = runner.invoke(app, ["stage", "--config", str(config), "--date", DAY1])
    assert result.exit_code == 2, result.output
    return result.output


def test_staging_inside_collect_through_a_symlink_is_refused(tmp_path: Path) -> None:
    collect = make_peer(tmp_path, "p", {"data": b"data"})
    (tmp_path / "elsewhere").symlink_to(collect)
    output = _layout_refused(tmp_path, tmp_path / "elsewhere" / "staging")
    assert "the staging dir lies inside collect dir" in output
    assert "through a symlink or a mount" in output
    assert sorted(os.listdir(collect)) == ["cback.collect", "data"], "nothing touched"

    # the reverse: the collect dir reached through a link into the staging dir
    (tmp_path / "staging" / "in").mkdir(parents=True)
    make_peer(tmp_path, "q", {"x": b"x"})
    (tmp_path / "collect" / "q").rename(tmp_path / "staging" / "in" / "q")
    (tmp_path / "collect" / "q").symlink_to(tmp_path / "staging" / "in" / "q")
    config = write_config(tmp_path, {"q": {}}, staging=tmp_path / "staging")
    result = runner.invoke(app, ["stage", "--config", str(config), "--date", DAY1])
    assert result.exit_code == 2, result.output
    assert "lies inside the staging dir" in result.output


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_staging_inside_collect_through_a_bind_mount_is_refused(tmp_path: Path) -> None:
    collect = make_peer(tmp_path, "p", {"data": b"data"})
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    if subprocess.run(["mount", "--bind", str(collect), str(mount_point)], check=False).returncode:
        pytest.skip("mount --bind is not allowed here")
    try:
        output = _layout_refused(tmp_path, mount_point / "staging")
        assert "through a symlink or a mount" in output
        assert sorted(os.listdir(collect)) == ["cback.collect", "data"], "nothing touched"
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
@pytest.mark.parametrize("staging_below", [False, True])
def test_staging_in_a_bind_mount_of_a_subdir_of_collect_is_refused(
    tmp_path: Path, staging_below: bool
) -> None:
    """The mount point's own device and inode are the subdirectory's, not the collect dir's:
    only the mount table tells that its source lies inside the collect dir."""
    collect = make_peer(tmp_path, "p", {"data": b"data"})
    (collect / "sub").mkdir()
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    if subprocess.run(
        ["mount", "--bind", str(collect / "sub"), str(mount_point)], check=False
    ).returncode:
        pytest.skip("mount --bind is not allowed here")
    try:
        output = _layout_refused(
            tmp_path, mount_point / "staging" if staging_below else mount_point
        )
        assert "the staging dir lies inside collect dir" in output
        assert "through a symlink or a mount" in output
        assert sorted(os.listdir(collect)) == ["cback.collect", "data", "sub"], "nothing touched"
        assert os.listdir(collect / "sub") == [], "nothing touched"
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.parametrize(
    ("name", "options", "said"),
    [
        ("cback.stage", {}, "the stage indicator"),
        ("cback.collect", {}, "the collect indicator"),
        ("cback.store", {}, "a Cedar Backup indicator"),
        ("done.flag", {"stage_indicator": "done.flag"}, "the stage indicator"),
        ("ready.flag", {"collect_indicator": "ready.flag"}, "the collect indicator"),
    ],
)
def test_a_peer_named_like_an_indicator_is_a_config_error(
    tmp_path: Path, name: str, options: dict[str, str], said: str
) -> None:
    make_peer(tmp_path, name, {"data": b"data"})
    config = write_config(tmp_path, {name: {}}, options=options)
    result = runner.invoke(app, ["stage", "--config", str(config), "--date", DAY1])
    assert result.exit_code == 2, result.output
    assert f"peers[0].name: {name!r} is the name of {said}" in result.output
    assert not (tmp_path / "staging").exists(), "nothing touched"


def test_a_cedar_peer_named_like_an_indicator_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "cback3.conf"
    path.write_text(
        "<cb_config><options><starting_day>monday</starting_day>"
        "<working_dir>/tmp</working_dir><backup_user>root</backup_user>"
        "<backup_group>root</backup_group><rcp_command>scp</rcp_command></options>"
        "<stage><staging_dir>/s</staging_dir><peer><name>cback.stage</name><type>local</type>"
        "<collect_dir>/c</collect_dir></peer></stage></cb_config>",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["check", "--cedar-config", str(path)])
    assert result.exit_code == 2, result.output
    assert "stage/peer[1]/name: 'cback.stage' is the name of the stage indicator" in result.output


def _throttled_agent(rate: int) -> str:
    throttle = Path(__file__).parent / "helpers" / "throttle.py"
    return shlex.join(
        [sys.executable, str(throttle), str(rate), sys.executable, "-m", "deltastage", "agent"]
    )


def _json_report(stdout: str) -> dict[str, Any]:
    """The one JSON object on stdout, and nothing else there."""
    document: dict[str, Any] = json.loads(stdout)
    for key in ("date", "daily_dir", "dry_run", "exit_code", "error", "peers"):
        assert key in document, key
    return document


def test_json_is_printed_when_the_lock_is_held(tmp_path: Path) -> None:
    make_peer(tmp_path, "p", {"data": b"data"})
    config = write_config(tmp_path, {"p": {}})
    (tmp_path / "staging").mkdir()
    with open(tmp_path / "staging" / ".deltastage.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, out, err = _stage_process(config, "--date", DAY1, "--json")
    assert code == 1, err
    report = _json_report(out)
    assert report["exit_code"] == 1 and report["peers"] == []
    assert "holds" in report["error"] and report["date"] == DAY1
    assert report["daily_dir"] == str(tmp_path / "staging" / "2026" / "11" / "23")
    assert "deltastage: error:" in err


def test_json_is_printed_when_the_staging_dir_is_unusable(tmp_path: Path) -> None:
    make_peer(tmp_path, "p", {"data": b"data"})
    (tmp_path / "staging").write_text("a file, not a dir")
    config = write_config(tmp_path, {"p": {}})
    code, out, err = _stage_process(config, "--date", DAY1, "--json")
    assert code == 1, err
    report = _json_report(out)
    assert report["exit_code"] == 1 and report["error"]


def test_json_is_printed_on_config_and_usage_errors(tmp_path: Path) -> None:
    make_peer(tmp_path, "p", {"data": b"data"})
    config = write_config(tmp_path, {"p": {}}, options={"jobs": 0})
    code, out, err = _stage_process(config, "--json")
    assert code == 2, err
    report = _json_report(out)
    assert report["exit_code"] == 2 and "options.jobs" in report["error"]
    assert report["daily_dir"] is None

    config = write_config(tmp_path, {"p": {}})
    code, out, err = _stage_process(config, "--json", "--date", "2026-13-45")
    assert code == 2, err
    assert "--date" in _json_report(out)["error"]
    # through typer's command too (a spelling fastargv leaves to it)
    result = runner.invoke(app, ["stage", f"--config={config}", "--json", "--date=2026-13-45"])
    assert result.exit_code == 2
    assert _json_report(result.stdout)["exit_code"] == 2


def _cli_process(*args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "deltastage", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(
    "words",
    [
        ["--jobs", "abc"],  # typer's type check
        ["--jobs", "0"],  # typer's bounds (fastargv hands it on)
        ["--jobs=65"],
        ["--no-such-option"],
        ["-x"],
        ["stray-argument"],
    ],
)
def test_json_is_printed_when_the_parser_refuses_the_command_line(
    tmp_path: Path, words: list[str]
) -> None:
    make_peer(tmp_path, "p", {"data": b"data"})
    config = write_config(tmp_path, {"p": {}})
    code, out, err = _cli_process("stage", "--config", str(config), "--json", *words)
    assert code == 2, err
    report = _json_report(out)
    assert report["exit_code"] == 2 and report["error"] and report["peers"] == []
    assert "deltastage stage [OPTIONS]" in err, "the usage message still goes to stderr"
    assert not (tmp_path / "staging").exists(), "nothing touched"

    # a usage error deltastage itself judges, on fastargv's path: the same keys
    code, fast_out, _ = _cli_process("stage", "--config", str(config), "--json", "--date", "x")
    assert code == 2
    fast = _json_report(fast_out)
    assert fast.keys() == report.keys() and fast["exit_code"] == 2

    # without --json (or with it only as an argument after --): the usage message alone
    code, out, err = _cli_process("stage", "--config", str(config), *words)
    assert code == 2 and out == "" and "deltastage stage [OPTIONS]" in err
    code, out, err = _cli_process("stage", "--config", str(config), *words, "--", "--json")
    assert code == 2 and out == ""


@pytest.mark.parametrize(
    ("command", "keys"),
    [
        ("verify", {"daily_dir", "exit_code", "error", "peers"}),
        ("check", {"config", "staging_dir", "staging_problem", "exit_code", "error", "peers"}),
    ],
)
def test_verify_and_check_print_their_json_when_the_parser_refuses(
    command: str, keys: set[str]
) -> None:
    code, out, err = _cli_process(command, "--json", "--no-such-option")
    assert code == 2, err
    report = json.loads(out)
    assert set(report) == keys
    assert report["exit_code"] == 2 and "--no-such-option" in report["error"]
    assert f"deltastage {command} [OPTIONS]" in err


def test_json_is_printed_for_a_bug_outside_any_peer(tmp_path: Path, monkeypatch: Any) -> None:
    make_peer(tmp_path, "p", {"data": b"data"})
    config = write_config(tmp_path, {"p": {}})
    from deltastage.stage import run

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(run, "_write_indicator_file", broken)
    result = runner.invoke(app, ["stage", "--config", str(config), "--json", "--date", DAY1])
    assert result.exit_code == 1
    report = _json_report(result.stdout)
    assert report["error"] == "unexpected RuntimeError: a bug"
    assert [peer["status"] for peer in report["peers"]] == ["staged"]


@pytest.mark.ssh
def test_json_is_printed_on_sigint(tmp_path: Path, sshd_server: SSHServer) -> None:
    collect = make_peer(tmp_path, "slow", {"big.bin": os.urandom(8 << 20)})
    make_peer(tmp_path, "quick", {"small": b"small"})
    peer = remote_peer(sshd_server, collect, agent_command=_throttled_agent(1 << 20))
    config = write_config(tmp_path, {"quick": {}, "slow": peer})
    process = interruptible_stage(config, "--json", "--date", DAY1)
    assert process.stderr is not None
    for line in process.stderr:  # the slow peer has begun its transfer
        if "peer=slow staging" in line:
            break
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    out, err = process.communicate(timeout=60)
    # promptly: the fetch under way is given up, not read to its end over the slow link
    assert time.monotonic() - interrupted < 4
    assert process.returncode == 130, err
    report = _json_report(out)
    assert (report["exit_code"], report["error"]) == (130, "interrupted")
    assert [p["name"] for p in report["peers"]] == ["quick"]
    assert "deltastage: error: interrupted" in err


def test_reused_counts_files_linked_or_copied_from_the_day_before(tmp_path: Path) -> None:
    files = {"a": b"a" * 1000, "b": b"b" * 2000, "sub/c": b"c" * 3000}
    collect = make_peer(tmp_path, "linked", files)
    make_peer(tmp_path, "copied", files)
    config = write_config(tmp_path, {"linked": {}, "copied": {}})
    assert stage(config, "--date", DAY1)[0] == 0
    (collect / "b").write_bytes(b"changed")
    # the copied peer's files have new mtimes: the same content, but not linkable
    for rel in files:
        os.utime(tmp_path / "collect" / "copied" / rel, ns=(10**18, 10**18))
    code, report = stage(config, "--date", DAY2)
    assert code == 0, report
    linked, copied = peer_json(report, "linked"), peer_json(report, "copied")
    assert (linked["files"], linked["reused"]) == (3, 2), linked
    assert (copied["files"], copied["reused"]) == (3, 3), copied
    links = [os.stat(staged(tmp_path, DAY2, "linked") / rel).st_nlink for rel in ("a", "sub/c")]
    assert links == [2, 2]
    assert all(os.stat(staged(tmp_path, DAY2, "copied") / rel).st_nlink == 1 for rel in files)


def test_a_failed_peer_reports_nothing_staged_and_what_it_attempted(tmp_path: Path) -> None:
    collect = make_peer(tmp_path, "a", {"one": b"1" * 100, "two": b"2" * 5000})
    config = load_config(write_config(tmp_path, {"a": {}}))

    def factory(peer: Any, options: Any) -> Any:
        return VanishingSession(open_peer_session(peer, options), collect / "one")

    report = run_stage(config, run_date=date(2026, 11, 23), session_factory=factory).peers[0]
    assert report.status == "failed"
    assert (report.files, report.bytes, report.reused) == (0, 0, 0)
    assert (report.attempted_files, report.attempted_bytes) == (1, 5000)  # "two" got through
    assert not (staged(tmp_path, DAY1, "a") / MANIFEST_NAME).exists()
    # the CLI's JSON says the same
    code, document = stage(config.source, "--date", DAY1)
    assert code == 0  # "one" is gone for good now: the re-run stages "two" alone
    peer = peer_json(document, "a")
    assert (peer["files"], peer["bytes"], peer["attempted_files"]) == (1, 5000, 1)


def _temp_bytes(peer_dir: Path) -> int:
    """Bytes written so far into the peer dir's temp files."""
    try:
        return sum(
            entry.stat().st_size
            for entry in os.scandir(peer_dir)
            if entry.name.startswith(".deltastage-tmp-")
        )
    except FileNotFoundError:
        return 0


@pytest.mark.ssh
def test_a_partial_left_by_sigkill_is_the_next_runs_basis(
    tmp_path: Path, sshd_server: SSHServer
) -> None:
    size = 48 << 20
    collect = make_peer(tmp_path, "p", {"big.bin": os.urandom(size)})
    slow = remote_peer(sshd_server, collect, agent_command=_throttled_agent(6 << 20))
    config = write_config(tmp_path, {"p": slow})
    command = [sys.executable, "-m", "deltastage", "stage", "--config", str(config), "--json"]
    process = subprocess.Popen(
        [*command, "--date", DAY1], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    peer_dir = staged(tmp_path, DAY1, "p")
    deadline = time.monotonic() + 60
    while _temp_bytes(peer_dir) < size * 3 // 4:  # three quarters of the file are across
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert _temp_bytes(peer_dir) < size, "killed mid-file"

    config = write_config(tmp_path, {"p": remote_peer(sshd_server, collect)})
    code, report = stage(config, "--date", DAY1)
    peer = peer_json(report, "p")
    assert code == 0 and peer["status"] == "staged", peer
    assert peer["wire_bytes"] < size // 2, peer  # the partial was the basis
    assert (staged(tmp_path, DAY1, "p") / "big.bin").read_bytes() == (
        collect / "big.bin"
    ).read_bytes()
    assert sorted(os.listdir(peer_dir)) == ["big.bin", MANIFEST_NAME]  # no partial, no journal
    verified = runner.invoke(app, ["verify", "--config", str(config), "--date", DAY1])
    assert verified.exit_code == 0, verified.output


def test_verify_json_is_printed_on_every_exit_path(tmp_path: Path) -> None:
    make_peer(tmp_path, "p", {"data": b"data"})
    config = write_config(tmp_path, {"p": {}})
    result = runner.invoke(app, ["verify", "--config", str(config), "--date", DAY1, "--json"])
    assert result.exit_code == 1  # nothing staged that day: no such dir
    document = json.loads(result.stdout)
    assert document["exit_code"] == 1 and "no such staging directory" in document["error"]
    assert document["daily_dir"] == str(tmp_path / "staging" / "2026" / "11" / "23")
    result = runner.invoke(app, ["verify", str(tmp_path), "--config", str(config), "--json"])
    assert result.exit_code == 2 and json.loads(result.stdout)["exit_code"] == 2
    assert stage(config, "--date", DAY1)[0] == 0
    result = runner.invoke(app, ["verify", "--config", str(config), "--date", DAY1, "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["error"] is None


def test_a_dry_run_bug_on_one_peer_fails_only_that_peer(tmp_path: Path, monkeypatch: Any) -> None:
    make_peer(tmp_path, "a", {"one": b"1"})
    make_peer(tmp_path, "b", {"two": b"2"})
    config = write_config(tmp_path, {"a": {}, "b": {}})
    from deltastage.stage import run

    real = run.select_entries

    def broken(entries: Any, options: Any) -> Any:
        if any(entry.path == "one" for entry in entries):
            raise ValueError("a bug")
        return real(entries, options)

    monkeypatch.setattr(run, "select_entries", broken)
    code, report = stage(config, "--date", DAY1, "--dry-run")
    assert code == 1
    a, b = peer_json(report, "a"), peer_json(report, "b")
    assert (a["status"], a["error"]) == ("failed", "unexpected ValueError: a bug")
    assert b["status"] == "would-stage"


def test_check_json_is_printed_when_the_config_does_not_load(tmp_path: Path) -> None:
    make_peer(tmp_path, "p", {"data": b"data"})
    config = write_config(tmp_path, {"p": {}}, options={"jobs": 0})
    result = runner.invoke(app, ["check", "--config", str(config), "--json"])
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["exit_code"] == 2 and "options.jobs" in document["error"]
    assert document["config"] == str(config) and document["peers"] == []
    config = write_config(tmp_path, {"p": {}})
    result = runner.invoke(app, ["check", "--config", str(config), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["error"] is None
