"""The connection-wide zstd stream for delta data: round trips, history, bounds, corruption."""

from __future__ import annotations

import contextlib
import os

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from deltastage.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from deltastage.protocol import (
    CAPABILITIES,
    NEED_DATA,
    PROTOCOL_VERSION,
    Connection,
    DeltaData,
    DeltaEnd,
    Event,
    Fetch,
    Hello,
    HelloReply,
    RefineReply,
    RefineRequest,
    Role,
    SigEnd,
    State,
)
from deltastage.protocol.events import MAX_REFINE_BLOCKS, CompressedDeltaData, decode_event
from deltastage.protocol.frames import encode_frame
from deltastage.protocol.stream import (
    MAX_STREAM_RAW,
    STREAM_CHUNK,
    STREAM_WINDOW_LOG,
    StreamCompressor,
    StreamDecompressor,
)
from deltastage.protocol.wire import Writer

TEXT = b"".join(b"%05d INFO the quick brown fox jumps over the lazy dog\n" % i for i in range(4000))


def fetching() -> tuple[Connection, Connection]:
    """A master and an agent in the middle of a fetch: the agent may send delta data."""
    master, agent = Connection(Role.MASTER), Connection(Role.AGENT)
    for sender, receiver, event in (
        (master, agent, Hello(PROTOCOL_VERSION, "t", CAPABILITIES)),
        (agent, master, HelloReply(PROTOCOL_VERSION, "t", ("/r",), CAPABILITIES)),
        (master, agent, Fetch("/r", "f")),
        (master, agent, SigEnd()),
    ):
        receiver.receive_data(sender.send(event))
        assert receiver.next_event() == event
    assert master.state is State.AWAIT_DELTA
    return master, agent


def drain(conn: Connection) -> list[Event]:
    events: list[Event] = []
    while (event := conn.next_event()) is not NEED_DATA:
        assert isinstance(event, Event)
        events.append(event)
    return events


def delta_bytes(events: list[Event]) -> bytes:
    assert all(isinstance(e, DeltaData) for e in events)
    return b"".join(e.data for e in events if isinstance(e, DeltaData))


def test_the_protocol_needs_the_stream_and_pipeline_capabilities() -> None:
    """pipeline=2: a RefineReply may follow requests sent ahead (since protocol 4)."""
    assert PROTOCOL_VERSION == 13
    assert f"stream=zstd-w{STREAM_WINDOW_LOG}" in CAPABILITIES
    assert "pipeline=2" in CAPABILITIES


@given(
    pieces=st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=6),
    level=st.integers(1, 9),
    cuts=st.lists(st.integers(1, 500), max_size=30),
)
def test_round_trip_in_any_split(pieces: list[bytes], level: int, cuts: list[int]) -> None:
    master, agent = fetching()
    agent.compress_deltas(level)
    wire = b"".join(agent.send(DeltaData(piece)) for piece in pieces) + agent.send(DeltaEnd())
    got: list[Event] = []
    at = 0
    for cut in [*cuts, len(wire)]:
        if at >= len(wire):
            break
        master.receive_data(wire[at : at + cut])
        at += cut
        got += drain(master)
    assert got[-1] == DeltaEnd()
    assert delta_bytes(got[:-1]) == b"".join(pieces)
    assert master.state is agent.state is State.IDLE


def test_later_messages_reuse_earlier_ones() -> None:
    master, agent = fetching()
    agent.compress_deltas(3)
    first = agent.send(DeltaData(TEXT[:100_000]))
    again = agent.send(DeltaData(TEXT[:100_000]))
    # the repeat costs a few bytes of back-reference; compressed alone it would not
    assert len(again) < 100 < len(first)
    master.receive_data(first + again)
    assert delta_bytes(drain(master)) == TEXT[:100_000] * 2


def test_large_data_is_cut_into_stream_chunks() -> None:
    master, agent = fetching()
    agent.compress_deltas(1)
    data = os.urandom(STREAM_CHUNK * 2 + 5)  # incompressible: frames stay under the limit
    master.receive_data(agent.send(DeltaData(data)))
    events = drain(master)
    assert [len(e.data) for e in events if isinstance(e, DeltaData)] == [
        STREAM_CHUNK,
        STREAM_CHUNK,
        5,
    ]
    assert delta_bytes(events) == data


def test_level_zero_sends_plain_frames_and_the_stream_keeps_its_level() -> None:
    master, agent = fetching()
    agent.compress_deltas(0)
    plain = agent.send(DeltaData(TEXT[:1000]))
    assert plain[0] == DeltaData.TYPE and len(plain) == 5 + 1000
    agent.compress_deltas(5)
    agent.compress_deltas(9)  # a stream cannot change level; it keeps the first one
    packed = agent.send(DeltaData(TEXT[:1000]))
    assert packed[0] == CompressedDeltaData.TYPE and len(packed) < 500
    agent.compress_deltas(0)
    assert agent.send(DeltaData(b"x"))[0] == DeltaData.TYPE
    master.receive_data(plain + packed)
    assert delta_bytes(drain(master)) == TEXT[:1000] * 2


def test_empty_delta_data_is_sent_plain() -> None:
    master, agent = fetching()
    agent.compress_deltas(3)
    master.receive_data(agent.send(DeltaData(b"")))
    assert drain(master) == [DeltaData(b"")]


@pytest.mark.parametrize("level", [-1, 23])
def test_bad_levels_are_refused(level: int) -> None:
    _, agent = fetching()
    with pytest.raises(LocalProtocolError, match="level"):
        agent.compress_deltas(level)


def test_master_may_not_send_compressed_data() -> None:
    master, _ = fetching()
    with pytest.raises(LocalProtocolError):
        master.send(CompressedDeltaData(3, b"abc"))


def compressed_frame(raw_len: int, packed: bytes) -> bytes:
    return encode_frame(
        CompressedDeltaData.TYPE, CompressedDeltaData(raw_len, packed).encode_payload()
    )


def test_compressed_data_outside_a_fetch_is_refused_before_inflating() -> None:
    master = Connection(Role.MASTER)
    master.receive_data(compressed_frame(5, b"\xff" * 10))
    with pytest.raises(RemoteProtocolError, match="CompressedDeltaData in state handshake"):
        master.next_event()


def one_shot(raw_len: int, packed: bytes) -> RemoteProtocolError:
    master, _ = fetching()
    master.receive_data(compressed_frame(raw_len, packed))
    with pytest.raises(RemoteProtocolError) as caught:
        master.next_event()
    assert master.state is State.ERROR
    return caught.value


def test_a_small_message_cannot_expand_past_its_declared_length() -> None:
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (64 << 20))
    assert len(bomb) < 4096
    assert "expands past its declared 1000 bytes" in str(one_shot(1000, bomb))


def test_a_message_that_falls_short_is_refused() -> None:
    packed = StreamCompressor(3).compress(b"abc" * 10)
    assert "holds 30 bytes, not the declared 31" in str(one_shot(31, packed))


@pytest.mark.parametrize("raw_len", [0, MAX_STREAM_RAW + 1])
def test_declared_lengths_are_bounded(raw_len: int) -> None:
    assert "declares" in str(one_shot(raw_len, b"\x28\xb5\x2f\xfd"))


def test_an_empty_message_is_refused() -> None:
    assert "carries no data" in str(one_shot(5, b""))


def test_a_window_beyond_the_agreed_one_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=STREAM_WINDOW_LOG + 2)
    obj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    packed = obj.compress(b"abc" * 10) + obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    assert "corrupt compressed stream" in str(one_shot(30, packed))


def test_a_failed_stream_stays_failed() -> None:
    inflater = StreamDecompressor()
    with pytest.raises(RemoteProtocolError):
        inflater.decompress(b"not zstd at all", 10)
    good = StreamCompressor(1).compress(b"hello")
    with pytest.raises(RemoteProtocolError, match="already failed"):
        inflater.decompress(good, 5)


def test_compressor_refuses_what_a_receiver_would() -> None:
    with pytest.raises(LocalProtocolError):
        StreamCompressor(0)
    with pytest.raises(LocalProtocolError):
        StreamCompressor(3).compress(b"")
    with pytest.raises(LocalProtocolError):
        StreamCompressor(3).compress(b"x" * (MAX_STREAM_RAW + 1))


@given(
    data=st.binary(min_size=1, max_size=4000),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4),
    truncate=st.integers(0, 50),
)
def test_corrupt_stream_raises_protocol_errors_only(
    data: bytes, flips: list[tuple[int, int]], truncate: int
) -> None:
    master, agent = fetching()
    agent.compress_deltas(3)
    wire = bytearray(agent.send(DeltaData(data)) + agent.send(DeltaData(data[::-1])))
    for at, xor in flips:
        wire[at % len(wire)] ^= xor
    del wire[len(wire) - truncate :]
    if not wire:
        return  # b"" would mean end of stream, not data
    master.receive_data(bytes(wire))
    try:
        events = drain(master)
    except ProtocolError:
        return
    # a flip the stream survived must still not yield more than was declared
    assert sum(len(e.data) for e in events if isinstance(e, DeltaData)) <= 2 * len(data) + 10**6


# --- refinement messages ------------------------------------------------------------------


@given(
    block_size=st.integers(1, 1 << 20),
    strong_len=st.integers(1, 16),
    ranges=st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(1, 1000)), max_size=20),
)
def test_refine_request_round_trip(
    block_size: int, strong_len: int, ranges: list[tuple[int, int]]
) -> None:
    event = RefineRequest(block_size, strong_len, tuple(ranges))
    assert decode_event(event.TYPE, event.encode_payload()) == event


@given(payload=st.binary(max_size=64))
def test_malformed_refine_requests_are_protocol_errors(payload: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_event(RefineRequest.TYPE, payload)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (RefineRequest(0, 3, ((0, 1),)), "block size"),
        (RefineRequest(512, 0, ((0, 1),)), "strong length"),
        (RefineRequest(512, 17, ((0, 1),)), "strong length"),
        (RefineRequest(512, 3, ((0, 0),)), "empty or too large"),
        (RefineRequest(512, 3, ((0, MAX_REFINE_BLOCKS), (9, 1))), "empty or too large"),
    ],
)
def test_refine_request_bounds(event: RefineRequest, reason: str) -> None:
    writer = Writer()
    writer.u32(event.block_size)
    writer.u8(event.strong_len)
    writer.u32(len(event.ranges))
    for first, count in event.ranges:
        writer.u64(first)
        writer.u32(count)
    with pytest.raises(RemoteProtocolError, match=reason):
        decode_event(RefineRequest.TYPE, writer.getvalue())


def test_an_oversized_refine_request_is_not_sent() -> None:
    with pytest.raises(LocalProtocolError):
        RefineRequest(512, 3, ((0, MAX_REFINE_BLOCKS + 1),)).encode_payload()


def test_refinement_happens_inside_a_fetch_only() -> None:
    master, agent = fetching()
    master.receive_data(agent.send(RefineRequest(512, 3, ((4, 2),))))
    assert master.next_event() == RefineRequest(512, 3, ((4, 2),))
    assert master.state is State.AWAIT_REFINE
    with pytest.raises(LocalProtocolError):
        agent.send(DeltaData(b"x"))  # the agent waits for the reply
    agent.receive_data(master.send(RefineReply(b"\0" * 14)))
    assert agent.next_event() == RefineReply(b"\0" * 14)
    assert master.state is agent.state is State.AWAIT_DELTA
    with pytest.raises(LocalProtocolError):
        master.send(RefineReply(b""))  # unasked
    master.receive_data(agent.send(DeltaData(b"x")))
    assert master.next_event() == DeltaData(b"x")
    assert master.state is agent.state is State.SENDING_DELTA
    with pytest.raises(LocalProtocolError):
        agent.send(RefineRequest(512, 3, ((4, 2),)))  # too late: its delta has started
