"""The typer declarations of the options several commands share (config, logging, JSON);
what they do is in ``support``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "CedarOpt",
    "ConfigOpt",
    "JsonOpt",
    "LogFileOpt",
    "LogLevelOpt",
    "SyslogOpt",
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
