"""``check`` against agents run as a peer's forced command would run them (over a pipe).

sshd runs the forced command whatever the master asks, so these sessions start the agent
with the forced command's argv, as the peer would; test_stage_ssh.py does the same over a
real sshd.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from deltastage.check import check_config, forced_command
from deltastage.config import Config, Options, PeerConfig, load_config
from deltastage.master.connect import SessionFactory, bounded_session
from deltastage.master.session import PeerSession
from deltastage.transports.pipe import PipeTransport

AGENT = [sys.executable, "-m", "deltastage", "agent"]


def remote_site(tmp: Path, stage_indicator: str) -> Config:
    collect = tmp / "collect"
    collect.mkdir(exist_ok=True)
    (collect / "cback.collect").touch()
    path = tmp / "deltastage.toml"
    path.write_text(
        f'[options]\nstage_indicator = "{stage_indicator}"\n\n'
        '[stage]\nstaging_dir = "staging"\n\n'
        '[[peers]]\nname = "web1"\ntype = "remote"\n'
        f'collect_dir = "{collect}"\nagent_command = {shlex.join(AGENT)!r}\n',
        encoding="utf-8",
    )
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
