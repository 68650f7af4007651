"""A stage run: every selected peer (in parallel jobs) into the day's staging dir, fixed once
for the whole run, under the staging lock; then the daily indicator. A dry run only asks
each peer what it would stage."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from deltastage.config import Config, PeerConfig, failure_ignored
from deltastage.errors import DeltastageError
from deltastage.lock import StagingLock
from deltastage.master.connect import SessionFactory, open_peer_session, select_peers
from deltastage.safefs import fsync_dir, open_dir
from deltastage.stage.attempt import PeerTarget
from deltastage.stage.basis import daily_dir_for
from deltastage.stage.ownership import Ownership, make_dirs
from deltastage.stage.peer import stage_peer
from deltastage.stage.plan import select_entries
from deltastage.stage.report import PeerReport, QuietObserver, StageObserver, StageReport

__all__ = ["run_stage"]

log = logging.getLogger("deltastage.stage")


def run_stage(
    config: Config,
    *,
    run_date: date | None = None,
    full: bool = False,
    only_peers: Sequence[str] = (),
    dry_run: bool = False,
    jobs: int | None = None,
    observer: StageObserver | None = None,
    session_factory: SessionFactory = open_peer_session,
) -> StageReport:
    """Stage the selected peers; the daily dir is fixed here, once, for the whole run."""
    day = run_date or date.today()
    peers = select_peers(config, only_peers)
    daily_dir = daily_dir_for(config.staging_dir, day)
    report = StageReport(day, daily_dir, [], dry_run)
    watcher = observer or QuietObserver()
    ownership = Ownership.from_options(config.options)
    workers = max(1, jobs or config.options.jobs)

    if dry_run:
        report.peers = [_dry_run_peer(config, peer, session_factory) for peer in peers]
        return report

    make_dirs(config.staging_dir, ownership)
    with StagingLock(config.staging_dir):
        make_dirs(daily_dir, ownership)
        for peer in peers:  # a dir for every selected peer, even one that is not ready
            make_dirs(daily_dir / peer.name, ownership)

        def stage_one(peer: PeerConfig) -> PeerReport:
            target = PeerTarget(config, peer, day, daily_dir / peer.name, ownership, watcher)
            result = stage_peer(target, session_factory)
            if result.status != "staged":
                result.ignored = failure_ignored(
                    peer.ignore_failures, day, config.options.starting_day, full
                )
            _log_outcome(result)
            watcher.peer_finished(result)
            return result

        if workers == 1 or len(peers) == 1:
            report.peers = [stage_one(peer) for peer in peers]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="peer") as pool:
                report.peers = list(pool.map(stage_one, peers))

        _write_indicator_file(daily_dir / config.options.stage_indicator, ownership)
    return report


def _log_outcome(result: PeerReport) -> None:
    level = logging.INFO if result.ok else logging.ERROR
    log.log(
        level,
        "peer=%s status=%s%s files=%d bytes=%d wire_bytes=%d seconds=%.2f%s%s%s",
        result.name,
        result.status,
        " (failure ignored)" if result.ignored else "",
        result.files,
        result.bytes,
        result.wire_bytes,
        result.seconds,
        f" older_basis_files={n}" if (n := result.older_basis_files) else "",
        "".join(f" {kind}_files={count}" for kind, count in sorted(result.transformed.items()))
        + (
            f" transformed_saved_bytes={result.transformed_saved_bytes}"
            if result.transformed
            else ""
        ),
        f" error={result.error}" if result.error else "",
    )


def _write_indicator_file(path: Path, ownership: Ownership) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        ownership.apply_fd(fd, source_mode=0o644)
        os.fsync(fd)
    finally:
        os.close(fd)
    dir_fd = open_dir(path.parent)
    try:
        fsync_dir(dir_fd)
    finally:
        os.close(dir_fd)


def _dry_run_peer(config: Config, peer: PeerConfig, factory: SessionFactory) -> PeerReport:
    report = PeerReport(peer.name)
    started = time.monotonic()
    root = str(peer.collect_dir)
    try:
        session = factory(peer, config.options)
        try:
            session.handshake()
            if not session.indicator_exists(root, config.options.collect_indicator):
                report.status = "not-ready"
            else:
                files, skipped = select_entries(session.list_files(root), config.options)
                report.status = "would-stage"
                report.files = len(files)
                report.bytes = sum(e.size for e in files)
                report.skipped = skipped
            report.wire_bytes = session.wire_bytes
        finally:
            session.close()
    except DeltastageError as exc:
        report.error = str(exc)
    except Exception as exc:  # a bug met on this peer fails this peer only, as in a stage
        log.exception("peer=%s unexpected error", peer.name)
        report.error = f"unexpected {type(exc).__name__}: {exc}"
    report.seconds = time.monotonic() - started
    return report
