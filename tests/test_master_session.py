"""PeerSession, the master's end: over the in-process agent, over a subprocess agent, and
against a scripted hostile agent."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import xxhash

from deltastage import __version__
from deltastage.delta.codec import DeltaEncoder, apply_delta
from deltastage.delta.patch import Patcher
from deltastage.delta.signature import SignatureBuilder
from deltastage.errors import (
    AgentError,
    ConnectionClosed,
    IndicatorRefused,
    IntegrityError,
    LocalProtocolError,
    RemoteProtocolError,
    ResourceLimitError,
    SourceChangedError,
    SourceVanishedError,
    TransportTimeout,
    UnsafePathError,
)
from deltastage.master.refinement import Refinement
from deltastage.master.session import PeerSession
from deltastage.protocol import (
    CAPABILITIES,
    PROTOCOL_VERSION,
    Bye,
    DeltaData,
    Error,
    ErrorCode,
    Event,
    Hello,
    HelloReply,
    ListBatch,
    ListEnd,
    ListRequest,
    RefineRequest,
    SigEnd,
    WireEntry,
)
from deltastage.protocol.frames import encode_frame
from deltastage.transports.base import Transport
from deltastage.transports.local import LocalTransport
from deltastage.transports.pipe import PipeTransport
from tests.helpers.transports import AgentThread, ScriptedAgent, TurnCounter

AGENT = [sys.executable, "-m", "deltastage", "agent"]


@pytest.fixture(params=["local", "pipe"])
def make_session(request: pytest.FixtureRequest) -> Iterator[Callable[[Path], PeerSession]]:
    sessions: list[PeerSession] = []

    def make(root: Path) -> PeerSession:
        if request.param == "local":
            transport: Transport = LocalTransport([str(root)])
        else:
            transport = PipeTransport([*AGENT, "--root", str(root)], idle_timeout=30)
        session = PeerSession(transport)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.close()


def fetch_file(
    session: PeerSession, root: Path, path: str, basis: bytes = b"", *, refine: bool = False
) -> bytes:
    builder = SignatureBuilder(len(basis))

    def signature() -> Iterator[bytes]:
        for start in range(0, len(basis), 100_000):
            yield builder.update(basis[start : start + 100_000])
        yield builder.finish()

    out = bytearray()
    patcher: Patcher | None = None
    reader = (lambda offset, n: basis[offset : offset + n]) if refine else None
    sizes = (len(basis),)
    for chunk in session.fetch(str(root), path, signature(), basis=reader, basis_sizes=sizes):
        if patcher is None:  # the signature has been sent by the time a delta byte arrives
            patcher = Patcher(
                lambda offset, n: basis[offset : offset + n],
                out.extend,
                basis_size=len(basis),
                basis_hash=builder.signature.basis_hash,
            )
        patcher.feed(chunk)
    assert patcher is not None
    result = patcher.finish()
    assert result.xxh3_128 == xxhash.xxh3_128_digest(bytes(out))
    return bytes(out)


def test_a_whole_staging_conversation(
    make_session: Callable[[Path], PeerSession], tmp_path: Path
) -> None:
    basis = os.urandom(2 << 20)
    new = basis[:100_000] + b"edited" + basis[100_000:]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "backup.tar").write_bytes(new)
    (tmp_path / "link").symlink_to("/etc/passwd")
    session = make_session(tmp_path)
    info = session.handshake()
    assert info.protocol == PROTOCOL_VERSION and info.roots == (str(tmp_path),)
    assert "hash=xxh3-128" in info.capabilities
    assert not session.indicator_exists(str(tmp_path), "cback.stage")
    session.write_indicator(str(tmp_path), "cback.stage")
    assert session.indicator_exists(str(tmp_path), "cback.stage")
    entries = session.list_files(str(tmp_path))
    assert [(e.path, e.kind) for e in entries] == [
        ("cback.stage", "file"),
        ("d/backup.tar", "file"),
        ("link", "symlink"),
    ]
    assert entries[1].xxh3_128 == xxhash.xxh3_128_digest(new)
    wire_before = session.wire_bytes
    assert fetch_file(session, tmp_path, "d/backup.tar", basis) == new
    assert session.wire_bytes - wire_before < len(new) // 10
    assert fetch_file(session, tmp_path, "d/backup.tar") == new  # no basis: all literals
    session.close()
    session.close()
    with pytest.raises(ConnectionClosed):
        session.list_files(str(tmp_path))


def test_agent_errors_map_to_the_error_tree(
    make_session: Callable[[Path], PeerSession], tmp_path: Path
) -> None:
    (tmp_path / "link").symlink_to("/etc/passwd")
    session = make_session(tmp_path)
    session.handshake()
    with pytest.raises(AgentError, match="not one of this agent's roots") as info:
        session.list_files("/etc")
    assert info.value.code == "not-a-root"
    with pytest.raises(UnsafePathError, match="symlink"):
        fetch_file(session, tmp_path, "link")
    with pytest.raises(SourceChangedError, match="no such file"):
        fetch_file(session, tmp_path, "vanished")
    # refused locally, before anything is sent
    for bad in ("../x", "/etc/passwd", "a//b", "a\0b"):
        with pytest.raises(UnsafePathError):
            session.fetch(str(tmp_path), bad, [])
    with pytest.raises(UnsafePathError):
        session.write_indicator(str(tmp_path), "../cback.stage")
    # none of that hurt the conversation
    assert [e.path for e in session.list_files(str(tmp_path))] == ["link"]


def test_a_file_changed_while_read(tmp_path: Path) -> None:
    target = tmp_path / "live.db"
    target.write_bytes(b"x" * 5000)
    touching = [True]

    class TouchingEncoder(DeltaEncoder):
        def update(self, data: bytes | bytearray | memoryview) -> bytes:
            if touching[0]:
                os.utime(target, ns=(1, 1))
            return super().update(data)

    session = PeerSession(AgentThread([str(tmp_path)], encoder=TouchingEncoder))
    session.handshake()
    with pytest.raises(SourceChangedError, match=r"live\.db: changed while read"):
        fetch_file(session, tmp_path, "live.db")
    touching[0] = False
    assert fetch_file(session, tmp_path, "live.db") == b"x" * 5000
    session.close()


def test_an_abandoned_fetch_is_drained(
    make_session: Callable[[Path], PeerSession], tmp_path: Path
) -> None:
    big = os.urandom(3 << 20)
    (tmp_path / "big").write_bytes(big)
    session = make_session(tmp_path)
    session.handshake()
    stream = session.fetch(str(tmp_path), "big", [SignatureBuilder(0).finish()], level=0)
    next(stream)
    del stream  # dropped half way, as a caller does when its patcher raises
    assert [e.path for e in session.list_files(str(tmp_path))] == ["big"]
    # and one left suspended is finished by the next request
    stream = session.fetch(str(tmp_path), "big", [SignatureBuilder(0).finish()], level=0)
    next(stream)
    assert session.indicator_exists(str(tmp_path), "cback.collect") is False
    with pytest.raises(StopIteration):
        next(stream)
    assert fetch_file(session, tmp_path, "big") == big


def test_a_failing_basis_withdraws_the_request(
    make_session: Callable[[Path], PeerSession], tmp_path: Path
) -> None:
    (tmp_path / "f").write_bytes(b"data")
    session = make_session(tmp_path)
    session.handshake()

    def broken_signature() -> Iterator[bytes]:
        yield b"DSIG"
        raise IntegrityError("basis shrank while being signed")

    with pytest.raises(IntegrityError, match="basis shrank"):
        list(session.fetch(str(tmp_path), "f", broken_signature()))
    assert fetch_file(session, tmp_path, "f") == b"data"


def test_a_malformed_signature_kills_the_session(
    make_session: Callable[[Path], PeerSession], tmp_path: Path
) -> None:
    (tmp_path / "f").write_bytes(b"data")
    session = make_session(tmp_path)
    session.handshake()
    with pytest.raises(RemoteProtocolError, match="malformed signature"):
        list(session.fetch(str(tmp_path), "f", [b"garbage"]))
    with pytest.raises(ConnectionClosed, match="earlier failure"):
        session.list_files(str(tmp_path))
    session.close()


def test_requests_out_of_turn(make_session: Callable[[Path], PeerSession], tmp_path: Path) -> None:
    session = make_session(tmp_path)
    with pytest.raises(LocalProtocolError):
        session.list_files(str(tmp_path))  # before the handshake
    with pytest.raises(ConnectionClosed):
        session.handshake()


def test_a_request_from_inside_a_running_fetch_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    session = PeerSession(LocalTransport([str(tmp_path)]))
    session.handshake()

    def signature() -> Iterator[bytes]:
        with pytest.raises(LocalProtocolError, match="in progress"):
            session.list_files(str(tmp_path))
        yield SignatureBuilder(0).finish()

    assert list(session.fetch(str(tmp_path), "f", signature()))
    assert [e.path for e in session.list_files(str(tmp_path))] == ["f"]
    session.close()


# --- a scripted, hostile agent ------------------------------------------------------------


def hello_then(
    on_list: Callable[[], list[Event | bytes]],
) -> Callable[[Event], list[Event | bytes]]:
    def script(event: Event) -> list[Event | bytes]:
        if isinstance(event, Hello):
            return [HelloReply(PROTOCOL_VERSION, "evil", ("/r",), CAPABILITIES)]
        if isinstance(event, ListRequest):
            return on_list()
        return []

    return script


def entry(path: str) -> WireEntry:
    return WireEntry(path, "file", 1, 1, 0o644, b"\0" * 16)


@pytest.mark.parametrize(
    ("batches", "error", "message"),
    [
        ([("../etc/passwd",)], UnsafePathError, r"'\.\.'"),
        ([("/etc/passwd",)], UnsafePathError, "absolute"),
        ([("a//b",)], UnsafePathError, "empty"),
        ([("a", "a")], RemoteProtocolError, "twice"),
        ([("a",), ("a/b",)], UnsafePathError, "both a file and a directory"),
        ([("x1", "x2", "x3", "x4")], ResourceLimitError, "more than 3 entries"),
    ],
)
def test_hostile_listings_are_refused(
    batches: list[tuple[str, ...]], error: type[Exception], message: str
) -> None:
    def listing() -> list[Event | bytes]:
        events: list[Event | bytes] = [ListBatch(tuple(entry(p) for p in b)) for b in batches]
        return [*events, ListEnd(sum(len(b) for b in batches))]

    transport = ScriptedAgent(hello_then(listing))
    session = PeerSession(transport, max_entries=3)
    session.handshake()
    with pytest.raises(error, match=message):
        session.list_files("/r")
    assert transport.closed
    with pytest.raises(ConnectionClosed):
        session.list_files("/r")


def test_a_lying_count_is_refused() -> None:
    transport = ScriptedAgent(hello_then(lambda: [ListBatch((entry("a"),)), ListEnd(2)]))
    session = PeerSession(transport)
    session.handshake()
    with pytest.raises(RemoteProtocolError, match="count mismatch"):
        session.list_files("/r")


@pytest.mark.parametrize("refine", [False, True])
def test_an_agent_refining_what_it_may_not_is_refused(refine: bool) -> None:
    """Refinement is the master's to allow: not of a fetch sent refine=0, and never of a
    signature in blocks under REFINE_MIN_BLOCK (1 KiB)."""

    def script(event: Event) -> list[Event | bytes]:
        if isinstance(event, Hello):
            return [HelloReply(PROTOCOL_VERSION, "evil", ("/r",), CAPABILITIES)]
        if isinstance(event, SigEnd):
            return [RefineRequest(512, 3, ((0, 1),))]
        return []

    transport = ScriptedAgent(script)
    session = PeerSession(transport)
    session.handshake()
    size = (4 << 20) if not refine else 4096  # blocks of 2 KiB, or far under 1 KiB
    builder = SignatureBuilder(size)
    assert (builder.block_size >= 1024) is not refine
    sig = builder.update(bytes(size)) + builder.finish()
    answer = session.request_fetch(
        "/r", "f", [sig], basis=lambda o, n: bytes(n), refine=refine, basis_sizes=(size,)
    )
    with pytest.raises(RemoteProtocolError, match="refine"):
        list(answer)
    assert transport.closed


def test_agent_going_silent_is_a_closed_connection() -> None:
    session = PeerSession(ScriptedAgent(hello_then(lambda: [ListBatch((entry("a"),))])))
    session.handshake()
    with pytest.raises(ConnectionClosed, match="agent closed"):
        session.list_files("/r")


def test_garbage_instead_of_an_agent() -> None:
    session = PeerSession(ScriptedAgent(lambda event: [b"Last login: Mon\r\n$ "]))
    with pytest.raises(RemoteProtocolError, match="not a deltastage peer"):
        session.handshake()
    with pytest.raises(ConnectionClosed):
        session.handshake()


def test_version_mismatch_either_way() -> None:
    newer = ScriptedAgent(lambda e: [HelloReply(PROTOCOL_VERSION + 1, "9.0", (), CAPABILITIES)])
    with pytest.raises(RemoteProtocolError, match=rf"speaks {PROTOCOL_VERSION}, agent 9.0 speaks"):
        PeerSession(newer).handshake()
    refusing = ScriptedAgent(lambda e: [Error(ErrorCode.PROTOCOL, "protocol version mismatch")])
    with pytest.raises(
        RemoteProtocolError,
        match=rf"agent refused the handshake of master .* speaks protocol {PROTOCOL_VERSION} ",
    ):
        PeerSession(refusing).handshake()
    # an agent of protocol 4 reads a Hello of 5 as one with bytes to spare, and says so: the
    # message still names the protocol this master speaks
    older = ScriptedAgent(
        lambda e: [Error(ErrorCode.PROTOCOL, "Hello: 15 unexpected trailing bytes")]
    )
    with pytest.raises(
        RemoteProtocolError, match=rf"protocol {PROTOCOL_VERSION} .*: Hello: 15 unexpected"
    ):
        PeerSession(older).handshake()
    lacking = ScriptedAgent(lambda e: [HelloReply(PROTOCOL_VERSION, "0", (), frozenset())])
    with pytest.raises(RemoteProtocolError, match="lacks capabilities"):
        PeerSession(lacking).handshake()


def test_the_handshake_names_the_indicators_each_end_writes(tmp_path: Path) -> None:
    scripted = ScriptedAgent(
        lambda e: [HelloReply(PROTOCOL_VERSION, "a", ("/r",), CAPABILITIES, ("done", "x"))]
    )
    session = PeerSession(scripted, indicators=["done"])
    info = session.handshake()
    assert scripted.seen[0] == Hello(PROTOCOL_VERSION, __version__, CAPABILITIES, ("done",))
    assert info.indicators == ("done", "x") and not info.read_only
    # a name it did not say it writes is refused before anything is sent
    with pytest.raises(LocalProtocolError, match="'x' is not an indicator this session"):
        session.write_indicator("/r", "x")
    assert len(scripted.seen) == 1
    with pytest.raises(UnsafePathError):
        PeerSession(scripted, indicators=["a/b"])


def test_an_agent_started_for_another_indicator_is_refused_at_the_handshake(
    tmp_path: Path,
) -> None:
    agent = PipeTransport([*AGENT, "--root", str(tmp_path), "--indicator", "done"], idle_timeout=30)
    session = PeerSession(agent, indicators=["cback.stage"])
    with pytest.raises(IndicatorRefused) as refused:
        session.survey(str(tmp_path), "cback.collect")
    assert refused.value.code == "refused" and refused.value.names == ("cback.stage",)
    assert "writes only the indicators 'done', not 'cback.stage'" in str(refused.value)
    assert "--indicator" in str(refused.value)
    with pytest.raises(ConnectionClosed):
        session.list_files(str(tmp_path))
    session.close()


def test_a_read_only_agent_says_so_and_refuses_every_write(tmp_path: Path) -> None:
    session = PeerSession(
        PipeTransport([*AGENT, "--root", str(tmp_path), "--read-only"], idle_timeout=30)
    )
    info = session.handshake()
    assert info.read_only and info.indicators == ()
    with pytest.raises(AgentError, match="read-only: it writes nothing") as refused:
        session.write_indicator(str(tmp_path), "cback.stage")
    assert refused.value.code == "refused"
    assert session.list_files(str(tmp_path)) == []  # the conversation goes on
    assert os.listdir(tmp_path) == []
    session.close()


def test_close_says_bye_only_when_it_may() -> None:
    transport = ScriptedAgent(hello_then(lambda: []))
    session = PeerSession(transport)
    session.handshake()
    session.close()
    assert transport.seen[-1] == Bye() and transport.closed
    assert session.wire_bytes == transport.bytes_sent + transport.bytes_received


def test_timeouts_kill_the_session() -> None:
    class Silent(ScriptedAgent):
        def recv(self, max_bytes: int) -> bytes:
            raise TransportTimeout("agent sent nothing for 1s")

    session = PeerSession(Silent(lambda e: []))
    with pytest.raises(TransportTimeout):
        session.handshake()
    with pytest.raises(ConnectionClosed, match="sent nothing"):
        session.handshake()


def test_a_refined_fetch_rebuilds_the_file_for_less(
    tmp_path: Path, make_session: Callable[[Path], PeerSession]
) -> None:
    rng = random.Random(5)
    basis = rng.randbytes(3 << 20)
    new = bytearray(basis)
    for at in range(50_000, len(new), 300_000):
        new[at : at + 20] = rng.randbytes(20)
    (tmp_path / "f").write_bytes(new)
    session = make_session(tmp_path)
    session.handshake()
    before = session.wire_bytes
    assert fetch_file(session, tmp_path, "f", basis) == new
    coarse = session.wire_bytes - before
    before = session.wire_bytes
    assert fetch_file(session, tmp_path, "f", basis, refine=True) == new
    refined = session.wire_bytes - before
    assert refined * 2 < coarse


def test_a_refinement_past_the_basis_kills_the_session(tmp_path: Path) -> None:
    def script(event: Event) -> list[Event | bytes]:
        if isinstance(event, Hello):
            return [HelloReply(PROTOCOL_VERSION, "evil", (str(tmp_path),), CAPABILITIES)]
        if isinstance(event, SigEnd):
            return [RefineRequest(512, 3, ((0, 1), (10**6, 1)))]
        return []

    session = PeerSession(ScriptedAgent(script))
    session.handshake()
    with pytest.raises(RemoteProtocolError, match="out-of-basis"):
        fetch_file(session, tmp_path, "f", b"x" * (1 << 20), refine=True)
    with pytest.raises(ConnectionClosed):
        session.list_files(str(tmp_path))


def test_a_refinement_after_delta_data_kills_the_session(tmp_path: Path) -> None:
    def script(event: Event) -> list[Event | bytes]:
        if isinstance(event, Hello):
            return [HelloReply(PROTOCOL_VERSION, "evil", (str(tmp_path),), CAPABILITIES)]
        if isinstance(event, SigEnd):
            late = RefineRequest(512, 3, ((0, 1),))  # raw: an honest Connection refuses it
            return [DeltaData(b"DDLT"), encode_frame(late.TYPE, late.encode_payload())]
        return []

    session = PeerSession(ScriptedAgent(script))
    session.handshake()
    with pytest.raises(RemoteProtocolError, match="RefineRequest in state sending-delta"):
        fetch_file(session, tmp_path, "f", b"x" * (1 << 20), refine=True)


def test_a_refinement_of_a_fine_signature_kills_the_session(tmp_path: Path) -> None:
    """The master sends requests behind such a fetch: a reply could not overtake them."""

    def script(event: Event) -> list[Event | bytes]:
        if isinstance(event, Hello):
            return [HelloReply(PROTOCOL_VERSION, "evil", (str(tmp_path),), CAPABILITIES)]
        if isinstance(event, SigEnd):
            return [RefineRequest(512, 3, ((0, 1),))]
        return []

    session = PeerSession(ScriptedAgent(script))
    session.handshake()
    with pytest.raises(RemoteProtocolError, match="under 1024"):
        fetch_file(session, tmp_path, "f", b"x" * 10_000, refine=True)


@pytest.mark.parametrize(
    "request_",
    [
        RefineRequest(512, 3, ((4, 4), (6, 1))),  # overlapping: the basis read twice
        RefineRequest(512, 3, ((6, 1), (4, 1))),  # not increasing
        RefineRequest(1 << 20, 3, ((0, 1),)),  # blocks larger than the signature's
    ],
)
def test_refinements_that_would_cost_more_than_a_signature_kill_the_session(
    tmp_path: Path, request_: RefineRequest
) -> None:
    def script(event: Event) -> list[Event | bytes]:
        if isinstance(event, Hello):
            return [HelloReply(PROTOCOL_VERSION, "evil", (str(tmp_path),), CAPABILITIES)]
        if isinstance(event, SigEnd):
            return [request_]
        return []

    session = PeerSession(ScriptedAgent(script))
    session.handshake()
    with pytest.raises(RemoteProtocolError, match="overlapping, oversized"):
        fetch_file(session, tmp_path, "f", b"x" * (1 << 20), refine=True)


def test_an_unreadable_basis_declines_the_refinement(tmp_path: Path) -> None:
    basis = random.Random(3).randbytes(1 << 20)
    new = basis[:300_000] + b"edit" + basis[300_000:]
    (tmp_path / "f").write_bytes(new)
    session = PeerSession(LocalTransport([str(tmp_path)]))
    session.handshake()
    builder = SignatureBuilder(len(basis))
    sig = builder.update(basis) + builder.finish()

    def unreadable(offset: int, n: int) -> bytes:
        raise OSError(5, "I/O error")

    delta = b"".join(
        session.fetch(str(tmp_path), "f", [sig], basis=unreadable, basis_sizes=(len(basis),))
    )
    assert apply_delta(basis, delta) == new  # coarse, but complete
    session.close()


# --- pipelined fetches --------------------------------------------------------------------


def empty_signature() -> list[bytes]:
    return [SignatureBuilder(0).finish()]


def test_answers_must_be_read_in_request_order(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(name.encode() * 100)
    session = PeerSession(LocalTransport([str(tmp_path)]))
    session.handshake()
    first = session.request_fetch(str(tmp_path), "a", empty_signature())
    second = session.request_fetch(str(tmp_path), "b", empty_signature())
    with pytest.raises(LocalProtocolError, match="order"):
        next(second)
    assert apply_delta(b"", b"".join(first)) == b"a" * 100
    # an answer nobody reads is drained by the next request that needs the agent idle
    third = session.request_fetch(str(tmp_path), "b", empty_signature())
    assert [e.path for e in session.list_files(str(tmp_path))] == ["a", "b"]
    with pytest.raises(StopIteration):
        next(third)  # drained: nothing left to read
    session.close()


def test_fetch_many_answers_each_file_in_turn(
    make_session: Callable[[Path], PeerSession], tmp_path: Path
) -> None:
    """One request, one whole-file delta per path; a file that cannot be sent fails alone."""
    (tmp_path / "a").write_bytes(b"a" * 1000)
    (tmp_path / "c").write_bytes(b"")
    session = make_session(tmp_path)
    session.handshake()
    a, missing, c = session.request_fetch_many(str(tmp_path), ["a", "missing", "c"], level=0)
    assert apply_delta(b"", b"".join(a)) == b"a" * 1000
    with pytest.raises(SourceVanishedError, match="missing"):
        b"".join(missing)
    assert apply_delta(b"", b"".join(c)) == b""
    assert [e.path for e in session.list_files(str(tmp_path))] == ["a", "c"]
    with pytest.raises(UnsafePathError):
        session.request_fetch_many(str(tmp_path), ["a", "../up"])
    session.close()


def edited_blocks(basis: bytes) -> bytes:
    """An insertion and a few scattered edits: enough edited blocks of random bytes that
    fine hashes pay for themselves, so the agent asks for them."""
    new = bytearray(basis[:1000] + b"edit" + basis[1000:])
    for at in range(100_000, len(new), 250_000):
        new[at : at + 4] = b"edit"
    return bytes(new)


@pytest.fixture
def refinements(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every RefineRequest the master answers, in order."""
    seen: list[object] = []
    real_answer = Refinement.answer

    def counted(self: Refinement, request: Any) -> bytes:
        seen.append(request)
        return real_answer(self, request)

    monkeypatch.setattr(Refinement, "answer", counted)
    return seen


def test_requests_go_ahead_of_a_fetch_that_is_then_refined(
    tmp_path: Path, refinements: list[object]
) -> None:
    """The agent reads the requests queued behind a fetch it refines, sets them aside until
    the RefineReply comes, then answers them in order (protocol 4)."""
    basis = random.Random(1).randbytes(2 << 20)
    (tmp_path / "big").write_bytes(edited_blocks(basis))
    for i in range(3):
        (tmp_path / f"small{i}").write_bytes(b"small %d" % i)
    session = PeerSession(LocalTransport([str(tmp_path)]))
    session.handshake()
    builder = SignatureBuilder(len(basis))
    assert builder.block_size >= 1024
    sig = builder.update(basis) + builder.finish()
    big = session.request_fetch(
        str(tmp_path),
        "big",
        [sig],
        basis=lambda offset, n: basis[offset : offset + n],
        basis_sizes=(len(basis),),
    )
    smalls = [
        session.request_fetch(str(tmp_path), f"small{i}", empty_signature()) for i in range(3)
    ]
    first = next(big)
    assert len(refinements) == 1, "refined, with three requests queued behind it"
    delta = first + b"".join(big)
    assert apply_delta(basis, delta) == edited_blocks(basis)
    for i, small in enumerate(smalls):
        assert apply_delta(b"", b"".join(small)) == b"small %d" % i
    session.close()


def test_a_fetch_sent_without_refine_is_never_refined(
    tmp_path: Path, refinements: list[object]
) -> None:
    """Behind unread answers a refinement would stall the agent, so the master may forbid
    it (which requests go ahead of it is master.pipeline's, see test_master_pipeline)."""
    basis = random.Random(2).randbytes(2 << 20)
    new = edited_blocks(basis)
    (tmp_path / "big").write_bytes(new)
    session = PeerSession(LocalTransport([str(tmp_path)]))
    session.handshake()
    builder = SignatureBuilder(len(basis))
    sig = builder.update(basis) + builder.finish()
    for refine in (False, True):
        big = session.request_fetch(
            str(tmp_path),
            "big",
            [sig],
            basis=lambda offset, n: basis[offset : offset + n],
            refine=refine,
            basis_sizes=(len(basis),),
        )
        assert apply_delta(basis, b"".join(big)) == new
        assert len(refinements) == int(refine)
    session.close()


def test_a_signature_failing_ahead_is_withdrawn_and_the_rest_goes_on(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(name.encode() * 50)
    session = PeerSession(LocalTransport([str(tmp_path)]))
    session.handshake()
    first = session.request_fetch(str(tmp_path), "a", empty_signature())

    def failing() -> Iterator[bytes]:
        yield SignatureBuilder(0).finish()[:10]
        raise IntegrityError("basis shrank while being signed")

    with pytest.raises(IntegrityError):
        session.request_fetch(str(tmp_path), "b", failing())
    third = session.request_fetch(str(tmp_path), "c", empty_signature())
    assert apply_delta(b"", b"".join(first)) == b"a" * 50
    assert apply_delta(b"", b"".join(third)) == b"c" * 50
    session.close()


def test_survey_is_one_round_trip_for_handshake_indicator_and_listing(tmp_path: Path) -> None:
    (tmp_path / "cback.collect").touch()
    (tmp_path / "f").write_bytes(b"data")
    counter = TurnCounter(LocalTransport([str(tmp_path)]))
    session = PeerSession(counter)
    ready, entries = session.survey(str(tmp_path), "cback.collect")
    assert ready and sorted(e.path for e in entries) == ["cback.collect", "f"]
    assert session.info is not None and counter.turns == 1
    session.close()


def test_a_survey_sent_and_flushed_is_answered_before_it_is_read(tmp_path: Path) -> None:
    """The survey goes out at once and is read later, in one round trip."""
    (tmp_path / "cback.collect").touch()
    counter = TurnCounter(LocalTransport([str(tmp_path)]))
    session = PeerSession(counter)
    assert session.send_survey(str(tmp_path), "cback.collect") is True
    session.flush()
    assert counter._sent
    # the same survey again is sent once; another one would have its answers come first
    assert session.send_survey(str(tmp_path), "cback.collect") is True
    with pytest.raises(LocalProtocolError, match="survey"):
        session.send_survey(str(tmp_path / "other"), "cback.collect")
    assert session.read_survey(str(tmp_path), True)[0] is True
    assert counter.turns == 1
    session.close()


def test_survey_of_an_unready_or_missing_root_keeps_the_session(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    session = PeerSession(LocalTransport([str(tmp_path), str(tmp_path / "gone")]))
    assert session.survey(str(tmp_path), "cback.collect") == (False, [])
    with pytest.raises(AgentError):
        session.survey(str(tmp_path / "gone"), "cback.collect")
    (tmp_path / "cback.collect").touch()
    ready, entries = session.survey(str(tmp_path), "cback.collect")
    assert ready and len(entries) == 2
    session.close()
