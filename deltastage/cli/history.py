"""``deltastage history`` and ``report``: the staging dir's catalog as a table or a page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deltastage.cli.app import run_guarded
from deltastage.cli.options import CedarOpt, ConfigOpt
from deltastage.cli.support import load, print_json

__all__ = ["history", "report"]


def history(
    config: ConfigOpt = None,
    cedar_config: CedarOpt = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, metavar="N", help="Show the last N runs.")
    ] = 10,
    peer: Annotated[
        str | None,
        typer.Option(
            "--peer", "-p", metavar="NAME", show_default="every peer", help="Only this peer."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of rows.")] = False,
) -> None:
    """The last N stage runs from the staging dir's catalog, one row per peer."""

    def action() -> int:
        from rich.console import Console

        from deltastage.cli.render import render_history_table
        from deltastage.history import read_history

        cfg = load(config, cedar_config)
        rows = read_history(cfg.staging_dir, limit=limit, peer=peer)
        if as_json:
            print_json([row.as_json() for row in rows])
        else:
            render_history_table(rows, limit, cfg.staging_dir, Console())
        return 0

    raise typer.Exit(run_guarded(action))


def report(
    html_out: Annotated[
        Path, typer.Option("--html", metavar="OUT.html", help="Write the HTML report here.")
    ],
    config: ConfigOpt = None,
    cedar_config: CedarOpt = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, metavar="N", help="Chart the last N runs.")
    ] = 30,
) -> None:
    """Write a self-contained HTML page: per-peer charts of bytes staged vs transferred."""

    def action() -> int:
        from deltastage.report import write_report

        cfg = load(config, cedar_config)
        summaries = write_report(cfg.staging_dir, html_out, limit=limit)
        failing = [s.name for s in summaries if s.last_status == "failed"]
        typer.echo(
            f"wrote {html_out}: {len(summaries)} peers"
            + (f"; last run failed: {', '.join(failing)}" if failing else "")
        )
        return 0

    raise typer.Exit(run_guarded(action))
