"""The stage command's work, typer-free: ``fastargv`` runs it for a plain command line, and
the typer command (``cli/stage.py``) after its own parse.

It opens the first peers' sessions before it imports the rest of the master (rich's
progress, the stage, the delta core and numpy): on a WAN, connecting, the SSH handshake and
the agent's start take longer than those imports, so the two overlap instead of adding up.
"""

from __future__ import annotations

import contextlib
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from deltastage.cli.support import json_on_failure, load, parse_date, print_json, setup_logging
from deltastage.master.connect import EarlySessions, open_peer_session, select_peers

if TYPE_CHECKING:
    from deltastage.stage.report import PeerReport, StageObserver

__all__ = ["failure_report", "stage_command"]


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
    """Stage every ready peer (or the named ones); the run's exit code.

    With ``as_json`` one JSON object is printed whatever ends the run: a bad config or
    option, a held lock, an unusable staging dir, an interrupt or a bug still print the
    report's keys, with ``exit_code`` and the ``error`` that stopped the run (the peers
    finished by then listed), and the one-line error on stderr as always.
    """
    run = _Run(dry_run, run_date)

    def action() -> int:
        setup_logging(log_level, _path(log_file), syslog, quiet)
        cfg = load(_path(config), _path(cedar_config))
        run.day = parse_date(run_date) or date.today()
        run.staging_dir = cfg.staging_dir
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
                    run_date=run.day,
                    full=full,
                    only_peers=only_peers,
                    dry_run=dry_run,
                    jobs=jobs,
                    observer=_Finished(bars or LogObserver(), run.finished),
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

    return json_on_failure(action, run.failed) if as_json else action()


def failure_report(error: str, code: int) -> dict[str, object]:
    """The JSON of a stage stopped before it began (a command line the parser refused)."""
    return _Run(dry_run=False, run_date=None).failed(error, code)


class _Run:
    """What is known of a stage run so far, for the JSON report of a run that could not
    finish."""

    def __init__(self, dry_run: bool, run_date: str | None) -> None:
        self.dry_run = dry_run
        self.run_date = run_date
        self.day: date | None = None
        self.staging_dir: Path | None = None
        self.finished: list[PeerReport] = []

    def failed(self, error: str, code: int) -> dict[str, object]:
        """The JSON report of a run that ``error`` stopped: the stage report's keys, the
        peers finished before it, and the error."""
        from deltastage.stage.basis import daily_dir_for

        daily_dir = None
        if self.day is not None and self.staging_dir is not None:
            daily_dir = str(daily_dir_for(self.staging_dir, self.day))
        return {
            "date": self.day.isoformat() if self.day else self.run_date,
            "daily_dir": daily_dir,
            "dry_run": self.dry_run,
            "exit_code": code,
            "error": error,
            "peers": [each.as_json() for each in self.finished],
        }


class _Finished:
    """An observer that passes everything on, and keeps each peer's report as it ends."""

    def __init__(self, inner: StageObserver, finished: list[PeerReport]) -> None:
        self._inner = inner
        self._finished = finished

    def peer_started(self, peer: str, files: int, total_bytes: int) -> None:
        self._inner.peer_started(peer, files, total_bytes)

    def file_done(self, peer: str, path: str, size: int) -> None:
        self._inner.file_done(peer, path, size)

    def peer_finished(self, report: PeerReport) -> None:
        self._finished.append(report)
        self._inner.peer_finished(report)


def _path(value: Path | str | None) -> Path | None:
    return None if value is None else Path(value)
