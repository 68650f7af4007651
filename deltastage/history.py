"""A small SQLite catalog of runs in the staging dir: a convenience for operators.

The manifests stay the truth; a catalog that cannot be written never fails a run (it is
logged), and one that is missing or damaged is simply started again.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltastage.errors import DeltastageError
from deltastage.models import json_fields

if TYPE_CHECKING:
    # Readers (history, report) must work without importing the whole stage machinery.
    from deltastage.stage.report import StageReport
    from deltastage.verify import VerifyReport

__all__ = [
    "CATALOG_NAME",
    "HistoryRow",
    "last_successes",
    "read_history",
    "record_stage",
    "record_verify",
]

CATALOG_NAME = ".deltastage-history.sqlite"
log = logging.getLogger("deltastage.history")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action TEXT NOT NULL,           -- stage | verify
    started REAL NOT NULL,          -- unix time the record was written
    run_date TEXT NOT NULL,         -- the staging day (YYYY-MM-DD) or the verified dir
    exit_code INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS peer_runs (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    peer TEXT NOT NULL,
    status TEXT NOT NULL,
    files INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    wire_bytes INTEGER NOT NULL,
    seconds REAL NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS peer_runs_peer ON peer_runs(peer, run_id);
"""


@dataclass(frozen=True)
class HistoryRow:
    run_id: int
    action: str
    recorded: float
    run_date: str
    peer: str
    status: str
    files: int
    bytes: int
    wire_bytes: int
    seconds: float
    error: str | None

    def as_json(self) -> dict[str, object]:
        return json_fields(
            self,
            "run_id",
            "action",
            "recorded",
            "date=run_date",
            "peer",
            "status",
            "files",
            "bytes",
            "wire_bytes",
            "seconds",
            "error",
        )


@contextmanager
def _catalog(staging_dir: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(staging_dir / CATALOG_NAME, timeout=30)) as db:
        db.executescript(SCHEMA)
        with db:
            yield db


def _record(
    staging_dir: Path,
    action: str,
    run_date: str,
    exit_code: int,
    rows: list[tuple[str, str, int, int, int, float, str | bytes | None]],
) -> None:
    try:
        with _catalog(staging_dir) as db:
            cursor = db.execute(
                "INSERT INTO runs(action, started, run_date, exit_code) VALUES (?, ?, ?, ?)",
                (action, time.time(), run_date, exit_code),
            )
            run_id = cursor.lastrowid
            db.executemany(
                "INSERT INTO peer_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, *row) for row in rows],
            )
    except (sqlite3.Error, OSError) as exc:
        log.warning("history catalog %s not updated: %s", staging_dir / CATALOG_NAME, exc)


def _stored(text: str | None) -> str | bytes | None:
    """Text as SQLite can hold it: an error naming a file whose name is not UTF-8 goes in
    as its bytes (a BLOB), read back by ``_read`` to the same text."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")
    return text


def _read(value: str | bytes | None) -> str | None:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def record_stage(staging_dir: Path, report: StageReport) -> None:
    rows = [
        (p.name, p.status, p.files, p.bytes, p.wire_bytes, p.seconds, _stored(p.error))
        for p in report.peers
    ]
    _record(staging_dir, "stage", report.date.isoformat(), report.exit_code, rows)


def record_verify(staging_dir: Path, report: VerifyReport) -> None:
    rows = [
        (p.name, f"verify-{p.status}", p.files, p.bytes, 0, p.seconds, _stored(p.error))
        for p in report.peers
    ]
    name = (
        report.daily_dir.relative_to(staging_dir).as_posix()
        if report.daily_dir.is_relative_to(staging_dir)
        else str(report.daily_dir)
    )
    _record(staging_dir, "verify", name.replace("/", "-"), report.exit_code, rows)


def _history_row(row: tuple[Any, ...]) -> HistoryRow:
    run_id, action, recorded, run_date, peer, status, files, size, wire, seconds, error = row
    return HistoryRow(
        run_id, action, recorded, run_date, peer, status, files, size, wire, seconds, _read(error)
    )


@contextmanager
def _reading(path: Path) -> Iterator[sqlite3.Connection]:
    """The catalog at ``path``, read-only; a damaged one is an error naming it."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            yield db
    except sqlite3.Error as exc:
        # A damaged catalog is only a convenience lost; say which file and carry on elsewhere.
        raise DeltastageError(f"history catalog {path} unreadable: {exc}") from None


def last_successes(staging_dir: Path, action: str, status: str) -> dict[str, float]:
    """When each peer last ended an ``action`` run with ``status`` (unix time of the record),
    by peer name; empty without a catalog."""
    path = staging_dir / CATALOG_NAME
    if not path.exists():
        return {}
    query = (
        "SELECT p.peer, MAX(r.started) FROM runs r JOIN peer_runs p ON p.run_id = r.id "
        "WHERE r.action = ? AND p.status = ? GROUP BY p.peer"
    )
    with _reading(path) as db:
        return {peer: when for peer, when in db.execute(query, (action, status))}


def read_history(
    staging_dir: Path, *, limit: int = 20, peer: str | None = None, action: str | None = "stage"
) -> list[HistoryRow]:
    """The last ``limit`` runs (newest first), one row per peer; with ``peer``, its last runs."""
    path = staging_dir / CATALOG_NAME
    if not path.exists():
        return []
    with _reading(path) as db:
        # With a peer, the last runs *of that peer*: a `stage --peer other` run in between
        # must not push its history out of the window.
        run_ids = [
            row[0]
            for row in db.execute(
                "SELECT id FROM runs WHERE (? IS NULL OR action = ?) AND (? IS NULL OR id IN "
                "(SELECT run_id FROM peer_runs WHERE peer = ?)) ORDER BY id DESC LIMIT ?",
                (action, action, peer, peer, limit),
            )
        ]
        if not run_ids:
            return []
        marks = ",".join("?" * len(run_ids))
        query = (
            "SELECT r.id, r.action, r.started, r.run_date, p.peer, p.status, p.files, "
            "p.bytes, p.wire_bytes, p.seconds, p.error FROM runs r "
            f"JOIN peer_runs p ON p.run_id = r.id WHERE r.id IN ({marks}) "
            "AND (? IS NULL OR p.peer = ?) ORDER BY r.id DESC, p.peer"
        )
        return [_history_row(row) for row in db.execute(query, (*run_ids, peer, peer))]
