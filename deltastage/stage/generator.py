"""The generator: each fetch's request, its basis's signature made as it is sent (or taken
from the presigner), with the basis and the temp file the answer will be patched into.

A fetch of a file's content (``Job.content``) signs its bases' contents (``stage.content``;
refined from them too), never presigned, and carries the recipe the receiver rebuilds the
file with; when none of its bases is left, it is an ordinary fetch without a basis.

It also guesses: the likeliest changed big file is requested before the listing says it
changed, and the guess is handed to the job it turns out to be.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from deltastage.delta.signature import MultiSignatureBuilder, SignatureBuilder
from deltastage.errors import IntegrityError, UnsafePathError
from deltastage.master.pipeline import FetchRequest
from deltastage.safefs import DirCache, create_private
from deltastage.stage.basis import Basis, BasisOpener
from deltastage.stage.content import ContentBases
from deltastage.stage.peerdir import temp_name
from deltastage.stage.plan import Job
from deltastage.stage.presign import Presigner, file_identity, signed_pieces
from deltastage.transform.recipe import Recipe, decode_recipe

__all__ = ["SMALL_FILE", "RequestGenerator", "Transfer", "adopt"]

# A fetched file listed with at most this many bytes is received into memory (its temp file
# made by the committer); a bigger one, or one that grows past it, into its temp file.
SMALL_FILE = 16 << 10


class Transfer:
    """A fetch prepared: its bases, its temp file (``tmp`` in the job's dir of ``dirs``), its
    request (the signature goes with it).

    No basis is one empty basis, as the signature and the patch have it."""

    def __init__(self, job: Job, tmp: str, dirs: DirCache) -> None:
        self.job = job
        self.tmp = tmp
        self._dirs = dirs
        self.basis_fds: list[int] = []
        self.out_fd = -1
        self.basis_sizes: tuple[int, ...] = (0,)
        self.basis_hashes: tuple[bytes, ...] = ()
        self.signed = False  # its signature was produced whole
        self.request = FetchRequest(job.entry.path, (), 0, 0)
        # a fetch of content: the recipe that rebuilds the file, and the temp space its
        # decompressed bases hold until its fds are closed
        self.recipe: Recipe | None = None
        self._content_bases: ContentBases | None = None
        self._reserved = 0

    def readers(self) -> list[Callable[[int, int], bytes]]:
        """One ``read_at(offset, n)`` per basis, in the signature's order."""
        if not self.basis_fds:
            return [lambda offset, n: b""]
        return [_reader(fd) for fd in self.basis_fds]

    def close_fds(self) -> None:
        for fd in (self.out_fd, *self.basis_fds):
            if fd >= 0:
                os.close(fd)
        self.out_fd = -1
        self.basis_fds = []
        if self._content_bases is not None and self._reserved:
            self._content_bases.release(self._reserved)
        self._reserved = 0

    def add_content_basis(self, contents: ContentBases, fd: int, content_size: int) -> bool:
        """Add the content of the compressed basis open at ``fd`` (closed here); False
        when it could not be had (see ``ContentBases.open``)."""
        try:
            content_fd = contents.open(fd, content_size)
        finally:
            os.close(fd)
        if content_fd is None:
            return False
        self._content_bases = contents
        self._reserved += content_size
        self.basis_fds.append(content_fd)
        return True

    def directory(self) -> AbstractContextManager[int]:
        """The lease of the dir its temp file is in."""
        return self._dirs.parent(self.job.parts)

    def create_output(self) -> None:
        """Create the temp file the answer is patched into."""
        with self.directory() as dir_fd:
            self.out_fd = create_private(dir_fd, self.tmp)

    def discard(self) -> None:
        """Close it and remove its temp file (nothing was kept of it)."""
        had_file = self.out_fd >= 0
        self.close_fds()
        if had_file:
            with contextlib.suppress(FileNotFoundError), self.directory() as dir_fd:
                os.unlink(self.tmp, dir_fd=dir_fd)


def _reader(fd: int) -> Callable[[int, int], bytes]:
    def read_at(offset: int, n: int) -> bytes:
        return os.pread(fd, n, offset)

    return read_at


class RequestGenerator:
    """Prepares the fetches of one attempt beneath the peer dir's ``dirs``."""

    def __init__(
        self,
        dirs: DirCache,
        bases: BasisOpener,
        presigner: Presigner | None,
        contents: ContentBases,
    ) -> None:
        self._dirs = dirs
        self._bases = bases
        self._presigner = presigner
        self._contents = contents

    def prepare(self, job: Job) -> Transfer:
        """Open the job's bases (per its plan) and a temp file; the request's signature is
        made as it is sent, unless the presigner made it already (without a basis, it is
        the one signature of nothing)."""
        bases, strong_len = job.plan
        transfer = Transfer(job, temp_name(), self._dirs)
        content = job.content
        try:
            for basis in bases:
                try:
                    fd = self._bases.open(basis)
                except FileNotFoundError:
                    continue  # removed since its day's manifest was written: one basis less
                if content and basis.content_size is not None:
                    transfer.add_content_basis(self._contents, fd, basis.content_size)
                else:
                    transfer.basis_fds.append(fd)
            if job.entry.size > SMALL_FILE:
                # a small file is received into memory, and written by the committer with
                # the rest of its batch (``receiver``)
                transfer.create_output()
            if not transfer.basis_fds:
                # no basis (or none left): the one signature of nothing
                encoded, block_size, empty_hash = _no_basis(strong_len)
                transfer.basis_hashes = (empty_hash,)
                transfer.signed = True
                transfer.request = FetchRequest(
                    job.entry.path, (encoded,), len(encoded), block_size, plain=strong_len is None
                )
                return transfer
            stats = [os.fstat(fd) for fd in transfer.basis_fds]
            if stats:
                transfer.basis_sizes = tuple(st.st_size for st in stats)
            new_size = job.entry.size
            if content:
                assert job.entry.recipe is not None
                transfer.recipe = decode_recipe(job.entry.recipe)
                new_size = transfer.recipe.content_size
            # sized for the new file too: a small one cannot use most blocks of big bases
            builder = MultiSignatureBuilder(
                transfer.basis_sizes, strong_len=strong_len, new_size=new_size
            )
            presigned = None
            if (
                not content
                and self._presigner is not None
                and len(bases) == len(stats) == 1
                and strong_len is None
                and bases[0].root == self._presigner.root
            ):
                presigned = self._presigner.take(bases[0].path)
                if presigned is not None and (
                    presigned.identity != file_identity(stats[0])
                    or presigned.params != (builder.block_size, builder.strong_len)
                ):
                    presigned = None
            fds = transfer.basis_fds

            def signature_chunks() -> Iterator[bytes]:
                if presigned is not None:
                    transfer.basis_hashes = (presigned.basis_hash,)
                    yield from presigned.chunks
                    transfer.signed = True
                    return
                for fd, size in zip(fds or [-1], transfer.basis_sizes, strict=True):
                    yield from signed_pieces(builder, fd, size)
                    if out := builder.end_basis():
                        yield out
                if out := builder.finish():
                    yield out
                transfer.basis_hashes = tuple(sig.basis_hash for sig in builder.signatures)
                transfer.signed = True

            single = len(fds) == 1
            transfer.request = FetchRequest(
                job.entry.path,
                signature_chunks(),
                builder.encoded_size,
                builder.block_size,
                transfer.readers()[0] if single else None,
                transfer.basis_sizes,
                content=content,
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


@functools.cache
def _no_basis(strong_len: int | None) -> tuple[bytes, int, bytes]:
    """The signature of no basis (encoded, its block size, the empty basis's hash): the
    same for every fetch without one, so it is made once."""
    builder = MultiSignatureBuilder((0,), strong_len=strong_len)
    encoded = builder.end_basis() + builder.finish()
    return encoded, builder.block_size, builder.signatures[0].basis_hash


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
            and not job.content
            and (bases[0].root, bases[0].path) == (wanted.root, wanted.path)
            and job.entry.path == guessed.job.entry.path
        ):
            del jobs[index]
            job.fresh = False
            guessed.job = job
            return
