"""A fetch, answered: decode the master's signature, then stream the file's delta against it
(a FetchMany: each of its files against no basis, one after the other).

The signature may be of several bases (up to ``MAX_BASES``); it must be of exactly those the
Fetch named. It is read to its end even when it is refused (the master sends it without
listening, and an early answer would only reach it as a broken pipe). A big file whose
request allows it (one basis) is refined around its edits (``delta.refine``: one round trip
for finer hashes of the basis); any other goes through the streaming ``DeltaEncoder``. A
file whose size or mtime changed while it was read is answered ``changed``, never sent as
it was.
"""

from __future__ import annotations

import functools
import os

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
from deltastage.hashing import READ_CHUNK
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

__all__ = ["DATA_FRAME", "MAX_BASIS_SIZE", "MAX_SIGNATURE_BLOCKS", "Sender"]

DATA_FRAME = 256 << 10  # bytes of delta per DeltaData frame, well under the frame limit
# Bounds on the master's signature: 2^40 bytes of basis in at most 2^22 blocks (the fine
# signature of a refinement is held to the same count).
MAX_BASIS_SIZE = 1 << 40
MAX_SIGNATURE_BLOCKS = 1 << 22


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
            self._send_file(request, signatures)

    def fetch_many(self, request: FetchMany) -> None:
        """Each path against no basis, in turn: a file that cannot be sent gets its own
        Error answer, and the next one follows."""
        nothing = _no_basis()
        for path in request.paths:
            try:
                self._send_file(Fetch(request.root, path, request.level, False), (nothing,))
            except Refusal as refusal:
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

    def _send_file(self, request: Fetch, signatures: tuple[Signature, ...]) -> None:
        fd = self.rootfs.open_file(request.root, request.path)
        try:
            before = os.fstat(fd)

            def read_at(offset: int, n: int) -> bytes:
                return os.pread(fd, n, offset)

            # literals go raw into the connection's zstd stream, which also sees every
            # earlier file of the session (see protocol.stream)
            self.conversation.connection.compress_deltas(request.level)
            refined = None
            (signature, *others) = signatures
            if request.refine and not others and signature.block_size >= REFINE_MIN_BLOCK:
                refined = refined_delta(
                    signature,
                    before.st_size,
                    read_at,
                    self._fine_hashes,
                    max_blocks=MAX_SIGNATURE_BLOCKS,
                )
            if refined is not None:
                delta, offset = refined
                self._send_delta(delta)
            else:
                offset = self._stream_delta(read_at, before.st_size, signatures)
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

    def _stream_delta(self, read_at: ReadAt, size: int, signatures: tuple[Signature, ...]) -> int:
        """Stream the delta of the file's first ``size`` bytes; return the bytes read."""
        encoder = self.encoder(signatures, level=0)
        pending = bytearray()
        offset = 0
        # the size seen first bounds the read: a file that keeps growing still ends
        while offset < size and (chunk := read_at(offset, min(READ_CHUNK, size - offset))):
            offset += len(chunk)
            pending += encoder.update(chunk)
            if len(pending) >= DATA_FRAME:
                self._send_delta(pending)
                pending = bytearray()
        pending += encoder.finish()
        self._send_delta(pending)
        return offset

    def _send_delta(self, data: bytes | bytearray) -> None:
        for start in range(0, len(data), DATA_FRAME):
            self.conversation.send(DeltaData(bytes(data[start : start + DATA_FRAME])))
