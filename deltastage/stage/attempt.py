"""One attempt at staging one peer, over one session.

The attempt takes hold of the peer's staging dir and everything it works with (the dir's
fds, the committer and checker threads) when it is made, and releases them in one place,
``close``. ``run`` surveys the peer (and sends the guessed fetch meanwhile), plans, queues
the local copies, fetches the rest through the pipeline, has every file committed, fetches
again what did not verify, then writes the manifest and the peer's stage indicator (to a
read-only agent, none: the manifest records it instead).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TypeVar

from deltastage.config import Config, PeerConfig
from deltastage.errors import (
    DeltastageError,
    IntegrityError,
    PeerNotReady,
    TransportError,
)
from deltastage.manifest import Manifest, ManifestEntry, remove_manifest, write_manifest
from deltastage.master.pipeline import Pipeline
from deltastage.master.session import PeerSession
from deltastage.models import RemoteEntry
from deltastage.safefs import DirCache, check_relative_path, open_dir, remove_tree_beneath
from deltastage.stage.basis import PARTIAL_DIR, Basis, BasisFinder, BasisOpener
from deltastage.stage.batchcommit import BatchCommitter, Pending, staged_entry
from deltastage.stage.committer import Committer
from deltastage.stage.commitworker import WorkerSetup
from deltastage.stage.content import ContentBases
from deltastage.stage.generator import RequestGenerator, Transfer, adopt
from deltastage.stage.localcopy import LocalCopier
from deltastage.stage.ownership import Ownership
from deltastage.stage.peerdir import (
    Inflight,
    apply_dir_ownership,
    is_fresh,
    remove_extras,
    sweep_temp_files,
    temp_name,
)
from deltastage.stage.plan import Held, Job, Planned, order_by_work, select_entries
from deltastage.stage.presign import Presigner
from deltastage.stage.receiver import Receiver
from deltastage.stage.report import PeerReport, StageObserver
from deltastage.text import shown

__all__ = ["Attempt", "PeerTarget"]

log = logging.getLogger("deltastage.stage")

T = TypeVar("T")


@dataclass(frozen=True)
class PeerTarget:
    """One peer of a run: where it is staged from and to, and how."""

    config: Config
    peer: PeerConfig
    run_date: date
    peer_dir: Path
    ownership: Ownership
    observer: StageObserver

    @property
    def root(self) -> str:
        return str(self.peer.collect_dir)


class Attempt:
    """One attempt; counts go to ``report``. ``close`` it when done (``contextlib.closing``)."""

    def __init__(
        self,
        target: PeerTarget,
        session: PeerSession,
        report: PeerReport,
        presigner: Presigner | None,
    ) -> None:
        self.target = target
        self.options = target.config.options
        self.session = session
        self.report = report
        self.presigner = presigner
        self.results: dict[str, ManifestEntry] = {}
        self._local: list[Held] = []  # files to link or copy, last first, not yet queued
        with ExitStack() as stack:
            self.peer_fd = open_dir(target.peer_dir)
            stack.callback(os.close, self.peer_fd)
            Inflight.recover(self.peer_fd)  # before the sweep: a killed run's partials
            sweep_temp_files(self.peer_fd)
            self.inflight = Inflight(self.peer_fd)
            stack.callback(self.inflight.close)
            self.fresh_dir = is_fresh(self.peer_fd)
            self.bases = BasisOpener()
            stack.callback(self.bases.close)
            self.dirs = DirCache(self.peer_fd, create=True, mode=target.ownership.dir_mode)
            stack.callback(self.dirs.close)
            self.checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="check")
            stack.callback(self.checker.shutdown, wait=True)
            self.copier = LocalCopier(
                self.bases, target.ownership, link=self.options.link_unchanged
            )
            peer_st = os.fstat(self.peer_fd)
            worker = WorkerSetup(
                target.peer_dir,
                (peer_st.st_dev, peer_st.st_ino),
                target.ownership,
                link=self.options.link_unchanged,
                fresh=self.fresh_dir,
            )
            batches = BatchCommitter(
                self.peer_fd, self.dirs, self.copier, target.ownership, fresh=self.fresh_dir
            )
            self.committer = Committer(batches, worker=worker)
            stack.callback(self.committer.close)
            self.generator = RequestGenerator(
                self.dirs,
                self.bases,
                presigner,
                ContentBases(self.peer_fd, self.options.transform_temp_bytes),
            )
            self.receiver = Receiver(
                target.peer.name,
                self.peer_fd,
                target.ownership,
                self.checker,
                self.inflight,
                max_bytes=self.options.max_bytes_per_peer,
            )
            self.pipeline: Pipeline[Job, Transfer] = Pipeline(
                session, target.root, self._prepare, level=self.options.compress_level
            )
            stack.callback(self.pipeline.close)
            self._resources = stack.pop_all()

    def close(self) -> None:
        """Release everything the attempt holds: requests never read, files never
        committed (their temp files removed), threads, fds."""
        self._resources.close()

    def run(self) -> None:
        """Stage the peer; ``PeerNotReady`` when its collect indicator is missing."""
        options, root, peer = self.options, self.target.root, self.target.peer.name
        # one round trip: the handshake, the indicator query and the listing request
        # travel together, and the likeliest changed big file's fetch right behind them
        hello = self.session.send_survey(
            root, options.collect_indicator, prove=options.transform_compressed
        )
        guessed = self._guess()
        ready, listing = self.session.read_survey(root, hello)
        if not ready:
            raise PeerNotReady(f"no {options.collect_indicator} in {root}")
        files, skipped = select_entries(listing, options)
        del listing
        self.report.skipped = skipped
        for name in skipped:
            log.warning("peer=%s skipped %s: not a regular file, not followed", peer, name)
        self.target.observer.peer_started(peer, len(files), sum(e.size for e in files))
        remove_manifest(self.peer_fd)  # files are about to change: no manifest may vouch for them
        self.report.files = self.report.bytes = self.report.reused = 0
        self.report.attempted_files = self.report.attempted_bytes = 0
        self.report.older_basis_files = 0
        self.report.transformed = {}
        self.report.transformed_bytes = self.report.transformed_delta_bytes = 0
        self.report.transformed_saved_bytes = 0
        self.report.rebuild_failures = 0
        paths = [entry.path for entry in files]  # the manifest's order
        try:
            self._stage(files, guessed)
        except TransportError:
            # Files already received in full are kept (verified) for the next attempt.
            with contextlib.suppress(DeltastageError, OSError):
                self._settle()
            raise
        entries = tuple(self.results[path] for path in paths)
        if not self.fresh_dir:
            # in a fresh dir every staged name came from this listing (the staging lock
            # keeps other runs out), so there is nothing extra to look for
            remove_extras(self.peer_fd, {e.path for e in entries})
        remove_tree_beneath(self.peer_fd, PARTIAL_DIR)
        self.inflight.remove()
        apply_dir_ownership(self.peer_fd, self.target.ownership)
        assert self.session.info is not None  # the survey's handshake
        read_only = self.session.info.read_only
        manifest = Manifest(
            peer,
            self.target.run_date.isoformat(),
            entries,
            master_only_indicator=options.stage_indicator if read_only else None,
        )
        write_manifest(
            self.peer_fd,
            manifest,
            owner=self.target.ownership.owner,
            mode=self.target.ownership.file_mode or 0o644,
        )
        if read_only:
            log.info(
                "peer=%s read-only agent: %s recorded on the master only "
                "(daily dir and manifest), not in %s",
                peer,
                options.stage_indicator,
                root,
            )
            self.report.stage_indicator = "master-only"
        else:
            self.session.write_indicator(root, options.stage_indicator)
            self.report.stage_indicator = "peer"
        self.report.files = len(entries)
        self.report.bytes = sum(entry.size for entry in entries)

    def _guess(self) -> Transfer | None:
        """Send the guessed fetch, in a new day's dir only (a re-run has it staged)."""
        if not self.fresh_dir:
            return None
        guessed = self.generator.guess(self.session.transport.unread_capacity)
        if guessed is not None:
            self.pipeline.start(guessed)
        return guessed

    def _plan(self, files: list[RemoteEntry]) -> tuple[list[Held], list[Planned]]:
        """The files to link or copy and those to fetch (``order_by_work``); the earlier
        days' trees it read are freed once it is done."""
        target = self.target
        finder = BasisFinder(
            target.config.staging_dir,
            target.peer.name,
            target.run_date,
            target.peer_dir,
            basis_days=self.options.basis_days,
        )
        local, remote = order_by_work(files, finder)
        previous = finder.previous_day
        if previous is not None:
            self.report.older_basis_files = sum(
                basis.day is not None and basis.day < previous for _, basis in local
            ) + sum(
                any(b.day is not None and b.day < previous for b in bases) for _, bases in remote
            )
        return local, remote

    def _stage(self, files: list[RemoteEntry], guessed: Transfer | None) -> None:
        target = self.target
        local, remote = self._plan(files)
        # From here on each listed entry is held by its job or local copy only, and freed
        # once that is staged (``run`` keeps the paths): memory for a peer of many files
        # is what is in flight and what is staged, not the whole listing besides.
        files.clear()
        if self.presigner is not None:
            self.presigner.keep_only(
                {b[0].path for _, b in remote if len(b) == 1 and b[0].root == self.presigner.root}
            )
        jobs = [Job(entry, bases) for entry, bases in _drain(remote)]
        if guessed is not None:
            adopt(guessed, jobs)
        for job in _drain(jobs):
            self.pipeline.add(job)
        self.pipeline.send()
        # the local copies are queued while the first requests are on their way and
        # between answers, as the committer has room for them (each one's record is made
        # only then), and settled by the committer meanwhile
        local.reverse()
        self._local = local
        self._queue_local(wait=False)
        self._receive_all()
        self._queue_local(wait=True)
        mismatched = self._settle()
        failed = self.receiver.rebuild_failures
        if failed:
            self.report.rebuild_failures = len(failed)
            log.warning(
                "peer=%s %d compressed file(s) rebuilt from their content were not the "
                "peer's bytes (e.g. %s; this master's zlib or bzip2 may differ from the "
                "peer's); fetched again as their bytes",
                target.peer.name,
                len(failed),
                shown(failed[0]),
            )
        if mismatched:
            for item in mismatched:
                log.warning(
                    "peer=%s %s: staged copy did not verify; fetching it again without a basis",
                    target.peer.name,
                    item.entry.path,
                )
                self.pipeline.add(Job.refetch_of(item.entry))
            self._receive_all()
            mismatched = self._settle()  # a second try that does not verify fails the file
        if mismatched:
            raise IntegrityError(
                f"{mismatched[0].entry.path}: staged copy does not match the source's xxh3-128"
            )

    def _settle(self) -> list[Pending]:
        verified, mismatched = self.committer.settle()
        self.results.update(verified)
        # a linked or copied file counts as reused once it verified (one that did not is
        # fetched again: a transfer)
        self.report.reused += self.committer.take_local_verified()
        return mismatched

    def _queue_local(self, *, wait: bool) -> None:
        """Queue the files to link or copy: all of them (``wait``: as the committer takes
        them), else as many as it has room for now."""
        local = self._local
        while local and (wait or self.committer.has_room()):
            self._stage_local(*local.pop())

    def _receive_all(self) -> None:
        """Patch every answer, in order, while the pipeline sends the next requests. A job
        to be tried again goes to the end of the queue."""
        for transfer, answer in self.pipeline:
            if transfer.job.speculative:  # a guess no job wanted as it is
                transfer.discard()
                continue
            item = self.receiver.receive(transfer, answer)
            if item is None:
                self.pipeline.add(transfer.job)
                continue
            if transfer.recipe is not None:
                kind = transfer.recipe.kind.name.lower()
                self.report.transformed[kind] = self.report.transformed.get(kind, 0) + 1
                delta = self.receiver.last_delta_bytes
                self.report.transformed_bytes += item.size
                self.report.transformed_delta_bytes += delta
                self.report.transformed_saved_bytes += max(0, item.size - delta)
            self.committer.add(item)
            if not transfer.job.refetch:  # a refetch was counted when first staged
                self._file_done(transfer.job.entry)
            self._queue_local(wait=False)

    def _prepare(self, job: Job) -> Transfer | None:
        """The job's request, ready to send; None when a same-day re-run finds the file
        staged already."""
        try:
            if job.fresh:
                job.fresh = False
                if self._reuse_staged(job.parts, job.entry):
                    return None
            return self.generator.prepare(job)
        except OSError as exc:
            raise DeltastageError(f"{job.entry.path}: {exc.strerror or exc}") from exc

    def _stage_local(self, entry: RemoteEntry, basis: Basis) -> None:
        """A file whose content the master holds already: copied or linked by the committer."""
        parts = check_relative_path(entry.path)
        assert entry.xxh3_128 is not None
        try:
            if self._reuse_staged(parts, entry):
                return
            self.committer.add(
                Pending(entry, parts, temp_name(), entry.size, entry.xxh3_128, basis)
            )
        except OSError as exc:
            raise DeltastageError(f"{entry.path}: {exc.strerror or exc}") from exc
        self._file_done(entry)

    def _reuse_staged(self, parts: list[str], entry: RemoteEntry) -> bool:
        """A same-day re-run found the file staged already: it counts as done."""
        if self.fresh_dir:
            return False
        with self.dirs.parent(parts) as dir_fd:
            if not self.copier.already_staged(dir_fd, parts[-1], entry):
                return False
        assert entry.xxh3_128 is not None
        self.report.reused += 1
        self.results[entry.path] = staged_entry(
            self.target.ownership, entry, entry.size, entry.xxh3_128
        )
        self._file_done(entry)
        return True

    def _file_done(self, entry: RemoteEntry) -> None:
        self.report.attempted_files += 1
        self.report.attempted_bytes += entry.size
        self.target.observer.file_done(self.target.peer.name, entry.path, entry.size)


def _drain(items: list[T]) -> Iterator[T]:
    """Each item of the list, first to last, taken out of it as it is handed out: the
    list no longer keeps alive what its consumer is done with."""
    items.reverse()
    while items:
        yield items.pop()
