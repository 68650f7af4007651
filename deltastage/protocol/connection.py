"""The conversation state machine, after h11: bytes in, events out; events in, bytes out.

The agent answers one request at a time, in order, so a single conversation state is shared
by both roles. ``TRANSITIONS`` is the whole protocol: (state, sender, message type) -> next
state. Anything not in it is refused: ``LocalProtocolError`` when we try to send it,
``RemoteProtocolError`` when it arrives.

Requests are pipelined: while the agent answers one, the master may already send the next
ones: fetches (Fetch, SigData..., SigEnd or Cancel), indicator queries and listings. The
agent reads a request only when it is done with the one before, so to it the conversation
stays sequential; the master's ``Connection`` queues what it sent ahead and enters each
queued request's state when the answer before it ends. Indicator writes and Bye wait for
every answer. The one exception is a refinement: a RefineReply follows whatever the master
had sent ahead by then, so the agent, waiting for it, reads those requests first and sets
them aside; its ``Connection`` queues them the same way and enters the first one's state
when the current answer ends.

An ``Error`` with code ``protocol`` is the agent's last word and is allowed in any state
(including after it saw a malformed message): it ends the conversation.

Delta data can travel compressed: after ``compress_deltas(level)`` the sender turns each
``DeltaData`` into ``CompressedDeltaData`` frames of one connection-wide zstd stream, and
the receiver turns them back, so both ends deal in ``DeltaData`` only.
"""

from __future__ import annotations

import enum
from collections import deque

from deltastage.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from deltastage.protocol.events import (
    EVENT_TYPES,
    Bye,
    Cancel,
    CompressedDeltaData,
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
    SigData,
    SigEnd,
    decode_event,
)
from deltastage.protocol.frames import MAX_FRAME, FrameDecoder, encode_frame
from deltastage.protocol.stream import STREAM_CHUNK, StreamCompressor, StreamDecompressor

__all__ = ["EOF", "NEED_DATA", "TRANSITIONS", "Connection", "Role", "Sentinel", "State"]


class Role(enum.Enum):
    MASTER = "master"
    AGENT = "agent"

    @property
    def other(self) -> Role:
        return Role.AGENT if self is Role.MASTER else Role.MASTER


class State(enum.Enum):
    HANDSHAKE = "handshake"
    AWAIT_HELLO_REPLY = "await-hello-reply"
    IDLE = "idle"
    LISTING = "listing"
    AWAIT_INDICATOR = "await-indicator"
    AWAIT_OK = "await-ok"
    AWAIT_PROBE = "await-probe"
    SENDING_SIGNATURE = "sending-signature"
    AWAIT_DELTA = "await-delta"  # the signature is in; no delta data yet (refinement allowed)
    SENDING_DELTA = "sending-delta"
    AWAIT_REFINE = "await-refine"
    CLOSED = "closed"
    ERROR = "error"


class Sentinel(enum.Enum):
    NEED_DATA = "need-data"
    EOF = "eof"


NEED_DATA = Sentinel.NEED_DATA
EOF = Sentinel.EOF

M, A = Role.MASTER, Role.AGENT
S = State
TRANSITIONS: dict[tuple[State, Role, type[Event]], State] = {
    (S.HANDSHAKE, M, Hello): S.AWAIT_HELLO_REPLY,
    (S.HANDSHAKE, M, Bye): S.CLOSED,
    (S.AWAIT_HELLO_REPLY, A, HelloReply): S.IDLE,
    (S.IDLE, M, ListRequest): S.LISTING,
    (S.IDLE, M, IndicatorQuery): S.AWAIT_INDICATOR,
    (S.IDLE, M, IndicatorWrite): S.AWAIT_OK,
    (S.IDLE, M, Fetch): S.SENDING_SIGNATURE,
    (S.IDLE, M, FetchMany): S.AWAIT_DELTA,  # its other answers are queued (``_many``)
    (S.IDLE, M, ProbeRequest): S.AWAIT_PROBE,
    (S.IDLE, M, Bye): S.CLOSED,
    (S.LISTING, A, ListBatch): S.LISTING,
    (S.LISTING, A, ListEnd): S.IDLE,
    (S.LISTING, A, Error): S.IDLE,
    (S.AWAIT_INDICATOR, A, IndicatorState): S.IDLE,
    (S.AWAIT_INDICATOR, A, Error): S.IDLE,
    (S.AWAIT_OK, A, Ok): S.IDLE,
    (S.AWAIT_OK, A, Error): S.IDLE,
    (S.AWAIT_PROBE, A, ProbeReply): S.IDLE,
    (S.AWAIT_PROBE, A, Error): S.IDLE,
    (S.SENDING_SIGNATURE, M, SigData): S.SENDING_SIGNATURE,
    (S.SENDING_SIGNATURE, M, SigEnd): S.AWAIT_DELTA,
    (S.SENDING_SIGNATURE, M, Cancel): S.IDLE,
    (S.AWAIT_DELTA, A, DeltaData): S.SENDING_DELTA,
    (S.AWAIT_DELTA, A, DeltaEnd): S.IDLE,
    (S.AWAIT_DELTA, A, Error): S.IDLE,
    (S.AWAIT_DELTA, A, RefineRequest): S.AWAIT_REFINE,
    (S.AWAIT_REFINE, M, RefineReply): S.AWAIT_DELTA,
    (S.SENDING_DELTA, A, DeltaData): S.SENDING_DELTA,
    (S.SENDING_DELTA, A, DeltaEnd): S.IDLE,
    (S.SENDING_DELTA, A, Error): S.IDLE,
}
# States in which the master may send the next fetch ahead of the current answer.
_PIPELINE_FROM = frozenset(
    {
        State.AWAIT_HELLO_REPLY,
        State.AWAIT_INDICATOR,
        State.LISTING,
        State.AWAIT_DELTA,
        State.SENDING_DELTA,
    }
)
# What may be sent ahead, from the state the queued requests will have left the agent in
# (IDLE, or half way through a signature); a state other than those two is a whole request,
# queued until the answers before it end.
_AHEAD_TRANSITIONS: dict[tuple[State, type[Event]], State] = {
    (State.IDLE, IndicatorQuery): State.AWAIT_INDICATOR,
    (State.IDLE, ListRequest): State.LISTING,
    (State.IDLE, Fetch): State.SENDING_SIGNATURE,
    (State.IDLE, FetchMany): State.AWAIT_DELTA,
    (State.SENDING_SIGNATURE, SigData): State.SENDING_SIGNATURE,
    (State.SENDING_SIGNATURE, SigEnd): State.AWAIT_DELTA,
    (State.SENDING_SIGNATURE, Cancel): State.IDLE,
}
del M, A, S
# Requests an agent sets aside while waiting for a RefineReply (a master sends 64 ahead).
MAX_SET_ASIDE = 1024


def _next_state(state: State, sender: Role, event: Event) -> State | None:
    if isinstance(event, Error) and event.code is ErrorCode.PROTOCOL:
        return State.CLOSED if sender is Role.AGENT and state is not State.CLOSED else None
    if state is State.ERROR:
        return None
    return TRANSITIONS.get((state, sender, type(event)))


class Connection:
    """One end of a conversation; does no I/O."""

    def __init__(self, role: Role, *, max_frame: int = MAX_FRAME) -> None:
        self.role = role
        self.max_frame = max_frame
        self._state = State.HANDSHAKE
        self._decoder = FrameDecoder(EVENT_TYPES, max_frame)
        self._eof = False
        self._error: ProtocolError | None = None
        self._deflater: StreamCompressor | None = None
        self._compressing = False
        self._inflater: StreamDecompressor | None = None
        # the master's requests sent ahead of the current answer: complete ones (each will
        # start in AWAIT_DELTA), then possibly one still being sent (``_ahead``)
        self._queued: deque[State] = deque()  # the state each queued request starts in
        self._ahead: State | None = None

    @property
    def state(self) -> State:
        return self._state

    @property
    def queued(self) -> int:
        """Requests the master sent ahead (on the agent's side: set aside) whose answers
        have not started."""
        return len(self._queued) + (self._ahead is State.SENDING_SIGNATURE)

    @property
    def _pipelining(self) -> bool:
        return bool(self._queued) or self._ahead is not None

    def send(self, event: Event) -> bytes:
        """The bytes that carry ``event``; refuses a message the state table does not allow."""
        new_state = self._send_state(event)
        if isinstance(event, DeltaData) and self._compressing and event.data:
            data = self._compressed_frames(event.data)
        else:
            data = encode_frame(event.TYPE, event.encode_payload(), self.max_frame)
        if new_state is not None:
            self._state = new_state
            if self.role is Role.AGENT:  # an answer that ends starts the next request set aside
                self._next_queued()
        return data

    def _send_state(self, event: Event) -> State | None:
        """The conversation's next state, None when the event goes ahead (queued)."""
        pipelining = self._pipelining
        # what the agent set aside waits for its answer to end; a RefineReply is not queued
        if not pipelining or self.role is Role.AGENT or isinstance(event, RefineReply):
            new_state = _next_state(self._state, self.role, event)
            if new_state is not None:
                self._many(event)
                return new_state
        ahead_from = self._ahead or State.IDLE
        ahead = _AHEAD_TRANSITIONS.get((ahead_from, type(event)))
        if (
            self.role is Role.MASTER
            and ahead is not None
            and (pipelining or self._state in _PIPELINE_FROM)
        ):
            if ahead in (State.IDLE, State.SENDING_SIGNATURE):
                self._ahead = None if ahead is State.IDLE else ahead
            else:
                self._queued.append(ahead)
                self._ahead = None
                self._many(event)
            return None
        where = f"in state {self._state.value}"
        if pipelining:
            where += f" with {self.queued} request(s) queued"
        raise LocalProtocolError(f"{self.role.value} may not send {type(event).__name__} {where}")

    def _set_aside(self, event: Event) -> bool:
        """Agent only: whether ``event`` is a request the master sent ahead, read while
        waiting for a RefineReply (queued, to be answered after the current one)."""
        if (
            self.role is not Role.AGENT
            or isinstance(event, RefineReply)
            or not (self._pipelining or self._state is State.AWAIT_REFINE)
        ):
            return False
        ahead = _AHEAD_TRANSITIONS.get((self._ahead or State.IDLE, type(event)))
        if ahead is None:
            where = f"in state {self._state.value} with {self.queued} request(s) set aside"
            raise RemoteProtocolError(f"master sent {type(event).__name__} {where}")
        if len(self._queued) >= MAX_SET_ASIDE:
            raise RemoteProtocolError(f"master sent more than {MAX_SET_ASIDE} requests ahead")
        if ahead in (State.IDLE, State.SENDING_SIGNATURE):
            self._ahead = None if ahead is State.IDLE else ahead
        else:
            self._queued.append(ahead)
            self._ahead = None
            self._many(event)
        return True

    def _many(self, event: Event) -> None:
        """A FetchMany entered (or queued) its first answer: the others are queued behind
        it, each to start as a fetch whose signature is in."""
        if isinstance(event, FetchMany):
            self._queued.extend([State.AWAIT_DELTA] * (len(event.paths) - 1))

    def _next_queued(self) -> None:
        """The answer before ended: the agent now reads the oldest request sent ahead."""
        if self._state is not State.IDLE:
            return
        if self._queued:
            self._state = self._queued.popleft()
        elif self._ahead is not None:
            self._state, self._ahead = self._ahead, None

    def compress_deltas(self, level: int) -> None:
        """Send later ``DeltaData`` through the connection's zstd stream (0: uncompressed).

        The stream is made at the first non-zero level and keeps it: a stream cannot
        change level, and its history is what makes it pay.
        """
        if not 0 <= level <= 22:
            raise LocalProtocolError(f"compression level out of range: {level}")
        if level and self._deflater is None:
            self._deflater = StreamCompressor(level)
        self._compressing = level > 0

    def _compressed_frames(self, data: bytes) -> bytes:
        assert self._deflater is not None
        frames = []
        for start in range(0, len(data), STREAM_CHUNK):
            raw = data[start : start + STREAM_CHUNK]
            packed = CompressedDeltaData(len(raw), self._deflater.compress(raw))
            frames.append(encode_frame(packed.TYPE, packed.encode_payload(), self.max_frame))
        return b"".join(frames)

    def _inflate(self, event: CompressedDeltaData) -> DeltaData:
        if self._inflater is None:
            self._inflater = StreamDecompressor()
        return DeltaData(self._inflater.decompress(event.packed, event.raw_len))

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed its end."""
        if self._eof and data:
            raise LocalProtocolError("data received after end of stream")
        if data:
            self._decoder.feed(data)
        else:
            self._eof = True

    def next_event(self) -> Event | Sentinel:
        """The next message, ``NEED_DATA`` until one is complete, or ``EOF`` at a clean end."""
        if self._error is not None:
            raise RemoteProtocolError(f"connection already failed: {self._error}")
        try:
            frame = self._decoder.next_frame()
            if frame is None:
                if not self._eof:
                    return NEED_DATA
                if self._decoder.buffered:
                    raise RemoteProtocolError(
                        f"stream ended inside a frame ({self._decoder.buffered} bytes pending)"
                    )
                return EOF
            event = decode_event(*frame)
            if isinstance(event, CompressedDeltaData):
                # checked against the table as the DeltaData it stands for, before inflating
                if _next_state(self._state, self.role.other, DeltaData(b"")) is None:
                    raise RemoteProtocolError(
                        f"{self.role.other.value} sent CompressedDeltaData "
                        f"in state {self._state.value}"
                    )
                event = self._inflate(event)
            if self._set_aside(event):
                return event
            new_state = _next_state(self._state, self.role.other, event)
            if new_state is None:
                raise RemoteProtocolError(
                    f"{self.role.other.value} sent {type(event).__name__} "
                    f"in state {self._state.value}"
                )
        except RemoteProtocolError as exc:
            self._error = exc
            self._state = State.ERROR
            raise
        self._state = new_state
        self._many(event)
        self._next_queued()
        return event
