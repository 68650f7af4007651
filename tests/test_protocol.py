"""The sans-I/O protocol: two connections wired in memory, no sockets (as h11 tests itself)."""

from __future__ import annotations

import struct

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from deltastage.delta.params import MAX_BASES, MAX_SKETCH_BYTES
from deltastage.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from deltastage.protocol import (
    CAPABILITIES,
    EOF,
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
    Role,
    Sentinel,
    SigData,
    SigEnd,
    State,
    WireEntry,
)
from deltastage.protocol.events import (
    MAX_FETCH_MANY,
    MAX_INDICATORS,
    MAX_PROBE_EXAMPLES,
    decode_event,
)
from deltastage.protocol.frames import FrameDecoder, encode_frame
from deltastage.protocol.wire import Writer

HELLO = Hello(PROTOCOL_VERSION, "0.1.0", CAPABILITIES, ("cback.stage",))
REPLY = HelloReply(PROTOCOL_VERSION, "0.1.0", ("/srv/a", "/srv/b"), CAPABILITIES, ("cback.stage",))


def pump(sender: Connection, receiver: Connection, event: Event) -> Event | Sentinel:
    receiver.receive_data(sender.send(event))
    return receiver.next_event()


def handshaken() -> tuple[Connection, Connection]:
    master, agent = Connection(Role.MASTER), Connection(Role.AGENT)
    assert pump(master, agent, HELLO) == HELLO
    assert pump(agent, master, REPLY) == REPLY
    assert master.state is agent.state is State.IDLE
    return master, agent


# --- strategies: every message ------------------------------------------------------------

# 16 characters are at most 64 bytes of UTF-8: within every text bound of the protocol
texts = st.text(max_size=16)
names = st.text(min_size=1, max_size=30)
caps = st.frozensets(st.text(max_size=16), max_size=5)
# indicator names are single file names
indicators = st.lists(
    st.text(
        st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=30,
    ).filter(lambda name: name not in (".", "..")),
    max_size=MAX_INDICATORS,
).map(tuple)


@st.composite
def entries(draw: st.DrawFn) -> WireEntry:
    kind = draw(st.sampled_from(["file", "symlink", "special"]))
    return WireEntry(
        path=draw(names),
        kind=kind,
        size=draw(st.integers(0, 2**64 - 1)),
        mtime_ns=draw(st.integers(-(2**63), 2**63 - 1)),
        mode=draw(st.integers(0, 0o7777)),
        xxh3_128=draw(st.binary(min_size=16, max_size=16)) if kind == "file" else None,
        sketch=draw(st.none() | st.binary(min_size=1, max_size=MAX_SKETCH_BYTES))
        if kind == "file"
        else None,
        recipe=draw(st.none() | st.binary(min_size=1, max_size=64)) if kind == "file" else None,
    )


@st.composite
def probe_replies(draw: st.DrawFn) -> ProbeReply:
    examples = tuple(draw(st.lists(names, max_size=MAX_PROBE_EXAMPLES)))
    counts = st.integers(0, 2**64 - 1)
    foreign = draw(st.integers(len(examples), 2**64 - 1))
    return ProbeReply(draw(counts), foreign, draw(counts), examples)


events = st.one_of(
    st.builds(Hello, st.just(PROTOCOL_VERSION), texts, caps, indicators),
    st.builds(
        HelloReply, st.just(PROTOCOL_VERSION), texts, st.tuples(names, names), caps, indicators
    ),
    st.just(Bye()),
    st.builds(Error, st.sampled_from(list(ErrorCode)), texts),
    st.builds(ListRequest, names, st.booleans()),
    st.builds(ListBatch, st.lists(entries(), max_size=20).map(tuple)),
    st.builds(ListEnd, st.integers(0, 2**64 - 1)),
    st.builds(IndicatorQuery, names, names),
    st.builds(IndicatorState, st.booleans()),
    st.builds(IndicatorWrite, names, names),
    st.just(Ok()),
    st.builds(
        Fetch,
        names,
        names,
        st.integers(0, 22),
        st.booleans(),
        st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=MAX_BASES).map(tuple),
        st.booleans(),
    ),
    st.builds(
        FetchMany, names, st.lists(names, min_size=1, max_size=8).map(tuple), st.integers(0, 22)
    ),
    st.builds(SigData, st.binary(max_size=300)),
    st.just(SigEnd()),
    st.just(Cancel()),
    st.builds(DeltaData, st.binary(max_size=300)),
    st.just(DeltaEnd()),
    st.builds(ProbeRequest, names),
    probe_replies(),
)


@given(events)
def test_every_message_round_trips(event: Event) -> None:
    frame = encode_frame(event.TYPE, event.encode_payload())
    decoder = FrameDecoder({event.TYPE})
    decoder.feed(frame)
    got = decoder.next_frame()
    assert got is not None
    assert decode_event(*got) == event
    assert decoder.buffered == 0


@given(st.lists(events, min_size=1, max_size=8), st.data())
def test_decoder_accepts_any_split(sequence: list[Event], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(e.TYPE, e.encode_payload()) for e in sequence)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder({e.TYPE for e in sequence})
    got: list[Event] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoder.feed(stream[start:end])
        while (frame := decoder.next_frame()) is not None:
            got.append(decode_event(*frame))
    assert got == sequence


@given(st.binary(max_size=200))
def test_garbage_only_ever_raises_protocol_errors(data: bytes) -> None:
    for role in Role:
        conn = Connection(role)
        conn.receive_data(data)
        conn.receive_data(b"")
        try:
            while conn.next_event() not in (NEED_DATA, EOF):
                pass
        except ProtocolError:
            pass


# --- conversations ------------------------------------------------------------------------


def test_a_whole_conversation_one_byte_at_a_time() -> None:
    master, agent = Connection(Role.MASTER), Connection(Role.AGENT)
    entry = WireEntry("a b/ü\nx", "file", 5, 1_700_000_000_000_000_000, 0o644, b"\x01" * 16)
    script: list[tuple[Connection, Connection, Event]] = [
        (master, agent, HELLO),
        (agent, master, REPLY),
        (master, agent, ListRequest("/srv/a")),
        (agent, master, ListBatch((entry,) * 3)),
        (agent, master, ListEnd(3)),
        (master, agent, IndicatorQuery("/srv/a", "cback.collect")),
        (agent, master, IndicatorState(True)),
        (master, agent, IndicatorWrite("/srv/a", "cback.stage")),
        (agent, master, Ok()),
        (master, agent, Fetch("/srv/a", "x/y", 5)),
        (master, agent, SigData(b"sig" * 100)),
        (master, agent, SigEnd()),
        (agent, master, DeltaData(b"delta")),
        (agent, master, DeltaEnd()),
        (master, agent, Fetch("/srv/a", "gone", 3)),
        (master, agent, SigEnd()),
        (agent, master, Error(ErrorCode.NOT_FOUND, "gone: no such file")),
        (master, agent, Fetch("/srv/a", "x", 3)),
        (master, agent, Cancel()),
        (master, agent, Bye()),
    ]
    for sender, receiver, event in script:
        data = sender.send(event)
        for i in range(len(data)):
            assert receiver.next_event() is NEED_DATA
            receiver.receive_data(data[i : i + 1])
        assert receiver.next_event() == event
        assert receiver.next_event() is NEED_DATA
        assert sender.state is receiver.state
    assert master.state is State.CLOSED
    agent.receive_data(b"")
    assert agent.next_event() is EOF


def test_listing_batches_are_compressed() -> None:
    batch = ListBatch(
        tuple(
            WireEntry(
                f"daily/host-{i:05d}.tar.gz",
                "file",
                10**9,
                1_700_000_000 * 10**9,
                0o600,
                i.to_bytes(16, "big"),
            )
            for i in range(1000)
        )
    )
    raw_size = sum(1 + 2 + 8 + 8 + 4 + len(e.path) + 16 for e in batch.entries)
    assert len(batch.encode_payload()) < raw_size / 3


@pytest.mark.parametrize(
    ("role", "state_setup", "event"),
    [
        (Role.MASTER, [], ListRequest("/srv/a")),  # before the handshake
        (Role.MASTER, [], SigData(b"x")),
        (Role.AGENT, [], HelloReply(1, "x", (), frozenset())),  # nobody said hello
        (Role.AGENT, [], DeltaEnd()),
        (Role.MASTER, [HELLO, REPLY], SigEnd()),  # no fetch in progress
        (Role.AGENT, [HELLO, REPLY], Ok()),  # unsolicited answer
        (Role.AGENT, [HELLO, REPLY], Error(ErrorCode.IO, "x")),
        (Role.MASTER, [HELLO, REPLY], Hello(1, "x", frozenset())),  # second hello
        (Role.AGENT, [HELLO, REPLY, ListRequest("r")], IndicatorState(True)),
        # writes wait for every answer (a listing may go ahead, a write may not)
        (Role.MASTER, [HELLO, REPLY, ListRequest("r")], IndicatorWrite("r", "x")),
    ],
)
def test_out_of_order_is_refused_on_both_ends(
    role: Role, state_setup: list[Event], event: Event
) -> None:
    master, agent = Connection(Role.MASTER), Connection(Role.AGENT)
    for ev in state_setup:
        sender, receiver = (
            (master, agent) if isinstance(ev, Hello | ListRequest) else (agent, master)
        )
        assert pump(sender, receiver, ev) == ev
    sender, receiver = (master, agent) if role is Role.MASTER else (agent, master)
    with pytest.raises(LocalProtocolError, match="may not send"):
        sender.send(event)
    # the same bytes forged onto the wire are caught by the receiving end
    receiver.receive_data(encode_frame(event.TYPE, event.encode_payload()))
    with pytest.raises(RemoteProtocolError, match="sent"):
        receiver.next_event()
    assert receiver.state is State.ERROR
    with pytest.raises(RemoteProtocolError, match="already failed"):
        receiver.next_event()


def test_agent_may_always_end_with_a_protocol_error() -> None:
    master, agent = handshaken()
    agent.receive_data(encode_frame(0x7F, b""))
    with pytest.raises(RemoteProtocolError, match="unknown frame type 0x7f"):
        agent.next_event()
    last_word = Error(ErrorCode.PROTOCOL, "bad frame")
    assert pump(agent, master, last_word) == last_word
    assert master.state is agent.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        master.send(ListRequest("/srv/a"))


def test_master_cannot_send_an_error() -> None:
    master, _ = handshaken()
    with pytest.raises(LocalProtocolError):
        master.send(Error(ErrorCode.PROTOCOL, "x"))


# --- malformed input ----------------------------------------------------------------------


def feed_raw(conn: Connection, data: bytes) -> None:
    conn.receive_data(data)
    conn.next_event()


def hello_payload(magic: bytes = b"DSTG", protocol: int = PROTOCOL_VERSION) -> bytes:
    """magic, protocol, version "v", no capabilities, no indicators"""
    return magic + struct.pack(">H", protocol) + struct.pack(">I", 1) + b"v" + b"\0\0" + b"\0\0"


OURS = struct.pack(">H", PROTOCOL_VERSION)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"SSH-2.0-OpenSSH banner\r\n", "not a deltastage peer"),
        (encode_frame(0x01, b"DS"), "truncated at magic"),
        (b"\x01" + struct.pack(">I", (1 << 20) + 1), "frame too large"),
        (encode_frame(0x01, hello_payload(magic=b"HTTP")), "magic"),
        (encode_frame(0x01, hello_payload() + b"\0"), "trailing bytes"),
        (encode_frame(0x01, hello_payload()[:-1]), "truncated"),
        (
            encode_frame(0x01, b"DSTG\0\1" + struct.pack(">I", 1000) + b"v" * 1000 + b"\0\0"),
            "version too long",
        ),
        (
            encode_frame(0x01, b"DSTG" + OURS + b"\0\0\0\0" + b"\xff\xff"),
            "too many capability entries",
        ),
        (
            encode_frame(0x01, b"DSTG" + OURS + b"\0\0\0\0\0\0" + struct.pack(">H", 17)),
            "too many indicator entries: 17",
        ),
        (
            encode_frame(
                0x01,
                b"DSTG" + OURS + b"\0\0\0\0\0\0\0\1" + struct.pack(">I", 256) + b"i" * 256,
            ),
            "indicator too long: 256 bytes",
        ),
        *(
            (
                encode_frame(
                    0x01,
                    b"DSTG" + OURS + b"\0\0\0\0\0\0\0\1" + struct.pack(">I", len(bad)) + bad,
                ),
                "bad indicator name",
            )
            for bad in (b"a/b", b"..", b".", b"", b"x\0y")
        ),
    ],
)
def test_malformed_frames_from_the_master(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        feed_raw(Connection(Role.AGENT), data)


@pytest.mark.parametrize("cls", [Hello, HelloReply])
def test_a_handshake_in_another_protocol_decodes_to_its_numbers(cls: type[Event]) -> None:
    """A newer protocol may change every field after the version: still, both ends can say
    which protocols they speak."""
    for protocol, rest in ((PROTOCOL_VERSION + 1, b"anything at all"), (4, b"\0\0"), (1, b"")):
        payload = b"DSTG" + struct.pack(">H", protocol) + struct.pack(">I", 3) + b"9.9" + rest
        event = decode_event(cls.TYPE, payload)
        assert isinstance(event, Hello | HelloReply)
        assert (event.protocol, event.version, event.capabilities) == (protocol, "9.9", set())


def test_too_many_indicators_are_not_sent() -> None:
    for event in (
        Hello(PROTOCOL_VERSION, "v", CAPABILITIES, ("i",) * (MAX_INDICATORS + 1)),
        HelloReply(PROTOCOL_VERSION, "v", (), CAPABILITIES, ("i",) * (MAX_INDICATORS + 1)),
    ):
        with pytest.raises(LocalProtocolError, match="too many indicators"):
            event.encode_payload()


def test_a_probe_reply_lists_at_most_its_foreign_files_and_a_few() -> None:
    for event in (ProbeReply(0, 1, 0, ("a", "b")), ProbeReply(0, 99, 0, ("a",) * 9)):
        with pytest.raises(LocalProtocolError, match="too many probe examples"):
            event.encode_payload()
    counts = struct.pack(">QQQ", 0, 1, 0)
    for payload in (counts + b"\x02" + 2 * (struct.pack(">I", 1) + b"a"), counts[:-1]):
        with pytest.raises(RemoteProtocolError):
            decode_event(ProbeReply.TYPE, payload)


def listing_master() -> Connection:
    master, agent = handshaken()
    agent.receive_data(master.send(ListRequest("/srv/a")))
    assert agent.next_event() == ListRequest("/srv/a")
    return master


HASH = b"\0" * 16


def batch_frame(count: int, body: bytes) -> bytes:
    compressed = zstandard.ZstdCompressor().compress(body)
    return encode_frame(ListBatch.TYPE, struct.pack(">I", count) + compressed)


def entry_bytes(
    kind: int = 0,
    mode: int = 0o644,
    path: bytes = b"p",
    digest: bytes = b"",
    sketch: bytes = b"",
    recipe: bytes = b"",
) -> bytes:
    return struct.pack(">BHQqI", kind, mode, 1, 2, len(path)) + path + digest + sketch + recipe


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (batch_frame(1, entry_bytes(kind=9)), "unknown entry kind"),
        (batch_frame(1, entry_bytes(mode=0o17777)), "mode out of range"),
        (batch_frame(1, entry_bytes(kind=0)), "truncated at hash"),
        (batch_frame(1, entry_bytes(kind=1, digest=b"\0" * 16)), "trailing bytes"),
        (batch_frame(1, entry_bytes(digest=b"\0" * 16)), "truncated at sketch length"),
        (
            batch_frame(1, entry_bytes(digest=b"\0" * 16, sketch=b"\xff" + bytes(255))),
            "sketch of 255",
        ),
        (
            batch_frame(1, entry_bytes(digest=b"\0" * 16, sketch=b"\x09" + bytes(8))),
            "truncated at sketch",
        ),
        (batch_frame(1, entry_bytes(digest=b"\0" * 16, sketch=b"\x00")), "recipe length"),
        (
            batch_frame(
                1, entry_bytes(digest=b"\0" * 16, sketch=b"\x00", recipe=b"\x00\x01\x00\x01")
            ),
            "recipe of 65537",
        ),
        (
            batch_frame(1, entry_bytes(digest=b"\0" * 16, sketch=b"\x00", recipe=b"\0\0\0\x05ab")),
            "truncated at recipe",
        ),
        (
            batch_frame(1, entry_bytes(digest=b"\0" * 16, sketch=b"\x00", recipe=bytes(5))),
            "trailing bytes",
        ),
        (batch_frame(2, entry_bytes(kind=1)), "truncated"),
        (batch_frame(70000, b""), "listing batch too large"),
        (
            encode_frame(ListBatch.TYPE, b"\0\0\0\1" + b"\x28\xb5\x2f\xfd garbage"),
            "compressed block",
        ),
        (batch_frame(0, b"\0" * (5 << 20)), "declares 5242880 bytes"),
        (
            encode_frame(
                ListBatch.TYPE,
                b"\0\0\0\0" + zstandard.ZstdCompressor().compress(b"") + b"tail",
            ),
            "trailing data",
        ),
        (encode_frame(Error.TYPE, b"\x63\0\0\0\0"), "unknown error code"),
    ],
)
def test_malformed_frames_from_the_agent(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        feed_raw(listing_master(), data)


def test_bad_boolean_is_refused() -> None:
    master, agent = handshaken()
    agent.receive_data(master.send(IndicatorQuery("/srv/a", "cback.collect")))
    agent.next_event()
    with pytest.raises(RemoteProtocolError, match="not a boolean"):
        feed_raw(master, encode_frame(IndicatorState.TYPE, b"\x02"))


def test_bad_fetch_level_is_refused_both_ways() -> None:
    master, agent = handshaken()
    with pytest.raises(LocalProtocolError, match="level"):
        master.send(Fetch("/srv/a", "x", 23))
    assert master.state is State.IDLE
    payload = Fetch("/srv/a", "x", 3).encode_payload()[:-3] + b"\x17\x01\x00"
    with pytest.raises(RemoteProtocolError, match="level"):
        feed_raw(agent, encode_frame(Fetch.TYPE, payload))
    _, agent = handshaken()
    payload = Fetch("/srv/a", "x", 3).encode_payload()[:-2] + b"\x02\x00"
    with pytest.raises(RemoteProtocolError, match="refine is not a boolean"):
        feed_raw(agent, encode_frame(Fetch.TYPE, payload))


def test_stream_ending_inside_a_frame() -> None:
    master, agent = Connection(Role.MASTER), Connection(Role.AGENT)
    agent.receive_data(master.send(HELLO)[:-1])
    assert agent.next_event() is NEED_DATA
    agent.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="inside a frame"):
        agent.next_event()


def test_data_after_eof_is_a_local_mistake() -> None:
    conn = Connection(Role.AGENT)
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"x")


@pytest.mark.parametrize(
    "event",
    [
        WireEntry("p", "file", 1, 1, 0o644, None),
        WireEntry("p", "symlink", 1, 1, 0o644, b"\0" * 16),
        WireEntry("p", "file", 1, 1, 0o644, b"\0" * 15),
        WireEntry("p", "dir", 1, 1, 0o644, None),
        WireEntry("p", "special", 1, 1, 0o10000, None),
        WireEntry("p", "special", -1, 1, 0o644, None),
        WireEntry("p" * 5000, "special", 1, 1, 0o644, None),
        WireEntry("\ud800", "special", 1, 1, 0o644, None),
        WireEntry("p", "symlink", 1, 1, 0o644, None, b"\1" * 6),
        WireEntry("p", "file", 1, 1, 0o644, b"\0" * 16, b""),
        WireEntry("p", "file", 1, 1, 0o644, b"\0" * 16, b"\1" * (MAX_SKETCH_BYTES + 1)),
    ],
)
def test_we_refuse_to_send_bad_entries(event: WireEntry) -> None:
    master, agent = handshaken()
    agent.receive_data(master.send(ListRequest("/srv/a")))
    agent.next_event()
    with pytest.raises(LocalProtocolError):
        agent.send(ListBatch((event,)))
    assert agent.state is State.LISTING


def test_oversize_data_frame_is_refused_before_sending() -> None:
    master, _ = handshaken()
    master.send(Fetch("/srv/a", "x"))
    with pytest.raises(LocalProtocolError, match="frame too large"):
        master.send(SigData(b"\0" * ((1 << 20) + 1)))
    assert master.state is State.SENDING_SIGNATURE


def test_non_utf8_names_survive_the_wire() -> None:
    name = b"caf\xe9-\xff".decode("utf-8", "surrogateescape")
    entry = WireEntry(name, "special", 0, 0, 0, None)
    decoded = decode_event(ListBatch.TYPE, ListBatch((entry,)).encode_payload())
    assert isinstance(decoded, ListBatch)
    assert decoded.entries[0].path.encode("utf-8", "surrogateescape") == b"caf\xe9-\xff"


# --- pipelined fetches --------------------------------------------------------------------


def test_fetches_sent_ahead_are_answered_in_order_by_an_agent_reading_lazily() -> None:
    master, agent = handshaken()
    wire = bytearray()
    for name in ("a", "b", "c"):  # b and c go out while a's answer is pending
        wire += master.send(Fetch("/srv/a", name))
        wire += master.send(SigData(name.encode()))
        wire += master.send(SigEnd())
    assert master.state is State.AWAIT_DELTA and master.queued == 2
    agent.receive_data(bytes(wire))  # all of it arrives at once; the agent reads in turn
    answers = bytearray()
    for name in ("a", "b", "c"):
        assert agent.next_event() == Fetch("/srv/a", name)
        assert agent.next_event() == SigData(name.encode())
        assert agent.next_event() == SigEnd()
        answers += agent.send(DeltaData(name.encode() * 2))
        answers += agent.send(DeltaEnd())
    assert agent.next_event() is NEED_DATA
    master.receive_data(bytes(answers))
    for name in ("a", "b", "c"):
        assert master.next_event() == DeltaData(name.encode() * 2)
        assert master.next_event() == DeltaEnd()
    assert master.state is agent.state is State.IDLE and master.queued == 0
    assert pump(master, agent, ListRequest("/srv/a")) == ListRequest("/srv/a")


def test_a_fetch_many_is_answered_file_by_file_and_may_go_ahead() -> None:
    """Each of its paths gets a whole answer (delta data then DeltaEnd, or an Error), in
    order; one sent ahead queues one answer per path behind the current one."""
    master, agent = handshaken()
    wire = master.send(FetchMany("/srv/a", ("a", "b", "c")))
    assert master.state is State.AWAIT_DELTA and master.queued == 2
    wire += master.send(FetchMany("/srv/a", ("d", "e")))  # ahead of a, b and c's answers
    wire += master.send(Fetch("/srv/a", "f"))
    wire += master.send(SigEnd())
    assert master.queued == 5
    agent.receive_data(wire)
    assert agent.next_event() == FetchMany("/srv/a", ("a", "b", "c"))
    answers = agent.send(DeltaData(b"a")) + agent.send(DeltaEnd())
    answers += agent.send(Error(ErrorCode.NOT_FOUND, "b: gone"))
    answers += agent.send(DeltaEnd())  # c: empty
    assert agent.state is State.IDLE
    assert agent.next_event() == FetchMany("/srv/a", ("d", "e"))
    answers += agent.send(DeltaEnd()) + agent.send(DeltaEnd())
    assert agent.next_event() == Fetch("/srv/a", "f")
    assert agent.next_event() == SigEnd()
    answers += agent.send(DeltaEnd())
    master.receive_data(answers)
    got = []
    while (event := master.next_event()) is not NEED_DATA:
        got.append(event)
    assert got == [
        DeltaData(b"a"),
        DeltaEnd(),
        Error(ErrorCode.NOT_FOUND, "b: gone"),
        *[DeltaEnd()] * 4,
    ]
    assert master.state is agent.state is State.IDLE and master.queued == 0
    with pytest.raises(LocalProtocolError, match="may not send DeltaEnd"):
        agent.send(DeltaEnd())  # no answer is owed any more


def test_a_fetch_many_names_one_to_the_most_paths() -> None:
    for paths in ((), ("p",) * (MAX_FETCH_MANY + 1)):
        with pytest.raises(LocalProtocolError):
            FetchMany("/srv/a", paths).encode_payload()
        writer = Writer()  # the same, as a hostile master would write it
        writer.text("/srv/a", 100, "root")
        writer.u8(3, "level")
        writer.u16(len(paths), "count")
        for path in paths:
            writer.text(path, 100, "path")
        with pytest.raises(RemoteProtocolError, match="path"):
            decode_event(FetchMany.TYPE, writer.getvalue())


def test_a_request_being_sent_ahead_becomes_current_when_the_answer_before_ends() -> None:
    master, agent = handshaken()
    for event in (Fetch("/srv/a", "a"), SigEnd()):
        assert pump(master, agent, event) == event
    master.send(Fetch("/srv/a", "b"))  # ahead, signature still to come
    master.receive_data(agent.send(DeltaEnd()))
    assert master.next_event() == DeltaEnd()
    assert master.state is State.SENDING_SIGNATURE and master.queued == 0
    master.send(SigData(b"sig"))
    master.send(SigEnd())
    assert master.state is State.AWAIT_DELTA


def test_a_cancelled_request_ahead_expects_no_answer() -> None:
    master, agent = handshaken()
    for event in (Fetch("/srv/a", "a"), SigEnd()):
        pump(master, agent, event)
    master.send(Fetch("/srv/a", "b"))
    master.send(SigData(b"part"))
    master.send(Cancel())
    assert master.queued == 0
    master.receive_data(agent.send(DeltaEnd()))
    assert master.next_event() == DeltaEnd()
    assert master.state is State.IDLE


def test_hello_indicator_and_listing_travel_together() -> None:
    master, agent = Connection(Role.MASTER), Connection(Role.AGENT)
    wire = master.send(HELLO) + master.send(IndicatorQuery("/srv/a", "cback.collect"))
    wire += master.send(ListRequest("/srv/a"))
    assert master.state is State.AWAIT_HELLO_REPLY and master.queued == 2
    agent.receive_data(wire)
    answers = bytearray()
    assert agent.next_event() == HELLO
    answers += agent.send(REPLY)
    assert agent.next_event() == IndicatorQuery("/srv/a", "cback.collect")
    answers += agent.send(IndicatorState(True))
    assert agent.next_event() == ListRequest("/srv/a")
    answers += agent.send(ListEnd(0))
    master.receive_data(bytes(answers))
    assert [master.next_event() for _ in range(3)] == [REPLY, IndicatorState(True), ListEnd(0)]
    assert master.state is agent.state is State.IDLE and master.queued == 0


@pytest.mark.parametrize("event", [IndicatorWrite("/srv/a", "x"), Bye()])
def test_indicator_writes_and_bye_never_go_ahead(event: Event) -> None:
    master, agent = handshaken()
    for each in (Fetch("/srv/a", "a"), SigEnd()):
        pump(master, agent, each)
    with pytest.raises(LocalProtocolError, match="may not send"):
        master.send(event)
    master.send(Fetch("/srv/a", "b"))
    master.send(SigEnd())
    with pytest.raises(LocalProtocolError, match="queued"):
        master.send(event)


def test_a_refine_reply_follows_requests_sent_ahead_which_the_agent_sets_aside() -> None:
    from deltastage.protocol import RefineReply, RefineRequest

    master, agent = handshaken()
    for each in (Fetch("/srv/a", "a"), SigEnd()):
        pump(master, agent, each)
    ahead = (Fetch("/srv/a", "b"), SigEnd(), ListRequest("/srv/a"), Fetch("/srv/a", "c"))
    sent = b"".join(master.send(each) for each in (*ahead, SigData(b"part")))
    master.receive_data(agent.send(RefineRequest(1024, 3, ((0, 1),))))
    assert isinstance(master.next_event(), RefineRequest)
    assert master.state is State.AWAIT_REFINE and master.queued == 3
    agent.receive_data(sent + master.send(RefineReply(b"")))
    # waiting for its reply, the agent reads what came before it and sets that aside
    read = [agent.next_event() for _ in range(6)]
    assert read == [*ahead, SigData(b"part"), RefineReply(b"")]
    assert agent.state is State.AWAIT_DELTA and agent.queued == 3
    # each queued request's state is entered, on both sides, when the answer before ends
    for event in (DeltaData(b"x"), DeltaEnd()):
        pump(agent, master, event)
    assert master.state is agent.state is State.AWAIT_DELTA  # b's signature is all in
    pump(agent, master, DeltaEnd())
    assert master.state is agent.state is State.LISTING
    pump(agent, master, ListEnd(0))
    assert master.state is agent.state is State.SENDING_SIGNATURE  # c's, half sent
    assert pump(master, agent, SigEnd()) == SigEnd()
    assert master.state is agent.state is State.AWAIT_DELTA
    assert master.queued == agent.queued == 0


def test_what_may_not_go_ahead_is_refused_while_the_agent_awaits_a_refine_reply() -> None:
    from deltastage.protocol import RefineReply, RefineRequest

    fresh, _ = handshaken()
    with pytest.raises(LocalProtocolError):
        fresh.send(RefineReply(b""))  # nothing asked for it
    idle, _ = handshaken()
    write = idle.send(IndicatorWrite("/srv/a", "cback.stage"))  # only ever sent alone
    for raw in (write, encode_frame(SigEnd.TYPE, b"")):
        master, agent = handshaken()
        for each in (Fetch("/srv/a", "a"), SigEnd()):
            pump(master, agent, each)
        master.receive_data(agent.send(RefineRequest(1024, 3, ((0, 1),))))
        agent.receive_data(raw)
        with pytest.raises(RemoteProtocolError, match="master sent"):
            agent.next_event()


def test_the_agent_never_sends_ahead() -> None:
    master, agent = handshaken()
    for each in (Fetch("/srv/a", "a"), SigEnd()):
        pump(master, agent, each)
    with pytest.raises(LocalProtocolError):
        agent.send(Fetch("/srv/a", "b"))


def test_a_fetch_names_one_to_max_bases() -> None:
    for count in (0, MAX_BASES + 1):
        with pytest.raises(LocalProtocolError, match="bases outside"):
            Fetch("/srv/a", "x", basis_sizes=(1,) * count).encode_payload()
        payload = Fetch("/srv/a", "x", basis_sizes=(1,)).encode_payload()
        forged = payload[:-12] + bytes([count]) + (1).to_bytes(8, "big") * count + payload[-3:]
        with pytest.raises(RemoteProtocolError, match="bases outside"):
            decode_event(Fetch.TYPE, forged)
    sizes = tuple(range(MAX_BASES))
    assert decode_event(Fetch.TYPE, Fetch("/a", "b", basis_sizes=sizes).encode_payload()) == (
        Fetch("/a", "b", basis_sizes=sizes)
    )


def test_a_fetch_of_content_round_trips() -> None:
    for refine in (False, True):
        payload = Fetch("/srv/a", "x", refine=refine, content=True).encode_payload()
        assert decode_event(Fetch.TYPE, payload) == Fetch("/srv/a", "x", 3, refine, (0,), True)
    bad = payload[:-1] + b"\x02"
    with pytest.raises(RemoteProtocolError, match="content is not a boolean"):
        decode_event(Fetch.TYPE, bad)
