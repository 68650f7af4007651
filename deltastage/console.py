"""Human output: rich progress on a terminal, plain log lines under cron, summary tables."""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Literal

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from deltastage.stage import PeerReport, StageReport
from deltastage.verify import VerifyReport

__all__ = [
    "LogObserver",
    "RichObserver",
    "human_bytes",
    "render_stage_table",
    "render_verify_table",
    "setup_logging",
]

LOG_FORMAT = "%(asctime)s deltastage[%(process)d] %(levelname)s %(message)s"


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now, so a replaced stderr never gets stale."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup_logging(
    *, level: str = "info", log_file: Path | None = None, syslog: bool = False, rich: bool = False
) -> None:
    root = logging.getLogger("deltastage")
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    root.handlers.clear()
    root.propagate = False
    if rich:
        root.addHandler(RichHandler(console=Console(stderr=True), show_path=False, markup=False))
    else:
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    if log_file is not None:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(file_handler)
    if syslog:
        address = "/dev/log" if Path("/dev/log").exists() else ("localhost", 514)
        sys_handler = logging.handlers.SysLogHandler(
            address=address, facility=logging.handlers.SysLogHandler.LOG_DAEMON
        )
        sys_handler.setFormatter(logging.Formatter("deltastage[%(process)d]: %(message)s"))
        root.addHandler(sys_handler)


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


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
