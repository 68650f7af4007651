"""``deltastage stage``: its typer declaration; the work is ``stagerun.stage_command``."""

from __future__ import annotations

from typing import Annotated

import typer

from deltastage.cli import stagerun
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

__all__ = ["EXIT_CODES", "stage"]

EXIT_CODES = (
    "Exit status: 0 every selected peer was staged, or its failure is excused by "
    "ignore_failures; 1 a peer failed or was not ready and is not excused, another run "
    "holds the staging lock, or the metrics file could not be written; 2 a usage or "
    "configuration error (nothing was touched); 130 interrupted."
)


def stage(
    config: ConfigOpt = None,
    cedar_config: CedarOpt = None,
    run_date: Annotated[
        str | None,
        typer.Option(
            "--date", metavar="YYYY-MM-DD", show_default="today", help="Stage into this day's dir."
        ),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="A full run: daily/weekly ignore rules as Cedar.")
    ] = False,
    peer: Annotated[
        list[str] | None,
        typer.Option(
            "--peer",
            "-p",
            metavar="NAME",
            show_default="every peer",
            help="Stage only this peer (repeatable).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Report what would be staged; touch nothing.")
    ] = False,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            max=64,
            metavar="N",
            show_default="the config's jobs",
            help="Peers staged at once.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    log_level: LogLevelOpt = "info",
    log_file: LogFileOpt = None,
    syslog: SyslogOpt = False,
    metrics_file: MetricsFileOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Stage every ready peer into STAGING/YYYY/MM/DD/<peer>/, verified."""
    raise typer.Exit(
        run_guarded(
            lambda: stagerun.stage_command(
                config=config,
                cedar_config=cedar_config,
                run_date=run_date,
                full=full,
                peer=peer,
                dry_run=dry_run,
                jobs=jobs,
                as_json=as_json,
                log_level=log_level,
                log_file=log_file,
                syslog=syslog,
                metrics_file=metrics_file,
                quiet=quiet,
            )
        )
    )
