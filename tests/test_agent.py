"""The agent: confinement to its roots, listing, indicators, fetch, and robustness.

Most tests speak raw protocol to the real agent in a thread (``RawMaster``), so the
agent's own checks are exercised (the session would refuse many of these requests before
sending). Every refused indicator write is in test_hostile_master.py.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from deltastage.agent.conversation import Refusal
from deltastage.agent.rootfs import SKETCH_MIN_SIZE, RootFS
from deltastage.delta.codec import DeltaEncoder
from deltastage.delta.patch import Patcher
from deltastage.delta.signature import SignatureBuilder
from deltastage.delta.sketch import sketch_of
from deltastage.protocol import (
    CAPABILITIES,
    PROTOCOL_VERSION,
    Bye,
    Connection,
    DeltaData,
    DeltaEnd,
    Error,
    ErrorCode,
    Fetch,
    Hello,
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
)
from deltastage.protocol.frames import encode_frame
from deltastage.safefs import MAX_OPEN_DIRS
from tests.helpers.hostile_master import RawMaster


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A root with the awkward things a collect dir can hold, and a secret outside it."""
    root = tmp_path / "collect"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"top secret")
    (root / "plain.tar").write_bytes(b"plain" * 100)
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "deeper" / "f").write_bytes(b"")
    (root / "sub" / "a file with spaces").write_bytes(b"s")
    (root / "ünïcødé").write_bytes(b"u")
    (root / "new\nline").write_bytes(b"n")
    (root / os.fsdecode(b"latin1-\xe9")).write_bytes(b"l")
    (root / "empty-dir").mkdir()
    (root / "link-dir").symlink_to(outside)
    (root / "link-file").symlink_to(outside / "secret")
    os.mkfifo(root / "fifo")
    os.chmod(root / "plain.tar", 0o640)
    yield root, outside


@pytest.fixture
def raw(tree: tuple[Path, Path]) -> Iterator[RawMaster]:
    master = RawMaster([str(tree[0])])
    master.hello()
    yield master
    master.close()


def signature_of(basis: bytes) -> tuple[bytes, SignatureBuilder]:
    builder = SignatureBuilder(len(basis))
    encoded = builder.update(basis) + builder.finish()
    return encoded, builder


def patch(basis: bytes, delta: bytes, builder: SignatureBuilder) -> bytes:
    out = bytearray()
    patcher = Patcher(
        lambda offset, n: basis[offset : offset + n],
        out.extend,
        basis_size=len(basis),
        basis_hash=builder.signature.basis_hash,
    )
    patcher.feed(delta)
    result = patcher.finish()
    assert result.xxh3_128 == xxhash.xxh3_128_digest(bytes(out))
    return bytes(out)


# --- confinement --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["../outside/secret", "/etc/passwd", "sub/../../outside/secret", "sub//f", "./plain.tar",
     "plain.tar\0", "", "sub/deeper/", "sub/./deeper/f"],
)  # fmt: skip
def test_escaping_paths_are_refused(raw: RawMaster, tree: tuple[Path, Path], path: str) -> None:
    sig, _ = signature_of(b"")
    delta, end = raw.fetch(str(tree[0]), path, sig)
    assert delta == b""
    assert isinstance(end, Error) and end.code is ErrorCode.UNSAFE_PATH, end


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("link-dir/secret", ErrorCode.UNSAFE_PATH),
        ("link-file", ErrorCode.UNSAFE_PATH),
        ("fifo", ErrorCode.UNSAFE_PATH),
        ("sub", ErrorCode.UNSAFE_PATH),
        ("missing", ErrorCode.NOT_FOUND),
        ("plain.tar/x", ErrorCode.NOT_FOUND),
    ],
)
def test_symlinks_and_non_files_are_never_served(
    raw: RawMaster, tree: tuple[Path, Path], path: str, code: ErrorCode
) -> None:
    sig, _ = signature_of(b"")
    delta, end = raw.fetch(str(tree[0]), path, sig)
    assert isinstance(end, Error) and end.code is code, end
    assert b"top secret" not in delta


def test_a_requests_directories_stay_open_within_a_bound(tmp_path: Path) -> None:
    count = 3 * MAX_OPEN_DIRS
    for i in range(count):
        (tmp_path / f"d{i % 9}" / f"e{i}").mkdir(parents=True)
        (tmp_path / f"d{i % 9}" / f"e{i}" / "f").write_bytes(b"%d" % i)
    (tmp_path / "link").symlink_to(tmp_path / "d0")
    rootfs = RootFS([str(tmp_path)])
    before = len(os.listdir("/proc/self/fd"))
    with rootfs.files_beneath(str(tmp_path)) as open_file:
        for i in range(count):
            fd = open_file(f"d{i % 9}/e{i}/f")
            assert os.read(fd, 10) == b"%d" % i
            os.close(fd)
            assert len(os.listdir("/proc/self/fd")) - before <= MAX_OPEN_DIRS + 1  # the root
        # refused as ``open_file`` refuses them: a link not followed, a file as no directory
        for path, code in (
            ("link/e0/f", ErrorCode.UNSAFE_PATH),
            ("d0/e0/f/x", ErrorCode.NOT_FOUND),
        ):
            with pytest.raises(Refusal) as refused:
                open_file(path)
            assert refused.value.code is code
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_symlinked_directory_deeper_in_the_path_is_refused(
    raw: RawMaster, tree: tuple[Path, Path]
) -> None:
    root, outside = tree
    (outside / "nest").mkdir()
    (outside / "nest" / "x").write_bytes(b"outside")
    (root / "sub" / "deeper" / "hop").symlink_to(outside / "nest")
    sig, _ = signature_of(b"")
    _, end = raw.fetch(str(root), "sub/deeper/hop/x", sig)
    assert isinstance(end, Error) and end.code is ErrorCode.UNSAFE_PATH
    assert "symlink" in end.reason


@pytest.mark.parametrize("variant", ["parent", "trailing-slash", "slash"])
def test_only_the_exact_roots_are_served(
    raw: RawMaster, tree: tuple[Path, Path], variant: str
) -> None:
    root = {"parent": str(tree[0].parent), "trailing-slash": f"{tree[0]}/", "slash": "/"}[variant]
    result = raw.listing(root)
    assert isinstance(result, Error) and result.code is ErrorCode.NOT_A_ROOT
    raw.send(IndicatorWrite(root, "cback.stage"))
    answer = raw.receive()
    assert isinstance(answer, Error) and answer.code is ErrorCode.NOT_A_ROOT
    sig, _ = signature_of(b"")
    _, end = raw.fetch(root, "collect/plain.tar", sig)
    assert isinstance(end, Error) and end.code is ErrorCode.NOT_A_ROOT


# --- listing ------------------------------------------------------------------------------


def test_listing_reports_everything_and_follows_nothing(
    raw: RawMaster, tree: tuple[Path, Path]
) -> None:
    root, _ = tree
    entries = raw.listing(str(root))
    assert isinstance(entries, list)
    by_path = {e.path: e for e in entries}
    latin1 = os.fsdecode(b"latin1-\xe9")
    assert [e.path for e in entries] == sorted(by_path, key=os.fsencode)
    assert set(by_path) == {
        "fifo", "latin1-\udce9", "link-dir", "link-file", "new\nline", "plain.tar",
        "sub/a file with spaces", "sub/deeper/f", "ünïcødé",
    }  # fmt: skip
    assert latin1 in by_path
    plain = by_path["plain.tar"]
    assert (plain.kind, plain.size, plain.mode) == ("file", 500, 0o640)
    assert plain.xxh3_128 == xxhash.xxh3_128_digest(b"plain" * 100)
    assert plain.mtime_ns == os.stat(root / "plain.tar").st_mtime_ns
    assert by_path["sub/deeper/f"].xxh3_128 == xxhash.xxh3_128_digest(b"")
    assert by_path["link-dir"].kind == "symlink" and by_path["link-dir"].xxh3_128 is None
    assert by_path["link-file"].kind == "symlink"
    assert by_path["fifo"].kind == "special" and by_path["fifo"].xxh3_128 is None
    assert not any(e.path.startswith("link-dir/") for e in entries)


def test_a_big_files_listing_carries_its_sketch_from_the_same_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = np.random.default_rng(3).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    (tmp_path / "big.tar").write_bytes(big)
    (tmp_path / "edge").write_bytes(big[:SKETCH_MIN_SIZE])
    (tmp_path / "small").write_bytes(big[: SKETCH_MIN_SIZE - 1])
    reads: list[tuple[str, int]] = []
    real_pread = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        reads.append((os.readlink(f"/proc/self/fd/{fd}"), offset))
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    master = RawMaster([str(tmp_path)])
    master.hello()
    listed = master.listing(str(tmp_path))
    master.close()
    assert isinstance(listed, list)
    by_path = {e.path: e for e in listed}
    assert by_path["big.tar"].sketch == sketch_of(big).encode()
    assert by_path["edge"].sketch == sketch_of(big[:SKETCH_MIN_SIZE]).encode()
    assert by_path["small"].sketch is None
    assert len(reads) == len(set(reads)) == 5  # each piece of each file read once


def test_listing_is_deterministic(raw: RawMaster, tree: tuple[Path, Path]) -> None:
    assert raw.listing(str(tree[0])) == raw.listing(str(tree[0]))


def test_listing_a_missing_root(tmp_path: Path) -> None:
    master = RawMaster([str(tmp_path / "nope")])
    master.hello()
    result = master.listing(str(tmp_path / "nope"))
    assert isinstance(result, Error) and result.code is ErrorCode.NOT_FOUND
    master.send(IndicatorQuery(str(tmp_path / "nope"), "cback.collect"))
    answer = master.receive()  # a missing collect dir is named, not passed off as "not ready"
    assert isinstance(answer, Error) and answer.code is ErrorCode.NOT_FOUND
    master.close()


def test_listing_an_unreadable_directory_fails_clearly(
    raw: RawMaster, tree: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tree[0] / "sub" / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(fd: int) -> Any:
        # tests run as root, where chmod 0 would not stop the read: refuse it here instead
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/locked"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_scandir(fd)

    monkeypatch.setattr(os, "scandir", scandir)
    result = raw.listing(str(tree[0]))
    # its own code: fix the permissions, not the data
    assert isinstance(result, Error) and result.code is ErrorCode.DENIED
    assert "sub/locked" in result.reason and "permission denied" in result.reason


def test_listing_in_many_batches(tmp_path: Path) -> None:
    for i in range(3000):
        (tmp_path / f"{'x' * 100}-{i:05d}").write_bytes(b"")
    master = RawMaster([str(tmp_path)])
    master.hello()
    master.send(ListRequest(str(tmp_path)))
    batches = 0
    count = 0
    while isinstance(event := master.receive(), ListBatch):
        batches += 1
        count += len(event.entries)
    assert event == ListEnd(3000) and count == 3000 and batches >= 2
    master.close()


# --- indicators ---------------------------------------------------------------------------


def test_indicators(raw: RawMaster, tree: tuple[Path, Path]) -> None:
    root, outside = tree
    before = sorted(os.listdir(root))
    raw.send(IndicatorQuery(str(root), "cback.stage"))
    assert raw.receive() == IndicatorState(False)
    raw.send(IndicatorWrite(str(root), "cback.stage"))
    assert raw.receive() == Ok()
    assert (root / "cback.stage").read_bytes() == b""
    raw.send(IndicatorQuery(str(root), "cback.stage"))
    assert raw.receive() == IndicatorState(True)
    assert sorted(os.listdir(root)) == sorted([*before, "cback.stage"])  # no temp file left
    # written again: the empty file already there says the same, and stays
    inode = (root / "cback.stage").stat().st_ino
    raw.send(IndicatorWrite(str(root), "cback.stage"))
    assert raw.receive() == Ok()
    assert (root / "cback.stage").stat().st_ino == inode
    # a symlink named like the indicator neither counts nor gets written through, nor replaced
    (root / "cback.stage").unlink()
    (root / "cback.stage").symlink_to(outside / "secret")
    raw.send(IndicatorQuery(str(root), "cback.stage"))
    assert raw.receive() == IndicatorState(False)
    raw.send(IndicatorWrite(str(root), "cback.stage"))
    answer = raw.receive()
    assert isinstance(answer, Error) and answer.code is ErrorCode.REFUSED, answer
    assert "is a symlink" in answer.reason
    assert (outside / "secret").read_bytes() == b"top secret"
    assert os.readlink(root / "cback.stage") == str(outside / "secret")


@pytest.mark.parametrize("name", ["../escape", "a/b", ".", "..", "", "x\0y"])
def test_indicator_names_must_be_one_safe_component(
    raw: RawMaster, tree: tuple[Path, Path], name: str
) -> None:
    for request in (IndicatorQuery(str(tree[0]), name), IndicatorWrite(str(tree[0]), name)):
        raw.send(request)
        answer = raw.receive()
        assert isinstance(answer, Error) and answer.code is ErrorCode.UNSAFE_PATH, answer
    assert sorted(os.listdir(tree[0].parent)) == ["collect", "outside"]


@pytest.mark.parametrize(
    ("call", "code", "message"),
    [("open", errno.EROFS, "Read-only file system"), ("fsync", errno.EIO, "Input/output error")],
)
def test_a_failed_indicator_write_leaves_nothing(
    raw: RawMaster,
    tree: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    call: str,
    code: int,
    message: str,
) -> None:
    real = getattr(os, call)

    def failing(*args: Any, **kwargs: Any) -> Any:
        if call == "open" and args[0] != "cback.stage":
            return real(*args, **kwargs)  # the root itself opens as usual
        raise OSError(code, message)

    before = sorted(os.listdir(tree[0]))
    monkeypatch.setattr(os, call, failing)
    raw.send(IndicatorWrite(str(tree[0]), "cback.stage"))
    answer = raw.receive()
    assert isinstance(answer, Error) and answer.code is ErrorCode.IO
    assert message in answer.reason
    assert sorted(os.listdir(tree[0])) == before


# --- fetch --------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"x", os.urandom(3 << 20)])
def test_fetch_without_a_basis(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "f").write_bytes(content)
    master = RawMaster([str(tmp_path)])
    master.hello()
    sig, builder = signature_of(b"")
    delta, end = master.fetch(str(tmp_path), "f", sig)
    assert end == DeltaEnd()
    assert patch(b"", delta, builder) == content
    master.close()


def test_fetch_against_a_basis_sends_little(tmp_path: Path) -> None:
    basis = os.urandom(4 << 20)
    new = bytearray(basis[:1000] + b"an edit" + basis[1000:500_000] + basis[500_100:])
    edits = range(700_000, len(new), 400_000)  # enough edited blocks to pay for a refinement
    for at in edits:
        new[at : at + 10] = b"0123456789"
    (tmp_path / "f").write_bytes(new)
    master = RawMaster([str(tmp_path)])
    master.hello()
    sig, builder = signature_of(basis)
    delta, end = master.fetch(str(tmp_path), "f", sig, level=1)
    assert end == DeltaEnd()
    assert patch(basis, delta, builder) == new
    assert len(delta) < len(new) // 100
    # the agent asked for finer hashes beside the edits only, and did without them
    (asked,) = master.refinements
    assert asked.block_size < builder.block_size
    blocks_per_edit = 2 * (builder.block_size + asked.block_size) // asked.block_size
    assert asked.n_blocks <= (2 + len(edits)) * blocks_per_edit
    master.close()


def test_refined_fetch_sends_less_and_still_rebuilds_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    basis = rng.integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
    new = bytearray(basis)
    for at in range(100_000, len(new), 400_000):  # scattered small edits
        new[at : at + 10] = b"0123456789"
    new[2_000_000:2_000_000] = b"an insertion"
    (tmp_path / "f").write_bytes(new)
    master = RawMaster([str(tmp_path)])
    master.hello()
    sig, builder = signature_of(basis)
    coarse, _ = master.fetch(str(tmp_path), "f", sig, level=0)
    refined, end = master.fetch(str(tmp_path), "f", sig, level=0, basis=basis)
    assert end == DeltaEnd()
    assert patch(basis, refined, builder) == bytes(new) == patch(basis, coarse, builder)
    assert len(master.refinements) == 2
    # each edit costs a fine block of literal instead of a coarse one
    assert len(refined) * 3 < len(coarse)
    master.close()


def test_a_short_refinement_reply_ends_the_conversation(tmp_path: Path) -> None:
    basis = np.random.default_rng(8).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
    new = bytearray(basis)
    for at in range(100_000, len(new), 400_000):  # enough edited blocks to pay for it
        new[at : at + 4] = b"edit"
    (tmp_path / "f").write_bytes(new)
    master = RawMaster([str(tmp_path)])
    master.hello()
    sig, _ = signature_of(basis)
    master.send(Fetch(str(tmp_path), "f", 1, basis_sizes=(len(basis),)))
    master.send(SigData(sig))
    master.send(SigEnd())
    assert isinstance(master.receive(), RefineRequest)
    master.send(RefineReply(b"\x00" * 5))
    answer = master.receive()
    assert isinstance(answer, Error) and answer.code is ErrorCode.PROTOCOL
    assert "refinement reply has 5 bytes" in answer.reason
    master.close()


def test_a_file_changed_while_read_is_reported(tmp_path: Path) -> None:
    target = tmp_path / "growing.log"
    target.write_bytes(b"a" * 1000)
    appending = [True]

    class AppendingEncoder(DeltaEncoder):
        def update(self, data: bytes | bytearray | memoryview) -> bytes:
            if appending[0]:
                with open(target, "ab") as handle:
                    handle.write(b"more")
            return super().update(data)

    master = RawMaster([str(tmp_path)], encoder=AppendingEncoder)
    master.hello()
    sig, _ = signature_of(b"")
    _, end = master.fetch(str(tmp_path), "growing.log", sig)
    assert isinstance(end, Error) and end.code is ErrorCode.CHANGED
    assert "growing.log" in end.reason
    # the conversation goes on
    appending[0] = False
    _, end = master.fetch(str(tmp_path), "growing.log", sig)
    assert end == DeltaEnd()
    master.close()


def test_a_malformed_signature_ends_the_conversation(
    raw: RawMaster, tree: tuple[Path, Path]
) -> None:
    _, end = raw.fetch(str(tree[0]), "plain.tar", b"not a signature at all")
    assert isinstance(end, Error) and end.code is ErrorCode.PROTOCOL
    assert "signature" in end.reason
    assert raw.receive() is None


def test_a_truncated_signature_ends_the_conversation(
    raw: RawMaster, tree: tuple[Path, Path]
) -> None:
    sig, _ = signature_of(b"0123456789" * 1000)
    _, end = raw.fetch(str(tree[0]), "plain.tar", sig[:-5])
    assert isinstance(end, Error) and end.code is ErrorCode.PROTOCOL
    assert "ended early" in end.reason


# --- robustness ---------------------------------------------------------------------------


def test_version_mismatch_names_both_versions(tmp_path: Path) -> None:
    master = RawMaster([str(tmp_path)])
    master.send(Hello(PROTOCOL_VERSION + 1, "9.9", CAPABILITIES))
    answer = master.receive()
    assert isinstance(answer, Error) and answer.code is ErrorCode.PROTOCOL
    assert f"master speaks {PROTOCOL_VERSION + 1}" in answer.reason
    assert f"speaks {PROTOCOL_VERSION}" in answer.reason
    assert master.receive() is None
    master.close()


def test_missing_capability_is_refused(tmp_path: Path) -> None:
    master = RawMaster([str(tmp_path)])
    master.send(Hello(PROTOCOL_VERSION, "x", frozenset({"hash=md5"})))
    answer = master.receive()
    assert isinstance(answer, Error) and "hash=xxh3-128" in answer.reason
    master.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        encode_frame(0x01, b"DSTG"),
        b"\x01\xff\xff\xff\xff",
        encode_frame(ListRequest.TYPE, ListRequest("/").encode_payload()),  # before Hello
    ],
)
def test_garbage_gets_a_last_word_not_a_crash(tmp_path: Path, garbage: bytes) -> None:
    master = RawMaster([str(tmp_path)])
    master.agent.send(garbage)
    data = b""
    while chunk := master.agent.recv(4096):
        data += chunk
    reader = Connection(Role.MASTER)
    reader.send(Hello(1, "x", frozenset()))  # lets the agent's error arrive in a legal state
    reader.receive_data(data)
    answer = reader.next_event()
    assert isinstance(answer, Error) and answer.code is ErrorCode.PROTOCOL
    master.close()


def test_out_of_order_request_mid_conversation(raw: RawMaster) -> None:
    raw.agent.send(encode_frame(SigEnd.TYPE, b""))
    answer = raw.receive()
    assert isinstance(answer, Error) and answer.code is ErrorCode.PROTOCOL
    assert "SigEnd" in answer.reason


def test_bye_and_eof_end_the_agent(raw: RawMaster) -> None:
    raw.send(Bye())
    assert raw.agent.join_agent(10)


def test_master_vanishing_mid_delta_does_not_crash(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(os.urandom(4 << 20))
    master = RawMaster([str(tmp_path)])
    master.hello()
    sig, _ = signature_of(b"")
    master.send(Fetch(str(tmp_path), "big", 0))
    master.send(SigData(sig))
    master.send(SigEnd())
    assert isinstance(master.receive(), DeltaData)
    master.close()  # joins the agent thread: it must notice and return


@settings(max_examples=15)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 70_000), st.integers(0, 300), st.binary(max_size=300)),
        min_size=1,
        max_size=6,
    ),
    tail=st.binary(max_size=3000),
)
def test_refined_deltas_rebuild_any_edit(
    tmp_path_factory: pytest.TempPathFactory, edits: list[tuple[int, int, bytes]], tail: bytes
) -> None:
    rng = np.random.default_rng(len(edits))
    basis = rng.integers(0, 256, 70_001, dtype=np.uint8).tobytes()
    new = bytearray(basis)
    for at, cut, insert in edits:
        new[at : at + cut] = insert
    new += tail
    root = tmp_path_factory.mktemp("refine")
    (root / "f").write_bytes(new)
    builder = SignatureBuilder(len(basis), block_size=2048)
    sig = builder.update(basis) + builder.finish()
    master = RawMaster([str(root)])
    try:
        master.hello()
        delta, end = master.fetch(str(root), "f", sig, level=1, basis=basis)
        assert end == DeltaEnd()
        assert patch(basis, delta, builder) == new
    finally:
        master.close()
