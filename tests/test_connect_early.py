"""Connecting before typer is imported: ``deltastage stage`` peeks at its own command line."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import deltastage.config
from deltastage import connect
from deltastage.cli import app
from deltastage.config import load_config


@dataclass(frozen=True)
class _Options:
    jobs: int


@dataclass(frozen=True)
class _FakeConfig:
    """What the peek loads: records which file and which loader it was asked for."""

    source: str
    loader: str
    options: _Options = _Options(jobs=3)


@pytest.fixture
def fake_loaders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deltastage.config, "load_config", lambda p: _FakeConfig(str(p), "toml"))
    monkeypatch.setattr(
        deltastage.config, "load_cedar_config", lambda p: (_FakeConfig(str(p), "cedar"), [])
    )


def _typer_params(args: list[str]) -> dict[str, Any] | None:
    """What typer makes of ``stage ARGS``: its parameters, or None when it refuses them."""
    command = typer.main.get_command(app)
    stage = command.commands["stage"]  # type: ignore[attr-defined]
    try:
        with stage.make_context("stage", list(args)) as ctx:
            return dict(ctx.params)
    except (typer.Exit, Exception):
        return None


_VALUE = st.sampled_from(["a.toml", "b.toml", "web1", "db1", "2", "0", "x", "-n", "--json"])
_OPTION = st.sampled_from(
    [
        "--config", "-c", "--cedar-config", "--peer", "-p", "--jobs", "-j", "--date",
        "--log-level", "--log-file", "--json", "--full", "--syslog", "--dry-run", "-n",
        "--help", "--bogus", "-x", "stray",
    ]
)  # fmt: skip


@st.composite
def _command_lines(draw: st.DrawFn) -> list[str]:
    args: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        option = draw(_OPTION)
        style = draw(st.sampled_from(["separate", "equals", "bare"]))
        if style == "bare":
            args.append(option)
        elif style == "equals":
            args.append(f"{option}={draw(_VALUE)}")
        else:
            args += [option, draw(_VALUE)]
    return args


# the fixture only swaps two loaders for pure fakes: nothing to reset between examples
@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_command_lines())
def test_the_peek_agrees_with_typer_or_stays_out(fake_loaders: None, args: list[str]) -> None:
    """Whenever the peek opens sessions early, typer parses the same command line to the
    same config file, peers and job count; on anything else the peek does nothing."""
    request = connect._early_request(args)
    if request is None:
        return
    params = _typer_params(args)
    assert params is not None, f"the peek accepted what typer refuses: {args}"
    config, peers, count = request
    assert isinstance(config, _FakeConfig)
    if params["config"] is not None:
        assert (config.loader, Path(config.source)) == ("toml", params["config"])
    else:
        assert (config.loader, Path(config.source)) == ("cedar", params["cedar_config"])
    assert peers == tuple(params["peer"] or ())
    assert count == (params["jobs"] or config.options.jobs)
    assert not params["dry_run"]


def test_plain_command_lines_are_understood(fake_loaders: None) -> None:
    request = connect._early_request(["--config", "s.toml", "--json", "-p", "web1", "-j", "2"])
    assert request == (_FakeConfig("s.toml", "toml"), ("web1",), 2)
    request = connect._early_request(["--cedar-config=/etc/cback3.conf", "--date", "2026-11-23"])
    assert request == (_FakeConfig("/etc/cback3.conf", "cedar"), (), 3)
    for refused in (
        ["--config", "s.toml", "--dry-run"],  # a dry run connects to nothing
        ["--config", "s.toml", "--help"],
        ["--config", "s.toml", "--cedar-config", "c.xml"],
        ["--config"],
        ["-c=s.toml"],
        ["--config", "s.toml", "--jobs", "two"],
    ):
        assert connect._early_request(refused) is None, refused


def _site(tmp: Path) -> Path:
    collect = tmp / "collect" / "web1"
    collect.mkdir(parents=True)
    (collect / "cback.collect").touch()
    (collect / "a.txt").write_text("a\n")
    path = tmp / "deltastage.toml"
    path.write_text(
        '[stage]\nstaging_dir = "staging"\n\n'
        '[[peers]]\nname = "web1"\ntype = "local"\ncollect_dir = "collect/web1"\n'
    )
    return path


def test_the_command_claims_what_was_opened_for_it(tmp_path: Path) -> None:
    path = _site(tmp_path)
    connect.open_early_from_argv(["--config", str(path), "--json"])
    early = connect._pending[3] if connect._pending else None
    assert early is not None
    config = load_config(path)
    assert connect.claim_early_sessions(config, (), config.options.jobs) is early
    assert connect._pending is None
    session = early.take("web1")
    assert session is not None and session.info is not None, "handshaken on its thread"
    early.close()
    session.close()


def test_sessions_opened_for_another_request_are_closed_not_used(tmp_path: Path) -> None:
    path = _site(tmp_path)
    connect.open_early_from_argv(["--config", str(path), "--jobs", "1"])
    assert connect._pending is not None
    stale = connect._pending[3]
    stale_session = stale._openings["web1"].result()
    config = load_config(path)
    fresh = connect.claim_early_sessions(config, ("web1",), 1)  # not what was peeked at
    assert fresh is not stale
    assert stale_session._closed
    fresh.close()
    connect.open_early_from_argv(["--config", str(path)])
    assert connect._pending is not None
    discarded = connect._pending[3]._openings["web1"].result()
    connect.discard_early_sessions()  # what a dry run does
    assert connect._pending is None and discarded._closed


def test_main_opens_the_sessions_before_handing_over_to_typer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deltastage.__main__ as entry
    import deltastage.cli

    path = _site(tmp_path)
    seen: list[object] = []
    monkeypatch.setattr(deltastage.cli, "main", lambda: seen.append(connect._pending))
    monkeypatch.setattr(sys, "argv", ["deltastage", "stage", "--config", str(path)])
    entry.main()
    assert seen and seen[0] is not None
    connect.discard_early_sessions()


def test_a_remote_stage_imports_paramiko_before_typer_and_never_invoke(tmp_path: Path) -> None:
    """The early connect is really early: paramiko is loaded before typer, and without
    invoke (~45 ms). The peer's port is closed, so the run fails fast, with its usual report."""
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "known_hosts").write_text("")
    config = tmp_path / "deltastage.toml"
    config.write_text(
        '[options]\nretries = 0\n\n[stage]\nstaging_dir = "staging"\n\n'
        f'[[peers]]\nname = "far"\ntype = "remote"\nhost = "127.0.0.1"\nport = {port}\n'
        'user = "backup"\ncollect_dir = "/srv/collect"\nknown_hosts = "known_hosts"\n'
    )
    argv = ["-X", "importtime", "-m", "deltastage", "stage", "--config", str(config), "--json"]
    proc = subprocess.run(
        [sys.executable, *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert '"status": "failed"' in proc.stdout
    loaded = [
        line.rsplit("|", 1)[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    ]
    assert not [name for name in loaded if name.startswith("invoke.")]  # only the refusal
    assert loaded.index("paramiko") < loaded.index("typer")
    # the protocol's modules are loaded while the connection is being made, not before
    assert loaded.index("paramiko") < loaded.index("deltastage.session")
    assert "xml.etree.ElementTree" not in loaded  # only a Cedar config needs it
