"""The options several commands share, and what they do: the config to load, the run date,
logging, JSON output."""

from __future__ import annotations

import json
import logging
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from deltastage.errors import UsageError

if TYPE_CHECKING:
    from deltastage.config import Config

__all__ = [
    "CedarOpt",
    "ConfigOpt",
    "JsonOpt",
    "LogFileOpt",
    "LogLevelOpt",
    "SyslogOpt",
    "load",
    "parse_date",
    "print_json",
    "setup_logging",
]

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="deltastage TOML configuration file.")
]
CedarOpt = Annotated[
    Path | None,
    typer.Option("--cedar-config", help="Read a Cedar Backup XML config (/etc/cback3.conf)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")]
LogLevelOpt = Annotated[str, typer.Option("--log-level", help="debug | info | warning | error.")]
LogFileOpt = Annotated[Path | None, typer.Option("--log-file", help="Also log to this file.")]
SyslogOpt = Annotated[bool, typer.Option("--syslog", help="Also log to syslog (daemon).")]


def parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--date {value!r}: expected YYYY-MM-DD") from None


def load(config: Path | None, cedar_config: Path | None) -> Config:
    """The config from exactly one of --config and --cedar-config."""
    from deltastage.config import load_cedar_config, load_config

    if (config is None) == (cedar_config is None):
        raise UsageError("give exactly one of --config FILE or --cedar-config FILE")
    if config is not None:
        return load_config(config)
    assert cedar_config is not None
    loaded, warnings = load_cedar_config(cedar_config)
    for warning in warnings:
        logging.getLogger("deltastage.config").warning("%s", warning)
    return loaded


def setup_logging(level: str, log_file: Path | None, syslog: bool) -> None:
    from deltastage.cli import logs

    if level.lower() not in ("debug", "info", "warning", "error"):
        raise UsageError(f"--log-level {level!r}: expected debug, info, warning or error")
    logs.setup_logging(level=level, log_file=log_file, syslog=syslog, rich=sys.stderr.isatty())


def print_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
