"""Fuzzing every decoder a peer's bytes reach: only the library's own errors come out.

Random and mutated inputs go through the frame decoder and state table (both roles), a
whole master session replaying a mutated agent transcript in random splits (listing,
indicator, delta stream, patch), the real agent answering a mutated master transcript on a
collect dir that must not change (but for the one indicator it may write), the signature
decoder, the delta patcher and the manifest decoder. The ``*_long`` variants are marked
slow; ``nox -s fuzz`` runs them under the "fuzz" profile (``--hypothesis-show-statistics``
prints how many inputs were tried).
"""

from __future__ import annotations

import gzip
import random
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deltastage.agent import serve
from deltastage.delta.codec import DeltaEncoder, make_delta
from deltastage.delta.patch import Patcher
from deltastage.delta.signature import (
    Signature,
    SignatureDecoder,
    encode_signature,
    encode_signatures,
    signature_of,
)
from deltastage.delta.sketch import sketch_of
from deltastage.errors import (
    DeltaFormatError,
    DeltastageError,
    ProtocolError,
    ResourceLimitError,
)
from deltastage.manifest import Manifest, ManifestEntry, decode_manifest, encode_manifest
from deltastage.master.session import PeerSession
from deltastage.protocol import (
    CAPABILITIES,
    DEFAULT_INDICATOR,
    EOF,
    NEED_DATA,
    PROTOCOL_VERSION,
    Bye,
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
    SigData,
    SigEnd,
    WireEntry,
)
from deltastage.protocol.frames import encode_frame
from deltastage.protocol.wire import Writer
from deltastage.transform.recipe import (
    Bzip2Stream,
    DeflateParams,
    GzipMember,
    Kind,
    Recipe,
    decode_recipe,
    encode_recipe,
)
from tests.helpers.hostile_agent import file_entry
from tests.helpers.hostile_master import DATA, plant, snapshot
from tests.helpers.transports import Replay

ROOT = "/collect"
BASIS = random.Random(1).randbytes(6000)
NEW = BASIS[:2000] + b"an edit in the middle" + BASIS[2500:] + b"and a tail"
SIG = signature_of(BASIS, block_size=512)
SIG_BYTES = encode_signature(SIG)
DELTA = make_delta(SIG, NEW)
# Several bases: the multi-basis signature and delta formats.
OTHER = random.Random(2).randbytes(3000)
MULTI_SIGS = (SIG, signature_of(OTHER, block_size=512), signature_of(b"", block_size=512))
MULTI_SIG_BYTES = encode_signatures(MULTI_SIGS)
MULTI_DELTA = make_delta(MULTI_SIGS, NEW[:3000] + OTHER[1024:] + NEW[3000:])
NOTHING = signature_of(b"")  # what a FetchMany's files are sent against
BEE_DELTA = make_delta(NOTHING, b"bee\n")
# A sparse file's delta: zero runs (holes) between data, in both formats.
SPARSE_NEW = NEW[:1500] + bytes(70_000) + NEW[1500:] + bytes(5000)


def sparse_delta(sigs: Signature | tuple[Signature, ...]) -> bytes:
    encoder = DeltaEncoder(sigs)
    return (
        encoder.update(NEW[:1500])
        + encoder.zeros(70_000)
        + encoder.update(NEW[1500:])
        + encoder.zeros(5000)
        + encoder.finish()
    )


RECIPE = encode_recipe(
    Recipe(Kind.GZIP, (GzipMember(gzip.compress(b"", mtime=0)[:10], DeflateParams(9), len(NEW)),))
)
SPARSE_DELTA = sparse_delta(SIG)
MULTI_SPARSE_DELTA = sparse_delta(MULTI_SIGS)
# What a fuzzed delta may expand to: beyond it the zero runs are refused, as the stage's
# receiver refuses them beyond the peer's write budget.
FUZZ_BUDGET = 64 << 20
ENTRIES = (
    file_entry("a", NEW, sketch=sketch_of(NEW).encode()),
    file_entry("dir/b.txt", b"bee\n"),
    file_entry("c.gz", gzip.compress(NEW, mtime=0), recipe=RECIPE),
    WireEntry("link", "symlink", 4, 0, 0o777, None),
)


def conversation() -> tuple[bytes, bytes]:
    """(master's bytes, agent's bytes) of a whole honest conversation, made by the real codecs."""
    master, agent = Connection(Role.MASTER), Connection(Role.AGENT)
    to_agent, to_master = bytearray(), bytearray()
    steps: list[tuple[list[Event], list[Event]]] = [
        (
            [Hello(PROTOCOL_VERSION, "m", CAPABILITIES, (DEFAULT_INDICATOR,))],
            [HelloReply(PROTOCOL_VERSION, "a", (ROOT,), CAPABILITIES, (DEFAULT_INDICATOR,))],
        ),
        ([IndicatorQuery(ROOT, "cback.collect")], [IndicatorState(True)]),
        ([ProbeRequest(ROOT)], [ProbeReply(1, 2, 0, ("a",))]),
        (
            [ListRequest(ROOT, prove=True)],
            [ListBatch(ENTRIES[:2]), ListBatch(ENTRIES[2:]), ListEnd(len(ENTRIES))],
        ),
        (
            [Fetch(ROOT, "a"), SigData(SIG_BYTES), SigEnd()],
            [DeltaData(DELTA[:100]), DeltaData(DELTA[100:]), DeltaEnd()],
        ),
        ([Fetch(ROOT, "dir/b.txt"), SigEnd()], [Error(ErrorCode.CHANGED, "changed while read")]),
        (
            [FetchMany(ROOT, ("dir/b.txt", "gone"))],
            [DeltaData(BEE_DELTA), DeltaEnd(), Error(ErrorCode.NOT_FOUND, "gone: no such file")],
        ),
        ([IndicatorWrite(ROOT, "cback.stage")], [Ok()]),
    ]
    for requests, answers in steps:
        for request in requests:
            data = master.send(request)
            to_agent += data
            agent.receive_data(data)
            while agent.next_event() is not NEED_DATA:
                pass
        for answer in answers:
            data = agent.send(answer)
            to_master += data
            master.receive_data(data)
            while master.next_event() is not NEED_DATA:
                pass
    return bytes(to_agent), bytes(to_master)


TO_AGENT, TO_MASTER = conversation()


def run_master(data: bytes, splits: list[int]) -> bytes | None:
    """A whole staging conversation against replayed agent bytes; the patched file, if any."""
    session = PeerSession(Replay(data, splits), max_entries=100)
    out: list[bytes] = []
    try:
        session.handshake()
        session.indicator_exists(ROOT, "cback.collect")
        session.probe_compression(ROOT)
        session.list_files(ROOT)
        patcher = Patcher(
            lambda offset, n: BASIS[offset : offset + n],
            out.append,
            basis_size=len(BASIS),
            basis_hash=SIG.basis_hash,
            zeros=lambda n: out.append(bounded_zeros(n, sum(map(len, out)))),
        )
        for chunk in session.fetch(ROOT, "a", [SIG_BYTES]):
            patcher.feed(chunk)
        patcher.finish()
        with pytest.raises(DeltastageError):
            for _ in session.fetch(ROOT, "dir/b.txt", [b""]):
                pass
        bee, gone = session.request_fetch_many(ROOT, ["dir/b.txt", "gone"])
        patcher = Patcher(lambda offset, n: b"", out.append, basis_size=0)
        for chunk in bee:
            patcher.feed(chunk)
        patcher.finish()
        with pytest.raises(DeltastageError):
            for _ in gone:
                pass
        session.write_indicator(ROOT, "cback.stage")
    finally:
        session.close()
    return b"".join(out)


def bounded_zeros(count: int, so_far: int) -> bytes:
    """A zero run within ``FUZZ_BUDGET`` of output, refused beyond it (as the stage does)."""
    if so_far + count > FUZZ_BUDGET:
        raise ResourceLimitError(f"a zero run past the fuzz budget: {count} bytes")
    return bytes(count)


def mutate(data: bytes, changes: list[tuple[int, int, bytes]]) -> bytes:
    """Apply (kind, position, bytes) edits: 0 flips, 1 inserts, 2 deletes, 3 overwrites."""
    buf = bytearray(data)
    for kind, position, blob in changes:
        at = position % (len(buf) + 1)
        if kind == 0 and buf and at < len(buf):
            buf[at] ^= blob[0] if blob else 0x80
        elif kind == 1:
            buf[at:at] = blob
        elif kind == 2:
            del buf[at : at + max(1, len(blob))]
        else:
            buf[at : at + len(blob)] = blob
    return bytes(buf)


changes = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.binary(max_size=12)),
    min_size=1,
    max_size=6,
)
splits = st.lists(st.integers(1, 4096), max_size=20)


def only_our_errors(call: Callable[[], object]) -> None:
    try:
        call()
    except DeltastageError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip(), message


# --- sanity: the unmutated inputs pass, so a mutant's error is the mutation's doing --------


def test_the_honest_conversation_replays_cleanly() -> None:
    assert run_master(TO_MASTER, [1] * 300) == NEW + b"bee\n"


def test_the_honest_master_transcript_writes_the_indicator(peer_tree: Path) -> None:
    fuzz_agent(peer_tree, [], [7] * 2000)
    assert (peer_tree / "collect" / DEFAULT_INDICATOR).read_bytes() == b""


def test_the_honest_inputs_decode() -> None:
    decoder = SignatureDecoder()
    decoder.feed(SIG_BYTES)
    assert decoder.result() == SIG
    decoder = SignatureDecoder(multi=True)
    decoder.feed(MULTI_SIG_BYTES)
    assert decoder.results() == MULTI_SIGS
    out: list[bytes] = []
    patcher = Patcher(
        [lambda offset, n, b=basis: b[offset : offset + n] for basis in (BASIS, OTHER, b"")],
        out.append,
        basis_size=[len(BASIS), len(OTHER), 0],
    )
    patcher.feed(MULTI_DELTA)
    patcher.finish()
    assert b"".join(out) == NEW[:3000] + OTHER[1024:] + NEW[3000:]
    for delta, bases in ((SPARSE_DELTA, (BASIS,)), (MULTI_SPARSE_DELTA, (BASIS, OTHER, b""))):
        out.clear()
        patcher = Patcher(
            [lambda offset, n, b=basis: b[offset : offset + n] for basis in bases],
            out.append,
            basis_size=[len(basis) for basis in bases],
        )
        patcher.feed(delta)
        patcher.finish()
        assert b"".join(out) == SPARSE_NEW
    manifest = Manifest(
        "p",
        "2026-11-23",
        (
            ManifestEntry("a/b", 3, b"\1" * 16, 0o644, 5),
            ManifestEntry("d.gz", 40, b"\3" * 16, 0o644, 0, None, RECIPE),
        ),
    )
    assert decode_manifest(encode_manifest(manifest)) == manifest
    read_only = Manifest("p", "2026-11-23", (), master_only_indicator="cback.stage")
    assert decode_manifest(encode_manifest(read_only)) == read_only


# --- the campaigns ------------------------------------------------------------------------


def fuzz_master_session(edits: list[tuple[int, int, bytes]], split: list[int]) -> None:
    only_our_errors(lambda: run_master(mutate(TO_MASTER, edits), list(split)))


def fuzz_connection(role: Role, data: bytes, split: list[int]) -> None:
    conn = Connection(role)
    if role is Role.MASTER:
        conn.send(Hello(PROTOCOL_VERSION, "m", CAPABILITIES))
    pieces, rest = [], data
    for size in split:
        pieces.append(rest[:size])
        rest = rest[size:]
    pieces.append(rest)
    try:
        for piece in pieces:
            if piece:
                conn.receive_data(piece)
                while conn.next_event() is not NEED_DATA:
                    pass
        conn.receive_data(b"")
        while conn.next_event() is not EOF:
            pass
    except ProtocolError as exc:
        assert str(exc) and "\n" not in str(exc)


AGENT_SIG = encode_signature(signature_of(DATA[:3000], block_size=512))
AGENT_MULTI_SIG = encode_signatures(
    (signature_of(DATA[:3000], block_size=512), signature_of(DATA[100:900], block_size=512))
)


def master_transcript(root: str) -> bytes:
    """A master's requests of every kind to an agent serving ``root``, writes of names it
    must refuse among them (frames as a hostile master would write them, unchecked)."""
    requests: list[Event] = [
        Hello(PROTOCOL_VERSION, "m", CAPABILITIES, (DEFAULT_INDICATOR,)),
        IndicatorQuery(root, "cback.collect"),
        ProbeRequest(root),
        ListRequest(root),
        Fetch(root, "a.txt", 3, False, (3000,)),
        SigData(AGENT_SIG),
        SigEnd(),
        Fetch(root, "a.txt", 3, False, (3000, 800)),
        SigData(AGENT_MULTI_SIG),
        SigEnd(),
        FetchMany(root, ("a.txt", "missing", "../up"), 3),
        IndicatorWrite(root, DEFAULT_INDICATOR),
        IndicatorWrite(root, "a.txt"),
        IndicatorWrite(root, "link-out"),
        IndicatorWrite(root, "fifo"),
        Bye(),
    ]
    return b"".join(encode_frame(e.TYPE, e.encode_payload()) for e in requests)


def fuzz_agent(top: Path, edits: list[tuple[int, int, bytes]], split: list[int]) -> None:
    """The agent answers a mutated master transcript and returns; the tree beneath ``top``
    is as it was, but for the one indicator the agent may write (created empty)."""
    collect = top / "collect"
    (collect / DEFAULT_INDICATOR).unlink(missing_ok=True)
    before = snapshot(top)
    data = mutate(master_transcript(str(collect)), edits)
    pieces = list(split)

    def read(n: int) -> bytes:
        nonlocal data
        size = max(1, min(pieces.pop(0) if pieces else n, n))
        chunk, data = data[:size], data[size:]
        return chunk

    serve([str(collect)], read, lambda answer: None, indicators=(DEFAULT_INDICATOR,))
    after = snapshot(top)
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert changed <= {"collect", f"collect/{DEFAULT_INDICATOR}"}, changed
    if changed:
        assert (collect / DEFAULT_INDICATOR).read_bytes() == b""


@pytest.fixture(scope="module")
def peer_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    top = tmp_path_factory.mktemp("peer")
    plant(top)
    return top


def fuzz_signature(data: bytes, *, multi: bool = False) -> None:
    def decode() -> None:
        decoder = SignatureDecoder(max_blocks=1 << 16, max_basis_size=1 << 26, multi=multi)
        decoder.feed(data)
        decoder.results()

    only_our_errors(decode)


def fuzz_patch(data: bytes, *, multi: bool = False) -> None:
    def patch() -> None:
        written = 0

        def write(chunk: bytes) -> None:
            nonlocal written
            written += len(chunk)
            assert written <= FUZZ_BUDGET, "a fuzzed delta may not expand without bound"

        def zeros(count: int) -> None:
            nonlocal written
            bounded_zeros(0, written + count)
            written += count

        bases = (BASIS, OTHER, b"") if multi else (BASIS,)
        patcher = Patcher(
            [lambda offset, n, b=basis: b[offset : offset + n] for basis in bases],
            write,
            basis_size=[len(basis) for basis in bases],
            basis_hash=[sig.basis_hash for sig in MULTI_SIGS[: len(bases)]],
            zeros=zeros,
        )
        patcher.feed(data)
        patcher.finish()

    only_our_errors(patch)


MANIFEST = encode_manifest(
    Manifest(
        "web1",
        "2026-11-23",
        (
            ManifestEntry("a/b.txt", 12, b"\1" * 16, 0o644, 10**18, sketch_of(NEW).encode()),
            ManifestEntry("c", 0, b"\2" * 16, 0o600, 0),
            ManifestEntry("d.gz", 40, b"\3" * 16, 0o644, 0, None, RECIPE),
        ),
        master_only_indicator="cback.stage",
    )
)


def fuzz_manifest(data: bytes) -> None:
    only_our_errors(lambda: decode_manifest(data))


# A gzip header with every optional field (extra, name, comment, header CRC), and bzip2.
_GZ_HEADER = b"\x1f\x8b\x08\x1e" + bytes(4) + b"\x02\xff" + b"\x02\x00ex" + b"a.tar\0c\0"
RECIPES = [
    encode_recipe(
        Recipe(
            Kind.GZIP,
            (
                GzipMember(
                    _GZ_HEADER + (zlib.crc32(_GZ_HEADER) & 0xFFFF).to_bytes(2, "little"),
                    DeflateParams(9),
                    123_456,
                ),
                GzipMember(_GZ_HEADER[:3] + bytes(7), DeflateParams(1, 9, 1, 12), 0),
            ),
        )
    ),
    encode_recipe(Recipe(Kind.BZIP2, (Bzip2Stream(9, 1 << 40), Bzip2Stream(1, 7)))),
]


def fuzz_recipe(data: bytes) -> None:
    """Only the format error comes out; whatever decodes encodes back to the same bytes."""
    try:
        recipe = decode_recipe(data)
    except DeltaFormatError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert encode_recipe(recipe) == data


@given(changes, splits)
def test_mutated_agent_transcript(edits: list[tuple[int, int, bytes]], split: list[int]) -> None:
    fuzz_master_session(edits, split)


@given(st.sampled_from([Role.MASTER, Role.AGENT]), st.binary(max_size=2048), splits)
def test_random_bytes_into_a_connection(role: Role, data: bytes, split: list[int]) -> None:
    fuzz_connection(role, data, split)


@given(st.sampled_from([Role.MASTER, Role.AGENT]), changes, splits)
def test_mutated_streams_into_a_connection(
    role: Role, edits: list[tuple[int, int, bytes]], split: list[int]
) -> None:
    fuzz_connection(role, mutate(TO_MASTER if role is Role.MASTER else TO_AGENT, edits), split)


@given(changes, splits)
def test_mutated_master_transcript_into_the_agent(
    peer_tree: Path, edits: list[tuple[int, int, bytes]], split: list[int]
) -> None:
    fuzz_agent(peer_tree, edits, split)


def raw_fetch(root: str, path: str, sizes: list[int]) -> bytes:
    """A Fetch frame written by hand: any basis count and sizes (the writer bounds them)."""
    writer = Writer()
    writer.text(root, 4096, "root")
    writer.text(path, 4096, "path")
    writer.u8(len(sizes), "count")
    for size in sizes:
        writer.u64(size, "size")
    writer.u8(3, "level")
    writer.u8(0, "refine")
    writer.u8(0, "content")
    return encode_frame(Fetch.TYPE, writer.getvalue())


@given(
    st.lists(st.sampled_from([0, 800, 3000]) | st.integers(0, (1 << 64) - 1), max_size=12),
    st.booleans(),
    splits,
)
def test_fetch_basis_fields_into_the_agent(
    peer_tree: Path, sizes: list[int], multi: bool, split: list[int]
) -> None:
    """Whatever bases a Fetch names, the agent answers (a delta only when they are those
    of the signature that follows, else a protocol error) and changes nothing."""
    collect = peer_tree / "collect"
    before = snapshot(peer_tree)
    signature, signed = (AGENT_MULTI_SIG, [3000, 800]) if multi else (AGENT_SIG, [3000])
    hello = Hello(PROTOCOL_VERSION, "m", CAPABILITIES, (DEFAULT_INDICATOR,))
    data = b"".join(
        [
            encode_frame(hello.TYPE, hello.encode_payload()),
            raw_fetch(str(collect), "a.txt", sizes),
            *(encode_frame(e.TYPE, e.encode_payload()) for e in (SigData(signature), SigEnd())),
            encode_frame(Bye.TYPE, Bye().encode_payload()),
        ]
    )
    pieces = list(split)
    answers = bytearray()

    def read(n: int) -> bytes:
        nonlocal data
        size = max(1, min(pieces.pop(0) if pieces else n, n))
        chunk, data = data[:size], data[size:]
        return chunk

    serve([str(collect)], read, answers.extend, indicators=(DEFAULT_INDICATOR,))
    assert snapshot(peer_tree) == before
    refused = b"Fetch named" in answers or b"bases outside" in answers
    assert refused == (sizes != signed), bytes(answers[-200:])


@given(st.one_of(st.binary(max_size=4096), changes.map(lambda c: mutate(SIG_BYTES, c))))
def test_signature_decoder(data: bytes) -> None:
    fuzz_signature(data)


@given(
    st.one_of(
        st.binary(max_size=4096),
        changes.map(lambda c: mutate(DELTA, c)),
        changes.map(lambda c: mutate(SPARSE_DELTA, c)),
    )
)
def test_patcher(data: bytes) -> None:
    fuzz_patch(data)


@given(st.one_of(st.binary(max_size=4096), changes.map(lambda c: mutate(MULTI_SIG_BYTES, c))))
def test_multi_basis_signature_decoder(data: bytes) -> None:
    fuzz_signature(data, multi=True)


@given(
    st.one_of(
        st.binary(max_size=4096),
        changes.map(lambda c: mutate(MULTI_DELTA, c)),
        changes.map(lambda c: mutate(MULTI_SPARSE_DELTA, c)),
    )
)
def test_multi_basis_patcher(data: bytes) -> None:
    fuzz_patch(data, multi=True)


MANIFEST_TRAPS = [
    b"[" * 100_000,
    b'{"format": "deltastage-manifest", "files": ' + b"[" * 50_000,
    b'{"format": "deltastage-manifest", "files": [{"size": ' + b"9" * 5000 + b"}]}",
    b'{"format": "deltastage-manifest", "files": [{"path": "../x", "size": 1}]}',
    b'{"format": "deltastage-manifest", "files": {"a": 1}}',
    b'{"format": "deltastage-manifest", "files": [{"path": "a", "xxh3_128": "zz", "size": 1}]}',
    b"\xff\xfe",
    b'{"format": "deltastage-manifest", "master_only_indicator": 5, "files": []}',
]


@pytest.mark.parametrize("data", MANIFEST_TRAPS, ids=range(len(MANIFEST_TRAPS)))
def test_manifest_traps(data: bytes) -> None:
    with pytest.raises(DeltastageError):
        decode_manifest(data)


@given(st.one_of(st.binary(max_size=1024), changes.map(lambda c: mutate(MANIFEST, c))))
def test_manifest_decoder(data: bytes) -> None:
    fuzz_manifest(data)


recipes = st.sampled_from(RECIPES)


@given(st.one_of(st.binary(max_size=1024), st.tuples(recipes, changes).map(lambda t: mutate(*t))))
def test_recipe_decoder(data: bytes) -> None:
    fuzz_recipe(data)


# --- long campaigns (nox -s fuzz) ---------------------------------------------------------


@pytest.mark.slow
@given(changes, splits)
def test_mutated_agent_transcript_long(
    edits: list[tuple[int, int, bytes]], split: list[int]
) -> None:
    fuzz_master_session(edits, split)


@pytest.mark.slow
@given(changes, splits)
def test_mutated_master_transcript_into_the_agent_long(
    peer_tree: Path, edits: list[tuple[int, int, bytes]], split: list[int]
) -> None:
    fuzz_agent(peer_tree, edits, split)


@pytest.mark.slow
@given(st.sampled_from([Role.MASTER, Role.AGENT]), st.binary(max_size=8192), splits)
def test_random_bytes_into_a_connection_long(role: Role, data: bytes, split: list[int]) -> None:
    fuzz_connection(role, data, split)


@pytest.mark.slow
@given(st.one_of(st.binary(max_size=8192), changes.map(lambda c: mutate(SIG_BYTES, c))))
def test_signature_decoder_long(data: bytes) -> None:
    fuzz_signature(data)


@pytest.mark.slow
@given(
    st.one_of(
        st.binary(max_size=8192),
        changes.map(lambda c: mutate(DELTA, c)),
        changes.map(lambda c: mutate(SPARSE_DELTA, c)),
    )
)
def test_patcher_long(data: bytes) -> None:
    fuzz_patch(data)


@pytest.mark.slow
@given(st.one_of(st.binary(max_size=4096), changes.map(lambda c: mutate(MANIFEST, c))))
def test_manifest_decoder_long(data: bytes) -> None:
    fuzz_manifest(data)


@pytest.mark.slow
@given(st.one_of(st.binary(max_size=1024), st.tuples(recipes, changes).map(lambda t: mutate(*t))))
def test_recipe_decoder_long(data: bytes) -> None:
    fuzz_recipe(data)
