"""What a stage run reports: per peer and for the whole run (and their JSON), and the
progress callbacks it makes on the way."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Protocol

from deltastage.models import json_fields

__all__ = ["PeerReport", "QuietObserver", "StageObserver", "StageReport"]


@dataclass
class PeerReport:
    name: str
    status: str = "failed"  # staged | not-ready | failed | would-stage (dry run)
    # what is staged: the files the manifest vouches for (none unless staged; a dry run:
    # what would be)
    files: int = 0
    bytes: int = 0
    wire_bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    ignored: bool = False  # a failure that ignore_failures excuses
    # of the staged files, those that needed no transfer: already staged today, or the
    # same as an earlier day's copy (hard-linked, or copied where a link would not do)
    reused: int = 0
    skipped: list[str] = field(default_factory=list)  # symlinks and special files, not copied
    attempts: int = 0
    # where the stage indicator went, once staged: "peer" (the collect dir too) or
    # "master-only" (a read-only agent: the daily dir and the manifest only)
    stage_indicator: str | None = None
    # what the last attempt got through (received, linked or copied), staged or not: a
    # failed peer's files are not staged, but this shows how far it went
    attempted_files: int = 0
    attempted_bytes: int = 0
    # files of the last attempt with a basis from an earlier day than the most recent one
    # (last week's full archive, a weekly file's last copy)
    older_basis_files: int = 0
    # of the last attempt's files, those fetched as the delta of their content and rebuilt
    # (by transform: "gzip", "bzip2"), their bytes, the bytes of their deltas (before the
    # wire's compression), and the difference: what moving them by their content saved
    # over moving their compressed bytes; and the rebuilt files that were not the peer's
    # bytes (fetched again as bytes)
    transformed: dict[str, int] = field(default_factory=dict)
    transformed_bytes: int = 0
    transformed_delta_bytes: int = 0
    transformed_saved_bytes: int = 0
    rebuild_failures: int = 0

    @property
    def ok(self) -> bool:
        return self.status in ("staged", "would-stage") or self.ignored

    @property
    def saved_percent(self) -> float:
        if self.bytes == 0:
            return 0.0
        return max(0.0, 100.0 * (1 - self.wire_bytes / self.bytes))

    def as_json(self) -> dict[str, object]:
        return json_fields(self, *(each.name for each in fields(self)))


@dataclass
class StageReport:
    date: date
    daily_dir: Path
    peers: list[PeerReport]
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        return 0 if all(p.ok for p in self.peers) else 1

    def as_json(self) -> dict[str, object]:
        # "error" is what stopped the run itself (a held lock, an interrupt): a run that
        # got to report has none, whatever its peers' outcomes (see cli.stagerun)
        return {
            **json_fields(self, "date", "daily_dir", "dry_run", "exit_code"),
            "error": None,
            **json_fields(self, "peers"),
        }


class StageObserver(Protocol):
    """Progress callbacks; called from worker threads when peers run in parallel."""

    def peer_started(self, peer: str, files: int, total_bytes: int) -> None: ...

    def file_done(self, peer: str, path: str, size: int) -> None: ...

    def peer_finished(self, report: PeerReport) -> None: ...


class QuietObserver:
    """An observer that shows nothing."""

    def peer_started(self, peer: str, files: int, total_bytes: int) -> None:
        pass

    def file_done(self, peer: str, path: str, size: int) -> None:
        pass

    def peer_finished(self, report: PeerReport) -> None:
        pass
