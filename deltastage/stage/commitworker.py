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

A batch crosses as plain rows (``pack``: tuples of str, bytes and ints, with ``marshal``,
which writes them without the per-object bookkeeping pickle does for dataclasses), and the
answer is each file's outcome: the master keeps the batch and makes its records itself.
"""

from __future__ import annotations

import marshal
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from deltastage.errors import DeltastageError
from deltastage.models import RemoteEntry
from deltastage.safefs import DirCache, open_dir
from deltastage.stage.basis import Basis, BasisOpener
from deltastage.stage.batchcommit import BatchCommitter, BatchResult, Pending
from deltastage.stage.localcopy import LocalCopier
from deltastage.stage.ownership import Ownership

__all__ = ["WorkerSetup", "commit", "pack", "start_worker"]


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


def pack(batch: list[Pending]) -> bytes:
    """A batch as the worker reads it (its files' early checks, if any, stay here: such a
    batch is never sent)."""
    return marshal.dumps([_row(item) for item in batch])


def commit(packed: bytes) -> BatchResult:
    """Commit one packed batch in the worker (see ``BatchCommitter.commit``)."""
    if _committer is None:  # _start failed: the pool is broken before any batch runs
        raise DeltastageError("the commit worker did not start")
    return _committer.commit([_pending(row) for row in marshal.loads(packed)])


def _row(item: Pending) -> tuple[Any, ...]:
    if item.early is not None:
        raise ValueError(f"{item.entry.path}: a file read back early is committed in place")
    e, b = item.entry, item.copy_from
    entry = (e.path, e.kind, e.size, e.mtime_ns, e.mode, e.xxh3_128, e.sketch, e.recipe)
    basis = None
    if b is not None:
        day = None if b.day is None else b.day.toordinal()
        basis = (str(b.root), b.path, b.kind, b.size, b.known_hash, day, b.sketch, b.content_size)
    return entry, item.parts, item.tmp, item.size, item.digest, basis, item.data


def _pending(row: tuple[Any, ...]) -> Pending:
    entry, parts, tmp, size, digest, basis, data = row
    copy_from = None
    if basis is not None:
        root, path, kind, basis_size, known_hash, day, sketch, content_size = basis
        on = None if day is None else date.fromordinal(day)
        copy_from = Basis(Path(root), path, kind, basis_size, known_hash, on, sketch, content_size)
    return Pending(RemoteEntry(*entry), parts, tmp, size, digest, copy_from, data=data)
