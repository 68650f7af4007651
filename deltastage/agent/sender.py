"""A fetch, answered: decode the master's signature, then stream the file's delta against it
(a FetchMany: each of its files against no basis, one after the other).

The signature may be of several bases (up to ``MAX_BASES``); it must be of exactly those the
Fetch named. It is read to its end even when it is refused (the master sends it without
listening, and an early answer would only reach it as a broken pipe). A big file whose
request allows it (one basis) is refined around its edits (``delta.refine``: one round trip
for finer hashes of the basis); any other goes through the streaming ``DeltaEncoder``. A
file whose size or mtime changed while it was read is answered ``changed``, never sent as
it was.

A fetch of ``content`` sends the delta of a compressed file's decompressed content
(``agent.compressed``); refined like a file's when its request allows it and the content is
at most ``MAX_REFINED_CONTENT`` (held in memory: the refinement reads it where it likes).

A sparse file's holes are never read (``holes.read_sparse``): a big one goes out as a zero
run (``DeltaEncoder.zeros``), with a block of zeros either side of it still matched, so a
basis block that is part data, part hole is still copied; a small one is matched as zeros
from a shared buffer. A file with a big hole is not refined: refinement matches the file
through ``read_at`` (which makes a small hole's zeros rather than reading them), and would
send a big hole as copies of zero blocks.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable

from deltastage.agent.compressed import content_pieces
from deltastage.agent.conversation import Conversation, MasterGone, Refusal, clip_reason
from deltastage.agent.rootfs import RootFS, same_content
from deltastage.delta.codec import DeltaEncoder
from deltastage.delta.refine import ReadAt, refined_delta
from deltastage.delta.signature import Signature, SignatureBuilder, SignatureDecoder
from deltastage.errors import (
    DeltaFormatError,
    DeltastageError,
    RemoteProtocolError,
    ResourceLimitError,
)
from deltastage.hashing import zero_pieces
from deltastage.holes import pread_sparse, read_listed, segments
from deltastage.protocol import (
    REFINE_MIN_BLOCK,
    Cancel,
    DeltaData,
    DeltaEnd,
    Error,
    ErrorCode,
    Fetch,
    FetchMany,
    RefineRequest,
    SigData,
    SigEnd,
)
from deltastage.protocol.events import MAX_REFINE_BLOCKS

__all__ = [
    "DATA_FRAME",
    "HOLE_RUN_MIN",
    "MAX_BASIS_SIZE",
    "MAX_REFINED_CONTENT",
    "MAX_SIGNATURE_BLOCKS",
    "Sender",
]

DATA_FRAME = 256 << 10  # bytes of delta per DeltaData frame, well under the frame limit
# Bounds on the master's signature: 2^40 bytes of basis in at most 2^22 blocks (the fine
# signature of a refinement is held to the same count).
MAX_BASIS_SIZE = 1 << 40
MAX_SIGNATURE_BLOCKS = 1 << 22
# A hole goes out as a zero run when this much of it lies beyond the block matched on
# either side; a shorter one is cheaper matched as zeros than as a break in the matching.
HOLE_RUN_MIN = 1 << 20
# A compressed file's content is refined only up to this size: refinement reads it where it
# likes, so it is held in memory (a bigger one streams, unrefined).
MAX_REFINED_CONTENT = 128 << 20


@functools.cache
def _no_basis() -> Signature:
    """The signature of no basis, what a FetchMany's files are sent against."""
    builder = SignatureBuilder(0)
    builder.finish()
    return builder.signature


class Sender:
    """Answers Fetch requests from files beneath the roots."""

    def __init__(
        self,
        conversation: Conversation,
        rootfs: RootFS,
        encoder: type[DeltaEncoder] = DeltaEncoder,
    ) -> None:
        self.conversation = conversation
        self.rootfs = rootfs
        self.encoder = encoder

    def fetch(self, request: Fetch) -> None:
        signatures = self._signatures(request)
        if signatures is not None:
            fd = self.rootfs.open_file(request.root, request.path)
            self._send_file(request, signatures, fd)

    def fetch_many(self, request: FetchMany) -> None:
        """Each path against no basis, in turn: a file that cannot be sent gets its own
        Error answer, and the next one follows (every one, when the root cannot be
        opened). Its directories are opened once for the request (``files_beneath``)."""
        nothing = _no_basis()
        answered = 0
        try:
            with self.rootfs.files_beneath(request.root) as open_file:
                for path in request.paths:
                    try:
                        fetch = Fetch(request.root, path, request.level, False)
                        self._send_file(fetch, (nothing,), open_file(path))
                    except Refusal as refusal:
                        self._refuse(refusal)
                    answered += 1
        except Refusal as refusal:  # the root itself
            for _ in request.paths[answered:]:
                self._refuse(refusal)

    def _refuse(self, refusal: Refusal) -> None:
        self.conversation.send(Error(refusal.code, clip_reason(refusal.reason)))

    def _signatures(self, request: Fetch) -> tuple[Signature, ...] | None:
        """The request's signature, one per basis, or None when the master withdrew it
        (Cancel)."""
        decoder = SignatureDecoder(
            max_blocks=MAX_SIGNATURE_BLOCKS, max_basis_size=MAX_BASIS_SIZE, multi=True
        )
        problem: Refusal | None = None
        fatal: str | None = None
        while True:
            event = self.conversation.next_event()
            if event is None:
                raise MasterGone("stream ended inside a fetch")
            if isinstance(event, Cancel):
                return None
            if isinstance(event, SigEnd):
                break
            assert isinstance(event, SigData)  # the state table admits nothing else here
            if problem is None and fatal is None:
                try:
                    decoder.feed(event.data)
                except ResourceLimitError as exc:
                    problem = Refusal(ErrorCode.LIMIT, f"signature: {exc}")
                except DeltastageError as exc:
                    fatal = f"malformed signature: {exc}"
        if fatal is None and problem is None and not decoder.done:
            fatal = "malformed signature: stream ended early"
        if fatal is not None:
            raise RemoteProtocolError(fatal)
        if problem is not None:
            raise problem
        try:
            signatures = decoder.results()
        except DeltaFormatError as exc:
            raise RemoteProtocolError(f"malformed signature: {exc}") from None
        sizes = tuple(sig.basis_size for sig in signatures)
        if sizes != request.basis_sizes:
            raise RemoteProtocolError(
                f"the signature is of bases of {list(sizes)} bytes, "
                f"its Fetch named {list(request.basis_sizes)}"
            )
        return signatures

    def _send_file(self, request: Fetch, signatures: tuple[Signature, ...], fd: int) -> None:
        """Answer ``request`` from ``fd``, the file open for reading (closed here)."""
        try:
            before = os.fstat(fd)

            def read_at(offset: int, n: int) -> bytes:
                return pread_sparse(fd, n, offset)

            # literals go raw into the connection's zstd stream, which also sees every
            # earlier file of the session (see protocol.stream)
            self.conversation.connection.compress_deltas(request.level)
            (signature, *others) = signatures
            refinable = request.refine and not others and signature.block_size >= REFINE_MIN_BLOCK
            refined = None
            pieces: Iterable[bytes | int]
            if request.content:
                held = _held_content(fd, before.st_size, request.path) if refinable else None
                if held is not None:
                    refined = self._refined(signature, len(held), lambda at, n: held[at : at + n])
                pieces = (
                    [held] if held is not None else content_pieces(fd, before.st_size, request.path)
                )
            else:
                if refinable and not _has_hole_run(fd, before.st_size, signature.block_size):
                    refined = self._refined(signature, before.st_size, read_at)
                # the size seen first bounds the read: a file that keeps growing ends
                pieces = read_listed(fd, before)
            if refined is not None:
                delta, offset = refined
                self._send_delta(delta)
            else:
                offset = self._stream_delta(pieces, signatures)
            if request.content:
                offset = before.st_size  # every member was read to its end
            after = os.fstat(fd)
        except OSError as exc:
            raise Refusal.io(request.path, exc) from None
        finally:
            os.close(fd)
        if offset != before.st_size or not same_content(before, after):
            raise Refusal(
                ErrorCode.CHANGED,
                f"{request.path}: changed while read (size {before.st_size} -> {after.st_size})",
            )
        self.conversation.send(DeltaEnd())

    def _refined(
        self, signature: Signature, size: int, read_at: ReadAt
    ) -> tuple[bytes, int] | None:
        """``refined_delta`` of ``size`` bytes read through ``read_at``, asking the master
        for the fine hashes."""
        return refined_delta(
            signature, size, read_at, self._fine_hashes, max_blocks=MAX_SIGNATURE_BLOCKS
        )

    def _fine_hashes(
        self, block_size: int, strong_len: int, ranges: tuple[tuple[int, int], ...]
    ) -> bytes:
        """The master's hashes of the basis blocks in ``ranges`` (b"": it declined)."""
        request = RefineRequest(block_size, strong_len, ranges)
        if request.n_blocks > MAX_REFINE_BLOCKS:
            return b""  # more than one request may ask for: the coarse delta must do
        self.conversation.send(request)
        data = self.conversation.refine_reply().data
        if data and len(data) != request.n_blocks * (4 + strong_len):
            raise RemoteProtocolError(
                f"refinement reply has {len(data)} bytes for {request.n_blocks} blocks"
            )
        return data

    def _stream_delta(
        self, pieces: Iterable[bytes | int], signatures: tuple[Signature, ...]
    ) -> int:
        """Stream the delta of ``pieces`` (data, or the length of a hole); return the bytes
        covered (read, or known to be holes)."""
        encoder = self.encoder(signatures, level=0)
        pad = signatures[0].block_size  # the same for every basis
        pending = bytearray()
        offset = 0
        for piece in pieces:
            if isinstance(piece, int):
                offset += piece
                if piece - 2 * pad >= HOLE_RUN_MIN:
                    pending += _encode_zeros(encoder, pad)
                    pending += encoder.zeros(piece - 2 * pad)
                    pending += _encode_zeros(encoder, pad)
                else:
                    pending += _encode_zeros(encoder, piece)
            else:
                offset += len(piece)
                pending += encoder.update(piece)
            if len(pending) >= DATA_FRAME:
                self._send_delta(pending)
                pending = bytearray()
        pending += encoder.finish()
        self._send_delta(pending)
        return offset

    def _send_delta(self, data: bytes | bytearray) -> None:
        for start in range(0, len(data), DATA_FRAME):
            self.conversation.send(DeltaData(bytes(data[start : start + DATA_FRAME])))


def _held_content(fd: int, size: int, path: str) -> bytes | None:
    """The decompressed content of the open file, held in memory to be refined (the
    refinement reads it where it likes); None when it is over ``MAX_REFINED_CONTENT``."""
    held = bytearray()
    for piece in content_pieces(fd, size, path):
        held += piece
        if len(held) > MAX_REFINED_CONTENT:
            return None
    return bytes(held)


def _has_hole_run(fd: int, size: int, block_size: int) -> bool:
    """Whether the file has a hole that ``_stream_delta`` sends as a zero run."""
    return any(
        not is_data and stop - start - 2 * block_size >= HOLE_RUN_MIN
        for start, stop, is_data in segments(fd, 0, size)
    )


def _encode_zeros(encoder: DeltaEncoder, count: int) -> bytes:
    """``count`` zero bytes matched like data, from the shared buffer (never read)."""
    return b"".join(encoder.update(piece) for piece in zero_pieces(count))
