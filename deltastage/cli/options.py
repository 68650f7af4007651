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
    "MetricsFileOpt",
    "QuietOpt",
    "SyslogOpt",
]

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        show_default="none",
        help="The deltastage TOML configuration file (this or --cedar-config).",
    ),
]
CedarOpt = Annotated[
    Path | None,
    typer.Option(
        "--cedar-config",
        metavar="FILE",
        show_default="none",
        help="A Cedar Backup 3 XML config instead, such as /etc/cback3.conf.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")]
LogLevelOpt = Annotated[
    str,
    typer.Option("--log-level", metavar="LEVEL", help="debug, info, warning or error."),
]
LogFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--log-file", metavar="FILE", show_default="stderr only", help="Also log to this file."
    ),
]
SyslogOpt = Annotated[bool, typer.Option("--syslog", help="Also log to syslog (daemon).")]
MetricsFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--metrics-file",
        metavar="FILE",
        show_default="none",
        help="Write the run's outcome here in Prometheus's text format, atomically (for "
        "node_exporter's textfile collector: a NAME.prom in its directory).",
    ),
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="For cron: print nothing on success, only the failures otherwise; no progress or "
        "log lines on stderr (a log file and syslog still get them).",
    ),
]
