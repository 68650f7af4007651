"""The committer: queues an attempt's staged files into batches and has each committed
(``stage.batchcommit``: made durable, read back from the disk, verified against the
source's xxh3-128, renamed into place) on its own thread while the transfers go on.

It returns what did not verify and never touches the network: fetching a file again is the
attempt's to decide.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from deltastage.manifest import ManifestEntry
from deltastage.safefs import DirCache, syncfs
from deltastage.stage.batchcommit import BatchCommitter, BatchResult, Pending
from deltastage.stage.localcopy import LocalCopier
from deltastage.stage.ownership import Ownership

__all__ = ["BATCHES_IN_FLIGHT", "BATCH_BYTES", "BATCH_FILES", "Committed", "Committer"]

# Written files are synced, re-read and renamed in batches of this many files or bytes.
BATCH_FILES = 1024
BATCH_BYTES = 64 << 20
# Batches handed to the committer thread and not yet collected, at most: whoever queues more
# waits for the oldest, so what waits to be committed (files written, their records) stays
# bounded however many files a peer has.
BATCHES_IN_FLIGHT = 4

# What the committed files verified as (by path), and the files that did not verify.
Committed = tuple[dict[str, ManifestEntry], list[Pending]]


class Committer:
    """Commits the peer dir's pending files in batches; verifying overlaps the transfers.

    ``fresh``: the peer dir was empty when the attempt began (see ``BatchCommitter``).
    """

    def __init__(
        self,
        peer_fd: int,
        dirs: DirCache,
        copier: LocalCopier,
        ownership: Ownership,
        *,
        fresh: bool,
    ) -> None:
        self._peer_fd = peer_fd
        self._dirs = dirs
        self._batches = BatchCommitter(peer_fd, dirs, copier, ownership, fresh=fresh)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self._pending: list[Pending] = []
        self._pending_bytes = 0
        self._in_flight: deque[Future[BatchResult]] = deque()
        # what the batches collected so far verified as, and what did not verify
        self._verified: dict[str, ManifestEntry] = {}
        self._mismatched: list[Pending] = []
        self._local_verified = 0

    def add(self, item: Pending) -> None:
        """Queue a file; a full batch goes to the committer thread (waiting for the oldest
        batch when ``BATCHES_IN_FLIGHT`` are there already)."""
        self._pending.append(item)
        self._pending_bytes += item.size
        if len(self._pending) >= BATCH_FILES or self._pending_bytes >= BATCH_BYTES:
            self.submit()

    def has_room(self) -> bool:
        """Whether a full batch queued now would go to the thread without waiting."""
        return len(self._in_flight) < BATCHES_IN_FLIGHT

    def submit(self) -> None:
        """Hand the files queued so far to the committer thread as one batch."""
        if self._pending:
            batch, self._pending, self._pending_bytes = self._pending, [], 0
            self._in_flight.append(self._thread.submit(self._batches.commit, batch))
        while len(self._in_flight) > BATCHES_IN_FLIGHT:
            self._collect(self._in_flight.popleft())

    def settle(self) -> Committed:
        """Commit every queued file and wait for every batch: what the batches since the
        last settle verified as, and what did not verify. Their renames are durable when
        it returns (one syncfs for them all: each batch's own sync, before its re-read,
        made the renames of the batches before it durable already)."""
        self.submit()
        while self._in_flight:
            self._collect(self._in_flight.popleft())
        if self._verified or self._mismatched:
            syncfs(self._peer_fd)  # the renames, durable before anything vouches for them
        verified, self._verified = self._verified, {}
        mismatched, self._mismatched = self._mismatched, []
        return verified, mismatched

    def take_local_verified(self) -> int:
        """How many local copies (links and copies) verified since the last call."""
        count, self._local_verified = self._local_verified, 0
        return count

    def _collect(self, future: Future[BatchResult]) -> None:
        good, bad, local = future.result()
        self._verified.update(good)
        self._mismatched += bad
        self._local_verified += local

    def close(self) -> None:
        """Let batches in flight finish (their errors are already someone else's news), stop
        the thread, and remove the temp files of what was never committed."""
        futures, self._in_flight = self._in_flight, deque()
        for future in futures:
            with contextlib.suppress(Exception):
                future.result()
        self._thread.shutdown(wait=True)
        for item in self._pending:
            if item.early is not None:
                item.early.abandon()
            with contextlib.suppress(OSError), self._dirs.parent(item.parts) as dir_fd:
                os.unlink(item.tmp, dir_fd=dir_fd)
        self._pending, self._pending_bytes = [], 0
