"""``deltastage stage``: stage every ready peer into today's dir, with progress and a table."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from deltastage.cli.app import run_guarded
from deltastage.cli.options import (
    CedarOpt,
    ConfigOpt,
    JsonOpt,
    LogFileOpt,
    LogLevelOpt,
    SyslogOpt,
    load,
    parse_date,
    print_json,
    setup_logging,
)

__all__ = ["stage"]


def stage(
    config: ConfigOpt = None,
    cedar_config: CedarOpt = None,
    run_date: Annotated[
        str | None, typer.Option("--date", help="Stage into this day's dir (YYYY-MM-DD).")
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="A full run: daily/weekly ignore rules as Cedar.")
    ] = False,
    peer: Annotated[
        list[str] | None, typer.Option("--peer", "-p", help="Stage only this peer (repeatable).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Report what would be staged; touch nothing.")
    ] = False,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", min=1, max=64, help="Peers staged at once.")
    ] = None,
    as_json: JsonOpt = False,
    log_level: LogLevelOpt = "info",
    log_file: LogFileOpt = None,
    syslog: SyslogOpt = False,
) -> None:
    """Stage every ready peer into STAGING/YYYY/MM/DD/<peer>/, verified."""

    def action() -> int:
        setup_logging(log_level, log_file, syslog)
        cfg = load(config, cedar_config)
        day = parse_date(run_date)
        from rich.console import Console

        from deltastage.cli.render import LogObserver, RichObserver, render_stage_table
        from deltastage.history import record_stage
        from deltastage.stage.run import run_stage

        console = Console(stderr=as_json)
        bars = RichObserver(console) if console.is_terminal and not as_json else None
        with bars or contextlib.nullcontext():
            report = run_stage(
                cfg,
                run_date=day,
                full=full,
                only_peers=tuple(peer or ()),
                dry_run=dry_run,
                jobs=jobs,
                observer=bars or LogObserver(),
            )
        if not dry_run:
            record_stage(cfg.staging_dir, report)
        if as_json:
            print_json(report.as_json())
        else:
            render_stage_table(report, console)
        return report.exit_code

    raise typer.Exit(run_guarded(action))
