"""Every command's --help in Typer's conventions: no Python type names, flags without a
value placeholder, every option's default stated, exit codes where cron and monitors need
them, and shell completion offered, through CliRunner and a real process without a TTY."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.core import TyperGroup
from typer.testing import CliRunner

from deltastage.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
# What typer would show for a parameter's Python type: <bool>, <str>, <list[str]>, <int range>
PYTHON_TYPES = re.compile(r"<\s*(?:bool|str|int|float|path|list\[[^]]*\]|\w+ range)\s*>", re.I)


def commands() -> Iterator[tuple[list[str], Any]]:
    """(the words that name it, the click command) for the app, each group and command."""
    root = typer.main.get_command(app)

    def walk(words: list[str], command: Any) -> Iterator[tuple[list[str], Any]]:
        yield words, command
        if isinstance(command, TyperGroup):
            for name, sub in command.commands.items():
                yield from walk([*words, name], sub)

    yield from walk([], root)


COMMANDS = dict(
    (" ".join(words) or "deltastage", (words, command)) for words, command in commands()
)


def help_text(words: list[str], monkeypatch: pytest.MonkeyPatch, width: int = 1000) -> str:
    """The --help of ``words``, wide enough that each parameter's row is one line."""
    monkeypatch.setenv("COLUMNS", str(width))
    result = CliRunner().invoke(app, [*words, "--help"])
    assert result.exit_code == 0, result.output
    return result.stdout


def row(text: str, first: str) -> str:
    """What follows a parameter's names (``first``, then a short one) in its help row."""
    for line in text.splitlines():
        match = re.match(rf"^│\s*(?:\*\s+)?{re.escape(first)}(?:\s+-\w)?\s+(.*?)\s*│$", line)
        if match:
            return match.group(1)
    raise AssertionError(f"no row for {first} in:\n{text}")


@pytest.fixture(params=COMMANDS)
def shown(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    """A command (the app, each group and command) and its --help."""
    words, command = COMMANDS[request.param]
    return command, help_text(words, monkeypatch)


def test_help_shows_no_python_types_and_flags_take_no_placeholder(shown: tuple[Any, str]) -> None:
    command, text = shown
    name = command.name
    assert not PYTHON_TYPES.search(text), text
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "<" not in usage, usage
    assert row(text, "--help").startswith("Show this message and exit.")
    for param in command.params:
        if param.param_type_name == "argument":
            shown = param.metavar or param.name.upper()
            assert re.search(rf"^│\s*(?:\*\s+)?{re.escape(shown)}\s", text, re.M), (name, shown)
            assert shown in usage, (name, shown)
            continue
        rest = row(text, param.opts[0])
        if param.is_flag:
            assert rest.startswith(param.help.split()[0]), (name, param.opts, rest)
        else:
            assert param.metavar, (name, param.opts, "declares no metavar")
            assert rest.startswith(f"{param.metavar} "), (name, param.opts, rest)


def test_every_option_that_takes_a_value_states_its_default(shown: tuple[Any, str]) -> None:
    command, text = shown
    name = command.name
    for param in command.params:
        if param.param_type_name == "option" and param.is_flag:
            continue  # a flag is off unless given
        first = param.opts[0] if param.param_type_name == "option" else param.metavar
        rest = row(text, first or param.name.upper())
        assert "[default: " in rest or "[required]" in rest, (name, first, rest)


@pytest.mark.parametrize("name", ["stage", "verify", "check"])
def test_commands_run_by_cron_list_their_exit_codes(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = " ".join(help_text([name], monkeypatch, width=80).split())
    for code in ("Exit status: 0 ", "; 1 ", "; 2 a usage or configuration error", "; 130 "):
        assert code in text, text


def process_help(*words: str) -> str:
    """``python -m deltastage WORDS --help`` as a real process, its output piped."""
    proc = subprocess.run(
        [sys.executable, "-m", "deltastage", *words, "--help"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
    )
    assert not PYTHON_TYPES.search(proc.stdout), proc.stdout
    return proc.stdout


def test_help_from_a_process_without_a_tty() -> None:
    root = process_help()
    assert "--install-completion" in root and "--show-completion" in root
    stage = process_help("stage")
    assert re.search(r"--full\s+A full run", stage) and re.search(r"--jobs\s+-j\s+N ", stage)
    assert "[default: (today)]" in stage and "Exit status: 0 " in stage
    assert re.search(r"SIG\s+A file path", process_help("signature"))
    assert re.search(r"--read-only\s+Write nothing", process_help("agent"))


def test_shell_completion_is_offered_as_typer_does(monkeypatch: pytest.MonkeyPatch) -> None:
    text = help_text([], monkeypatch)
    assert row(text, "--install-completion").startswith("Install completion")
    assert row(text, "--show-completion").startswith("Show completion")
    script = CliRunner().invoke(app, ["--show-completion", "bash"], prog_name="deltastage")
    assert script.exit_code == 0, script.output
    assert "complete -o default -F _deltastage_completion deltastage" in script.stdout
