"""What the shared options do: load the config, read the run date, set up logging, print
JSON. Typer-free, so a command run without typer (see ``fastargv``) shares it."""

from __future__ import annotations

import logging
import sys
from datetime import date
from pathlib import Path

from deltastage.cli import logs
from deltastage.config import Config, load_cedar_config, load_config
from deltastage.errors import UsageError
from deltastage.models import json_text

__all__ = ["load", "parse_date", "print_json", "setup_logging"]


def parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--date {value!r}: expected YYYY-MM-DD") from None


def load(config: Path | None, cedar_config: Path | None) -> Config:
    """The config from exactly one of --config and --cedar-config."""
    if (config is None) == (cedar_config is None):
        raise UsageError("give exactly one of --config FILE or --cedar-config FILE")
    if config is not None:
        return load_config(config)
    assert cedar_config is not None
    loaded, warnings = load_cedar_config(cedar_config)
    for warning in warnings:
        logging.getLogger("deltastage.config").warning("%s", warning)
    return loaded


def setup_logging(level: str, log_file: Path | None, syslog: bool, quiet: bool = False) -> None:
    if level.lower() not in ("debug", "info", "warning", "error"):
        raise UsageError(f"--log-level {level!r}: expected debug, info, warning or error")
    logs.setup_logging(
        level=level, log_file=log_file, syslog=syslog, rich=sys.stderr.isatty(), quiet=quiet
    )


def print_json(document: object) -> None:
    sys.stdout.write(json_text(document) + "\n")
