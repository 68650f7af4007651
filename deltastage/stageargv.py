"""``deltastage stage`` command lines parsed without typer.

typer 0.29 coerces every parameter through pydantic, ~0.1 s of imports that a nightly stage
run would pay while it connects to its first peers. The plain command lines cron runs are
parsed here instead; anything else (--help, a typo, combined short flags, a job count out
of range) is left to typer, which parses and refuses it as usual. tests/test_stage_argv.py
checks that wherever this parser answers, typer parses the same command line the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["StageArgs", "parse_stage_argv"]


@dataclass(frozen=True)
class StageArgs:
    """The options of ``deltastage stage`` (see cli.stage for their help)."""

    config: Path | None = None
    cedar_config: Path | None = None
    run_date: str | None = None
    full: bool = False
    peer: tuple[str, ...] = ()
    dry_run: bool = False
    jobs: int | None = None
    as_json: bool = False
    log_level: str = "info"
    log_file: Path | None = None
    syslog: bool = False


_VALUE_OPTIONS = {
    "--config": "config",
    "-c": "config",
    "--cedar-config": "cedar_config",
    "--date": "run_date",
    "--peer": "peer",
    "-p": "peer",
    "--jobs": "jobs",
    "-j": "jobs",
    "--log-level": "log_level",
    "--log-file": "log_file",
}
_FLAGS = {
    "--json": "as_json",
    "--full": "full",
    "--syslog": "syslog",
    "--dry-run": "dry_run",
    "-n": "dry_run",
}
_PATHS = frozenset({"config", "cedar_config", "log_file"})
MAX_JOBS = 64  # cli.stage's --jobs range is 1..64


def parse_stage_argv(args: Sequence[str]) -> StageArgs | None:
    """The options of ``deltastage stage ARGS``, or None when typer should parse them."""
    values: dict[str, object] = {}
    peers: list[str] = []
    words = iter(args)
    for word in words:
        if word in _FLAGS:
            values[_FLAGS[word]] = True
            continue
        name, eq, inline = word.partition("=")
        if name not in _VALUE_OPTIONS or (eq and not name.startswith("--")):
            return None
        value = inline if eq else next(words, None)
        if value is None:
            return None
        key = _VALUE_OPTIONS[name]
        if key == "peer":
            peers.append(value)
        elif key == "jobs":
            if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_JOBS:
                return None
            values[key] = int(value)
        else:  # as click does, the last of a repeated option wins
            values[key] = Path(value) if key in _PATHS else value
    return StageArgs(peer=tuple(peers), **values)  # type: ignore[arg-type]
