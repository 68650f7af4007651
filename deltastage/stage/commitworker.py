"""The committer's worker process: full batches are committed there, beside the master's
receiving rather than taking turns with it.

A commit is mostly syscalls (create, write, syncfs, re-read, rename: a dozen a small file),
each of which gives up the interpreter lock and must win it back from the receiver, which
holds it for its own per-file work. On a thread of the master the two take turns, and a
tree of many small files is committed no faster than if nothing overlapped; in a process
of its own the commit runs on the other core.

The worker is started (``spawn``: a new interpreter, no state forked from a threaded
master) on an attempt's first full batch, so a peer of a few files never starts one. It
opens the peer dir itself, by path, and refuses any dir but the one the master holds
(device and inode); it builds its own directory cache, bases and copier, and commits each
batch it is sent with ``BatchCommitter``: the same code, the same checks as on a thread.
It ignores SIGINT: an interrupted master lets the batch in hand finish and stops it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from deltastage.errors import DeltastageError
from deltastage.safefs import DirCache, open_dir
from deltastage.stage.basis import BasisOpener
from deltastage.stage.batchcommit import BatchCommitter, BatchResult, Pending
from deltastage.stage.localcopy import LocalCopier
from deltastage.stage.ownership import Ownership

__all__ = ["WorkerSetup", "commit", "start_worker"]


@dataclass(frozen=True)
class WorkerSetup:
    """What the worker builds its ``BatchCommitter`` from."""

    peer_dir: Path
    identity: tuple[int, int]  # the peer dir's st_dev and st_ino, as the master opened it
    ownership: Ownership
    link: bool  # link unchanged files (else copy them)
    fresh: bool  # the peer dir was empty when the attempt began


_committer: BatchCommitter | None = None  # the worker's own, made by ``_start``


def start_worker(setup: WorkerSetup) -> ProcessPoolExecutor:
    """A pool of one worker process that commits the batches submitted as ``commit``."""
    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start,
        initargs=(setup,),
    )


def _start(setup: WorkerSetup) -> None:
    global _committer
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    peer_fd = open_dir(setup.peer_dir)
    st = os.fstat(peer_fd)
    if (st.st_dev, st.st_ino) != setup.identity:
        os.close(peer_fd)
        raise DeltastageError(f"{setup.peer_dir} is no longer the peer dir being staged")
    # These live as long as the process: its exit closes their fds.
    dirs = DirCache(peer_fd, create=True, mode=setup.ownership.dir_mode)
    copier = LocalCopier(BasisOpener(), setup.ownership, link=setup.link)
    _committer = BatchCommitter(peer_fd, dirs, copier, setup.ownership, fresh=setup.fresh)


def commit(batch: list[Pending]) -> BatchResult:
    """Commit one batch in the worker (see ``BatchCommitter.commit``)."""
    if _committer is None:  # _start failed: the pool is broken before any batch runs
        raise DeltastageError("the commit worker did not start")
    return _committer.commit(batch)
