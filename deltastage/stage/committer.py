"""The committer: queues an attempt's staged files into batches and has each committed
(``stage.batchcommit``: made durable, read back from the disk, verified against the
source's xxh3-128, renamed into place) while the transfers go on.

A full batch goes to the worker process (``stage.commitworker``) when the attempt gives
one; the rest (what is left when the attempt settles, and any batch holding a file read
back as it arrived, whose hash so far lives here) are committed on the committer's thread.

It returns what did not verify and never touches the network: fetching a file again is the
attempt's to decide.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from deltastage.errors import DeltastageError
from deltastage.manifest import ManifestEntry
from deltastage.safefs import syncfs
from deltastage.stage import commitworker
from deltastage.stage.batchcommit import BatchCommitter, BatchResult, Pending, staged_entry
from deltastage.stage.commitworker import WorkerSetup

__all__ = ["BATCHES_IN_FLIGHT", "BATCH_BYTES", "BATCH_FILES", "Committed", "Committer"]

log = logging.getLogger("deltastage.stage")

# Written files are synced, re-read and renamed in batches of this many files or bytes, or
# once the small files received into memory (``Pending.data``) hold this many bytes.
BATCH_FILES = 1024
BATCH_BYTES = 64 << 20
BATCH_HELD = 4 << 20
# Batches handed to the thread or the worker and not yet collected, at most: whoever queues
# more waits for the oldest, so what waits to be committed (files written, their records,
# small files' data) stays bounded however many files a peer has.
BATCHES_IN_FLIGHT = 4

# What the committed files verified as (by path), and the files that did not verify.
Committed = tuple[dict[str, ManifestEntry], list[Pending]]


class Committer:
    """Commits the peer dir's pending files in batches, with ``batches`` on its thread;
    verifying overlaps the transfers. ``worker``: full batches go to a worker process built
    from it (none: all on the thread)."""

    def __init__(self, batches: BatchCommitter, *, worker: WorkerSetup | None = None) -> None:
        self._batches = batches
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self._worker_setup = worker
        self._worker: ProcessPoolExecutor | None = None  # started by the first full batch
        self._pending: list[Pending] = []
        self._pending_bytes = 0
        self._pending_held = 0
        self._in_flight: deque[tuple[list[Pending], Future[BatchResult]]] = deque()
        # what the batches collected so far verified as, and what did not verify
        self._verified: dict[str, ManifestEntry] = {}
        self._mismatched: list[Pending] = []
        self._local_verified = 0

    def add(self, item: Pending) -> None:
        """Queue a file; a full batch is handed on (waiting for the oldest batch when
        ``BATCHES_IN_FLIGHT`` are out already)."""
        self._pending.append(item)
        self._pending_bytes += item.size
        if item.data is not None:
            self._pending_held += len(item.data)
        if (
            len(self._pending) >= BATCH_FILES
            or self._pending_bytes >= BATCH_BYTES
            or self._pending_held >= BATCH_HELD
        ):
            self.submit(full=True)

    def has_room(self) -> bool:
        """Whether a full batch queued now would be handed on without waiting."""
        return len(self._in_flight) < BATCHES_IN_FLIGHT

    def submit(self, *, full: bool = False) -> None:
        """Hand the files queued so far on as one batch: a ``full`` one to the worker
        process (when there is one and no file of it was read back as it arrived), any
        other to the committer thread."""
        if self._pending:
            batch, self._pending = self._pending, []
            self._pending_bytes = self._pending_held = 0
            future = self._to_worker(batch) if full else None
            if future is None:
                future = self._thread.submit(self._batches.commit, batch)
            self._in_flight.append((batch, future))
        while len(self._in_flight) > BATCHES_IN_FLIGHT:
            self._collect(*self._in_flight.popleft())

    def _to_worker(self, batch: list[Pending]) -> Future[BatchResult] | None:
        """The batch sent to the worker (started by the first one); None when it must stay
        here, or no worker could be started (a process limit, say: the thread commits)."""
        if self._worker_setup is None or any(item.early is not None for item in batch):
            return None
        try:
            if self._worker is None:
                self._worker = commitworker.start_worker(self._worker_setup)
            return self._worker.submit(commitworker.commit, commitworker.pack(batch))
        except OSError as exc:
            log.warning(
                "could not start a commit worker process (%s): committing on a thread",
                exc.strerror or exc,
            )
            self._worker_setup = None
            return None

    def settle(self) -> Committed:
        """Commit every queued file and wait for every batch: what the batches since the
        last settle verified as, and what did not verify. Their renames are durable when
        it returns (one syncfs for them all: each batch's own sync, before its re-read,
        made the renames of the batches before it durable already)."""
        self.submit()
        while self._in_flight:
            self._collect(*self._in_flight.popleft())
        if self._verified or self._mismatched:
            syncfs(self._batches.peer_fd)  # the renames, durable before anything vouches for them
        verified, self._verified = self._verified, {}
        mismatched, self._mismatched = self._mismatched, []
        return verified, mismatched

    def take_local_verified(self) -> int:
        """How many local copies (links and copies) verified since the last call."""
        count, self._local_verified = self._local_verified, 0
        return count

    def _collect(self, batch: list[Pending], future: Future[BatchResult]) -> None:
        try:
            outcome = future.result()
        except BrokenProcessPool as exc:
            raise DeltastageError(f"the commit worker process ended: {exc}") from None
        for item, verified in zip(batch, outcome, strict=True):
            if not verified:
                self._mismatched.append(item)
                continue
            self._verified[item.entry.path] = staged_entry(
                self._batches.ownership, item.entry, item.size, item.digest
            )
            if item.copy_from is not None:
                self._local_verified += 1

    def close(self) -> None:
        """Let batches in flight finish (their errors are already someone else's news), stop
        the thread and the worker, and remove the temp files of what was never committed."""
        in_flight, self._in_flight = self._in_flight, deque()
        for _, future in in_flight:
            with contextlib.suppress(Exception):
                future.result()
        self._thread.shutdown(wait=True)
        if self._worker is not None:
            self._worker.shutdown(wait=True)
        for item in self._pending:
            if item.early is not None:
                item.early.abandon()
            with contextlib.suppress(OSError), self._batches.dirs.parent(item.parts) as dir_fd:
                os.unlink(item.tmp, dir_fd=dir_fd)
        self._pending, self._pending_bytes, self._pending_held = [], 0, 0
