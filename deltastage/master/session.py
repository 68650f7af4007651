"""The master's end of a conversation with one agent, driven over any ``Transport``.

``PeerSession`` turns requests into protocol messages and the agent's answers into values
or exceptions from the error tree. It trusts nothing the agent says: a listing is checked as
it arrives (``master.listing``), a refinement request is answered only within its bounds
(``master.refinement``), and every other answer is bounded too.

Errors that leave the conversation in a known state (the agent's ``Error`` answers, other
than ``protocol``) keep the session usable. A ``TransportError`` or ``ProtocolError``, or an
agent that breaks its own listing, kills it: the transport is closed and every later call
raises ``ConnectionClosed``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence

from deltastage import __version__
from deltastage.errors import (
    AgentError,
    ConnectionClosed,
    DeltastageError,
    IndicatorRefused,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    ResourceLimitError,
    SourceChangedError,
    SourceVanishedError,
    TransportError,
    UnsafePathError,
)
from deltastage.master.listing import ListingCheck
from deltastage.master.refinement import Refinement
from deltastage.models import AgentInfo, RemoteEntry
from deltastage.protocol import (
    CAPABILITIES,
    DEFAULT_INDICATOR,
    MAX_FRAME,
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
    ProbeReply,
    ProbeRequest,
    RefineReply,
    RefineRequest,
    Role,
    SigData,
    SigEnd,
    State,
)
from deltastage.protocol.channel import Channel
from deltastage.protocol.paths import check_name, split_relative
from deltastage.transports.base import Transport

__all__ = ["PeerSession"]

RECV_CHUNK = 256 << 10
# Delta bytes read and dropped after the caller gave up on a fetch, before the session is
# given up instead (an agent that never ends its answer would otherwise be read forever).
DRAIN_LIMIT = 64 << 20
SIG_FRAME = 256 << 10  # bytes of signature per SigData frame
_SIG_HEAD = 12  # bytes of an encoded signature up to and including the block size


def _agent_error(error: Error, *, fetching: bool = False) -> DeltastageError:
    """The exception for an agent's Error answer."""
    code = error.code
    if fetching and code is ErrorCode.NOT_FOUND:
        return SourceVanishedError(f"agent: {error.reason}")  # listed, and gone since
    if code is ErrorCode.CHANGED:
        return SourceChangedError(f"agent: {error.reason}")
    if code is ErrorCode.UNSAFE_PATH:
        return UnsafePathError(f"agent: {error.reason}")
    if code is ErrorCode.LIMIT:
        return ResourceLimitError(f"agent: {error.reason}")
    return AgentError(code.value, error.reason)


class _Pending:
    """A fetch request sent (possibly ahead), whose answer is still to be read."""

    def __init__(self, refinement: Refinement) -> None:
        self.refinement = refinement
        self.answer: Generator[bytes, None, None] | None = None


class PeerSession:
    """A conversation with one agent. Not thread-safe; one caller at a time.

    Fetches may be pipelined: ``request_fetch`` sends a request at once, ahead of the
    answers still to be read, and returns an iterator over its delta; the iterators must be
    read in the order of the requests (``master.pipeline`` keeps that order and the window).
    ``survey`` sends its three requests together. Any other request first reads every
    pending answer.

    The handshake says the session will write ``indicators`` and no other; an agent that
    writes others refuses it there (``IndicatorRefused``), and ``info`` tells whether it is
    read-only (it writes nothing: the caller keeps the indicator on its own side).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        max_entries: int = 1_000_000,
        max_frame: int = MAX_FRAME,
        indicators: Sequence[str] = (DEFAULT_INDICATOR,),
    ) -> None:
        self._indicators = tuple(check_name(name) for name in indicators)
        self._transport = transport
        self._conn = Connection(Role.MASTER, max_frame=max_frame)
        self._channel = Channel(self._conn, transport.recv, transport.send, read_size=RECV_CHUNK)
        self._max_entries = max_entries
        self._dead: str | None = None
        self._closed = False
        self._pending: deque[_Pending] = deque()  # fetches whose answers are unread, in order
        self._sent = 0  # request bytes encoded so far
        self._requesting = False  # a fetch request (its signature) is being sent
        self.info: AgentInfo | None = None
        # a survey sent whose answers are not read yet: (root, indicator, with a Hello)
        self._survey_unread: tuple[str, str, bool, bool] | None = None

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

    def _alive(self) -> None:
        if self._closed:
            raise ConnectionClosed("session already closed")
        if self._dead is not None:
            raise ConnectionClosed(f"session unusable after an earlier failure: {self._dead}")

    def _ready(self) -> None:
        """Refuse a dead session; read the answers of abandoned or unread fetches (their
        data is dropped) so the next request finds the agent idle."""
        self._alive()
        if self._requesting:
            raise LocalProtocolError("a fetch is in progress; finish or close it first")
        while self._pending:
            head = self._pending[0]
            assert head.answer is not None
            state = inspect.getgeneratorstate(head.answer)
            if state == inspect.GEN_RUNNING:
                raise LocalProtocolError("a fetch is in progress; finish or close it first")
            head.answer.close()  # a suspended answer drains itself and leaves the queue
            if self._pending and self._pending[0] is head:  # never read: drain it here
                self._drain_delta()
                self._pending.popleft()
            self._alive()

    @property
    def unread_answers(self) -> int:
        """Fetches requested whose answers are not read to their end (one may be half read)."""
        return len(self._pending)

    @property
    def sent_bytes(self) -> int:
        """Bytes of requests encoded so far (what a request sent ahead leaves waiting)."""
        return self._sent

    def _send(self, event: Event) -> None:
        # Requests are gathered and written before the next wait for an answer: a small
        # file's Fetch, SigData and SigEnd then cross the WAN as one SSH packet.
        try:
            self._sent += self._channel.send(event)
        except (TransportError, ProtocolError) as exc:
            self._die(str(exc))
            raise

    def flush(self) -> None:
        """Write the requests gathered so far now (they go anyway before any wait)."""
        try:
            self._channel.flush()
        except TransportError as exc:
            self._die(str(exc))
            raise

    def _receive(self) -> Event:
        try:
            # requests sent ahead leave now, not once the answers already buffered are
            # patched: the agent works on them meanwhile
            self._channel.flush()
            event = self._channel.receive()
            if event is None:
                raise ConnectionClosed("the agent closed the connection")
            if isinstance(event, Error) and event.code is ErrorCode.PROTOCOL:
                if self.info is None:
                    raise RemoteProtocolError(
                        f"agent refused the handshake of master {__version__}, which speaks "
                        f"protocol {PROTOCOL_VERSION} (an agent of another protocol may not "
                        f"read its Hello): {event.reason}"
                    )
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
        self._send(self._hello())
        return self._hello_reply()

    def _hello(self) -> Hello:
        return Hello(PROTOCOL_VERSION, __version__, CAPABILITIES, self._indicators)

    def _hello_reply(self) -> AgentInfo:
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
        refused = tuple(name for name in self._indicators if name not in reply.indicators)
        if reply.indicators and refused:
            # the agent ends the conversation here too; a read-only one refuses no master
            raise self._violation(IndicatorRefused(refused, reply.indicators))
        self.info = AgentInfo(
            reply.version, reply.protocol, reply.roots, reply.capabilities, reply.indicators
        )
        return self.info

    def list_files(self, root: str) -> list[RemoteEntry]:
        """Every file, symlink and special file under ``root``; directories are implied."""
        self._ready()
        self._send(ListRequest(root))
        return self._listing(root)

    def survey(
        self, root: str, indicator: str, *, prove: bool = False
    ) -> tuple[bool, list[RemoteEntry]]:
        """Whether ``indicator`` is in ``root``, and the listing of ``root`` if it is (with
        ``prove``, with the recipes of its compressed files).

        The handshake (when not done yet), the indicator query and the listing request go
        out together, so they cost one round trip instead of three; an unready root's
        listing is read and dropped.
        """
        return self.read_survey(root, self.send_survey(root, indicator, prove=prove))

    def send_survey(self, root: str, indicator: str, *, prove: bool = False) -> bool:
        """The sending half of ``survey``; True when it included the handshake. A fetch may
        be requested before ``read_survey`` (it is answered after the listing). The same
        survey sent again before it is read is sent once (an early session sends it as soon
        as it is open; the stage's attempt then asks for it as usual)."""
        check_name(indicator)
        if self._survey_unread is not None:
            if self._survey_unread[:3] == (root, indicator, prove):
                return self._survey_unread[3]
            raise LocalProtocolError("read the survey sent before sending another")
        self._ready()
        hello = self.info is None
        if hello:
            self._send(self._hello())
        self._send(IndicatorQuery(root, indicator))
        self._send(ListRequest(root, prove))
        self._survey_unread = (root, indicator, prove, hello)
        return hello

    def read_survey(self, root: str, hello: bool) -> tuple[bool, list[RemoteEntry]]:
        """The answers to ``send_survey`` (see ``survey``)."""
        self._survey_unread = None
        if hello:
            self._hello_reply()
        try:
            ready = self._indicator_state()
        except AgentError:
            with contextlib.suppress(DeltastageError):
                self._listing(root)  # its answer is on its way: read it, keep the session
            raise
        entries = self._listing(root)
        return ready, entries if ready else []

    def settle(self) -> None:
        """Read every pending fetch answer to its end, dropping the data."""
        self._ready()

    def _listing(self, root: str) -> list[RemoteEntry]:
        listing = ListingCheck(root, self._max_entries)
        while True:
            event = self._receive()
            if isinstance(event, Error):
                raise _agent_error(event)
            try:
                if isinstance(event, ListEnd):
                    return listing.finish(event.count)
                assert isinstance(event, ListBatch)
                listing.add(event.entries)
            except DeltastageError as exc:
                raise self._violation(exc) from None

    def indicator_exists(self, root: str, name: str) -> bool:
        check_name(name)
        self._ready()
        self._send(IndicatorQuery(root, name))
        return self._indicator_state()

    def _indicator_state(self) -> bool:
        event = self._receive()
        if isinstance(event, Error):
            raise _agent_error(event)
        assert isinstance(event, IndicatorState)
        return event.exists

    def probe_compression(self, root: str) -> ProbeReply:
        """How the agent's files under ``root`` are compressed (``check``'s hint)."""
        self._ready()
        self._send(ProbeRequest(root))
        event = self._receive()
        if isinstance(event, Error):
            raise _agent_error(event)
        assert isinstance(event, ProbeReply)
        return event

    def write_indicator(self, root: str, name: str) -> None:
        """Have the agent create the empty file ``name`` in ``root``: one of the indicators
        the handshake named (a read-only agent refuses it)."""
        check_name(name)
        if name not in self._indicators:
            raise LocalProtocolError(f"{name!r} is not an indicator this session said it writes")
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
        basis_sizes: Sequence[int] = (0,),
    ) -> Iterator[bytes]:
        """Send the encoded signature stream, then yield the encoded delta stream.

        ``basis_sizes`` are the sizes of the bases the signature is of, in its order (the
        default: no basis, one empty one); the agent refuses a signature of others.
        ``basis(offset, n)`` reads the basis the signature was made from: with it the agent
        may ask for finer block hashes of the parts its delta could not copy (a few KiB
        that save most of a coarse block of literal per edit); without it, that is declined.
        A signature of several bases is never refined.

        Nothing is sent until the first ``next()``. A fetch abandoned half way is drained
        when the generator is closed or when the next request starts, so the session stays
        usable after the caller gave up on one file.
        """
        split_relative(path)
        self._alive()
        return self._fetch_when_iterated(root, path, signature, level, basis, basis_sizes)

    def _fetch_when_iterated(
        self,
        root: str,
        path: str,
        signature: Iterable[bytes],
        level: int,
        basis: Callable[[int, int], bytes] | None,
        basis_sizes: Sequence[int],
    ) -> Generator[bytes, None, None]:
        self._ready()
        yield from self.request_fetch(
            root, path, signature, level=level, basis=basis, basis_sizes=basis_sizes
        )

    def request_fetch(
        self,
        root: str,
        path: str,
        signature: Iterable[bytes],
        *,
        level: int = 3,
        basis: Callable[[int, int], bytes] | None = None,
        refine: bool = True,
        basis_sizes: Sequence[int] = (0,),
        content: bool = False,
    ) -> Generator[bytes, None, None]:
        """Send the request now, ahead of unread answers; return an iterator over its delta
        (see ``fetch``), to be read after theirs. How far ahead is safe is the caller's to
        judge (see ``master.pipeline``: an oversized backlog could stall both ends). Without
        ``refine`` (or ``basis``) the agent may not ask for finer hashes of the basis.
        With ``content`` the signature is of the bases' decompressed content and the answer
        the delta of the file's (``basis`` then reads the decompressed basis).

        A signature that fails half way is withdrawn (Cancel) and its exception raised
        here; the session stays usable.
        """
        split_relative(path)
        self._alive()
        if self._requesting:
            raise LocalProtocolError("a fetch is in progress; finish or close it first")
        sizes = tuple(basis_sizes)
        pending = _Pending(Refinement(basis, sizes, refine))
        self._requesting = True
        try:
            self._send(Fetch(root, path, level, pending.refinement.allowed, sizes, content))
            self._send_signature(signature, pending)
            self._send(SigEnd())
        finally:
            self._requesting = False
        pending.answer = self._answer(pending)
        self._pending.append(pending)
        return pending.answer

    def request_fetch_many(
        self, root: str, paths: Sequence[str], *, level: int = 3
    ) -> list[Generator[bytes, None, None]]:
        """Ask for each of ``paths`` against no basis in one request (``FetchMany``), sent
        now, ahead of unread answers like ``request_fetch``; return an iterator over each
        one's delta (the delta of the whole file), to be read in order after the answers
        before them. None of them may be refined."""
        for path in paths:
            split_relative(path)
        self._alive()
        if self._requesting:
            raise LocalProtocolError("a fetch is in progress; finish or close it first")
        self._send(FetchMany(root, tuple(paths), level))
        answers = []
        for _ in paths:
            pending = _Pending(Refinement(None, (0,), allowed=False))
            pending.answer = self._answer(pending)
            self._pending.append(pending)
            answers.append(pending.answer)
        return answers

    def _answer(self, pending: _Pending) -> Generator[bytes, None, None]:
        if not self._pending or self._pending[0] is not pending:
            raise LocalProtocolError("fetch answers must be read in the order of the requests")
        finished = False
        try:
            while True:
                event = self._receive()
                if isinstance(event, RefineRequest):
                    try:
                        reply = pending.refinement.answer(event)
                    except RemoteProtocolError as exc:
                        raise self._violation(exc) from None
                    self._send(RefineReply(reply))
                    continue
                if isinstance(event, DeltaData):
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
        except (KeyboardInterrupt, SystemExit):
            # the run is stopping: the session is given up, its answer not read to the end
            self._die("interrupted")
            raise
        finally:
            # an abandoned answer is read to its end so the next one can be read
            if not finished and self._dead is None:
                self._drain_delta()
            if self._pending and self._pending[0] is pending:
                self._pending.popleft()

    def _send_signature(self, signature: Iterable[bytes], request: _Pending) -> None:
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
            if not request.refinement.block_size and len(pending) + len(chunk) >= _SIG_HEAD:
                # the block size that refinement requests are checked against, read from
                # the signature header (magic, version, strong_len, n, block_size, ...)
                head = bytes(pending[:_SIG_HEAD]) + bytes(chunk[: _SIG_HEAD - len(pending)])
                request.refinement.block_size = int.from_bytes(head[8:12], "little")
            pending += chunk
            while len(pending) >= SIG_FRAME:
                self._send(SigData(bytes(pending[:SIG_FRAME])))
                del pending[:SIG_FRAME]
        if pending:
            self._send(SigData(bytes(pending)))

    def _drain_delta(self) -> None:
        """Read the current answer to its end, declining any refinement it asks for."""
        drained = 0
        while True:
            try:
                event = self._receive()
                if isinstance(event, RefineRequest):
                    self._send(RefineReply(b""))
                    continue
            except DeltastageError:
                return  # _receive or _send has already declared the session dead
            if isinstance(event, DeltaEnd | Error):
                return
            if isinstance(event, DeltaData):
                drained += len(event.data)
                if drained > DRAIN_LIMIT:
                    self._die(f"agent sent over {DRAIN_LIMIT} bytes of an abandoned fetch")
                    return

    def close(self) -> None:
        """Say Bye if the conversation allows it, then release the transport; idempotent."""
        if self._closed:
            return
        self._closed = True
        pending, self._pending = list(self._pending), deque()
        was_dead = self._dead
        self._dead = self._dead or "session closed"
        for each in pending:
            if each.answer is not None and (
                inspect.getgeneratorstate(each.answer) != inspect.GEN_RUNNING
            ):
                each.answer.close()  # with the session marked dead this does not drain
        if was_dead is None and self._conn.state in (State.IDLE, State.HANDSHAKE) and not pending:
            with contextlib.suppress(DeltastageError):
                self._channel.send(Bye())
                self._channel.flush()
        with contextlib.suppress(DeltastageError):
            self._transport.close()
