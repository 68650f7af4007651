"""The agent's request loop: the handshake, then each request to its handler, in order.

``serve`` answers one master until it says Bye, closes the stream, or breaks the protocol.
The handlers are a table by request type (as borg's ``RepositoryServer`` allowlists its
calls): what the master may ask is exactly what the table holds. A handler's ``Refusal``
becomes an ``Error`` answer and the conversation goes on; a protocol violation gets a last
``Error`` and the end. No exception escapes ``serve``: the agent runs as an SSH forced
command and must not die with a traceback on input it did not expect.

The handshake says which indicators this agent writes; a master that says it will ask for
another one is refused there, before the night's work, not at its end. Each refused write
is logged (on the peer's stderr, for an agent process) as well as answered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltastage import __version__
from deltastage.agent.conversation import Conversation, MasterGone, Refusal, clip_reason
from deltastage.agent.rootfs import RootFS
from deltastage.errors import RemoteProtocolError
from deltastage.protocol import (
    CAPABILITIES,
    DEFAULT_INDICATOR,
    PROTOCOL_VERSION,
    Bye,
    Error,
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
    ProbeRequest,
    WireEntry,
)
from deltastage.protocol.events import MAX_BATCH_ENTRIES

if TYPE_CHECKING:
    from deltastage.agent.sender import Sender
    from deltastage.delta.codec import DeltaEncoder

__all__ = ["BATCH_RAW", "serve"]

log = logging.getLogger("deltastage.agent")

BATCH_RAW = 256 << 10  # rough raw bytes of entries per ListBatch


def _names(names: Sequence[str]) -> str:
    return ", ".join(map(repr, names))


class _Server:
    def __init__(
        self,
        roots: Sequence[str | Path],
        indicators: Sequence[str],
        read: Callable[[int], bytes],
        write: Callable[[bytes], None],
        encoder: type[DeltaEncoder] | None,
    ) -> None:
        self.rootfs = RootFS(roots, indicators)
        self.conversation = Conversation(read, write)
        self._encoder = encoder
        self._sender: Sender | None = None
        self.handlers: dict[type[Event], Callable[[Any], None]] = {
            ListRequest: self.list_root,
            IndicatorQuery: self.query_indicator,
            IndicatorWrite: self.write_indicator,
            Fetch: self.fetch,
            FetchMany: self.fetch_many,
            ProbeRequest: self.probe,
        }

    def run(self) -> None:
        hello = self.conversation.next_event()
        if hello is None:
            return
        assert isinstance(hello, Hello)  # the state table admits nothing else first
        if not self.handshake(hello):
            return
        while True:
            event = self.conversation.next_event()
            if event is None or isinstance(event, Bye):
                return
            handler = self.handlers.get(type(event))
            if handler is None:  # the state table admits only requests in the idle state
                raise RemoteProtocolError(f"unexpected {type(event).__name__}")
            try:
                handler(event)
            except Refusal as refusal:
                self.conversation.send(Error(refusal.code, clip_reason(refusal.reason)))

    def handshake(self, hello: Hello) -> bool:
        if hello.protocol != PROTOCOL_VERSION:
            self.conversation.last_word(
                f"protocol version mismatch: master speaks {hello.protocol}, "
                f"agent {__version__} speaks {PROTOCOL_VERSION}"
            )
            return False
        missing = sorted(CAPABILITIES - hello.capabilities)
        if missing:
            self.conversation.last_word(
                f"master {hello.version} lacks capabilities: {', '.join(missing)}"
            )
            return False
        writes = self.rootfs.indicators
        self.conversation.send(
            HelloReply(PROTOCOL_VERSION, __version__, self.rootfs.roots, CAPABILITIES, writes)
        )
        unwritable = [name for name in hello.indicators if name not in writes]
        # a read-only agent refuses no master: it says it writes nothing, and the master
        # records its indicators on its own side
        if writes and unwritable:
            reason = (
                f"this agent writes only the indicators {_names(writes)}, not "
                f"{_names(unwritable)} (the master's stage indicator): add --indicator "
                "for it to the agent's command, or --read-only"
            )
            log.warning("refused the handshake: %s", reason)
            self.conversation.last_word(reason)
            return False
        return True

    def sender(self) -> Sender:
        if self._sender is None:
            # The first request that needs numpy and the delta core: an agent process loads
            # them on a thread while it answers the handshake and the listing (see stdio).
            from deltastage.agent.sender import Sender
            from deltastage.delta.codec import DeltaEncoder

            self._sender = Sender(self.conversation, self.rootfs, self._encoder or DeltaEncoder)
        return self._sender

    def fetch(self, request: Fetch) -> None:
        self.sender().fetch(request)

    def fetch_many(self, request: FetchMany) -> None:
        self.sender().fetch_many(request)

    def probe(self, request: ProbeRequest) -> None:
        from deltastage.agent.probe import probe_root  # only check asks: bz2 stays unloaded

        self.conversation.send(probe_root(self.rootfs, request.root))

    def list_root(self, request: ListRequest) -> None:
        batch: list[WireEntry] = []
        raw = 0
        count = 0
        for entry in self.rootfs.listing(request.root, prove=request.prove):
            batch.append(entry)
            raw += len(entry.path) + len(entry.sketch or b"") + len(entry.recipe or b"") + 40
            count += 1
            if raw >= BATCH_RAW or len(batch) >= MAX_BATCH_ENTRIES:
                self.conversation.send(ListBatch(tuple(batch)))
                batch, raw = [], 0
        if batch:
            self.conversation.send(ListBatch(tuple(batch)))
        self.conversation.send(ListEnd(count))

    def query_indicator(self, request: IndicatorQuery) -> None:
        exists = self.rootfs.indicator_exists(request.root, request.name)
        self.conversation.send(IndicatorState(exists))

    def write_indicator(self, request: IndicatorWrite) -> None:
        try:
            self.rootfs.write_indicator(request.root, request.name)
        except Refusal as refusal:
            log.warning("refused to write %r in %r: %s", request.name, request.root, refusal.reason)
            raise
        self.conversation.send(Ok())


def serve(
    roots: Sequence[str | Path],
    read: Callable[[int], bytes],
    write: Callable[[bytes], None],
    *,
    indicators: Sequence[str] = (DEFAULT_INDICATOR,),
    encoder: type[DeltaEncoder] | None = None,
) -> None:
    """Answer one master until it says Bye, closes the stream, or breaks the protocol.

    ``read(n)`` returns up to n bytes (b"" at end of stream); ``write`` sends all its bytes.
    A request names a root by the exact string given here; ``indicators`` are the only
    names it may write, empty files directly in a root (none: it writes nothing).
    ``encoder`` makes the deltas that are not refined (the delta core's unless a test's
    stand-in replaces it).
    """
    server = _Server(roots, indicators, read, write, encoder)
    try:
        server.run()
        server.conversation.flush()
    except MasterGone:
        return
    except RemoteProtocolError as exc:
        server.conversation.last_word(str(exc))
    except Exception as exc:  # never a traceback on the master's stream or the peer's log
        server.conversation.last_word(f"agent internal error: {type(exc).__name__}: {exc}")
