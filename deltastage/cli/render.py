"""Every table and progress display: rich progress bars on a terminal, one log line per peer
under cron, and the tables of stage, verify, check and history."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from deltastage.report import human_bytes
from deltastage.stage.report import PeerReport, StageReport
from deltastage.text import shown as printable
from deltastage.verify import PeerVerification, VerifyReport

if TYPE_CHECKING:
    from deltastage.check import CheckReport
    from deltastage.history import HistoryRow

__all__ = [
    "Column",
    "LogObserver",
    "RichObserver",
    "print_line",
    "print_table",
    "render_check",
    "render_history_table",
    "render_stage_failures",
    "render_stage_table",
    "render_verify_failures",
    "render_verify_table",
    "table_columns",
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


# The statuses of stage and history, of verify and the states of check.
_STATUS_STYLE = {
    "staged": "green",
    "would-stage": "cyan",
    "not-ready": "yellow",
    "failed": "red",
    "ok": "green",
    "not-staged": "yellow",
    "damaged": "red",
    "error": "red",
    "ready": "green",
    "unusable": "red",
}

Cell = str | Text


@dataclass(frozen=True)
class Column:
    """A table column: its header, alignment, and where the width is short, the order in
    which it is left out (lowest first; None: never, as for peer names and statuses)."""

    header: str
    right: bool = False
    drop: int | None = None


def table_columns(headers: str, *, numbers: str = "", left_out: str = "") -> list[Column]:
    """The columns named in ``headers``, in order: ``numbers`` right-aligned, and where the
    width is short, ``left_out`` left out in that order (the others never are)."""
    order = left_out.split()
    return [
        Column(header, header in numbers.split(), order.index(header) if header in order else None)
        for header in headers.split()
    ]


def print_table(
    console: Console, title: str, columns: Sequence[Column], rows: Sequence[Sequence[Cell]]
) -> None:
    """``rows`` as a table that never cuts or folds a cell, at the console's width.

    Where the table is too wide, the droppable columns are left out one by one (and a line
    says which); where even the rest is too wide, each row becomes one line of
    ``header: value`` pairs. Piped output has the console's width too (80 unless COLUMNS
    says otherwise), so this holds for cron mail as for a narrow terminal.
    """
    cells = [[cell if isinstance(cell, Text) else Text(cell) for cell in row] for row in rows]
    shown = list(range(len(columns)))
    while True:
        table = Table(title=title)
        for index in shown:
            column = columns[index]
            table.add_column(column.header, justify="right" if column.right else "left")
            table.columns[-1].no_wrap = True
        for row in cells:
            table.add_row(*(row[index] for index in shown))
        wide = Measurement.get(console, console.options.update_width(_UNBOUNDED), table).maximum
        if wide <= console.width:
            break
        droppable = [index for index in shown if columns[index].drop is not None]
        if not droppable:
            _print_as_lines(console, title, columns, cells)
            return
        shown.remove(min(droppable, key=lambda index: columns[index].drop or 0))
    console.print(table)
    left_out = [column.header for index, column in enumerate(columns) if index not in shown]
    if left_out:
        print_line(console, f"(left out at this width: {', '.join(left_out)}; --json has all)")


_UNBOUNDED = 1 << 20


def _print_as_lines(
    console: Console, title: str, columns: Sequence[Column], rows: Sequence[Sequence[Text]]
) -> None:
    """Each row on one line, ``header: value`` pairs, never wrapped: a terminal too narrow
    for any table still shows every name whole."""
    console.print(title, markup=False, highlight=False, soft_wrap=True)
    for row in rows:
        line = Text(", ").join(
            Text.assemble(f"{column.header}: ", cell)
            for column, cell in zip(columns, row, strict=True)
        )
        console.print(line, soft_wrap=True)


def print_line(console: Console, text: str) -> None:
    """``text`` as it is, on one line however long: a name, a path or an error is never cut
    or folded, and nothing in it is read as markup; a file name's undecodable bytes show as
    ``\\xNN``."""
    console.print(printable(text), markup=False, highlight=False, soft_wrap=True)


def _status(status: str, shown: str | None = None) -> Text:
    """``status`` (or ``shown``) in its colour."""
    return Text(shown or status, style=_STATUS_STYLE.get(status, ""))


def render_stage_failures(report: StageReport, console: Console) -> None:
    """For ``--quiet``: nothing when the run succeeded; else one line per peer whose
    failure is not excused, with its error."""
    for peer in report.peers:
        if not peer.ok:
            error = f": {peer.error}" if peer.error else ""
            print_line(console, f"{peer.name}: {peer.status}{error}")


def render_stage_table(report: StageReport, console: Console) -> None:
    title = f"deltastage {'dry run' if report.dry_run else 'stage'} {report.date.isoformat()}"
    columns = table_columns(
        "peer status files bytes wire saved secs",
        numbers="files bytes wire saved secs",
        left_out="saved secs wire bytes files",
    )
    rows: list[list[Cell]] = [
        [
            peer.name,
            _status(peer.status, peer.status + ("*" if peer.ignored else "")),
            str(peer.files),
            human_bytes(peer.bytes),
            human_bytes(peer.wire_bytes),
            f"{peer.saved_percent:.1f}%",
            f"{peer.seconds:.1f}",
        ]
        for peer in report.peers
    ]
    print_table(console, title, columns, rows)
    print_line(console, f"daily dir: {report.daily_dir}")
    if any(peer.ignored for peer in report.peers):
        console.print("* failure ignored (ignore_failures)")
    for peer in report.peers:  # errors below the table: they are long and must not be cut
        if peer.error:
            print_line(console, f"{peer.name}: {peer.error}")


# The paths of each kind listed below the verify table, per peer (--json lists them all).
VERIFY_PATHS_SHOWN = 5


def render_verify_table(report: VerifyReport, console: Console) -> None:
    columns = table_columns(
        "peer status files bytes missing corrupt extra",
        numbers="files bytes missing corrupt extra",
        left_out="bytes files missing extra corrupt",
    )
    rows: list[list[Cell]] = [
        [
            peer.name,
            _status(peer.status),
            str(peer.files),
            human_bytes(peer.bytes),
            str(len(peer.missing)),
            str(len(peer.corrupt)),
            str(len(peer.extra)),
        ]
        for peer in report.peers
    ]
    print_table(console, "deltastage verify", columns, rows)
    print_line(console, f"verified: {report.daily_dir}")
    _verify_details(report.peers, console)  # below the table: paths and errors are long


def render_verify_failures(report: VerifyReport, console: Console) -> None:
    """For ``--quiet``: nothing when every peer verified; else each failing peer's status,
    then its paths and error as below the table."""
    if not report.peers:
        print_line(console, f"{report.daily_dir}: no peer dir to verify")
    failed = [peer for peer in report.peers if not peer.ok]
    for peer in failed:
        print_line(console, f"{peer.name}: {peer.status}")
        _verify_details([peer], console)


def _verify_details(peers: Sequence[PeerVerification], console: Console) -> None:
    for peer in peers:
        for kind, paths in (
            ("missing", peer.missing),
            ("corrupt", peer.corrupt),
            ("extra", peer.extra),
            ("stray", peer.stray),
        ):
            for path in paths[:VERIFY_PATHS_SHOWN]:
                print_line(console, f"{peer.name}: {kind} {path}")
            if len(paths) > VERIFY_PATHS_SHOWN:
                hidden = len(paths) - VERIFY_PATHS_SHOWN
                print_line(console, f"{peer.name}: and {hidden} more {kind} (--json lists all)")
        if peer.error:
            print_line(console, f"{peer.name}: {peer.error}")


def render_check(report: CheckReport, console: Console) -> None:
    print_line(console, f"config {report.config}: ok")
    if report.staging_problem:
        console.print(Text(f"staging dir: {report.staging_problem}", style="red"), soft_wrap=True)
    columns = table_columns("peer type state agent", left_out="agent type")
    rows: list[list[Cell]] = [
        [result.name, result.type, _status(result.state), result.agent_version or ""]
        for result in report.peers
    ]
    print_table(console, "peers", columns, rows)
    for result in report.peers:  # below the table: errors and fixes are long
        if result.error:
            print_line(console, f"{result.name}: {result.error}")
        if result.fix:
            print_line(
                console, f"{result.name}: in the peer's authorized_keys, let the master's key run"
            )
            print_line(console, f"  {result.fix}")
        if result.hint:
            print_line(console, f"{result.name}: {result.hint}")


def render_history_table(
    rows: Sequence[HistoryRow], limit: int, staging_dir: Path, console: Console
) -> None:
    if not rows:
        console.print("no stage runs recorded yet")
        return
    columns = table_columns(
        "date run peer status files bytes wire secs",
        numbers="run files bytes wire secs",
        left_out="run secs wire bytes files",
    )
    cells: list[list[Cell]] = [
        [
            row.run_date,
            str(row.run_id),
            row.peer,
            _status(row.status),
            str(row.files),
            human_bytes(row.bytes),
            human_bytes(row.wire_bytes),
            f"{row.seconds:.1f}",
        ]
        for row in rows
    ]
    print_table(console, f"deltastage history: last {limit} runs", columns, cells)
    print_line(console, f"catalog: {staging_dir}")
    for row in rows:  # below the table: errors are long and must not be cut
        if row.error:
            print_line(console, f"{row.run_date} run {row.run_id} {row.peer}: {row.error}")
