"""One batch of staged files committed: the small files received into memory written, the
local copies made, the whole batch made durable with one syncfs, each file read back from the
disk and hashed, and what matches the source's xxh3-128 renamed into place.

``BatchCommitter`` does it where it is called: on the committer's thread, or in its worker
process (``stage.commitworker``); ``stage.committer`` decides which.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from deltastage.manifest import ManifestEntry
from deltastage.models import RemoteEntry
from deltastage.safefs import DirCache, create_private, syncfs
from deltastage.stage import readback
from deltastage.stage.basis import Basis
from deltastage.stage.localcopy import LocalCopier
from deltastage.stage.ownership import Ownership
from deltastage.stage.peerdir import clear_name
from deltastage.stage.readback import NOTHING_CHECKED, EarlyCheck
from deltastage.stage.sparse import write_new

__all__ = ["READBACK_WINDOW", "BatchCommitter", "BatchResult", "Pending", "staged_entry"]

T = TypeVar("T")

# A batch is read back this many files at a time: each is opened once, its re-read asked
# of the disk with the others', then hashed (a bounded number of fds held at once).
READBACK_WINDOW = 64


@dataclass(slots=True)  # one per file in flight: no per-instance dict
class Pending:
    """A temp file written in full (or a local copy to make), awaiting the batch's sync,
    re-read and rename."""

    entry: RemoteEntry
    parts: list[str]
    tmp: str
    size: int
    digest: bytes
    copy_from: Basis | None = None  # a local copy still to be made (by the committer)
    early: EarlyCheck | None = None  # its leading part, re-read as it was written
    in_place: bool = False  # linked straight to its final name (see ``_make_local``)
    data: bytes | None = None  # a small file received into memory, its temp file not made

    @property
    def on_disk(self) -> str:
        """The name the file has in its dir until it is committed."""
        return self.parts[-1] if self.in_place else self.tmp


# Each file of a batch, in its order: whether it verified (and took its final name).
BatchResult = list[bool]


def staged_entry(
    ownership: Ownership, entry: RemoteEntry, size: int, digest: bytes
) -> ManifestEntry:
    """What the manifest records of ``entry`` staged verified (its sketch and recipe only
    when the staged bytes are the ones listed: a file that changed since was not sketched,
    and its recipe may not rebuild it)."""
    listed = digest == entry.xxh3_128 and size == entry.size
    return ManifestEntry(
        entry.path,
        size,
        digest,
        ownership.staged_mode(entry.mode),
        entry.mtime_ns,
        entry.sketch if listed else None,
        entry.recipe if listed else None,
    )


class BatchCommitter:
    """Commits batches of one peer dir's pending files, one batch per ``commit`` call.

    ``fresh``: the peer dir was empty when the attempt began, so nothing staged earlier can
    stand in a file's way.
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
        self.peer_fd = peer_fd
        self.dirs = dirs
        self._copier = copier
        self.ownership = ownership
        self._fresh = fresh

    def commit(self, batch: list[Pending]) -> BatchResult:
        """Make a batch durable, re-read and verify each file, then rename it into place (a
        link made in place has its name already); what did not verify is removed.

        One syncfs covers the whole batch (and the renames of the batches before it); each
        file is then dropped from the page cache so its re-read comes from the disk
        (``READBACK_WINDOW`` files are asked for at once, so the disk serves many reads
        together instead of one small file at a time), and only a file whose xxh3-128
        matches the source's takes its final name.
        """
        self._write_received(batch)
        self._make_local(batch)
        syncfs(self.peer_fd)
        checked = [NOTHING_CHECKED if i.early is None else i.early.finish() for i in batch]
        verified: BatchResult = []
        for first in range(0, len(batch), READBACK_WINDOW):
            window = batch[first : first + READBACK_WINDOW]
            checks = checked[first : first + READBACK_WINDOW]
            fds: list[int] = []
            try:
                for dir_parts, group in _by_dir(zip(window, checks, strict=True)):
                    with self.dirs.lease(dir_parts) as dir_fd:
                        for item, (start, _) in group:
                            fds.append(readback.open_for_reread(dir_fd, item.on_disk, start))
                good = [
                    readback.verify_on_disk(fd, item.size, item.digest, start, hasher)
                    for fd, item, (start, hasher) in zip(fds, window, checks, strict=True)
                ]
            finally:
                for fd in fds:
                    os.close(fd)
            for dir_parts, outcomes in _by_dir(zip(window, good, strict=True)):
                with self.dirs.lease(dir_parts) as dir_fd:
                    for item, ok in outcomes:
                        if ok:
                            self._take_name(dir_fd, item)
                        else:
                            os.unlink(item.on_disk, dir_fd=dir_fd)
            verified += good
        return verified

    def _take_name(self, dir_fd: int, item: Pending) -> None:
        """Give a file that verified its final name in ``dir_fd``, its dir (a link made in
        place has it already)."""
        if not item.in_place:
            name = item.parts[-1]
            if not self._fresh and clear_name(dir_fd, name):
                self.dirs.forget(item.parts)
            os.rename(item.tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    def _write_received(self, batch: list[Pending]) -> None:
        """Write the small files received into memory to their temp files, one after the
        other here rather than each by the receiver (the batch's sync makes them durable
        with the rest)."""
        received = ((item, item.data) for item in batch if item.data is not None)
        for dir_parts, group in _by_dir(received):
            with self.dirs.lease(dir_parts) as dir_fd:
                for item, data in group:
                    item.data = None
                    fd = create_private(dir_fd, item.tmp)
                    try:
                        write_new(fd, data)
                        self.ownership.give_staged(fd, item.entry.mode, item.entry.mtime_ns)
                    finally:
                        os.close(fd)

    def _make_local(self, batch: list[Pending]) -> None:
        """Make the batch's local copies: links, else copies into their temp files.

        In a fresh dir an unchanged file is linked straight to its final name (one linkat,
        no rename). Nothing can be in the way there: the dir held no staged name when the
        attempt began, the staging lock keeps every other run out, and each path is staged
        once per attempt (fetched again only once its name is
        unlinked). Nothing that looks complete appears either: the link's inode is
        an earlier day's verified copy, whose manifest's hash is the source's, so the name
        holds the source's content from the start; it is still synced, re-read and hashed
        with its batch (unlinked if it does not verify) before any manifest or indicator
        vouches for it, and after a crash the dir is no longer fresh, so a re-run hashes it
        again before keeping it. A copy always goes through a temp name: until its data is
        written and synced, its final name must not exist.
        """
        local = ((item, item.copy_from) for item in batch if item.copy_from is not None)
        for dir_parts, group in _by_dir(local):
            with self.dirs.lease(dir_parts) as dir_fd:
                parent = os.fstat(dir_fd)
                for item, basis in group:
                    name = item.parts[-1] if self._fresh else item.tmp
                    if self._copier.link(dir_fd, name, item.entry, basis, parent):
                        item.in_place = self._fresh
                    else:
                        self._copier.copy_into_temp(dir_fd, item.tmp, item.entry, basis)


def _by_dir(
    pairs: Iterable[tuple[Pending, T]],
) -> Iterator[tuple[tuple[str, ...], Iterator[tuple[Pending, T]]]]:
    """The pairs in runs of one directory each, by its parts: a batch comes in listing order,
    so one lease of each directory's fd serves a run of its files."""
    return itertools.groupby(pairs, key=lambda pair: tuple(pair[0].parts[:-1]))
