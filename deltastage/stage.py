"""The stage action: pull every ready peer's collect dir into today's staging dir, verified.

Per file: pick a basis (basis.py); a file the master already holds is hard-linked or copied
locally, any other is fetched (its basis's signature sent, the peer's delta patched into a
temp file beneath the peer's staging dir; requests pipelined, see master/session.py). Then, in
batches on a committer thread: syncfs, drop from the page cache, read back from the disk,
compare with the source's xxh3-128, rename into place. Per peer, only when every file
verified: the manifest, then the collect-dir indicator on the peer. After all peers: the
daily indicator.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Protocol

from deltastage.basis import PARTIAL_DIR, Basis, BasisFinder, daily_dir_for, earlier_peer_dirs
from deltastage.config import Config, Options, PeerConfig, failure_ignored
from deltastage.delta import MAX_STRONG_LEN, Patcher, SignatureBuilder
from deltastage.errors import (
    DeltastageError,
    IntegrityError,
    ResourceLimitError,
    SourceChangedError,
    TransportError,
    UnsafePathError,
    describe_os_error,
)
from deltastage.hashing import READ_CHUNK, Hasher, hash_bytes, hash_fd
from deltastage.lock import StagingLock
from deltastage.manifest import (
    INTERNAL_PREFIX,
    MANIFEST_NAME,
    Manifest,
    ManifestEntry,
    remove_manifest,
    write_manifest,
)
from deltastage.master.connect import SessionFactory, open_peer_session, select_peers
from deltastage.master.pipeline import FetchRequest, Pipeline
from deltastage.master.session import PeerSession
from deltastage.models import RemoteEntry
from deltastage.presign import Presigner, file_identity
from deltastage.safefs import (
    DIR_FLAGS,
    DirCache,
    check_relative_path,
    fsync_dir,
    open_dir,
    open_parent_beneath,
    remove_tree_beneath,
    syncfs,
    walk_files,
)

__all__ = ["PeerReport", "StageObserver", "StageReport", "run_stage"]

log = logging.getLogger("deltastage.stage")

TMP_PREFIX = f"{INTERNAL_PREFIX}tmp-"
# Written files are synced, re-read and renamed in batches of this many files or bytes.
BATCH_FILES = 256
BATCH_BYTES = 64 << 20
WRITEBACK_CHUNK = 8 << 20  # patched output handed to the disk as it is written
# A fetch requested behind unread answers may be refined only when its blocks are this big
# (its basis is at least ~64 MiB): an edit then costs a whole coarse block of literal.
REFINE_AHEAD_MIN_BLOCK = 8 << 10
# A fetched file this big is made durable and re-read from the disk as it is written, a
# chunk behind the writing: its commit then re-reads only the end.
EARLY_CHECK_MIN = 4 * WRITEBACK_CHUNK
FILE_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class PeerReport:
    name: str
    status: str = "failed"  # staged | not-ready | failed | would-stage (dry run)
    files: int = 0
    bytes: int = 0
    wire_bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    ignored: bool = False  # a failure that ignore_failures excuses
    reused: int = 0  # files that needed no transfer (already staged, or same as the basis)
    skipped: list[str] = field(default_factory=list)  # symlinks and special files, not copied
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.status in ("staged", "would-stage") or self.ignored

    @property
    def saved_percent(self) -> float:
        if self.bytes == 0:
            return 0.0
        return max(0.0, 100.0 * (1 - self.wire_bytes / self.bytes))

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "status": self.status,
            "files": self.files,
            "bytes": self.bytes,
            "wire_bytes": self.wire_bytes,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "ignored": self.ignored,
            "reused": self.reused,
            "skipped": self.skipped,
            "attempts": self.attempts,
        }


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
        return {
            "date": self.date.isoformat(),
            "daily_dir": str(self.daily_dir),
            "dry_run": self.dry_run,
            "exit_code": self.exit_code,
            "peers": [p.as_json() for p in self.peers],
        }


class StageObserver(Protocol):
    """Progress callbacks; called from worker threads when peers run in parallel."""

    def peer_started(self, peer: str, files: int, total_bytes: int) -> None: ...

    def file_done(self, peer: str, path: str, size: int) -> None: ...

    def peer_finished(self, report: PeerReport) -> None: ...


class _QuietObserver:
    def peer_started(self, peer: str, files: int, total_bytes: int) -> None:
        pass

    def file_done(self, peer: str, path: str, size: int) -> None:
        pass

    def peer_finished(self, report: PeerReport) -> None:
        pass


@dataclass(frozen=True)
class Ownership:
    uid: int | None
    gid: int | None
    file_mode: int | None
    dir_mode: int

    @classmethod
    def from_options(cls, options: Options) -> Ownership:
        uid = gid = None
        if os.geteuid() == 0:
            if options.backup_user:
                uid = pwd.getpwnam(options.backup_user).pw_uid
            if options.backup_group:
                gid = grp.getgrnam(options.backup_group).gr_gid
        dir_mode = options.dir_mode
        if dir_mode is None:
            if options.file_mode is None:
                dir_mode = 0o755
            else:  # directories need x wherever files are readable
                fm = options.file_mode
                dir_mode = fm | ((fm & 0o444) >> 2) | 0o700
        return cls(uid, gid, options.file_mode, dir_mode)

    @property
    def owner(self) -> tuple[int, int] | None:
        if self.uid is None and self.gid is None:
            return None
        return (-1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid)

    def staged_mode(self, source_mode: int | None) -> int:
        mode = self.file_mode if self.file_mode is not None else (source_mode or 0o644)
        return mode & 0o7777 & ~0o6000  # never stage setuid/setgid bits

    def apply_fd(self, fd: int, *, source_mode: int | None = None, is_dir: bool = False) -> None:
        os.fchmod(fd, self.dir_mode if is_dir else self.staged_mode(source_mode))
        if self.owner is not None:
            os.fchown(fd, *self.owner)

    def matches(self, st: os.stat_result, source_mode: int, parent: os.stat_result) -> bool:
        """Whether a file with ``st`` already has the mode and owner a staged copy would get
        (a new file in ``parent`` is owned by us, its group set by a setgid parent)."""
        if stat.S_IMODE(st.st_mode) != self.staged_mode(source_mode):
            return False
        default_gid = parent.st_gid if parent.st_mode & stat.S_ISGID else os.getegid()
        uid = self.uid if self.uid is not None else os.geteuid()
        gid = self.gid if self.gid is not None else default_gid
        return st.st_uid == uid and st.st_gid == gid

    def apply_path(self, path: Path) -> None:
        fd = os.open(path, DIR_FLAGS)
        try:
            self.apply_fd(fd, is_dir=True)
        finally:
            os.close(fd)


def make_dirs(path: Path, ownership: Ownership) -> None:
    """mkdir -p, applying ownership and mode to every directory it creates."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
            ownership.apply_path(directory)
    if path.is_symlink() or not path.is_dir():
        raise DeltastageError(f"{path} is not a directory")


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
    watcher = observer or _QuietObserver()
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
            stager = PeerStager(config, peer, day, daily_dir, ownership, watcher, session_factory)
            result = stager.run()
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
        "peer=%s status=%s%s files=%d bytes=%d wire_bytes=%d seconds=%.2f%s",
        result.name,
        result.status,
        " (failure ignored)" if result.ignored else "",
        result.files,
        result.bytes,
        result.wire_bytes,
        result.seconds,
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
                files, skipped = _select_entries(session.list_files(root), config.options)
                report.status = "would-stage"
                report.files = len(files)
                report.bytes = sum(e.size for e in files)
                report.skipped = skipped
            report.wire_bytes = session.wire_bytes
        finally:
            session.close()
    except DeltastageError as exc:
        report.error = str(exc)
    report.seconds = time.monotonic() - started
    return report


def _select_entries(
    entries: Sequence[RemoteEntry], options: Options
) -> tuple[list[RemoteEntry], list[str]]:
    """Regular files to stage, and the names skipped (links, specials); indicators left out."""
    files: list[RemoteEntry] = []
    skipped: list[str] = []
    for entry in entries:
        if "/" not in entry.path and entry.path.startswith("cback."):
            continue  # Cedar's indicator files live in the collect dir itself
        if entry.kind != "file" or entry.xxh3_128 is None:
            skipped.append(f"{entry.path} ({entry.kind})")
            continue
        if entry.path == MANIFEST_NAME or any(
            part.startswith(INTERNAL_PREFIX) for part in entry.path.split("/")
        ):
            # staged, it would be overwritten by the manifest, swept as a temp file or
            # removed with the partial dir, and the manifest would vouch for a lost file
            raise UnsafePathError(f"peer lists {entry.path[:200]!r}, a name deltastage reserves")
        files.append(entry)
    if len(files) > options.max_files_per_peer:
        raise ResourceLimitError(
            f"peer lists {len(files)} files, "
            f"more than max_files_per_peer={options.max_files_per_peer}"
        )
    total = sum(e.size for e in files)
    if total > options.max_bytes_per_peer:
        raise ResourceLimitError(
            f"peer lists {total} bytes, more than max_bytes_per_peer={options.max_bytes_per_peer}"
        )
    return files, skipped


class PeerStager:
    """Stages one peer, retrying the whole peer on transport failures with backoff."""

    def __init__(
        self,
        config: Config,
        peer: PeerConfig,
        run_date: date,
        daily_dir: Path,
        ownership: Ownership,
        observer: StageObserver,
        session_factory: SessionFactory,
    ) -> None:
        self.config = config
        self.options = config.options
        self.peer = peer
        self.run_date = run_date
        self.peer_dir = daily_dir / peer.name
        self.ownership = ownership
        self.observer = observer
        self.session_factory = session_factory
        self.root = str(peer.collect_dir)
        self.report = PeerReport(peer.name)
        self.bytes_written = 0
        self.presigner: Presigner | None = None
        self.fresh_dir = False

    def run(self) -> PeerReport:
        started = time.monotonic()
        earlier = earlier_peer_dirs(self.config.staging_dir, self.peer.name, self.run_date)
        self.presigner = Presigner(earlier[0][1]) if earlier else None
        try:
            return self._run_attempts(started)
        finally:
            if self.presigner is not None:
                self.presigner.close()

    def _run_attempts(self, started: float) -> PeerReport:
        attempts = 1 + max(0, self.options.retries)
        for attempt in range(attempts):
            self.report.attempts = attempt + 1
            session: PeerSession | None = None
            try:
                session = self.session_factory(self.peer, self.options)
                self._stage_once(session)
                break
            except TransportError as exc:
                self.report.error = str(exc)
                self.report.status = "failed"
                if attempt + 1 < attempts:
                    delay = self.options.retry_backoff * (2**attempt)
                    log.warning(
                        "peer=%s attempt %d/%d failed: %s; retrying in %.0fs",
                        self.peer.name,
                        attempt + 1,
                        attempts,
                        exc,
                        delay,
                    )
                    time.sleep(delay)
            except DeltastageError as exc:
                self.report.error = str(exc)
                self.report.status = "failed"
                break
            except OSError as exc:
                self.report.error = describe_os_error(exc)
                self.report.status = "failed"
                break
            finally:
                if session is not None:
                    self.report.wire_bytes += session.wire_bytes
                    with contextlib.suppress(Exception):
                        session.close()
        self.report.seconds = time.monotonic() - started
        return self.report

    def _stage_once(self, session: PeerSession) -> None:
        self.report.error = None
        peer_fd = open_dir(self.peer_dir)
        self.peer_fd = peer_fd
        self.dirs = DirCache(peer_fd, create=True, mode=self.ownership.dir_mode)
        self.basis_dirs: dict[Path, DirCache] = {}
        self.basis_lock = threading.Lock()
        self.pending: list[_Pending] = []
        self.pending_bytes = 0
        self.committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self.checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="check")
        self.in_flight: list[Future[tuple[dict[str, ManifestEntry], list[_Pending]]]] = []
        pipeline: Pipeline[_Job, _Transfer] = Pipeline(
            session, self.root, self._prepare, level=self.options.compress_level
        )
        try:
            _sweep_temp_files(peer_fd)
            # a new day's dir holds nothing an earlier run could have staged: no need to look
            self.fresh_dir = not any(
                not name.startswith(INTERNAL_PREFIX) for name in os.listdir(peer_fd)
            )
            # one round trip: the handshake, the indicator query and the listing request
            # travel together, and the likeliest changed big file's fetch right behind them
            hello = session.send_survey(self.root, self.options.collect_indicator)
            speculative = self._speculate(session, pipeline)
            ready, listing = session.read_survey(self.root, hello)
            if not ready:
                self.report.status = "not-ready"
                self.report.error = f"no {self.options.collect_indicator} in {self.root}"
                return
            files, skipped = _select_entries(listing, self.options)
            self.report.skipped = skipped
            for name in skipped:
                log.warning(
                    "peer=%s skipped %s: not a regular file, not followed", self.peer.name, name
                )
            self.observer.peer_started(self.peer.name, len(files), sum(e.size for e in files))
            remove_manifest(peer_fd)  # files are about to change: no manifest may vouch for them
            finder = BasisFinder(
                self.config.staging_dir, self.peer.name, self.run_date, self.peer_dir
            )
            results: dict[str, ManifestEntry] = {}
            self.results = results
            self.report.files = 0
            self.report.bytes = 0
            self.report.reused = 0
            self.bytes_written = 0
            try:
                local, remote = _order_by_work(files, finder)
                if self.presigner is not None:
                    self.presigner.keep_only(
                        {c[0].path for _, c in remote if c and c[0].root == self.presigner.root}
                    )

                jobs = [_Job(entry, candidates) for entry, candidates in remote]
                if speculative is not None:
                    _adopt(speculative, jobs)
                for job in jobs:
                    pipeline.add(job)
                pipeline.send()
                # the local copies are queued while the first requests are on their way
                for entry, candidates in local:
                    self._stage_local(entry, candidates, results)
                self._commit()  # settled by the committer meanwhile
                self._receive_all(pipeline)
                mismatched = self._settle(results)
                if mismatched:
                    self._refetch(pipeline, mismatched)
                    self._receive_all(pipeline)
                    mismatched = self._settle(results)
                if mismatched:
                    raise IntegrityError(
                        f"{mismatched[0].entry.path}: staged copy does not match the source's "
                        "xxh3-128"
                    )
            except TransportError:
                # Files already received in full are kept (verified) for the next attempt.
                with contextlib.suppress(DeltastageError, OSError):
                    self._settle(results)
                raise
            finally:
                pipeline.close()
                self._drain_committer()
                self.committer.shutdown(wait=True)
                self._discard_pending()
            entries = tuple(results[e.path] for e in files)
            _remove_extras(peer_fd, {e.path for e in entries})
            remove_tree_beneath(peer_fd, PARTIAL_DIR)
            self._apply_dir_ownership(peer_fd)
            manifest = Manifest(self.peer.name, self.run_date.isoformat(), entries)
            write_manifest(
                peer_fd,
                manifest,
                owner=self.ownership.owner,
                mode=self.ownership.file_mode or 0o644,
            )
        finally:
            pipeline.close()
            self.committer.shutdown(wait=True)
            self.checker.shutdown(wait=True)
            self.dirs.close()
            for cache in self.basis_dirs.values():
                cache.close()
                os.close(cache.root_fd)
            os.close(peer_fd)
        session.write_indicator(self.root, self.options.stage_indicator)
        self.report.status = "staged"

    def _apply_dir_ownership(self, peer_fd: int) -> None:
        self.ownership.apply_fd(peer_fd, is_dir=True)
        for directory_fd in _walk_dirs(peer_fd):
            try:
                self.ownership.apply_fd(directory_fd, is_dir=True)
            finally:
                os.close(directory_fd)

    # --- one file ---------------------------------------------------------------------

    def _file_done(self, entry: RemoteEntry) -> None:
        self.report.files += 1
        self.report.bytes += entry.size
        self.observer.file_done(self.peer.name, entry.path, entry.size)
        if len(self.pending) >= BATCH_FILES or self.pending_bytes >= BATCH_BYTES:
            self._commit()

    def _stage_local(
        self, entry: RemoteEntry, candidates: list[Basis], results: dict[str, ManifestEntry]
    ) -> None:
        """A file whose content the master holds already: copied or linked by the committer."""
        parts = check_relative_path(entry.path)
        assert entry.xxh3_128 is not None
        try:
            if self._already_staged(self.dirs.parent_of(parts), parts[-1], entry):
                self.report.reused += 1
                results[entry.path] = self._manifest_entry(entry, entry.size, entry.xxh3_128)
            else:
                tmp = f"{TMP_PREFIX}{secrets.token_hex(8)}"
                self.pending.append(
                    _Pending(entry, parts, tmp, entry.size, entry.xxh3_128, candidates[0])
                )
                self.pending_bytes += entry.size
        except OSError as exc:
            raise DeltastageError(f"{entry.path}: {exc.strerror or exc}") from exc
        self._file_done(entry)

    # --- fetching, pipelined ----------------------------------------------------------

    def _speculate(
        self, session: PeerSession, pipeline: Pipeline[_Job, _Transfer]
    ) -> _Transfer | None:
        """Request the likeliest changed big file before the listing says it changed.

        Its signature is ready (presigned) and crosses the link while the peer lists, and
        the peer matches it right after: its delta starts a round trip and a listing
        earlier. Only in a new day's dir, for a file fetched (not linked) on its own day,
        and with a signature small enough to wait unread behind the survey. Not used
        (unchanged, gone) it costs the peer one pass over the file and the link its
        signature.
        """
        if self.presigner is None or not self.fresh_dir:
            return None
        likeliest = self.presigner.likeliest_changed()
        if likeliest is None:
            return None
        path, size = likeliest
        if SignatureBuilder(size).encoded_size > session.transport.unread_capacity:
            return None
        basis = Basis(self.presigner.root, path, "previous", size, None)
        job = _Job(RemoteEntry(path, "file", size, 0, 0o600, None), [basis])
        job.speculative = True
        try:
            transfer = self._open_transfer(job)
        except (IntegrityError, UnsafePathError, OSError):
            return None  # the ordinary fetch will sign and request it, or report it
        pipeline.start(transfer)
        return transfer

    def _receive_all(self, pipeline: Pipeline[_Job, _Transfer]) -> None:
        """Patch every answer, in order, while the pipeline sends the next requests. A job
        that fails with a basis is tried again without one, at the end of the queue."""
        for transfer, answer in pipeline:
            if transfer.job.speculative:  # a speculative fetch no job wanted as it is
                transfer.discard()
                continue
            retry = self._receive(transfer, answer)
            if retry is not None:
                pipeline.add(retry)

    def _refetch(self, pipeline: Pipeline[_Job, _Transfer], mismatched: list[_Pending]) -> None:
        """Staged copies that did not verify: fetched again without a basis, they must
        verify on that second try."""
        for item in mismatched:
            log.warning(
                "peer=%s %s: staged copy did not verify; fetching it again without a basis",
                self.peer.name,
                item.entry.path,
            )
            refetch = _Job(item.entry, [])
            refetch.plans, refetch.fresh, refetch.refetch = [(None, MAX_STRONG_LEN)], False, True
            pipeline.add(refetch)

    def _prepare(self, job: _Job) -> _Transfer | None:
        """The job's request, ready to send; None when a same-day re-run finds the file
        staged already."""
        if job.fresh:
            job.fresh = False
            try:
                dir_fd = self.dirs.parent_of(job.parts)
                if self._already_staged(dir_fd, job.parts[-1], job.entry):
                    assert job.entry.xxh3_128 is not None
                    self.report.reused += 1
                    self.results[job.entry.path] = self._manifest_entry(
                        job.entry, job.entry.size, job.entry.xxh3_128
                    )
                    self._file_done(job.entry)
                    return None
            except OSError as exc:
                raise DeltastageError(f"{job.entry.path}: {exc.strerror or exc}") from exc
        try:
            return self._open_transfer(job)
        except OSError as exc:
            raise DeltastageError(f"{job.entry.path}: {exc.strerror or exc}") from exc

    def _open_transfer(self, job: _Job) -> _Transfer:
        """Open the basis and a temp file; the request carries the basis's signature."""
        basis, strong_len = job.plan
        dir_fd = self.dirs.parent_of(job.parts)
        basis_fd = self._open_basis(basis) if basis is not None else -1
        transfer = _Transfer(job, f"{TMP_PREFIX}{secrets.token_hex(8)}", dir_fd, basis_fd)
        try:
            transfer.out_fd = os.open(transfer.tmp, FILE_CREATE, 0o600, dir_fd=dir_fd)
            basis_stat = os.fstat(basis_fd) if basis_fd >= 0 else None
            transfer.basis_size = basis_stat.st_size if basis_stat is not None else 0
            builder = SignatureBuilder(transfer.basis_size, strong_len=strong_len)
            presigned = None
            if (
                self.presigner is not None
                and basis is not None
                and basis_stat is not None
                and strong_len is None
                and basis.root == self.presigner.root
            ):
                presigned = self.presigner.take(basis.path)
                if presigned is not None and presigned.identity != file_identity(basis_stat):
                    presigned = None
            size = transfer.basis_size

            def signature_chunks() -> Iterator[bytes]:
                if presigned is not None:
                    transfer.basis_hash = presigned.basis_hash
                    yield from presigned.chunks
                    transfer.signed = True
                    return
                offset = 0
                while offset < size:
                    chunk = os.pread(basis_fd, min(READ_CHUNK, size - offset), offset)
                    if not chunk:
                        raise IntegrityError("basis shrank while being signed")
                    offset += len(chunk)
                    if out := builder.update(chunk):
                        yield out
                yield builder.finish()
                transfer.basis_hash = builder.signature.basis_hash
                transfer.signed = True

            transfer.request = FetchRequest(
                job.entry.path,
                signature_chunks(),
                builder.encoded_size,
                builder.block_size,
                transfer.read_at if basis_fd >= 0 else None,
            )
        except BaseException:
            transfer.discard()
            raise
        return transfer

    def _receive(self, transfer: _Transfer, answer: Iterator[bytes]) -> _Job | None:
        """Patch one answer into its temp file and queue the file for the committer; the
        job back when it is to be tried again."""
        job, entry = transfer.job, transfer.job.entry
        budget = self.options.max_bytes_per_peer - self.bytes_written
        written = flushed = 0
        early = (
            _EarlyCheck(self.checker, transfer.out_fd) if entry.size >= EARLY_CHECK_MIN else None
        )

        def write(data: bytes) -> None:
            nonlocal budget, written, flushed
            budget -= len(data)
            if budget < 0:
                raise ResourceLimitError(
                    f"peer sent more than max_bytes_per_peer={self.options.max_bytes_per_peer}"
                )
            view = memoryview(data)
            while view:
                view = view[os.write(transfer.out_fd, view) :]
            written += len(data)
            if written - flushed >= WRITEBACK_CHUNK:
                # start writing it to disk now (DONTNEED on dirty pages starts their
                # writeback without waiting): the batch's syncfs then finds little to do
                _start_writeback(transfer.out_fd, flushed, written - flushed)
                if early is not None:
                    early.advance(flushed)  # up to this chunk: the one before is on its way
                flushed = written

        try:
            patcher: Patcher | None = None
            for chunk in answer:
                if patcher is None:
                    patcher = Patcher(
                        transfer.read_at,
                        write,
                        basis_size=transfer.basis_size,
                        basis_hash=transfer.basis_hash,
                    )
                patcher.feed(chunk)
            if patcher is None:
                raise IntegrityError("peer sent an empty delta")
            result = patcher.finish()
            self.bytes_written += result.size
            self._give_metadata(transfer.out_fd, entry)
        except IntegrityError as exc:
            transfer.discard()
            return self._retry_later(job, exc)
        except SourceChangedError as exc:
            transfer.discard()
            if not job.changed_retry:
                raise type(exc)(f"{entry.path}: {exc}") from None
            job.changed_retry = False
            log.warning("peer=%s %s changed while read; retrying", self.peer.name, entry.path)
            return job
        except TransportError:
            if written:  # what arrived is a basis for the next attempt
                transfer.close_fds()
                self._keep_partial(transfer.dir_fd, transfer.tmp, job.parts)
            else:
                transfer.discard()
            raise
        except OSError as exc:
            transfer.discard()
            raise DeltastageError(f"{entry.path}: {exc.strerror or exc}") from exc
        except BaseException:
            transfer.discard()
            raise
        finally:
            if early is not None and transfer.out_fd < 0:  # discarded or kept as a partial
                early.abandon()
        transfer.close_fds()
        item = _Pending(entry, job.parts, transfer.tmp, result.size, result.xxh3_128, early=early)
        self.pending.append(item)
        self.pending_bytes += result.size
        if not job.refetch:  # a refetch was counted when first staged
            self._file_done(entry)
        return None

    def _retry_later(self, job: _Job, exc: IntegrityError) -> _Job:
        """The job with its next plan (no basis, full-length block hashes), or the file's
        failure."""
        job.index += 1
        if job.index >= len(job.plans):
            raise IntegrityError(f"{job.entry.path}: {exc}") from None
        log.warning("peer=%s %s: %s; retrying without a basis", self.peer.name, job.entry.path, exc)
        return job

    def _give_metadata(self, fd: int, entry: RemoteEntry) -> None:
        """The mode, owner and mtime a staged copy of ``entry`` has (what a link's basis
        must already have, see ``_link_into_temp``)."""
        self.ownership.apply_fd(fd, source_mode=entry.mode)
        os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))

    def _manifest_entry(self, entry: RemoteEntry, size: int, digest: bytes) -> ManifestEntry:
        mode = self.ownership.staged_mode(entry.mode)
        return ManifestEntry(entry.path, size, digest, mode, entry.mtime_ns)

    def _already_staged(self, dir_fd: int, name: str, entry: RemoteEntry) -> bool:
        """A same-day re-run: the file is there with the right content; fix perms only."""
        if self.fresh_dir:
            return False
        try:
            fd = os.open(name, FILE_READ, dir_fd=dir_fd)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
                return False
            if hash_fd(fd) != (entry.size, entry.xxh3_128):
                return False
            if st.st_nlink > 1 and not self.ownership.matches(st, entry.mode, os.fstat(dir_fd)):
                return False  # linked to an earlier day's copy: a new copy gets the new perms
            self.ownership.apply_fd(fd, source_mode=entry.mode)
            return True
        finally:
            os.close(fd)

    def _commit(self) -> None:
        """Hand the pending batch to the committer thread: verifying it overlaps the next
        transfers."""
        if self.pending:
            batch, self.pending, self.pending_bytes = self.pending, [], 0
            self.in_flight.append(self.committer.submit(self._commit_batch, batch))

    def _settle(self, results: dict[str, ManifestEntry]) -> list[_Pending]:
        """Commit every pending file and wait for the committer; the files that did not
        verify."""
        self._commit()
        futures, self.in_flight = self.in_flight, []
        mismatched: list[_Pending] = []
        for future in futures:
            verified, bad = future.result()
            results.update(verified)
            mismatched += bad
        return mismatched

    def _commit_batch(
        self, batch: list[_Pending]
    ) -> tuple[dict[str, ManifestEntry], list[_Pending]]:
        """Make a batch durable, re-read and verify each file, then rename it into place.

        One syncfs covers the whole batch; each file is then dropped from the page cache so
        its re-read comes from the disk (all of the batch is asked for at once, so the disk
        serves many reads together instead of one small file at a time), and only a file
        whose xxh3-128 matches the source's takes its final name. Runs on the committer
        thread.
        """
        for item in batch:
            if item.copy_from is not None:
                self._copy_into_temp(item, item.copy_from)
        syncfs(self.peer_fd)
        checked = [_NOTHING_CHECKED if i.early is None else i.early.finish() for i in batch]
        for item, (start, _) in zip(batch, checked, strict=True):
            _reread_from_disk(self.dirs.parent_of(item.parts), item.tmp, start)
        verified: dict[str, ManifestEntry] = {}
        mismatched: list[_Pending] = []
        for item, (start, hasher) in zip(batch, checked, strict=True):
            dir_fd = self.dirs.parent_of(item.parts)
            if _verify_on_disk(dir_fd, item.tmp, item.size, item.digest, start, hasher):
                name = item.parts[-1]
                if not self.fresh_dir and _clear_name(dir_fd, name):
                    self.dirs.forget(tuple(item.parts))
                os.rename(item.tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                verified[item.entry.path] = self._manifest_entry(item.entry, item.size, item.digest)
            else:
                os.unlink(item.tmp, dir_fd=dir_fd)
                mismatched.append(item)
        syncfs(self.peer_fd)  # the renames, durable before anything vouches for them
        return verified, mismatched

    def _copy_into_temp(self, item: _Pending, basis: Basis) -> None:
        """Copy a basis whose recorded hash is the source's into the item's temp file."""
        dir_fd = self.dirs.parent_of(item.parts)
        if self.options.link_unchanged and self._link_into_temp(item, basis, dir_fd):
            return
        basis_fd = self._open_basis(basis)
        try:
            out_fd = os.open(item.tmp, FILE_CREATE, 0o600, dir_fd=dir_fd)
            try:
                _copy_local(basis_fd, out_fd)  # a short copy fails the re-read, not here
                self._give_metadata(out_fd, item.entry)
            finally:
                os.close(out_fd)
        finally:
            os.close(basis_fd)

    def _link_into_temp(self, item: _Pending, basis: Basis, dir_fd: int) -> bool:
        """Hard-link an earlier day's copy that already is what today's copy would be: same
        content (by its manifest's hash; the re-read verifies it), mtime, mode and owner.

        Like ``rsync --link-dest``: no data written, no space used. False (copy instead)
        when anything differs or the filesystem refuses the link.
        """
        if basis.kind not in ("previous", "similar"):
            return False
        parent_fd, name = self._basis_parent(basis)
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if not (
                stat.S_ISREG(st.st_mode)
                and st.st_size == item.size
                and st.st_mtime_ns == item.entry.mtime_ns
                and self.ownership.matches(st, item.entry.mode, os.fstat(dir_fd))
            ):
                return False
            os.link(name, item.tmp, src_dir_fd=parent_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except OSError:  # EXDEV, EMLINK, EPERM, a vanished basis: fall back to a copy
            return False
        return True

    def _drain_committer(self) -> None:
        """Let in-flight batches finish (their errors are already someone else's news)."""
        futures, self.in_flight = self.in_flight, []
        for future in futures:
            with contextlib.suppress(Exception):
                future.result()

    def _discard_pending(self) -> None:
        for item in self.pending:
            if item.early is not None:
                item.early.abandon()
            with contextlib.suppress(OSError):
                os.unlink(item.tmp, dir_fd=self.dirs.parent_of(item.parts))
        self.pending, self.pending_bytes = [], 0

    def _basis_parent(self, basis: Basis) -> tuple[int, str]:
        """The basis's directory (an fd, opened without following links) and its name."""
        with self.basis_lock:  # the committer thread opens bases too
            cache = self.basis_dirs.get(basis.root)
            if cache is None:
                cache = DirCache(open_dir(basis.root), create=False)
                self.basis_dirs[basis.root] = cache
        parts = check_relative_path(basis.path)
        return cache.parent_of(parts), parts[-1]

    def _open_basis(self, basis: Basis) -> int:
        parent_fd, name = self._basis_parent(basis)
        return os.open(name, FILE_READ, dir_fd=parent_fd)

    def _keep_partial(self, dir_fd: int, tmp: str, parts: list[str]) -> None:
        """An interrupted transfer's output becomes an extra basis for the next attempt."""
        partial_parts = [PARTIAL_DIR, *parts]
        try:
            with open_parent_beneath(
                self.peer_fd, partial_parts, create=True, mode=0o700
            ) as partial_fd:
                _clear_name(partial_fd, partial_parts[-1])
                os.rename(tmp, partial_parts[-1], src_dir_fd=dir_fd, dst_dir_fd=partial_fd)
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)


def _order_by_work(
    files: list[RemoteEntry], finder: BasisFinder
) -> tuple[list[tuple[RemoteEntry, list[Basis]]], list[tuple[RemoteEntry, list[Basis]]]]:
    """Files the master already holds (copied or linked locally), then those to fetch,
    biggest first.

    The committer thread settles the local ones while the network carries the rest, and a
    big fetch done early has its sync and re-read overlap the smaller ones after it.
    """
    local: list[tuple[RemoteEntry, list[Basis]]] = []
    remote: list[tuple[RemoteEntry, list[Basis]]] = []
    for entry in files:
        candidates = finder.candidates(entry.path, entry.size)
        best = candidates[0] if candidates else None
        held = best is not None and best.known_hash == entry.xxh3_128 and best.size == entry.size
        (local if held else remote).append((entry, candidates))
    remote.sort(key=lambda pair: -pair[0].size)
    return local, remote


def _adopt(speculative: _Transfer, jobs: list[_Job]) -> None:
    """The speculative fetch becomes the first transfer of the job it turned out to be;
    left speculative (its answer read and dropped), no job wants it as it is."""
    wanted, _ = speculative.job.plan
    assert wanted is not None
    if not speculative.signed:  # withdrawn: the job signs and requests its file itself
        return
    for index, job in enumerate(jobs):
        basis, strong_len = job.plan
        if (
            basis is not None
            and strong_len is None
            and (basis.root, basis.path) == (wanted.root, wanted.path)
            and job.entry.path == speculative.job.entry.path
        ):
            del jobs[index]
            job.fresh = False
            speculative.job = job
            return


class _Job:
    """One file to fetch, and the ways to try: with the best basis, then without one."""

    def __init__(self, entry: RemoteEntry, candidates: list[Basis]) -> None:
        self.entry = entry
        self.parts = check_relative_path(entry.path)
        self.plans: list[tuple[Basis | None, int | None]] = [
            (candidates[0] if candidates else None, None),
            (None, MAX_STRONG_LEN),  # the retry: no basis, full-length block hashes
        ]
        self.index = 0
        self.changed_retry = True  # one more try for a file that changed while read
        self.fresh = True  # not yet checked against an earlier run of today
        self.refetch = False  # a staged copy that did not verify, fetched again
        self.speculative = False  # requested before the listing, on a guess

    @property
    def plan(self) -> tuple[Basis | None, int | None]:
        return self.plans[self.index]


class _Transfer:
    """A fetch requested: its basis, its temp file, the answer still to be read."""

    def __init__(self, job: _Job, tmp: str, dir_fd: int, basis_fd: int) -> None:
        self.job = job
        self.tmp = tmp
        self.dir_fd = dir_fd
        self.basis_fd = basis_fd
        self.out_fd = -1
        self.basis_size = 0
        self.basis_hash = b""
        self.signed = False  # its signature was produced whole
        self.request = FetchRequest(job.entry.path, (), 0, 0)

    def read_at(self, offset: int, length: int) -> bytes:
        return os.pread(self.basis_fd, length, offset) if self.basis_fd >= 0 else b""

    def close_fds(self) -> None:
        for fd in (self.out_fd, self.basis_fd):
            if fd >= 0:
                os.close(fd)
        self.out_fd = self.basis_fd = -1

    def discard(self) -> None:
        """Close it and remove its temp file (nothing was kept of it)."""
        had_file = self.out_fd >= 0
        self.close_fds()
        if had_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp, dir_fd=self.dir_fd)


@dataclass
class _Pending:
    """A temp file written in full (or a local copy to make), awaiting the batch's sync,
    re-read and rename."""

    entry: RemoteEntry
    parts: list[str]
    tmp: str
    size: int
    digest: bytes
    copy_from: Basis | None = None  # a local copy still to be made (by the committer)
    early: _EarlyCheck | None = None  # its leading part, re-read as it was written


def _start_writeback(fd: int, offset: int, length: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # advice only
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _reread_from_disk(dir_fd: int, name: str, start: int = 0) -> None:
    """Drop a synced file's cached pages from ``start`` on, then have the kernel read them
    back from the disk ahead of ``_verify_on_disk`` (asynchronously: a whole batch is in
    flight at once)."""
    with contextlib.suppress(OSError, AttributeError):  # advice only: the hash still decides
        fd = os.open(name, FILE_READ, dir_fd=dir_fd)
        try:
            os.posix_fadvise(fd, start, 0, os.POSIX_FADV_DONTNEED)
            os.posix_fadvise(fd, start, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)


def _verify_on_disk(
    dir_fd: int,
    name: str,
    size: int,
    digest: bytes,
    start: int = 0,
    hasher: Hasher | None = None,
) -> bool:
    """Whether the file is ``size`` bytes hashing to ``digest``; with ``hasher``, it holds
    the hash of the bytes before ``start``, read back already (see ``_EarlyCheck``)."""
    fd = os.open(name, FILE_READ, dir_fd=dir_fd)
    try:
        if hasher is None and size < READ_CHUNK:  # most files: one read (one more byte
            data = os.pread(fd, size + 1, 0)  # shows a longer file)
            return len(data) == size and hash_bytes(data) == digest
        return hash_fd(fd, offset=start, hasher=hasher) == (size, digest)
    finally:
        os.close(fd)


_NOTHING_CHECKED: tuple[int, Hasher | None] = (0, None)


class _EarlyCheck:
    """A big file's leading part, made durable and read back from the disk while the rest
    of it is still being patched, on the stager's one checker thread.

    Each ``advance(end)`` syncs the file's data (fdatasync), drops the new range from the
    page cache and hashes it as read back, in order. The commit syncs the whole batch as
    usual and re-reads the file from ``checked`` on only, continuing this hash, so every
    byte is still compared as read from the disk after it was synced. Any error just leaves
    more for the commit to read.
    """

    def __init__(self, worker: ThreadPoolExecutor, fd: int) -> None:
        self._worker = worker
        self._fd = os.dup(fd)  # its own: the transfer closes its fd before the commit
        self._hasher = Hasher()
        self._checked = 0
        self._failed = False
        self._last: Future[None] | None = None

    def advance(self, end: int) -> None:
        if not self._failed and self._fd >= 0:
            self._last = self._worker.submit(self._check, end)

    def _check(self, end: int) -> None:
        if self._failed or end <= self._checked:
            return
        try:
            os.fdatasync(self._fd)
            os.posix_fadvise(self._fd, self._checked, end - self._checked, os.POSIX_FADV_DONTNEED)
            offset = self._checked
            while offset < end:
                chunk = os.pread(self._fd, min(READ_CHUNK, end - offset), offset)
                if not chunk:
                    raise OSError("the file is shorter than what was written")
                self._hasher.update(chunk)
                offset += len(chunk)
            self._checked = end
        except OSError:
            self._failed = True

    def finish(self) -> tuple[int, Hasher | None]:
        """Wait for the checks; (bytes checked, their hash), or nothing checked."""
        last, self._last = self._last, None
        if last is not None:
            last.result()  # _check catches what it expects; anything else is a bug
        self._close()
        return _NOTHING_CHECKED if self._failed else (self._checked, self._hasher)

    def abandon(self) -> None:
        """The file is dropped: no more checks; its fd is closed once the worker is done."""
        self._failed = True
        if self._fd >= 0:
            try:
                self._worker.submit(self._close)
            except RuntimeError:  # the worker is shut down: nothing else uses the fd
                self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def _copy_local(src_fd: int, dst_fd: int) -> int:
    """Copy a whole file in the kernel (a reflink where the filesystem can)."""
    offset = 0
    with contextlib.suppress(OSError):  # not supported here: finish in user space below
        while copied := os.copy_file_range(src_fd, dst_fd, 1 << 30, offset, offset):
            offset += copied
        return offset
    while chunk := os.pread(src_fd, READ_CHUNK, offset):
        view = memoryview(chunk)
        while view:
            written = os.pwrite(dst_fd, view, offset)
            view, offset = view[written:], offset + written
    return offset


def _clear_name(dir_fd: int, name: str) -> bool:
    """Make room for a file where an earlier run left a directory of the same name."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        remove_tree_beneath(dir_fd, name)
        return True
    return False


def _unlink_files(peer_fd: int, doomed: Callable[[list[str]], bool]) -> None:
    """Remove every non-directory beneath the peer dir whose path parts ``doomed`` picks."""
    for rel, _ in list(walk_files(peer_fd)):
        parts = rel.split("/")
        if not doomed(parts):
            continue
        with (
            open_parent_beneath(peer_fd, parts, create=False) as dir_fd,
            contextlib.suppress(FileNotFoundError),
        ):
            os.unlink(parts[-1], dir_fd=dir_fd)


def _sweep_temp_files(peer_fd: int) -> None:
    """Temp files of a crashed run are never mistaken for staged ones: remove them."""
    _unlink_files(
        peer_fd, lambda parts: parts[0] != PARTIAL_DIR and parts[-1].startswith(TMP_PREFIX)
    )


def _remove_extras(peer_fd: int, keep: set[str]) -> None:
    """A re-run after the peer removed a file: today's tree must match the peer's."""

    def doomed(parts: list[str]) -> bool:
        rel = "/".join(parts)
        return not (parts[0].startswith(INTERNAL_PREFIX) or rel == MANIFEST_NAME or rel in keep)

    _unlink_files(peer_fd, doomed)


def _walk_dirs(dir_fd: int) -> Iterator[int]:
    """Yield an fd for every subdirectory (not links), depth first; the caller closes each."""
    for name in sorted(os.listdir(dir_fd)):
        if name.startswith(INTERNAL_PREFIX):
            continue
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
            yield from _walk_dirs(sub)
            yield sub
