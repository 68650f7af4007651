"""The blocking driver: any byte split, batched writes, a flush before every wait, EOF."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deltastage.errors import LocalProtocolError, RemoteProtocolError
from deltastage.protocol import (
    CAPABILITIES,
    PROTOCOL_VERSION,
    Connection,
    DeltaData,
    DeltaEnd,
    Event,
    Fetch,
    Hello,
    HelloReply,
    IndicatorQuery,
    IndicatorState,
    ListEnd,
    ListRequest,
    Role,
    SigData,
    SigEnd,
)
from deltastage.protocol.channel import Channel
from tests.helpers.transports import Replay

HELLO = Hello(PROTOCOL_VERSION, "test", CAPABILITIES)
REPLY = HelloReply(PROTOCOL_VERSION, "test", ("/srv/a",), CAPABILITIES)
REQUESTS: list[Event] = [
    HELLO,
    IndicatorQuery("/srv/a", "cback.collect"),
    ListRequest("/srv/a"),
    Fetch("/srv/a", "f"),
    SigData(b"s" * 3000),
    SigEnd(),
]
# what the agent answers to each request before it may read the next
ANSWERS: list[Event | None] = [REPLY, IndicatorState(True), ListEnd(0), None, None, None]


def encoded(events: list[Event]) -> bytes:
    master = Connection(Role.MASTER)
    return b"".join(master.send(event) for event in events)


@given(pieces=st.lists(st.integers(1, 40), max_size=400), read_size=st.integers(1, 1 << 16))
def test_events_arrive_whole_from_any_split(pieces: list[int], read_size: int) -> None:
    pipe = Replay(encoded(REQUESTS), pieces)
    channel = Channel(Connection(Role.AGENT), pipe.recv, pipe.send, read_size=read_size)
    received = []
    for answer in ANSWERS:
        received.append(channel.receive())
        if answer is not None:
            channel.send(answer)
    assert received == REQUESTS
    assert channel.receive() is None  # the stream ended cleanly after the last frame


def test_a_read_asks_for_read_size_bytes() -> None:
    asked: list[int] = []

    def read(n: int) -> bytes:
        asked.append(n)
        return b""

    channel = Channel(Connection(Role.AGENT), read, lambda data: None, read_size=1234)
    assert channel.receive() is None
    assert asked == [1234]


def test_sends_are_gathered_until_the_batch_is_full() -> None:
    pipe = Replay()
    channel = Channel(Connection(Role.MASTER), pipe.recv, pipe.send, batch=2000)
    sizes = [channel.send(event) for event in REQUESTS[:4]]
    assert pipe.sent == []  # four small requests stay gathered
    assert channel.send(SigData(b"s" * 3000)) > 3000  # crosses the batch: all of it goes
    assert pipe.sent == [encoded(REQUESTS[:5])]
    assert sum(sizes) == len(encoded(REQUESTS[:4]))
    channel.send(SigEnd())
    channel.flush()
    channel.flush()  # nothing gathered: nothing written
    assert b"".join(pipe.sent) == encoded(REQUESTS)
    assert len(pipe.sent) == 2


def answers_to(requests: list[Event], written: bytes) -> list[Event]:
    """What a master that sent ``requests`` reads from ``written``."""
    master = Connection(Role.MASTER)
    for event in requests:
        master.send(event)
    master.receive_data(written)
    master.receive_data(b"")
    events: list[Event] = []
    while isinstance(event := master.next_event(), Event):
        events.append(event)
    return events


def test_everything_gathered_is_written_before_a_wait() -> None:
    survey = [HELLO, IndicatorQuery("/srv/a", "x"), ListRequest("/srv/a")]
    agent = Connection(Role.AGENT)
    agent.receive_data(encoded(survey))
    assert agent.next_event() == HELLO
    answers = agent.send(REPLY)
    assert agent.next_event() == survey[1]
    pipe = Replay(answers + agent.send(IndicatorState(True)))
    channel = Channel(Connection(Role.MASTER), pipe.recv, pipe.send)
    for event in survey:
        channel.send(event)
    assert pipe.log == []
    assert channel.receive() == REPLY
    assert pipe.log[:2] == ["send", "recv"]  # the requests went out before the wait
    assert pipe.sent == [encoded(survey)]


def test_a_buffered_event_is_returned_without_writing() -> None:
    requests = [HELLO, IndicatorQuery("/srv/a", "x")]
    pipe = Replay(encoded(requests))
    channel = Channel(Connection(Role.AGENT), pipe.recv, pipe.send)
    assert channel.receive() == HELLO
    channel.send(REPLY)
    # the query is already read: answering it needs no wait, so the reply stays gathered
    assert channel.receive() == requests[1]
    assert pipe.sent == []
    channel.send(IndicatorState(False))
    assert channel.receive() is None  # a wait: what is gathered goes first, in one write
    assert len(pipe.sent) == 1
    assert answers_to(requests, pipe.sent[0]) == [REPLY, IndicatorState(False)]


def test_a_stream_ending_inside_a_frame_is_a_protocol_error() -> None:
    pipe = Replay(encoded([HELLO])[:-1])
    channel = Channel(Connection(Role.AGENT), pipe.recv, pipe.send)
    with pytest.raises(RemoteProtocolError, match="ended inside a frame"):
        channel.receive()


def test_the_callers_errors_reach_it_unchanged() -> None:
    def broken_read(n: int) -> bytes:
        raise ConnectionResetError("gone")

    def broken_write(data: bytes) -> None:
        raise BrokenPipeError("gone")

    channel = Channel(Connection(Role.AGENT), broken_read, broken_write)
    with pytest.raises(ConnectionResetError):
        channel.receive()
    channel = Channel(Connection(Role.MASTER), broken_read, broken_write, batch=1)
    with pytest.raises(BrokenPipeError):
        channel.send(HELLO)
    with pytest.raises(LocalProtocolError):  # the state table's refusal, nothing written
        channel.send(ListEnd(0))


def test_a_conversation_between_two_channels() -> None:
    to_agent = Replay()
    to_master = Replay()
    master = Channel(Connection(Role.MASTER), to_master.recv, to_agent.feed)
    agent = Channel(Connection(Role.AGENT), to_agent.recv, to_master.feed)
    for event in REQUESTS:
        master.send(event)
    master.flush()
    assert agent.receive() == HELLO
    agent.send(REPLY)
    assert agent.receive() == REQUESTS[1]
    agent.send(IndicatorState(True))
    assert agent.receive() == REQUESTS[2]
    agent.send(ListEnd(0))
    assert [agent.receive() for _ in range(3)] == REQUESTS[3:]
    agent.send(DeltaData(b"delta"))
    agent.send(DeltaEnd())
    agent.flush()
    answers = [master.receive() for _ in range(5)]
    assert answers == [REPLY, IndicatorState(True), ListEnd(0), DeltaData(b"delta"), DeltaEnd()]
