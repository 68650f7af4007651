"""The stage command's work, typer-free: ``fastargv`` runs it for a plain command line, and
the typer command (``cli/stage.py``) after its own parse.

It opens the first peers' sessions before it imports the rest of the master (rich's
progress, the stage, the delta core and numpy): on a WAN, connecting, the SSH handshake and
the agent's start take longer than those imports, so the two overlap instead of adding up.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from deltastage.cli.support import load, parse_date, print_json, setup_logging
from deltastage.master.connect import EarlySessions, open_peer_session, select_peers

__all__ = ["stage_command"]


def stage_command(
    config: Path | str | None = None,
    cedar_config: Path | str | None = None,
    run_date: str | None = None,
    full: bool = False,
    peer: list[str] | None = None,
    dry_run: bool = False,
    jobs: int | None = None,
    as_json: bool = False,
    log_level: str = "info",
    log_file: Path | str | None = None,
    syslog: bool = False,
    metrics_file: Path | str | None = None,
    quiet: bool = False,
) -> int:
    """Stage every ready peer (or the named ones); the run's exit code."""
    setup_logging(log_level, _path(log_file), syslog, quiet)
    cfg = load(_path(config), _path(cedar_config))
    day = parse_date(run_date)
    only_peers = tuple(peer or ())
    first = select_peers(cfg, only_peers)[: jobs or cfg.options.jobs]
    with EarlySessions([] if dry_run else first, cfg.options) as early:
        # imported while the first peers connect (see the module's docstring)
        from rich.console import Console

        from deltastage.cli.render import (
            LogObserver,
            RichObserver,
            render_stage_failures,
            render_stage_table,
        )
        from deltastage.history import record_stage
        from deltastage.stage.run import run_stage

        console = Console(stderr=as_json)
        shown = console.is_terminal and not (as_json or quiet)
        bars = RichObserver(console) if shown else None
        with bars or contextlib.nullcontext():
            report = run_stage(
                cfg,
                run_date=day,
                full=full,
                only_peers=only_peers,
                dry_run=dry_run,
                jobs=jobs,
                observer=bars or LogObserver(),
                session_factory=open_peer_session if dry_run else early.session_factory,
            )
    if not dry_run:
        record_stage(cfg.staging_dir, report)
    if as_json:
        print_json(report.as_json())
    elif quiet:
        render_stage_failures(report, console)
    else:
        render_stage_table(report, console)
    if metrics_file is not None:
        from deltastage.metrics import stage_outcome, write_metrics

        configured = [peer.name for peer in cfg.peers]
        outcome = stage_outcome(report)
        write_metrics(
            Path(metrics_file), outcome, staging_dir=cfg.staging_dir, configured=configured
        )
    return report.exit_code


def _path(value: Path | str | None) -> Path | None:
    return None if value is None else Path(value)
