"""What the shared options do: load the config, read the run date, set up logging, print
JSON. Typer-free, so a command run without typer (see ``fastargv``) shares it."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from datetime import date
from pathlib import Path

from deltastage.cli import logs
from deltastage.config import Config, load_config
from deltastage.errors import REPORTED, UsageError, exit_status
from deltastage.models import json_text
from deltastage.text import shown

__all__ = ["json_on_failure", "load", "parse_date", "print_json", "setup_logging"]


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
    from deltastage.config.cedar import load_cedar_config

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


def json_on_failure(action: Callable[[], int], failed: Callable[[str, int], object]) -> int:
    """Run a ``--json`` command's ``action``; its exit code. Whatever stops it (a reported
    error, an interrupt, a bug: its traceback on stderr) still ends in one JSON object on
    stdout, ``failed(error, exit_code)``, after the usual one-line error on stderr."""
    try:
        return action()
    except REPORTED as exc:
        message, code = exit_status(exc)
    except Exception as exc:
        traceback.print_exc()
        message, code = f"unexpected {type(exc).__name__}: {exc}", 1
    sys.stderr.write(f"deltastage: error: {shown(message)}\n")
    print_json(failed(message, code))
    return code
