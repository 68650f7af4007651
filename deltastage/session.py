"""The master's end of a conversation with one agent, driven over any ``Transport``.

``PeerSession`` turns requests into protocol messages and the agent's answers into values
or exceptions from the error tree. It trusts nothing the agent says: every listed path is
checked, counts are bounded, and a listing that contradicts itself is refused.

Errors that leave the conversation in a known state (the agent's ``Error`` answers, other
than ``protocol``) keep the session usable. A ``TransportError`` or ``ProtocolError``, or an
agent that breaks its own listing, kills it: the transport is closed and every later call
raises ``ConnectionClosed``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Generator, Iterable, Iterator

from deltastage import __version__
from deltastage.errors import (
    ConnectionClosed,
    DeltastageError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    ResourceLimitError,
    SourceChangedError,
    TransportError,
    UnsafePathError,
)
from deltastage.models import AgentInfo, RemoteEntry
from deltastage.protocol import (
    CAPABILITIES,
    EOF,
    MAX_FRAME,
    NEED_DATA,
    PROTOCOL_VERSION,
    Bye,
    Cancel,
    Connection,
    DeltaData,
    DeltaEnd,
    Error,
    ErrorCode,
    Event,
    Fetch,
    Hello,
    HelloReply,
    IndicatorQuery,
    IndicatorState,
    IndicatorWrite,
    ListBatch,
    ListEnd,
    ListRequest,
    Ok,
    RefineReply,
    RefineRequest,
    Role,
    SigData,
    SigEnd,
    State,
)
from deltastage.protocol.paths import check_name, split_relative
from deltastage.transports.base import Transport

__all__ = ["AgentError", "PeerSession"]

RECV_CHUNK = 256 << 10
SIG_FRAME = 256 << 10  # bytes of signature per SigData frame
_REFINE_READ = 4 << 20  # basis bytes read and hashed at a time for a refinement
_SIG_HEAD = 20  # bytes of an encoded signature up to and including the basis size
SEND_BATCH = 64 << 10  # request bytes gathered before a write to the agent


class AgentError(RemoteProtocolError):
    """The agent answered a request with an error (``code`` names which kind)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"agent: {reason}")
        self.code = code


def _agent_error(error: Error, *, fetching: bool = False) -> DeltastageError:
    """The exception for an agent's Error answer."""
    code = error.code
    if code is ErrorCode.CHANGED or (fetching and code is ErrorCode.NOT_FOUND):
        # a file the listing showed has changed or vanished since
        return SourceChangedError(f"agent: {error.reason}")
    if code is ErrorCode.UNSAFE_PATH:
        return UnsafePathError(f"agent: {error.reason}")
    if code is ErrorCode.LIMIT:
        return ResourceLimitError(f"agent: {error.reason}")
    return AgentError(code.value, error.reason)


class PeerSession:
    """A conversation with one agent. Not thread-safe; one request at a time."""

    def __init__(
        self,
        transport: Transport,
        *,
        max_entries: int = 1_000_000,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self._transport = transport
        self._conn = Connection(Role.MASTER, max_frame=max_frame)
        self._max_entries = max_entries
        self._dead: str | None = None
        self._closed = False
        self._fetch: Generator[bytes, None, None] | None = None
        self._out = bytearray()
        self._basis_size: int | None = None
        self._sig_block_size = 0
        self.info: AgentInfo | None = None

    @property
    def wire_bytes(self) -> int:
        return self._transport.wire_bytes

    @property
    def transport(self) -> Transport:
        return self._transport

    # --- plumbing -------------------------------------------------------------------------

    def _die(self, reason: str) -> None:
        if self._dead is None:
            self._dead = reason
        with contextlib.suppress(DeltastageError):
            self._transport.close()

    def _ready(self) -> None:
        """Refuse a dead session; finish an abandoned fetch so the next request can start."""
        if self._closed:
            raise ConnectionClosed("session already closed")
        if self._dead is not None:
            raise ConnectionClosed(f"session unusable after an earlier failure: {self._dead}")
        if self._fetch is not None:
            if inspect.getgeneratorstate(self._fetch) == inspect.GEN_RUNNING:
                raise LocalProtocolError("a fetch is in progress; finish or close it first")
            self._fetch.close()  # drains the rest of its delta (see _fetch_stream)
            self._fetch = None
            if self._dead is not None:
                raise ConnectionClosed(f"session unusable after an earlier failure: {self._dead}")

    def _send(self, event: Event) -> None:
        # Requests are gathered and written before the next wait for an answer: a small
        # file's Fetch, SigData and SigEnd then cross the WAN as one SSH packet.
        try:
            self._out += self._conn.send(event)
            if len(self._out) >= SEND_BATCH:
                self._flush()
        except (TransportError, ProtocolError) as exc:
            self._die(str(exc))
            raise

    def _flush(self) -> None:
        if self._out:
            data, self._out = bytes(self._out), bytearray()
            self._transport.send(data)

    def _receive(self) -> Event:
        try:
            self._flush()
            while True:
                event = self._conn.next_event()
                if event is NEED_DATA:
                    self._conn.receive_data(self._transport.recv(RECV_CHUNK))
                elif event is EOF:
                    raise ConnectionClosed("the agent closed the connection")
                else:
                    assert isinstance(event, Event)
                    if isinstance(event, Error) and event.code is ErrorCode.PROTOCOL:
                        raise RemoteProtocolError(f"agent ended the conversation: {event.reason}")
                    return event
        except (TransportError, ProtocolError) as exc:
            self._die(str(exc))
            raise

    def _violation(self, exc: DeltastageError) -> DeltastageError:
        """The agent broke its own answer: the conversation cannot be trusted any further."""
        self._die(str(exc))
        return exc

    # --- requests -------------------------------------------------------------------------

    def handshake(self) -> AgentInfo:
        self._ready()
        self._send(Hello(PROTOCOL_VERSION, __version__, CAPABILITIES))
        reply = self._receive()
        assert isinstance(reply, HelloReply)  # the state table admits nothing else here
        if reply.protocol != PROTOCOL_VERSION:
            raise self._violation(
                RemoteProtocolError(
                    f"protocol version mismatch: master {__version__} speaks {PROTOCOL_VERSION}, "
                    f"agent {reply.version} speaks {reply.protocol}"
                )
            )
        missing = sorted(CAPABILITIES - reply.capabilities)
        if missing:
            raise self._violation(
                RemoteProtocolError(f"agent {reply.version} lacks capabilities: {missing}")
            )
        self.info = AgentInfo(reply.version, reply.protocol, reply.roots, reply.capabilities)
        return self.info

    def list_files(self, root: str) -> list[RemoteEntry]:
        """Every file, symlink and special file under ``root``; directories are implied."""
        self._ready()
        self._send(ListRequest(root))
        entries: list[RemoteEntry] = []
        paths: set[str] = set()
        while True:
            event = self._receive()
            if isinstance(event, Error):
                raise _agent_error(event)
            if isinstance(event, ListEnd):
                if event.count != len(entries):
                    raise self._violation(
                        RemoteProtocolError(
                            f"listing count mismatch: agent said {event.count}, sent {len(entries)}"
                        )
                    )
                self._check_tree(paths)
                return entries
            assert isinstance(event, ListBatch)
            if not event.entries:
                # an honest agent never sends one; endless empty batches would never end
                raise self._violation(RemoteProtocolError("agent sent an empty listing batch"))
            if len(entries) + len(event.entries) > self._max_entries:
                raise self._violation(
                    ResourceLimitError(f"{root}: more than {self._max_entries} entries")
                )
            for wire in event.entries:
                try:
                    split_relative(wire.path)
                except UnsafePathError as exc:
                    raise self._violation(exc) from None
                if wire.path in paths:
                    raise self._violation(RemoteProtocolError(f"listing names {wire.path!r} twice"))
                paths.add(wire.path)
                entries.append(
                    RemoteEntry(
                        wire.path, wire.kind, wire.size, wire.mtime_ns, wire.mode, wire.xxh3_128
                    )
                )

    def _check_tree(self, paths: set[str]) -> None:
        """No listed name may also be a directory of another (it could not be staged)."""
        for path in paths:
            parent, sep, _ = path.rpartition("/")
            while sep:
                if parent in paths:
                    raise self._violation(
                        UnsafePathError(f"listing has {parent!r} as both a file and a directory")
                    )
                parent, sep, _ = parent.rpartition("/")

    def indicator_exists(self, root: str, name: str) -> bool:
        check_name(name)
        self._ready()
        self._send(IndicatorQuery(root, name))
        event = self._receive()
        if isinstance(event, Error):
            raise _agent_error(event)
        assert isinstance(event, IndicatorState)
        return event.exists

    def write_indicator(self, root: str, name: str) -> None:
        check_name(name)
        self._ready()
        self._send(IndicatorWrite(root, name))
        event = self._receive()
        if isinstance(event, Error):
            raise _agent_error(event)
        assert isinstance(event, Ok)

    def fetch(
        self,
        root: str,
        path: str,
        signature: Iterable[bytes],
        *,
        level: int = 3,
        basis: Callable[[int, int], bytes] | None = None,
    ) -> Iterator[bytes]:
        """Send the encoded signature stream, then yield the encoded delta stream.

        ``basis(offset, n)`` reads the basis the signature was made from: with it the agent
        may ask for finer block hashes of the parts its delta could not copy (a few KiB
        that save most of a coarse block of literal per edit); without it, that is declined.

        Nothing is sent until the first ``next()``. A fetch abandoned half way is drained
        when the generator is closed or when the next request starts, so the session stays
        usable after the caller gave up on one file.
        """
        split_relative(path)
        self._ready()
        stream = self._fetch_stream(Fetch(root, path, level), signature, basis)
        self._fetch = stream
        return stream

    def _fetch_stream(
        self,
        request: Fetch,
        signature: Iterable[bytes],
        basis: Callable[[int, int], bytes] | None,
    ) -> Generator[bytes, None, None]:
        finished = False
        started = False
        try:
            self._send(request)
            self._send_signature(signature)
            self._send(SigEnd())
            while True:
                event = self._receive()
                if isinstance(event, RefineRequest):
                    if started:
                        raise self._violation(
                            RemoteProtocolError("agent asked for refinement after delta data")
                        )
                    self._send(RefineReply(self._refine(event, basis)))
                    continue
                if isinstance(event, DeltaData):
                    started = True
                    if not event.data:
                        # endless empty frames would make no progress and never hit a bound
                        raise self._violation(
                            RemoteProtocolError("agent sent an empty delta frame")
                        )
                    yield event.data
                elif isinstance(event, DeltaEnd):
                    finished = True
                    return
                else:
                    assert isinstance(event, Error)
                    finished = True
                    raise _agent_error(event, fetching=True)
        finally:
            # an abandoned delta is read to its end so the next request finds the agent idle
            if not finished and self._dead is None and self._conn.state is State.SENDING_DELTA:
                self._drain_delta()
            self._fetch = None

    def _refine(self, request: RefineRequest, basis: Callable[[int, int], bytes] | None) -> bytes:
        """The requested blocks' hashes, read from the basis; b"" declines.

        What an agent may ask is bounded: blocks no larger than the signature's, inside the
        basis, in increasing disjoint ranges, so the master reads each basis byte at most
        once, a few MiB at a time.
        """
        from deltastage.delta import signature_of

        size, coarse, bs = self._basis_size, self._sig_block_size, request.block_size
        if basis is None or size is None:
            return b""
        n_blocks = -(-size // bs)
        previous_end = 0
        for first, count in request.ranges:
            if first < previous_end or first + count > n_blocks or bs > coarse:
                raise self._violation(
                    RemoteProtocolError(
                        f"agent asked for overlapping, oversized or out-of-basis blocks "
                        f"({first}+{count} of {n_blocks} blocks of {bs} bytes)"
                    )
                )
            previous_end = first + count
        weak: list[bytes] = []
        strong: list[bytes] = []
        step = max(1, _REFINE_READ // bs)
        try:
            for first, count in request.ranges:
                for at in range(first, first + count, step):
                    offset, stop = at * bs, min((min(at + step, first + count)) * bs, size)
                    data = bytearray()
                    while len(data) < stop - offset:
                        chunk = basis(offset + len(data), stop - offset - len(data))
                        if not chunk:
                            return b""  # the basis shrank: the patch will say so
                        data += chunk
                    sig = signature_of(bytes(data), block_size=bs, strong_len=request.strong_len)
                    weak.append(sig.weak)
                    strong.append(sig.strong)
        except OSError:
            return b""  # the patch reads the basis too and reports the failure there
        return b"".join(weak) + b"".join(strong)

    def _send_signature(self, signature: Iterable[bytes]) -> None:
        self._basis_size = None
        pending = bytearray()
        iterator = iter(signature)
        while True:
            try:
                chunk = next(iterator)
            except StopIteration:
                break
            except BaseException:
                # the basis could not be read: withdraw the request and keep the session
                if self._dead is None:
                    self._send(Cancel())
                raise
            if self._basis_size is None and len(pending) + len(chunk) >= _SIG_HEAD:
                # the basis size that refinement requests are checked against, read from
                # the signature header (magic, version, strong_len, 0, block_size, size)
                head = bytes(pending[:_SIG_HEAD]) + bytes(chunk[: _SIG_HEAD - len(pending)])
                self._sig_block_size = int.from_bytes(head[8:12], "little")
                self._basis_size = int.from_bytes(head[12:20], "little")
            pending += chunk
            while len(pending) >= SIG_FRAME:
                self._send(SigData(bytes(pending[:SIG_FRAME])))
                del pending[:SIG_FRAME]
        if pending:
            self._send(SigData(bytes(pending)))

    def _drain_delta(self) -> None:
        while True:
            try:
                event = self._receive()
            except DeltastageError:
                return  # _receive has already declared the session dead
            if isinstance(event, DeltaEnd | Error):
                return

    def close(self) -> None:
        """Say Bye if the conversation allows it, then release the transport; idempotent."""
        if self._closed:
            return
        self._closed = True
        fetch, self._fetch = self._fetch, None
        was_dead = self._dead
        self._dead = self._dead or "session closed"
        if fetch is not None and inspect.getgeneratorstate(fetch) != inspect.GEN_RUNNING:
            fetch.close()  # with the session marked dead this does not drain
        if was_dead is None and self._conn.state in (State.IDLE, State.HANDSHAKE):
            with contextlib.suppress(DeltastageError):
                self._out += self._conn.send(Bye())
                self._flush()
        with contextlib.suppress(DeltastageError):
            self._transport.close()
