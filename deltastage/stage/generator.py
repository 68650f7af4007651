"""The generator: each fetch's request, its basis's signature made as it is sent (or taken
from the presigner), with the basis and the temp file the answer will be patched into.

It also guesses: the likeliest changed big file is requested before the listing says it
changed, and the guess is handed to the job it turns out to be.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from deltastage.delta.signature import SignatureBuilder
from deltastage.errors import IntegrityError, UnsafePathError
from deltastage.hashing import READ_CHUNK
from deltastage.master.pipeline import FetchRequest
from deltastage.safefs import FILE_CREATE, DirCache
from deltastage.stage.basis import Basis, BasisOpener
from deltastage.stage.peerdir import temp_name
from deltastage.stage.plan import Job
from deltastage.stage.presign import Presigner, file_identity

__all__ = ["RequestGenerator", "Transfer", "adopt"]


class Transfer:
    """A fetch prepared: its basis, its temp file, its request (the signature goes with it)."""

    def __init__(self, job: Job, tmp: str, dir_fd: int, basis_fd: int) -> None:
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


class RequestGenerator:
    """Prepares the fetches of one attempt beneath the peer dir's ``dirs``."""

    def __init__(self, dirs: DirCache, bases: BasisOpener, presigner: Presigner | None) -> None:
        self._dirs = dirs
        self._bases = bases
        self._presigner = presigner

    def prepare(self, job: Job) -> Transfer:
        """Open the job's basis (per its plan) and a temp file; the request's signature is
        made as it is sent, unless the presigner made it already."""
        bases, strong_len = job.plan
        basis = bases[0] if bases else None  # a fetch has one basis until the protocol takes more
        dir_fd = self._dirs.parent_of(job.parts)
        basis_fd = self._bases.open(basis) if basis is not None else -1
        transfer = Transfer(job, temp_name(), dir_fd, basis_fd)
        try:
            transfer.out_fd = os.open(transfer.tmp, FILE_CREATE, 0o600, dir_fd=dir_fd)
            basis_stat = os.fstat(basis_fd) if basis_fd >= 0 else None
            transfer.basis_size = basis_stat.st_size if basis_stat is not None else 0
            builder = SignatureBuilder(transfer.basis_size, strong_len=strong_len)
            presigned = None
            if (
                self._presigner is not None
                and basis is not None
                and basis_stat is not None
                and strong_len is None
                and basis.root == self._presigner.root
            ):
                presigned = self._presigner.take(basis.path)
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

    def guess(self, unread_capacity: int) -> Transfer | None:
        """The fetch of the likeliest changed big file, before the listing says it changed.

        Its signature is ready (presigned) and crosses the link while the peer lists, and
        the peer matches it right after: its delta starts a round trip and a listing
        earlier. Only for a file fetched (not linked) on its own day, and with a signature
        small enough to wait unread (``unread_capacity``) behind the survey. Not used
        (unchanged, gone) it costs the peer one pass over the file and the link its
        signature.
        """
        if self._presigner is None:
            return None
        likeliest = self._presigner.likeliest_changed()
        if likeliest is None:
            return None
        path, size = likeliest
        if SignatureBuilder(size).encoded_size > unread_capacity:
            return None
        try:
            return self.prepare(
                Job.guess(Basis(self._presigner.root, path, "previous", size, None))
            )
        except (IntegrityError, UnsafePathError, OSError):
            return None  # the ordinary fetch will sign and request it, or report it


def adopt(guessed: Transfer, jobs: list[Job]) -> None:
    """The guessed fetch becomes the first transfer of the job it turned out to be (taken
    out of ``jobs``); no job wants it as it is, it stays a guess (read and dropped)."""
    (wanted,), _ = guessed.job.plan
    if not guessed.signed:  # withdrawn: the job signs and requests its file itself
        return
    for index, job in enumerate(jobs):
        bases, strong_len = job.plan
        if (
            len(bases) == 1
            and strong_len is None
            and (bases[0].root, bases[0].path) == (wanted.root, wanted.path)
            and job.entry.path == guessed.job.entry.path
        ):
            del jobs[index]
            job.fresh = False
            guessed.job = job
            return
