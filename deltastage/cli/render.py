"""Every table and progress display: rich progress bars on a terminal, one log line per peer
under cron, and the tables of stage, verify, check and history."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from deltastage.report import human_bytes
from deltastage.stage.report import PeerReport, StageReport
from deltastage.verify import VerifyReport

if TYPE_CHECKING:
    from deltastage.check import CheckReport
    from deltastage.history import HistoryRow

__all__ = [
    "LogObserver",
    "RichObserver",
    "render_check",
    "render_history_table",
    "render_stage_table",
    "render_verify_table",
]


class LogObserver:
    """Quiet, log-friendly progress for cron: one line when a peer starts."""

    def __init__(self) -> None:
        self.log = logging.getLogger("deltastage.stage")

    def peer_started(self, peer: str, files: int, total_bytes: int) -> None:
        self.log.info("peer=%s staging %d files, %s", peer, files, human_bytes(total_bytes))

    def file_done(self, peer: str, path: str, size: int) -> None:
        self.log.debug("peer=%s staged %s (%d bytes)", peer, path, size)

    def peer_finished(self, report: PeerReport) -> None:
        pass


class RichObserver:
    """One progress bar per peer on a terminal."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[files]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.lock = threading.Lock()

    def __enter__(self) -> RichObserver:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def peer_started(self, peer: str, files: int, total_bytes: int) -> None:
        with self.lock:
            self.tasks[peer] = self.progress.add_task(peer, total=total_bytes, files=f"0/{files}")

    def file_done(self, peer: str, path: str, size: int) -> None:
        with self.lock:
            task = self.tasks[peer]
            done, total = self.progress.tasks[task].fields["files"].split("/")
            self.progress.update(task, advance=size, files=f"{int(done) + 1}/{total}")

    def peer_finished(self, report: PeerReport) -> None:
        with self.lock:
            if report.name in self.tasks:
                self.progress.update(
                    self.tasks[report.name],
                    description=f"{report.name} ✓"
                    if report.status == "staged"
                    else f"{report.name} ✗",
                )


_STATUS_STYLE = {"staged": "green", "would-stage": "cyan", "not-ready": "yellow", "failed": "red"}


def render_stage_table(report: StageReport, console: Console) -> None:
    title = f"deltastage {'dry run' if report.dry_run else 'stage'} {report.date.isoformat()}"
    table = Table(title=title, caption=str(report.daily_dir))
    for column in ("peer", "status", "files", "bytes", "wire", "saved", "secs"):
        justify: Literal["left", "right"] = "left" if column in ("peer", "status") else "right"
        table.add_column(column, justify=justify, no_wrap=True, min_width=len(column))
    for peer in report.peers:
        status = peer.status + ("*" if peer.ignored else "")
        style = _STATUS_STYLE.get(peer.status, "")
        table.add_row(
            peer.name,
            f"[{style}]{status}[/]" if style else status,
            str(peer.files),
            human_bytes(peer.bytes),
            human_bytes(peer.wire_bytes),
            f"{peer.saved_percent:.1f}%",
            f"{peer.seconds:.1f}",
        )
    console.print(table)
    if any(peer.ignored for peer in report.peers):
        console.print("* failure ignored (ignore_failures)")
    for peer in report.peers:  # errors below the table: they are long and must not be cut
        if peer.error:
            console.print(f"{peer.name}: {peer.error}", markup=False, soft_wrap=True)


def render_verify_table(report: VerifyReport, console: Console) -> None:
    table = Table(title="deltastage verify", caption=str(report.daily_dir))
    for column in ("peer", "status", "files", "bytes", "missing", "corrupt", "extra"):
        table.add_column(column)
    table.add_column("detail", overflow="fold")
    for peer in report.peers:
        detail = "; ".join(
            [f"missing {p}" for p in peer.missing[:5]]
            + [f"corrupt {p}" for p in peer.corrupt[:5]]
            + [f"extra {p}" for p in peer.extra[:5]]
            + ([peer.error] if peer.error else [])
        )
        table.add_row(
            peer.name,
            peer.status,
            str(peer.files),
            human_bytes(peer.bytes),
            str(len(peer.missing)),
            str(len(peer.corrupt)),
            str(len(peer.extra)),
            detail,
        )
    console.print(table)


def render_check(report: CheckReport, console: Console) -> None:
    console.print(f"config {report.config}: ok")
    if report.staging_problem:
        console.print(f"[red]staging dir: {report.staging_problem}[/]")
    table = Table(title="peers")
    for column in ("peer", "type", "state", "agent", "error"):
        table.add_column(column)
    for result in report.peers:
        table.add_row(
            result.name,
            result.type,
            result.state,
            result.agent_version or "",
            result.error or "",
        )
    console.print(table)
    for result in report.peers:
        if result.fix:
            console.print(
                f"{result.name}: in the peer's authorized_keys, let the master's key run",
                markup=False,
            )
            console.print(f"  {result.fix}", markup=False, highlight=False, soft_wrap=True)


def render_history_table(
    rows: Sequence[HistoryRow], limit: int, staging_dir: Path, console: Console
) -> None:
    table = Table(title=f"deltastage history: last {limit} runs", caption=str(staging_dir))
    for column in ("date", "run", "peer", "status", "files", "bytes", "wire", "secs"):
        table.add_column(
            column,
            justify="left" if column in ("date", "peer", "status") else "right",
            # A folded date or size is unreadable; names, statuses and errors may fold.
            no_wrap=column not in ("peer", "status"),
            min_width=9 if column == "status" else None,  # "not-ready" whole
        )
    table.add_column("error", overflow="fold")
    for row in rows:
        table.add_row(
            row.run_date,
            str(row.run_id),
            row.peer,
            row.status,
            str(row.files),
            human_bytes(row.bytes),
            human_bytes(row.wire_bytes),
            f"{row.seconds:.1f}",
            row.error or "",
        )
    console.print(table if rows else "no stage runs recorded yet")
