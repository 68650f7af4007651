"""A plain ``deltastage stage`` command line: parsed without typer, and its first peers
connected to before the rest of the master is even imported."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

from deltastage import connect
from deltastage.cli import app
from deltastage.config import load_config
from deltastage.stageargv import StageArgs, parse_stage_argv


def _typer_params(args: list[str]) -> dict[str, Any] | None:
    """What typer makes of ``stage ARGS``: its parameters, or None when it refuses them."""
    command = typer.main.get_command(app)
    stage = command.commands["stage"]  # type: ignore[attr-defined]
    try:
        with stage.make_context("stage", list(args)) as ctx:
            return dict(ctx.params)
    except (typer.Exit, Exception):
        return None


_VALUE = st.sampled_from(
    ["a.toml", "b.toml", "web1", "db1", "2", "0", "64", "65", "²", "x", "-n", "--json", ""]
)
_OPTION = st.sampled_from(
    [
        "--config", "-c", "--cedar-config", "--peer", "-p", "--jobs", "-j", "--date",
        "--log-level", "--log-file", "--json", "--full", "--syslog", "--dry-run", "-n",
        "--help", "--bogus", "-x", "-nj", "stray", "--",
    ]
)  # fmt: skip


@st.composite
def _command_lines(draw: st.DrawFn) -> list[str]:
    args: list[str] = []
    for _ in range(draw(st.integers(0, 7))):
        option = draw(_OPTION)
        style = draw(st.sampled_from(["separate", "equals", "bare"]))
        if style == "bare":
            args.append(option)
        elif style == "equals":
            args.append(f"{option}={draw(_VALUE)}")
        else:
            args += [option, draw(_VALUE)]
    return args


@settings(max_examples=600, deadline=None)
@given(_command_lines())
def test_the_fast_parse_agrees_with_typer_or_stays_out(args: list[str]) -> None:
    """Wherever __main__ parses a stage command line itself, typer parses it to the very same
    options; on anything else it leaves the command line to typer."""
    parsed = parse_stage_argv(args)
    if parsed is None:
        return
    params = _typer_params(args)
    assert params is not None, f"parsed what typer refuses: {args}"
    params["peer"] = tuple(params["peer"] or ())
    assert asdict(parsed) == params, args


def test_plain_command_lines_are_understood() -> None:
    parsed = parse_stage_argv(["--config", "s.toml", "--json", "-p", "web1", "-j", "2"])
    assert parsed == StageArgs(config=Path("s.toml"), as_json=True, peer=("web1",), jobs=2)
    parsed = parse_stage_argv(["--cedar-config=/etc/cback3.conf", "--date", "2026-11-23"])
    assert parsed == StageArgs(cedar_config=Path("/etc/cback3.conf"), run_date="2026-11-23")
    for refused in (
        ["--config", "s.toml", "--help"],
        ["--config"],
        ["-c=s.toml"],
        ["--config", "s.toml", "--jobs", "two"],
        ["--config", "s.toml", "--jobs", "0"],
        ["-nj", "2"],
        ["stray"],
    ):
        assert parse_stage_argv(refused) is None, refused


@pytest.mark.parametrize(
    "args",
    [
        ["--date", "tomorrow"],
        ["--log-level", "loud"],
        ["--peer", "nosuchpeer"],
        [],  # no config at all
        ["--cedar-config", "/nonexistent.xml"],  # and a --config: two of them
    ],
)
def test_the_fast_path_fails_exactly_as_typer_does(tmp_path: Path, args: list[str]) -> None:
    import subprocess

    from typer.testing import CliRunner

    config = _site(tmp_path)
    argv = ["stage", *(["--config", str(config)] if args != [] else []), *args, "--json"]
    assert parse_stage_argv(argv[1:]) is not None
    fast = subprocess.run(
        [sys.executable, "-m", "deltastage", *argv], cwd=tmp_path, capture_output=True, text=True
    )
    slow = CliRunner().invoke(app, argv)
    assert fast.returncode == slow.exit_code != 0
    assert fast.stderr == slow.stderr
    assert len(fast.stderr.splitlines()) == 1 and fast.stderr.startswith("deltastage: error: ")


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
    connect.open_early(StageArgs(config=path, as_json=True))
    early = connect._pending[3] if connect._pending else None
    assert early is not None
    config = load_config(path)
    assert connect.claim_early_sessions(config, (), config.options.jobs) is early
    assert connect._pending is None
    session = early.take("web1")
    assert session is not None
    # the survey went out on the connecting thread; its answers are read by the command
    assert session.survey_sent == (str(tmp_path / "collect" / "web1"), "cback.collect", True)
    ready, listing = session.read_survey(str(tmp_path / "collect" / "web1"), True)
    assert ready and [e.path for e in listing] == ["a.txt", "cback.collect"]
    assert session.info is not None and session.survey_sent is None
    early.close()
    session.close()


def test_sessions_opened_for_another_request_are_closed_not_used(tmp_path: Path) -> None:
    path = _site(tmp_path)
    connect.open_early(StageArgs(config=path, jobs=1))
    assert connect._pending is not None
    stale = connect._pending[3]
    stale_session = stale._openings["web1"].result()
    config = load_config(path)
    fresh = connect.claim_early_sessions(config, ("web1",), 1)  # not what was opened for
    assert fresh is not stale
    assert stale_session._closed
    fresh.close()
    connect.open_early(StageArgs(config=path))
    assert connect._pending is not None
    discarded = connect._pending[3]._openings["web1"].result()
    connect.discard_early_sessions()  # what a dry run does
    assert connect._pending is None and discarded._closed
    for nothing in (StageArgs(config=path, dry_run=True), StageArgs(), StageArgs(config=tmp_path)):
        connect.open_early(nothing)  # a dry run, no config, a config that does not load
        assert connect._pending is None


def test_main_opens_the_sessions_before_handing_over_to_typer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deltastage.__main__ as entry
    import deltastage.cli

    path = _site(tmp_path)
    seen: list[object] = []

    def cli_main(stage_args: StageArgs | None = None) -> None:
        seen.extend((stage_args, connect._pending))

    monkeypatch.setattr(deltastage.cli, "main", cli_main)
    monkeypatch.setattr(sys, "argv", ["deltastage", "stage", "--config", str(path)])
    entry.main()
    assert seen[0] == StageArgs(config=path) and seen[1] is not None
    connect.discard_early_sessions()
    seen.clear()
    monkeypatch.setattr(sys, "argv", ["deltastage", "stage", "--config", str(path), "--help"])
    entry.main()
    assert seen == [None, None], "typer's to parse: nothing opened"


def test_a_remote_stage_imports_paramiko_before_typer_and_never_invoke_or_pydantic(
    tmp_path: Path,
) -> None:
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
    assert "pydantic" not in loaded  # typer's coercion: the command line was parsed without it
