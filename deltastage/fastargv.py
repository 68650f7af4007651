"""The command lines run without typer: one argv specification, read by ``__main__``.

Three kinds of command start where typer's start-up (it builds a model per parameter) shows:
the agent, started once per SSH connection; the rdiff-like ``signature``/``delta``/``patch``,
which are compared with rdiff's own short runs; and ``stage``, which opens its first peers'
sessions before the rest of the master is imported (``cli.stagerun``). A plainly
well-formed command line for one of them is parsed here and calls the same function the typer
command calls. Anything else (help, unusual spellings, values typer might read differently)
gives None and goes to the typer CLI, which stays the one authority for usage and messages;
tests check that both parse alike and that this specification matches the typer commands.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from deltastage.errors import REPORTED, exit_status

__all__ = ["COMMANDS", "Call", "Command", "Option", "parse", "run"]

STDIO = "-"
Scalar = int | str | Path
Value = Scalar | bool | list[Scalar]


class Option(NamedTuple):
    """An option that takes one value, or a flag: its spellings and the keyword it fills."""

    spellings: tuple[str, ...]
    keyword: str
    type: type[int] | type[str] | type[Path] = str
    # The values an int option may take (typer's min and max).
    bounds: range | None = None
    # Each use adds a value to a list (typer's list[...] options).
    repeatable: bool = False
    required: bool = False
    # Takes no value: present, it fills its keyword with True (typer's bool options).
    flag: bool = False

    def convert(self, text: str) -> Scalar | None:
        """``text`` as this option's value; None where only typer should judge it."""
        if self.type is int:
            if not (text.isascii() and text.isdigit()):
                return None
            number = int(text)
            return number if self.bounds is None or number in self.bounds else None
        if not text or text.startswith("-"):
            return None
        return Path(text) if self.type is Path else text


class Command(NamedTuple):
    """A command run without typer: the function it calls (``module:name``), the keywords
    its positional arguments fill, in order, and its options. A reported error
    (``errors.REPORTED``) ends it with one line and its exit code, as the CLI does.

    ``variadic`` names the argument that takes every word the others leave (one at least,
    as a list: typer's ``list[str]`` arguments)."""

    target: str
    arguments: tuple[str, ...]
    options: tuple[Option, ...] = ()
    variadic: str | None = None

    def function(self) -> Callable[..., int | None]:
        module, name = self.target.split(":")
        function: Callable[..., int | None] = getattr(importlib.import_module(module), name)
        return function


class Call(NamedTuple):
    """A parsed command line: the command and the keywords its function is called with."""

    command: Command
    keywords: dict[str, Value]


COMMANDS: dict[str, Command] = {
    "signature": Command(
        "deltastage.rdiff.sigdelta:signature_file",
        ("basis", "sig"),
        (
            Option(("--block-size", "-b"), "block_size", int),
            Option(("--strong-len", "-S"), "strong_len", int),
        ),
        variadic="basis",
    ),
    "delta": Command(
        "deltastage.rdiff.sigdelta:delta_file",
        ("sig", "new", "delta_out"),
        (Option(("--level", "-l"), "level", int, bounds=range(23)),),
    ),
    "patch": Command(
        "deltastage.rdiff.patch:patch_file", ("basis", "delta_in", "out"), variadic="basis"
    ),
    "stage": Command(
        "deltastage.cli.stagerun:stage_command",
        (),
        (
            Option(("--config", "-c"), "config", Path),
            Option(("--cedar-config",), "cedar_config", Path),
            Option(("--date",), "run_date"),
            Option(("--full",), "full", flag=True),
            Option(("--peer", "-p"), "peer", repeatable=True),
            Option(("--dry-run", "-n"), "dry_run", flag=True),
            Option(("--jobs", "-j"), "jobs", int, bounds=range(1, 65)),
            Option(("--json",), "as_json", flag=True),
            Option(("--log-level",), "log_level"),
            Option(("--log-file",), "log_file", Path),
            Option(("--syslog",), "syslog", flag=True),
            Option(("--metrics-file",), "metrics_file", Path),
            Option(("--quiet", "-q"), "quiet", flag=True),
        ),
    ),
    "agent": Command(
        "deltastage.agent:run_stdio",
        (),
        (
            Option(("--root",), "roots", repeatable=True, required=True),
            Option(("--indicator",), "indicators", repeatable=True),
            Option(("--read-only",), "read_only", flag=True),
        ),
    ),
}


def parse(argv: Sequence[str]) -> Call | None:
    """The call ``argv`` asks for, or None when only the typer CLI should judge it."""
    command = COMMANDS.get(argv[0]) if argv else None
    if command is None:
        return None
    by_spelling = {spelling: option for option in command.options for spelling in option.spellings}
    positional: list[str] = []
    single: dict[str, Scalar | bool] = {}
    repeated: dict[str, list[Scalar]] = {}
    args = iter(argv[1:])
    for arg in args:
        if arg == STDIO or not arg.startswith("-"):
            positional.append(arg)
            continue
        # click reads "--opt=V" but not "-o=V" (that is the value "=V").
        name, eq, text = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        option = by_spelling.get(name)
        if option is None or (option.flag and eq):
            return None
        if option.flag:
            single[option.keyword] = True
            continue
        if not eq:
            following = next(args, None)
            if following is None:
                return None
            text = following
        value = option.convert(text)
        if value is None:
            return None
        if option.repeatable:
            repeated.setdefault(option.keyword, []).append(value)
        else:
            single[option.keyword] = value
    keywords = _arguments(command, positional)
    if keywords is None:
        return None
    keywords.update(single)
    keywords.update(repeated)
    if any(option.required and option.keyword not in keywords for option in command.options):
        return None
    return Call(command, keywords)


def _arguments(command: Command, positional: list[str]) -> dict[str, Value] | None:
    """The keywords the positional words fill, or None if they do not fit."""
    extra = len(positional) - len(command.arguments)
    if extra < 0 or (extra and command.variadic is None):
        return None
    keywords: dict[str, Value] = {}
    words = iter(positional)
    for name in command.arguments:
        if name == command.variadic:
            keywords[name] = [next(words) for _ in range(extra + 1)]
        else:
            keywords[name] = next(words)
    return keywords


def run(argv: Sequence[str]) -> int | None:
    """Run a plainly well-formed command line; its exit code, or None (see ``parse``)."""
    call = parse(argv)
    if call is None:
        return None
    function = call.command.function()
    try:
        return function(**call.keywords) or 0
    except REPORTED as exc:
        message, code = exit_status(exc)
        sys.stderr.write(f"deltastage: error: {message}\n")
        return code
