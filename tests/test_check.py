"""``check_config``: each peer's state over the real local agent, unreachable peers, the
staging dir's problems, the JSON form; and agents run as a peer's forced command would run
them (over a pipe).

sshd runs the forced command whatever the master asks, so those sessions start the agent
with the forced command's argv, as the peer would; test_stage_ssh.py does the same over a
real sshd.
"""

from __future__ import annotations

import bz2
import gzip
import shlex
import sys
from pathlib import Path

import pytest

from deltastage import __version__, check
from deltastage.check import check_config, forced_command
from deltastage.config import Config, Options, PeerConfig, load_config
from deltastage.errors import ConnectError, ConnectionClosed
from deltastage.master.connect import SessionFactory, bounded_session, open_peer_session
from deltastage.master.session import PeerSession
from deltastage.transports.pipe import PipeTransport
from tests.helpers.compressed import gnu_gzip, stdlib_tar
from tests.helpers.site import make_peer, write_config
from tests.helpers.transports import SessionProxy

AGENT = [sys.executable, "-m", "deltastage", "agent"]


def local_site(tmp: Path, **peers: tuple[str, ...]) -> Config:
    """Local peers, each with the indicator files named."""
    for name, indicators in peers.items():
        make_peer(tmp, name, dict.fromkeys(indicators, b""), ready=False)
    return load_config(write_config(tmp, list(peers)))


def test_each_local_peer_is_reached_and_its_state_read(tmp_path: Path) -> None:
    config = local_site(
        tmp_path, idle=(), ready=("cback.collect",), done=("cback.collect", "cback.stage")
    )
    report = check_config(config)
    assert (report.config, report.staging_dir) == (str(config.source), str(config.staging_dir))
    assert report.staging_problem is None and report.exit_code == 0
    states = {peer.name: peer.state for peer in report.peers}
    assert states == {"idle": "not-ready", "ready": "ready", "done": "already-staged"}
    for peer in report.peers:
        assert peer.usable and peer.error is None and peer.fix is None
        assert peer.agent_version == __version__ and peer.agent_indicators == ["cback.stage"]
        assert peer.wire_bytes > 0
        assert peer.compressed == {"rebuilt": 0, "foreign": 0, "corrupt": 0}
        assert peer.hint is None


class BrokenAfterHandshake(SessionProxy):
    """The link drops after the handshake; records that the session was closed."""

    closed = False

    def indicator_exists(self, root: str, name: str) -> bool:
        raise ConnectionClosed("test: link dropped")

    def close(self) -> None:
        self.closed = True
        self.inner.close()


def test_an_unreachable_peer_is_unusable_and_the_others_still_checked(tmp_path: Path) -> None:
    config = local_site(tmp_path, down=("cback.collect",), flaky=(), up=("cback.collect",))
    broken: list[BrokenAfterHandshake] = []

    def factory(peer: PeerConfig, options: Options) -> PeerSession | BrokenAfterHandshake:
        if peer.name == "down":
            raise ConnectError("down: connection refused")
        if peer.name == "flaky":
            broken.append(BrokenAfterHandshake(open_peer_session(peer, options)))
            return broken[-1]
        return open_peer_session(peer, options)

    report = check_config(config, factory)  # type: ignore[arg-type]
    down, flaky, up = report.peers
    assert (down.state, down.error) == ("unusable", "down: connection refused")
    assert flaky.state == "unusable" and flaky.error == "test: link dropped"
    assert flaky.agent_version == __version__  # what was learnt before the drop stays
    assert broken[0].closed, "a session that failed mid-check is closed all the same"
    assert up.state == "ready" and report.exit_code == 1
    assert down.fix is None and flaky.fix is None


def test_a_staging_dir_that_does_not_exist_yet_is_fine(tmp_path: Path) -> None:
    config = local_site(tmp_path, p=("cback.collect",))
    assert not config.staging_dir.exists()
    assert check_config(config).staging_problem is None


def test_a_staging_dir_under_a_file_is_a_problem(tmp_path: Path) -> None:
    make_peer(tmp_path, "p", {})
    (tmp_path / "blocker").write_text("a file where a directory should be")
    config = load_config(write_config(tmp_path, ["p"], staging="blocker/staging"))
    report = check_config(config)
    assert report.staging_problem == f"{tmp_path / 'blocker'} is not a directory"
    assert report.peers[0].usable and report.exit_code == 1


def test_an_unwritable_staging_dir_is_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = local_site(tmp_path, p=("cback.collect",))
    # root may write anywhere: os.access is what check asks, so it answers no here
    monkeypatch.setattr(check.os, "access", lambda path, mode: False)
    report = check_config(config)
    assert report.staging_problem == f"{tmp_path} is not writable"
    assert report.exit_code == 1


def test_the_json_form_names_every_field_in_order(tmp_path: Path) -> None:
    config = local_site(tmp_path, p=("cback.collect",))
    document = check_config(config).as_json()
    assert list(document) == [
        "config",
        "staging_dir",
        "staging_problem",
        "exit_code",
        "error",  # what stopped a check before its report: none here
        "peers",
    ]
    (peer,) = document["peers"]  # type: ignore[misc]
    assert list(peer) == [
        "name",
        "type",
        "usable",
        "state",
        "agent_version",
        "collect_indicator",
        "stage_indicator",
        "agent_indicators",
        "error",
        "fix",
        "compressed",
        "hint",
    ]
    assert peer["state"] == "ready" and peer["agent_indicators"] == ["cback.stage"]


def remote_site(tmp: Path, stage_indicator: str) -> Config:
    collect = tmp / "collect"
    collect.mkdir(exist_ok=True)
    (collect / "cback.collect").touch()
    peer = {"type": "remote", "collect_dir": str(collect), "agent_command": shlex.join(AGENT)}
    path = write_config(tmp, {"web1": peer}, options={"stage_indicator": stage_indicator})
    return load_config(path, check_accounts=False)


def forced(argv: list[str]) -> SessionFactory:
    """Sessions whose agent runs ``argv``, whatever the master would have it run."""

    def factory(peer: PeerConfig, options: Options) -> PeerSession:
        return bounded_session(PipeTransport(argv, idle_timeout=30), options)

    return factory


def test_a_peer_whose_agent_refuses_the_stage_indicator_gets_the_line_that_fixes_it(
    tmp_path: Path,
) -> None:
    config = remote_site(tmp_path, "done.stage")
    collect = str(tmp_path / "collect")
    report = check_config(config, forced([*AGENT, "--root", collect]))
    (peer,) = report.peers
    assert not peer.usable and report.exit_code == 1
    assert "writes only the indicators 'cback.stage', not 'done.stage'" in (peer.error or "")
    assert peer.fix == forced_command([*AGENT, "--root", collect, "--indicator", "done.stage"])
    assert peer.as_json()["fix"] == peer.fix
    # the command in that line, made the forced command, is accepted
    assert peer.fix.startswith('command="') and peer.fix.endswith('"')
    fixed = shlex.split(peer.fix[len('command="') : -1])
    report = check_config(config, forced(fixed))
    (peer,) = report.peers
    assert peer.usable and peer.fix is None and peer.agent_indicators == ["done.stage"]
    assert peer.state == "ready" and report.exit_code == 0


def test_a_read_only_agent_is_usable_and_shown_as_writing_nothing(tmp_path: Path) -> None:
    config = remote_site(tmp_path, "cback.stage")
    argv = [*AGENT, "--root", str(tmp_path / "collect"), "--read-only"]
    report = check_config(config, forced(argv))
    (peer,) = report.peers
    assert peer.usable and peer.fix is None and peer.error is None
    assert peer.as_json()["agent_indicators"] == []


def test_the_forced_command_quotes_what_a_shell_and_sshd_would_split() -> None:
    line = forced_command(["deltastage", "agent", "--root", "/srv/a b", "--indicator", 'x"y'])
    assert line == """command="deltastage agent --root '/srv/a b' --indicator 'x\\"y'\""""


def test_compressed_files_that_cannot_be_rebuilt_get_a_hint(tmp_path: Path) -> None:
    """GNU gzip's output is not zlib's: check names such files and what to change; Python's
    gzip and bzip2 output (Cedar's) is rebuilt, a corrupt one only counted."""
    tar = stdlib_tar()
    config = local_site(tmp_path, p=("cback.collect",))
    collect = config.peers[0].collect_dir
    (collect / "gnu.tar.gz").write_bytes(gnu_gzip(tar, 9))
    (collect / "cedar.tar.gz").write_bytes(gzip.compress(tar, 9))
    (collect / "cedar.tar.bz2").write_bytes(bz2.compress(tar, 9))
    (collect / "cut.gz").write_bytes(gzip.compress(tar)[:-5])
    (collect / "plain.gz").write_bytes(b"not compressed at all, whatever its name")
    (peer,) = check_config(config).peers
    assert peer.usable and peer.compressed == {"rebuilt": 2, "foreign": 1, "corrupt": 1}
    assert peer.hint is not None and "'gnu.tar.gz'" in peer.hint
    assert "archive_mode tar" in peer.hint and "--rsyncable" in peer.hint
    assert check_config(config).exit_code == 0, "a hint, not a failure"
