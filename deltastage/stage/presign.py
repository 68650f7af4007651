"""Signatures of an earlier day's biggest files, computed while the connection is set up.

Connecting, starting the agent and listing a peer leave the master idle for a good part of a
second on a WAN link. The biggest files are both the likeliest to have changed (dumps, tars,
logs) and the slowest to sign, and the stage fetches them first: signing them in that idle
time takes their signing off the critical path.

A gzip or bzip2 file is neither presigned nor guessed: its bytes change throughout from one
day to the next, and it is fetched as the delta of its content (``stage.content``).

A presigned signature is only used for the very file it was made from (same inode, size,
mtime and ctime at fetch time); otherwise the fetch signs its basis itself. Either way the
patch checks the basis against the signature's xxh3-128, so a stale signature cannot produce
a wrong file, only a refused one.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deltastage.delta.signature import MultiSignatureBuilder, SignatureBuilder
from deltastage.errors import IntegrityError
from deltastage.holes import read_sparse
from deltastage.manifest import INTERNAL_PREFIX, MANIFEST_NAME
from deltastage.safefs import (
    FILE_READ,
    check_relative_path,
    open_dir,
    open_parent_beneath,
    walk_files,
)
from deltastage.transform.search import SNIFF_SIZE, sniff

__all__ = [
    "PRESIGN_BYTES",
    "PRESIGN_FILES",
    "PRESIGN_MIN_SIZE",
    "Presigned",
    "Presigner",
    "signed_pieces",
]

PRESIGN_MIN_SIZE = 1 << 20  # smaller files sign in a few milliseconds: not worth a thread
PRESIGN_FILES = 32
PRESIGN_BYTES = 2 << 30


def signed_pieces(
    builder: SignatureBuilder | MultiSignatureBuilder, fd: int, size: int
) -> Iterator[bytes]:
    """The open basis ``fd``'s first ``size`` bytes fed to ``builder``, and what it encodes
    of them, piece by piece. Its holes are not read: a block of zeros has the same record
    every time (``SignatureBuilder.zeros``). IntegrityError if the file ends early."""
    offset = 0
    for piece in read_sparse(fd, size):
        if isinstance(piece, int):
            out = builder.zeros(piece)
            offset += piece
        else:
            out = builder.update(piece)
            offset += len(piece)
        if out:
            yield out
    if offset < size:
        raise IntegrityError("basis shrank while being signed")


def file_identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class Presigned:
    identity: tuple[int, int, int, int, int]
    chunks: tuple[bytes, ...]  # the encoded signature
    basis_hash: bytes  # xxh3-128 of the basis, as the signature records it
    params: tuple[int, int]  # its block size and strong length (the basis's defaults)


class Presigner:
    """Signs the biggest regular files under ``root`` on a background thread, biggest first.

    ``take(path)`` hands over a finished signature, waits for one being made, or returns
    None (and the caller signs): a file not yet started is dropped from the plan, so it is
    never signed twice.
    ``keep_only(paths)`` drops planned files the run will not fetch. ``close()`` stops the
    thread after the file it is on.
    """

    def __init__(
        self,
        root: Path,
        *,
        min_size: int = PRESIGN_MIN_SIZE,
        max_files: int = PRESIGN_FILES,
        max_bytes: int = PRESIGN_BYTES,
    ) -> None:
        self.root = root
        self._min_size = min_size
        self._max_files = max_files
        self._max_bytes = max_bytes
        self._lock = threading.Condition()
        self._plan: list[str] | None = None  # None until the tree has been scanned
        self._fresh: list[tuple[str, int]] = []  # planned files with one link: (path, size)
        self._wanted: set[str] | None = None
        self._busy: str | None = None
        self._done: dict[str, Presigned] = {}
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="presign", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            plan, fresh = self._biggest_files()
        except Exception:  # anything amiss: the fetches sign their bases themselves
            plan, fresh = [], []
        with self._lock:
            self._fresh = fresh
            self._plan = [p for p in plan if self._wanted is None or p in self._wanted]
            self._lock.notify_all()
        while True:
            with self._lock:
                if self._stopped or not self._plan:
                    self._plan = []
                    self._lock.notify_all()
                    return
                path = self._plan.pop(0)
                self._busy = path
            presigned = None
            with contextlib.suppress(Exception):  # the fetch then signs this basis itself
                presigned = self._sign(path)
            with self._lock:
                self._busy = None
                # keep_only may have dropped it while it was being signed
                if presigned is not None and (self._wanted is None or path in self._wanted):
                    self._done[path] = presigned
                self._lock.notify_all()

    def _biggest_files(self) -> tuple[list[str], list[tuple[str, int]]]:
        fd = open_dir(self.root)
        try:
            found = [
                (st.st_size, rel, st.st_nlink)
                for rel, st in walk_files(fd)
                if stat.S_ISREG(st.st_mode)
                and st.st_size >= self._min_size
                and rel != MANIFEST_NAME
                and not rel.split("/", 1)[0].startswith(INTERNAL_PREFIX)
            ]
        finally:
            os.close(fd)
        found.sort(key=lambda each: (-each[0], each[1]))
        plan: list[str] = []
        fresh: list[tuple[str, int]] = []
        total = 0
        for size, rel, links in found[: self._max_files]:
            if total + size > self._max_bytes:
                break
            if self._compressed(rel):
                continue
            plan.append(rel)
            if links == 1:
                fresh.append((rel, size))
            total += size
        return plan, fresh

    def _open(self, path: str) -> int:
        parts = check_relative_path(path)
        root_fd = open_dir(self.root)
        try:
            with open_parent_beneath(root_fd, parts, create=False) as dir_fd:
                return os.open(parts[-1], FILE_READ, dir_fd=dir_fd)
        finally:
            os.close(root_fd)

    def _compressed(self, path: str) -> bool:
        fd = self._open(path)
        try:
            return sniff(os.pread(fd, SNIFF_SIZE, 0)) is not None
        finally:
            os.close(fd)

    def _sign(self, path: str) -> Presigned | None:
        fd = self._open(path)
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                return None
            builder = SignatureBuilder(before.st_size)
            chunks: list[bytes] = []
            try:
                for out in signed_pieces(builder, fd, before.st_size):
                    if self._stopped:
                        return None
                    chunks.append(out)
            except IntegrityError:
                return None  # it shrank: the fetch will sign what is there
            chunks.append(builder.finish())
            if file_identity(os.fstat(fd)) != file_identity(before):
                return None
            return Presigned(
                file_identity(before),
                tuple(chunks),
                builder.signature.basis_hash,
                (builder.block_size, builder.strong_len),
            )
        finally:
            os.close(fd)

    def take(self, path: str) -> Presigned | None:
        """The signature of ``path`` if it is or will soon be ready, else None (sign it)."""
        with self._lock:
            while True:
                if path in self._done:
                    return self._done.pop(path)
                if self._busy == path:
                    self._lock.wait()
                    continue
                if self._plan is None:  # still scanning (a walk, like the basis finder's)
                    self._lock.wait()
                    continue
                if path in self._plan:
                    self._plan.remove(path)
                return None

    def likeliest_changed(self) -> tuple[str, int] | None:
        """The biggest planned file with a single link, as (path, size): it was fetched on
        its day, not linked from the day before, so it changed then and likely does daily
        (a dump, a tar). None when there is none."""
        with self._lock:
            while self._plan is None:
                self._lock.wait()
            return self._fresh[0] if self._fresh else None

    def keep_only(self, paths: set[str]) -> None:
        with self._lock:
            self._wanted = paths
            if self._plan is not None:
                self._plan = [p for p in self._plan if p in paths]
            for path in [p for p in self._done if p not in paths]:
                del self._done[path]

    def close(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        self._thread.join()
