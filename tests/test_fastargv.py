"""The typer-free start (fastargv) agrees with the typer CLI, for every command it runs."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.core import TyperGroup
from typer.testing import CliRunner

from deltastage import fastargv
from deltastage.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
# (target, bound arguments) of each call a command made
Seen = list[tuple[str, dict[str, Any]]]

ACCEPTED = [
    ["signature", "b", "s"],
    ["signature", "-", "-"],
    ["signature", "b", "s", "-b", "1024"],
    ["signature", "-b", "64", "b", "-S", "16", "s"],
    ["signature", "b", "s", "--block-size", "2048", "--strong-len=4"],
    ["signature", "b", "s", "--block-size=8", "-b", "9"],
    ["signature", "b", "s", "extra"],
    ["signature", "b1", "-b", "64", "b2", "-", "s"],
    ["delta", "s", "n", "d"],
    ["delta", "s", "-", "-", "-l", "0"],
    ["delta", "--level", "22", "s", "n", "d"],
    ["delta", "s", "n", "d", "--level=7"],
    ["patch", "b", "d", "o"],
    ["patch", "b", "-", "-"],
    ["patch", "b1", "b2", "b3", "d", "o"],
    ["agent", "--root", "/a"],
    ["agent", "--root", "/a", "--root=/b"],
    ["agent", "--root=/a b", "--root", "/a"],
    ["agent", "--root", "/a", "--indicator", "cback.stage"],
    ["agent", "--indicator=x", "--root", "/a", "--indicator", "y"],
    ["agent", "--root", "/a", "--read-only"],
    ["agent", "--read-only", "--root=/a", "--read-only"],
    ["stage"],
    ["stage", "--config", "/etc/ds.toml"],
    ["stage", "-c", "c.toml", "--date", "2026-12-01", "--full", "--json"],
    ["stage", "--cedar-config=/etc/cback3.conf", "-p", "web1", "--peer", "db1", "-j", "2"],
    ["stage", "-c", "c.toml", "--dry-run", "-n", "--jobs=64", "--log-level", "debug"],
    ["stage", "-c", "c.toml", "--log-file", "/var/log/ds.log", "--syslog"],
    ["stage", "-c", "c.toml", "--metrics-file", "/var/lib/node_exporter/ds.prom", "-q"],
    ["stage", "--quiet", "-c", "c.toml", "--metrics-file=m.prom", "--quiet"],
]

LEFT_TO_TYPER = [
    [],
    ["stage", "--help"],
    ["stage", "-c", "c.toml", "--jobs", "0"],
    ["stage", "-c", "c.toml", "-j", "65"],
    ["stage", "-c", "c.toml", "--full=yes"],
    ["stage", "-c", "c.toml", "extra"],
    ["stage", "-c", "c.toml", "--quiet=1"],
    ["stage", "-c", "c.toml", "--metrics-file"],
    ["stage", "-c"],
    ["stage", "-nc", "c.toml"],
    ["--version"],
    ["signature", "--help"],
    ["signature", "b"],
    ["signature", "b", "s", "-b"],
    ["signature", "b", "s", "-b=5"],
    ["signature", "b", "s", "-b5"],
    ["signature", "b", "s", "-b", "x"],
    ["signature", "b", "s", "-b", "-5"],
    ["signature", "b", "s", "-b", "٣"],
    ["signature", "b", "s", "--bogus", "1"],
    ["signature", "--", "b", "s"],
    ["delta", "s", "n", "d", "-l", "23"],
    ["delta", "s", "n", "d", "extra"],
    ["patch", "d", "o"],
    ["delta", "s", "n", "d", "-b", "5"],
    ["patch", "b", "d", "o", "-l", "3"],
    ["agent"],
    ["agent", "--help"],
    ["agent", "--root"],
    ["agent", "--root", "-x"],
    ["agent", "--root", ""],
    ["agent", "--root=", "x"],
    ["agent", "--root", "/a", "x"],
    ["agent", "-r", "/a"],
    ["agent", "--root", "/a", "--indicator"],
    ["agent", "--root", "/a", "--indicator", "-x"],
    ["agent", "--root", "/a", "--indicator="],
    ["agent", "--root", "/a", "--read-only=1"],
    ["agent", "--root", "/a", "--read-only", "yes"],
    ["agent", "--root", "/a", "--no-read-only"],
]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Seen]:
    """Every fast command's function replaced by a recorder of (target, bound arguments)."""
    seen: Seen = []
    for command in fastargv.COMMANDS.values():
        module, name = command.target.split(":")
        real = command.function()

        def record(
            *args: Any, _target: str = command.target, _real: Any = real, **kwargs: Any
        ) -> int:
            bound = inspect.signature(_real).bind(*args, **kwargs)
            bound.apply_defaults()
            seen.append((_target, dict(bound.arguments)))
            return 0

        monkeypatch.setattr(f"{module}.{name}", record)
    yield seen


def typer_call(argv: list[str], seen: Seen) -> tuple[str, dict[str, Any]]:
    """What the typer CLI calls for ``argv``, defaults filled in."""
    del seen[:]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1
    return seen.pop()


def fast_call(argv: list[str], seen: Seen) -> tuple[str, dict[str, Any]]:
    """What the typer-free start calls for ``argv``, defaults filled in."""
    del seen[:]
    assert fastargv.run(argv) == 0
    assert len(seen) == 1
    return seen.pop()


@pytest.mark.parametrize("argv", ACCEPTED, ids=" ".join)
def test_fast_path_calls_what_typer_calls(argv: list[str], calls: Seen) -> None:
    assert fast_call(argv, calls) == typer_call(argv, calls)


@pytest.mark.parametrize("argv", LEFT_TO_TYPER, ids=" ".join)
def test_anything_unusual_is_left_to_typer(argv: list[str], calls: Seen) -> None:
    assert fastargv.parse(argv) is None
    assert fastargv.run(argv) is None
    assert calls == []


# Command lines near the plain ones: the command's arguments, some of its options (the value
# apart or after "="), in any order, and now and then a stray word; values are drawn from
# ones any option or argument may or may not take.
_ODD = ["-5", "٣", "", "-", "-x", "--", "--help", "--bogus", "-b5"]


def numbers_at_typers_bounds() -> list[str]:
    """Each bound of an int option of the typer app, and its neighbours."""
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    bounds = {
        bound
        for command in group.commands.values()
        for param in command.params
        for bound in (getattr(param, "min", None), getattr(param, "max", None))
        if bound is not None
    }
    return sorted({str(n) for bound in bounds for n in (bound - 1, bound, bound + 1)})


@st.composite
def command_lines(draw: st.DrawFn, name: str) -> list[str]:
    command = fastargv.COMMANDS[name]
    plain = st.sampled_from(["/a", "b c", "7"])
    numbers = st.sampled_from(["4096", *numbers_at_typers_bounds()])
    value = st.one_of(plain, numbers, st.sampled_from(_ODD))
    pieces = [[draw(st.one_of(plain, plain, value))] for _ in command.arguments]
    options = (
        st.lists(st.sampled_from(command.options), max_size=3) if command.options else st.just([])
    )
    for option in draw(options):
        spelling, text = draw(st.sampled_from(option.spellings)), draw(value)
        if option.flag:  # now and then given a value, which it does not take
            pieces.append([spelling] if draw(st.booleans()) else [f"{spelling}={text}"])
        else:
            pieces.append([f"{spelling}={text}"] if draw(st.booleans()) else [spelling, text])
    pieces += [[word] for word in draw(st.lists(st.sampled_from(_ODD), max_size=1))]
    pieces = draw(st.permutations(pieces))
    return [name, *(word for piece in pieces for word in piece)]


# The recorders stay in place between examples; each call clears what they saw.
@pytest.mark.parametrize("name", sorted(fastargv.COMMANDS))
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_whatever_the_fast_path_accepts_typer_reads_alike(
    name: str, data: st.DataObject, calls: Seen
) -> None:
    argv = data.draw(command_lines(name))
    if fastargv.parse(argv) is not None:
        assert fast_call(argv, calls) == typer_call(argv, calls)


def test_the_specification_declares_what_the_typer_commands_declare() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    for name, command in fastargv.COMMANDS.items():
        params = group.commands[name].params
        arguments = tuple(p.name for p in params if p.param_type_name == "argument")
        assert arguments == command.arguments, name
        variadic = [p.name for p in params if p.param_type_name == "argument" and p.nargs == -1]
        assert variadic == ([command.variadic] if command.variadic else []), name
        options = {p.name: p for p in params if p.param_type_name == "option"}
        assert sorted(options) == sorted(o.keyword for o in command.options), name
        for option in command.options:
            declared = options[option.keyword]
            assert tuple(declared.opts) == option.spellings, name
            assert declared.multiple == option.repeatable, name
            assert declared.required == option.required, name
            assert declared.is_flag == option.flag, name
            low, high = getattr(declared, "min", None), getattr(declared, "max", None)
            if option.bounds is None:
                assert low is None and high is None, name
            else:
                assert (low, high) == (option.bounds.start, option.bounds.stop - 1), name


def test_errors_match_the_typer_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "basis").write_bytes(os.urandom(5000))
    (tmp_path / "garbage").write_bytes(b"not a delta at all, not at all")
    cases = [
        ["signature", str(tmp_path / "missing"), str(tmp_path / "sig")],
        ["signature", str(tmp_path / "basis"), str(tmp_path / "sig"), "-b", "0"],
        ["delta", str(tmp_path / "garbage"), str(tmp_path / "basis"), str(tmp_path / "d")],
        ["patch", str(tmp_path / "basis"), str(tmp_path / "garbage"), str(tmp_path / "out")],
        ["patch", "-", str(tmp_path / "garbage"), str(tmp_path / "out")],
        ["signature", str(tmp_path / "basis"), str(tmp_path / "no-such-dir" / "sig")],
        ["agent", "--root", str(tmp_path), "--indicator", "a/b"],
        ["agent", "--root", str(tmp_path), "--indicator", ".."],
        ["agent", "--root", str(tmp_path), "--read-only", "--indicator", "cback.stage"],
    ]
    for argv in cases:
        code = fastargv.run(argv)
        fast = capsys.readouterr().err
        result = CliRunner().invoke(app, argv)
        assert code == result.exit_code != 0, argv
        assert fast == result.stderr, argv
        assert len(fast.splitlines()) == 1 and fast.startswith("deltastage: error: ")
    assert not (tmp_path / "out").exists() and not (tmp_path / "sig").exists()


def importtime(tmp_path: Path, *argv: str) -> tuple[set[str], bytes]:
    """Top-level packages ``python -m deltastage ARGV`` imports, and its stdout."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "deltastage", *argv],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
    )
    modules = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in proc.stderr.decode().splitlines()
        if line.startswith("import time:")
    }
    return modules, proc.stdout


def test_start_up_imports_no_cli_framework(tmp_path: Path) -> None:
    basis, new = os.urandom(20_000), os.urandom(100)
    (tmp_path / "basis").write_bytes(basis)
    (tmp_path / "new").write_bytes(basis[:9000] + new + basis[9000:])
    files = {n: str(tmp_path / n) for n in ("basis", "new", "sig", "delta", "out")}
    sig_mods, _ = importtime(tmp_path, "signature", files["basis"], files["sig"])
    delta_mods, _ = importtime(tmp_path, "delta", files["sig"], files["new"], files["delta"])
    patch_mods, out = importtime(tmp_path, "patch", files["basis"], files["delta"], "-")
    assert out == (tmp_path / "new").read_bytes()
    # The agent's master hangs up at once (stdin is empty): it starts, then ends cleanly.
    agent_mods, _ = importtime(tmp_path, "agent", "--root", str(tmp_path))
    for modules in (sig_mods, delta_mods, patch_mods, agent_mods):
        assert "deltastage" in modules and not modules & {"typer", "pydantic", "rich"}
    # only the signature and the matcher need numpy: a short patch does not pay for it, nor
    # for zstandard when no literal was compressed (random bytes do not compress), nor for
    # what only other commands use
    assert not patch_mods & {"numpy", "zstandard", "dataclasses", "tempfile", "json", "datetime"}


def test_the_agent_answers_without_loading_numpy_first() -> None:
    """numpy and the delta core load on a thread (agent/stdio.py); only a fetch waits."""
    code = "import sys, deltastage.agent; assert 'numpy' not in sys.modules, sys.modules.keys()"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_patch_to_a_pipe_writes_nothing_for_a_wrong_basis(tmp_path: Path) -> None:
    basis = os.urandom(50_000)
    (tmp_path / "basis").write_bytes(basis)
    (tmp_path / "wrong").write_bytes(basis[:-1] + bytes([basis[-1] ^ 1]))
    (tmp_path / "new").write_bytes(basis[:100] + b"edit" + basis[100:])
    p = {n: str(tmp_path / n) for n in ("basis", "wrong", "new", "sig", "delta")}
    assert fastargv.run(["signature", p["basis"], p["sig"], "-b", "512"]) == 0
    assert fastargv.run(["delta", p["sig"], p["new"], p["delta"]]) == 0
    proc = subprocess.run(
        [sys.executable, "-m", "deltastage", "patch", p["wrong"], p["delta"], "-"],
        cwd=ROOT,
        capture_output=True,
    )
    assert proc.returncode != 0 and proc.stdout == b""
    assert b"different basis" in proc.stderr
