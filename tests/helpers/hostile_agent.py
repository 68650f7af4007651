"""A scripted agent that speaks the protocol but lies, for the hostile-peer tests.

``HostileTransport`` is a real byte pipe (a socketpair with an idle timeout, like the local
transport) whose far end is a thread playing a ``Liar``: by default an honest agent serving
``files`` from memory, with any answer replaceable by an attack. Answers are iterables, so an
attack can stream forever; the thread stops when the master hangs up. The liar is written
against the protocol's public events and ``Connection`` only; raw bytes are available for
what no honest ``Connection`` would send (``frame``).
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import zstandard

from deltastage.delta.codec import DeltaEncoder
from deltastage.delta.signature import Signature, SignatureBuilder, SignatureDecoder
from deltastage.errors import DeltastageError
from deltastage.hashing import hash_bytes
from deltastage.protocol import (
    CAPABILITIES,
    PROTOCOL_VERSION,
    Connection,
    DeltaData,
    DeltaEnd,
    Event,
    Fetch,
    FetchMany,
    Hello,
    HelloReply,
    IndicatorQuery,
    IndicatorState,
    IndicatorWrite,
    ListBatch,
    ListEnd,
    ListRequest,
    Ok,
    Role,
    SigData,
    SigEnd,
    WireEntry,
)
from deltastage.protocol.frames import encode_frame
from deltastage.transform.inflate import inflate
from deltastage.transform.search import SNIFF_SIZE, sniff
from tests.helpers.transports import AgentInThread, Answer, answer_bytes

__all__ = [
    "Answer",
    "HostileTransport",
    "Liar",
    "forged_list_batch",
    "frame",
]

RECV_CHUNK = 64 << 10


def frame(event: Event) -> bytes:
    """``event`` framed without consulting any state table (for out-of-turn messages)."""
    return encode_frame(event.TYPE, event.encode_payload(), 1 << 31)


def forged_list_batch(
    entries: Iterable[tuple[str, int, int, int]], *, count: int | None = None
) -> bytes:
    """A ListBatch frame built by hand, free of the sender-side checks on paths and counts.

    Each entry is (path, size, mtime_ns, mode) of a "file" with a zero hash, no sketch and
    no recipe; the layout mirrors ``WireEntry`` (kind u8, mode u16, size u64, mtime i64,
    path, hash, sketch length u8, recipe length u32).
    """
    body = bytearray()
    n = 0
    for path, size, mtime_ns, mode in entries:
        raw = path.encode("utf-8", "surrogateescape")
        body += struct.pack(">BHQqI", 0, mode, size, mtime_ns, len(raw)) + raw + b"\0" * 21
        n += 1
    payload = struct.pack(">I", n if count is None else count)
    payload += zstandard.ZstdCompressor().compress(bytes(body))
    return encode_frame(ListBatch.TYPE, payload, 1 << 31)


def file_entry(
    path: str,
    data: bytes,
    *,
    mode: int = 0o644,
    mtime_ns: int = 10**18,
    sketch: bytes | None = None,
    recipe: bytes | None = None,
) -> WireEntry:
    return WireEntry(path, "file", len(data), mtime_ns, mode, hash_bytes(data), sketch, recipe)


@dataclass
class Liar:
    """An agent serving ``files``; each ``on_*`` hook may be replaced to lie.

    Hooks return the answers to one request: events (sent through the agent's
    ``Connection``, so they must be legal in the conversation) or raw bytes (sent as is).
    """

    files: dict[str, bytes]
    root: str = "/collect"
    level: int = 3
    on_list: Callable[[Liar], Iterable[Answer]] | None = None
    on_fetch: Callable[[Liar, Fetch, Signature], Iterable[Answer]] | None = None
    on_hello: Callable[[Liar], Iterable[Answer]] | None = None
    indicators_written: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    # the last fetch's signature, one per basis (the hooks get the first)
    signatures: tuple[Signature, ...] = ()

    # --- honest answers, for attacks to build on -------------------------------------

    def entries(self) -> list[WireEntry]:
        return [file_entry(path, data) for path, data in sorted(self.files.items())]

    def honest_listing(self) -> list[Answer]:
        entries = self.entries()
        return [ListBatch(tuple(entries)), ListEnd(len(entries))] if entries else [ListEnd(0)]

    def delta_bytes(self, path: str, signature: Signature, *, content: bool = False) -> bytes:
        """An honest delta against the fetch's bases (``signature``: the first), of the
        file's decompressed content when the fetch asks for it."""
        data = self.files[path]
        if content:
            kind = sniff(data[:SNIFF_SIZE])
            assert kind is not None
            data = b"".join(inflate(lambda at, n: data[at : at + n], len(data), kind, 1 << 30))
        encoder = DeltaEncoder(self.signatures or (signature,), level=self.level)
        return encoder.update(data) + encoder.finish()

    def honest_delta(self, request: Fetch, signature: Signature) -> list[Answer]:
        delta = self.delta_bytes(request.path, signature, content=request.content)
        return [DeltaData(delta), DeltaEnd()]

    # --- dispatch ---------------------------------------------------------------------

    def answer(self, event: Event, signature: Signature | None) -> Iterable[Answer]:
        if isinstance(event, Hello):
            if self.on_hello is not None:
                return self.on_hello(self)
            return [
                HelloReply(PROTOCOL_VERSION, "liar", (self.root,), CAPABILITIES, ("cback.stage",))
            ]
        if isinstance(event, IndicatorQuery):
            return [IndicatorState(True)]
        if isinstance(event, IndicatorWrite):
            self.indicators_written.append(event.name)
            return [Ok()]
        if isinstance(event, ListRequest):
            return self.on_list(self) if self.on_list is not None else self.honest_listing()
        if isinstance(event, SigEnd):
            assert signature is not None and self._fetch is not None
            self.fetched.append(self._fetch.path)
            if self.on_fetch is not None:
                return self.on_fetch(self, self._fetch, signature)
            return self.honest_delta(self._fetch, signature)
        return []

    _fetch: Fetch | None = None


class HostileTransport(AgentInThread):
    """The master's end of a socketpair whose other end a ``Liar`` thread answers."""

    label = "liar"

    def __init__(self, liar: Liar, *, idle_timeout: float = 10.0) -> None:
        self.liar = liar
        self.agent_error: BaseException | None = None
        self._sig: SignatureDecoder | None = None
        super().__init__(idle_timeout=idle_timeout)

    # --- the liar's side ----------------------------------------------------------------

    def serve_end(self, sock: socket.socket) -> None:
        conn = Connection(Role.AGENT)
        try:
            while data := sock.recv(RECV_CHUNK):
                for answer in answer_bytes(conn, data, self._respond):
                    sock.sendall(answer)
        except OSError:
            pass  # the master hung up, perhaps in the middle of an endless answer
        except DeltastageError as exc:
            self.agent_error = exc  # the master sent something a liar cannot parse

    def _respond(self, event: Event) -> Iterable[Answer]:
        if isinstance(event, FetchMany):  # each file as a Fetch against no basis
            return itertools.chain.from_iterable(self._fetch_each(event))
        if isinstance(event, Fetch):
            self.liar._fetch, self._sig = event, SignatureDecoder(multi=True)
        elif isinstance(event, SigData):
            assert self._sig is not None
            self._sig.feed(event.data)
        signature = None
        if isinstance(event, SigEnd) and self._sig:
            self.liar.signatures = self._sig.results()
            signature = self.liar.signatures[0]
        return self.liar.answer(event, signature)

    def _fetch_each(self, event: FetchMany) -> Iterator[Iterable[Answer]]:
        nothing = SignatureBuilder(0)
        nothing.finish()
        for path in event.paths:
            self.liar._fetch = Fetch(event.root, path, event.level, False)
            self.liar.signatures = (nothing.signature,)
            yield self.liar.answer(SigEnd(), nothing.signature)


def endless(make: Callable[[int], Answer]) -> Iterator[Answer]:
    """``make(0), make(1), ...`` forever: a stream only the master's bounds can stop."""
    n = 0
    while True:
        yield make(n)
        n += 1
