"""``deltastage verify``: re-hash a staged day against its manifests."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from deltastage.cli.app import run_guarded
from deltastage.cli.options import (
    CedarOpt,
    ConfigOpt,
    JsonOpt,
    LogFileOpt,
    LogLevelOpt,
    MetricsFileOpt,
    QuietOpt,
    SyslogOpt,
)
from deltastage.cli.support import json_on_failure, load, parse_date, print_json, setup_logging
from deltastage.errors import UsageError

__all__ = ["EXIT_CODES", "verify"]

EXIT_CODES = (
    "Exit status: 0 every peer's files match its manifest; 1 a file is missing, corrupt or "
    "extra, a peer dir holds files but no manifest, the dir holds no peer, or the metrics "
    "file could not be written; 2 a usage or configuration error; 130 interrupted."
)


def verify(
    directory: Annotated[
        Path | None,
        typer.Argument(
            metavar="DIR",
            show_default="the config's daily dir for --date",
            help="A daily dir (or one peer's dir) to verify, instead of a config's.",
        ),
    ] = None,
    config: ConfigOpt = None,
    cedar_config: CedarOpt = None,
    run_date: Annotated[
        str | None,
        typer.Option(
            "--date", metavar="YYYY-MM-DD", show_default="today", help="Verify this day's dir."
        ),
    ] = None,
    as_json: JsonOpt = False,
    log_level: LogLevelOpt = "info",
    log_file: LogFileOpt = None,
    syslog: SyslogOpt = False,
    metrics_file: MetricsFileOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Re-hash staged files against their manifests; report missing, extra, corrupt files."""

    target: Path | None = directory

    def action() -> int:
        nonlocal target
        from rich.console import Console

        from deltastage.cli.render import render_verify_failures, render_verify_table
        from deltastage.history import record_verify
        from deltastage.stage.basis import daily_dir_for
        from deltastage.verify import verify_daily_dir

        setup_logging(log_level, log_file, syslog, quiet)
        staging_dir, configured = None, None
        if directory is not None:
            if config or cedar_config:
                raise UsageError("give either DIR or --config, not both")
        else:
            cfg = load(config, cedar_config)
            staging_dir, configured = cfg.staging_dir, [peer.name for peer in cfg.peers]
            target = daily_dir_for(cfg.staging_dir, parse_date(run_date) or date.today())
        assert target is not None  # DIR, or the config's daily dir
        report = verify_daily_dir(target)
        log = logging.getLogger("deltastage.verify")
        for peer_result in report.peers:
            log.log(
                logging.INFO if peer_result.ok else logging.ERROR,
                "verify peer=%s status=%s files=%d missing=%d corrupt=%d extra=%d stray=%d",
                peer_result.name,
                peer_result.status,
                peer_result.files,
                len(peer_result.missing),
                len(peer_result.corrupt),
                len(peer_result.extra),
                len(peer_result.stray),
            )
        if staging_dir is not None:
            record_verify(staging_dir, report)
        if as_json:
            print_json(report.as_json())
        elif quiet:
            render_verify_failures(report, Console())
        else:
            render_verify_table(report, Console())
        if metrics_file is not None:
            from deltastage.metrics import verify_outcome, write_metrics

            outcome = verify_outcome(report)
            write_metrics(metrics_file, outcome, staging_dir=staging_dir, configured=configured)
        return report.exit_code

    def failed(error: str, code: int) -> dict[str, object]:
        return failure_report(error, code, target)

    if as_json:
        raise typer.Exit(json_on_failure(action, failed))
    raise typer.Exit(run_guarded(action))


def failure_report(error: str, code: int, target: Path | None = None) -> dict[str, object]:
    """The JSON of a verify that ``error`` stopped: the report's keys, no peers."""
    daily_dir = None if target is None else str(target)
    return {"daily_dir": daily_dir, "exit_code": code, "error": error, "peers": []}
