"""A lying peer next to an honest one: the lie is refused, the honest peer still stages.

Every attack runs a whole ``run_stage`` over real directories, with the whole tmp tree
snapshotted before and after: nothing may change outside the two peers' staging dirs and
the few files a run is meant to write, the liar's peer dir holds no manifest, and the liar
is never told its data was staged.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import itertools
import os
import re
import stat
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import zstandard

from deltastage.config import Options, PeerConfig, load_config
from deltastage.delta.codec import DeltaEncoder
from deltastage.delta.signature import Signature
from deltastage.hashing import hash_bytes
from deltastage.manifest import MANIFEST_NAME, Manifest, ManifestEntry, encode_manifest
from deltastage.master.connect import LISTED_INDICATORS, bounded_session, open_peer_session
from deltastage.master.session import PeerSession
from deltastage.protocol import (
    CAPABILITIES,
    PROTOCOL_VERSION,
    DeltaData,
    DeltaEnd,
    Error,
    ErrorCode,
    Fetch,
    HelloReply,
    ListBatch,
    ListEnd,
    WireEntry,
)
from deltastage.stage.report import StageReport
from deltastage.stage.run import run_stage
from deltastage.transform.recipe import GzipMember, Kind, Recipe, encode_recipe
from deltastage.transform.search import Limits, find_recipe
from deltastage.verify import verify_peer_dir
from tests.helpers.hostile_agent import (
    Answer,
    HostileTransport,
    Liar,
    endless,
    file_entry,
    forged_list_batch,
    frame,
)
from tests.helpers.site import write_config

DAY = date(2026, 11, 23)
MAX_FILES = 500
MAX_BYTES = 2 << 20
IDLE = 0.4
SECRET = b"the outside world must not change\n"
HONEST = {"honest.txt": b"fine\n" * 100, "dir/data.bin": bytes(range(256)) * 40}

# --- delta forgery (layout of deltastage.delta.codec, written by hand to lie) -------------

DELTA_HEADER = struct.Struct("<4sBBHIQ16s")
DELTA_END = struct.Struct("<Q16s")


def delta_header(
    sig: Signature, *, block_size: int | None = None, basis_hash: bytes | None = None
) -> bytes:
    return DELTA_HEADER.pack(
        b"DDLT",
        1,
        0,
        0,
        sig.block_size if block_size is None else block_size,
        sig.basis_size,
        sig.basis_hash if basis_hash is None else basis_hash,
    )


def literal(data: bytes) -> bytes:
    return b"L" + struct.pack("<I", len(data)) + data


def trailer(size: int, digest: bytes) -> bytes:
    return b"E" + DELTA_END.pack(size, digest)


def delta_of(parts: Iterable[bytes]) -> list[Answer]:
    answers: list[Answer] = [DeltaData(part) for part in parts]
    return [*answers, DeltaEnd()]


def honest_trailer_for(data: bytes) -> bytes:
    from deltastage.hashing import hash_bytes

    return trailer(len(data), hash_bytes(data))


# --- the attacks --------------------------------------------------------------------------

ListHook = Callable[[Liar], Iterable[Answer]]
FetchHook = Callable[[Liar, Fetch, Signature], Iterable[Answer]]


@dataclass
class Attack:
    name: str
    expect: str  # regex the failed peer's error must match; "" = staged, safely
    files: dict[str, bytes] = field(default_factory=lambda: {"victim.bin": b"v" * 5000})
    on_list: ListHook | None = None
    on_fetch: FetchHook | None = None
    on_hello: ListHook | None = None
    plant: Callable[[Path, Path], None] | None = None  # (liar's peer dir, outside dir)


def listing_of(*entries: WireEntry) -> ListHook:
    return lambda liar: [ListBatch(entries), ListEnd(len(entries))]


def lying_file(path: str, data: bytes = b"x") -> ListHook:
    return listing_of(file_entry(path, data))


def forged(*entries: tuple[str, int, int, int], count: int | None = None) -> ListHook:
    n = len(entries) if count is None else count
    return lambda liar: [forged_list_batch(entries, count=count), ListEnd(n)]


def fetch_parts(make: Callable[[Liar, Fetch, Signature], Iterable[bytes]]) -> FetchHook:
    return lambda liar, request, sig: delta_of(make(liar, request, sig))


def honest_then(extra: bytes) -> FetchHook:
    return lambda liar, request, sig: delta_of([liar.delta_bytes(request.path, sig) + extra])


def endless_literals(liar: Liar, request: Fetch, sig: Signature) -> Iterator[Answer]:
    yield DeltaData(delta_header(sig))
    yield from endless(lambda n: DeltaData(literal(b"A" * 65536)))


# 64 MiB of zeros squeezed into a few KiB, made once (the liar must answer within IDLE)
BOMB = zstandard.ZstdCompressor(level=1).compress(b"\0" * (64 << 20))


def bomb(liar: Liar, request: Fetch, sig: Signature) -> Iterable[Answer]:
    op = b"Z" + struct.pack("<II", 16, len(BOMB)) + BOMB  # declared as a 16-byte literal
    return delta_of([delta_header(sig), op])


def listing_bomb(liar: Liar) -> Iterable[Answer]:
    return [frame_bytes(ListBatch.TYPE, struct.pack(">I", 1) + BOMB), ListEnd(1)]


def frame_bytes(frame_type: int, payload: bytes) -> bytes:
    from deltastage.protocol.frames import encode_frame

    return encode_frame(frame_type, payload, 1 << 31)


def half_delta_then_hang_up(liar: Liar, request: Fetch, sig: Signature) -> Iterator[Answer]:
    data = liar.delta_bytes(request.path, sig)
    yield DeltaData(data[: len(data) // 2])
    raise OSError("liar hangs up")


def plant_links(peer_dir: Path, outside: Path) -> None:
    peer_dir.mkdir(parents=True, exist_ok=True)
    (peer_dir / "etc").symlink_to(outside)
    (peer_dir / "victim.bin").symlink_to(outside / "secret.txt")
    (peer_dir / ".deltastage-partial").symlink_to(outside)


def deep(n: int) -> str:
    return "d/" * n + "f"


def multi_header(liar: Liar, extra: int = 0) -> bytes:
    """A several-bases delta header (delta.wire's DDLM) naming the bases the liar was
    offered, and ``extra`` made-up ones after them."""
    sigs = liar.signatures
    head = struct.pack("<4sBBHI", b"DDLM", 1, len(sigs) + extra, 0, sigs[0].block_size)
    named = [(s.basis_size, s.basis_hash) for s in sigs] + [(5000, b"\7" * 16)] * extra
    return head + b"".join(struct.pack("<Q16s", size, digest) for size, digest in named)


def plant_earlier_days(peer_dir: Path, outside: Path) -> None:
    """Last week's copy and yesterday's small one: the victim is fetched against both."""
    for day, data in (("22", b"v" * 100), ("16", b"v" * 4000 + b"w" * 1000)):
        earlier = peer_dir.parent.parent / day / "liar"
        earlier.mkdir(parents=True)
        (earlier / "victim.bin").write_bytes(data)


# A gzip file the liar lists with a recipe, and last week's copy of it, staged through its
# content (its manifest says so): the victim's fetch is a fetch of its content.
GZ_CONTENT = b"".join(b"line %d of the log\n" % n for n in range(2000))
GZ_VICTIM = gzip.compress(GZ_CONTENT + b"new\n", mtime=0)


def gz_recipe(data: bytes, **changes: int) -> bytes:
    found = find_recipe(lambda at, n: data[at : at + n], len(data), Limits(1 << 30, 1000))
    assert found.recipe is not None
    member = found.recipe.members[0]
    assert isinstance(member, GzipMember)
    params = dataclasses.replace(member.params, **changes)
    return encode_recipe(Recipe(Kind.GZIP, (dataclasses.replace(member, params=params),)))


def plant_compressed_day(peer_dir: Path, outside: Path) -> None:
    earlier = peer_dir.parent.parent / "22" / "liar"
    earlier.mkdir(parents=True)
    old = gzip.compress(GZ_CONTENT, mtime=0)
    (earlier / "victim.gz").write_bytes(old)
    entry = ManifestEntry("victim.gz", len(old), hash_bytes(old), 0o644, 0, None, gz_recipe(old))
    (earlier / MANIFEST_NAME).write_bytes(encode_manifest(Manifest("liar", "2026-11-22", (entry,))))


def recipe_listing(recipe: bytes) -> ListHook:
    return listing_of(file_entry("victim.gz", GZ_VICTIM, recipe=recipe))


def content_beyond_recipe(liar: Liar, request: Fetch, sig: Signature) -> Iterable[Answer]:
    """The content's delta, with more content than the recipe declares."""
    if not request.content:
        return liar.honest_delta(request, sig)
    encoder = DeltaEncoder(liar.signatures, level=3)
    data = encoder.update(GZ_CONTENT + b"new\n" + b"x" * 100_000) + encoder.finish()
    return [DeltaData(data), DeltaEnd()]


def compressed_attack(name: str, recipe: bytes, on_fetch: FetchHook | None = None) -> Attack:
    """The victim, a gzip file listed with ``recipe``, against last week's copy; each such
    attack is staged (as its content's delta, or again as its bytes)."""
    return Attack(
        name,
        "",
        files={"victim.gz": GZ_VICTIM},
        plant=plant_compressed_day,
        on_list=recipe_listing(recipe),
        on_fetch=on_fetch,
    )


ATTACKS = [
    Attack("dotdot", r"'\.\.'", on_list=lying_file("../../outside/secret.txt")),
    Attack("dotdot-inner", r"'\.\.'", on_list=lying_file("a/../../../outside/secret.txt")),
    Attack("absolute", "absolute", on_list=lying_file("/etc/passwd")),
    Attack("nul", "NUL", on_list=lying_file("a\0b")),
    Attack("empty-name", "empty", on_list=lying_file("a//b")),
    Attack("dot-component", r"'\.'", on_list=lying_file("./x")),
    Attack("overlong-component", "longer than 255", on_list=lying_file("n" * 300)),
    Attack("overlong-path", "path too long", on_list=forged(("p/" * 2500 + "q", 1, 0, 0o644))),
    Attack("too-deep", "deeper than|components", on_list=lying_file(deep(1500))),
    Attack("duplicate", "twice", on_list=listing_of(file_entry("a", b"1"), file_entry("a", b"2"))),
    Attack(
        "duplicate-across-batches",
        "twice",
        on_list=lambda liar: [
            ListBatch((file_entry("a", b"1"),)),
            ListBatch((file_entry("a", b"1"),)),
            ListEnd(2),
        ],
    ),
    Attack(
        "file-and-dir",
        "both a file and a directory",
        on_list=listing_of(file_entry("a", b"1"), file_entry("a/b", b"2")),
    ),
    Attack(
        "reserved-manifest-name",
        "reserve",
        files={MANIFEST_NAME: b'{"format": "deltastage-manifest", "files": []}'},
    ),
    Attack("reserved-internal-dir", "reserve", files={".deltastage-partial/x": b"x"}),
    Attack("reserved-temp-name", "reserve", files={"sub/.deltastage-tmp-0123": b"x"}),
    Attack("huge-size", "max_bytes_per_peer", on_list=forged(("big", (1 << 64) - 1, 0, 0o644))),
    Attack(
        "sizes-sum-past-limit",
        "max_bytes_per_peer",
        on_list=forged(*((f"f{i}", 1 << 20, 0, 0o644) for i in range(3))),
    ),
    Attack(
        "too-many-files",
        f"more than max_files_per_peer={MAX_FILES}",
        on_list=forged(*((f"f{i}", 1, 0, 0o644) for i in range(MAX_FILES + 1))),
    ),
    Attack(
        "count-lie",
        "count mismatch",
        on_list=lambda liar: [forged_list_batch([("a", 1, 0, 0o644)]), ListEnd(7)],
    ),
    Attack("batch-count-lie", "truncated|entries", on_list=forged(("a", 1, 0, 0o644), count=70000)),
    Attack("listing-bomb", "declares|limit", on_list=listing_bomb),
    Attack(
        "endless-listing",
        f"more than {MAX_FILES + LISTED_INDICATORS} entries",
        on_list=lambda liar: endless(lambda n: ListBatch((file_entry(f"f{n}", b"x"),))),
    ),
    Attack(
        "endless-empty-batches",
        "empty",
        on_list=lambda liar: endless(lambda n: ListBatch(())),
    ),
    Attack("silent-listing", "idle timeout", on_list=lambda liar: []),
    Attack(
        "oversize-frame",
        "frame too large",
        on_list=lambda liar: [struct.pack(">BI", ListBatch.TYPE, 1 << 31)],
    ),
    Attack(
        "out-of-turn",
        "sent DeltaData in state listing",
        on_list=lambda liar: [frame(DeltaData(b"x"))],
    ),
    Attack("garbage", "unknown frame type", on_list=lambda liar: [b"\xff" * 64]),
    Attack(
        "protocol-error-mid-listing",
        "ended the conversation",
        on_list=lambda liar: [Error(ErrorCode.PROTOCOL, "bye")],
    ),
    Attack(
        "wrong-version",
        "version mismatch",
        on_hello=lambda liar: [HelloReply(99, "9", ("/collect",), frozenset())],
    ),
    Attack(
        # the master then keeps the stage indicator on its side: nothing lost, nothing sent
        "claims-read-only",
        "",
        on_hello=lambda liar: [HelloReply(PROTOCOL_VERSION, "l", (liar.root,), CAPABILITIES)],
    ),
    Attack(
        "claims-other-indicators",
        "writes only the indicators 'x.stage', not 'cback.stage'",
        on_hello=lambda liar: [
            HelloReply(PROTOCOL_VERSION, "l", (liar.root,), CAPABILITIES, ("x.stage",))
        ],
    ),
    Attack(
        "indicator-name-with-a-slash",
        "bad indicator name",
        on_hello=lambda liar: [
            HelloReply(PROTOCOL_VERSION, "l", (liar.root,), CAPABILITIES, ("../cback.stage",))
        ],
    ),
    Attack(
        "copy-past-basis",
        "past the basis",
        on_fetch=fetch_parts(
            lambda liar, r, sig: [delta_header(sig), b"C" + struct.pack("<II", 10**6, 1)]
        ),
    ),
    Attack(
        "copy-zero-blocks",
        "zero blocks|past the basis",
        on_fetch=fetch_parts(
            lambda liar, r, sig: [delta_header(sig), b"C" + struct.pack("<II", 0, 0)]
        ),
    ),
    Attack(
        "block-size-zero",
        "block size 0",
        on_fetch=fetch_parts(lambda liar, r, sig: [delta_header(sig, block_size=0)]),
    ),
    Attack(
        "wrong-basis-hash",
        "different basis",
        on_fetch=fetch_parts(lambda liar, r, sig: [delta_header(sig, basis_hash=b"\x01" * 16)]),
    ),
    Attack(
        "hash-lie",
        "xxh3-128 mismatch",
        on_fetch=fetch_parts(
            lambda liar, r, sig: [
                delta_header(sig),
                literal(b"v" * 5000),
                trailer(5000, b"\0" * 16),
            ]
        ),
    ),
    Attack(
        "size-lie",
        "expected 4000",
        on_fetch=fetch_parts(
            lambda liar, r, sig: [
                delta_header(sig),
                literal(b"v" * 5000),
                trailer(4000, honest_trailer_for(b"v" * 5000)[9:]),
            ]
        ),
    ),
    Attack(
        "literal-length-zero",
        "literal length 0",
        on_fetch=fetch_parts(lambda liar, r, sig: [delta_header(sig), literal(b"")]),
    ),
    Attack(
        # a 9-byte op for a terabyte of zeros: charged to the write budget before it is
        # hashed or made a hole, so it costs the master nothing
        "zero-run-past-the-budget",
        "max_bytes_per_peer",
        on_fetch=fetch_parts(
            lambda liar, r, sig: [delta_header(sig), b"H" + struct.pack("<Q", 1 << 40)]
        ),
    ),
    Attack(
        "zero-run-of-nothing",
        "zero run of 0 bytes",
        on_fetch=fetch_parts(lambda liar, r, sig: [delta_header(sig), b"H" + bytes(8)]),
    ),
    Attack(
        "zero-run-too-long",
        "zero run of .* bytes outside",
        on_fetch=fetch_parts(
            lambda liar, r, sig: [delta_header(sig), b"H" + struct.pack("<Q", (1 << 40) + 1)]
        ),
    ),
    Attack(
        "zero-run-hash-lie",
        "xxh3-128 mismatch",
        on_fetch=fetch_parts(
            lambda liar, r, sig: [
                delta_header(sig),
                b"H" + struct.pack("<Q", 5000),
                honest_trailer_for(b"v" * 5000),
            ]
        ),
    ),
    Attack(
        "unknown-op",
        "unknown delta op",
        on_fetch=fetch_parts(lambda liar, r, sig: [delta_header(sig), b"Q"]),
    ),
    Attack(
        "no-end-marker",
        "truncated",
        on_fetch=fetch_parts(lambda liar, r, sig: [delta_header(sig), literal(b"v" * 5000)]),
    ),
    Attack("empty-delta", "empty delta", on_fetch=lambda liar, r, sig: [DeltaEnd()]),
    Attack("data-after-end", "after the end", on_fetch=honest_then(literal(b"more"))),
    Attack("decompression-bomb", "compressed literal", on_fetch=bomb),
    Attack("endless-delta", "max_bytes_per_peer", on_fetch=endless_literals),
    Attack(
        # the master gives up on the fetch at once (and would retry without a basis): the
        # rest it drains is bounded too
        "wrong-basis-then-endless",
        "abandoned fetch",
        on_fetch=lambda liar, r, sig: [
            DeltaData(delta_header(sig, basis_hash=b"\x01" * 16)),
            *itertools.islice(endless(lambda n: DeltaData(literal(b"A" * 65536))), 1100),
        ],
    ),
    Attack(
        "endless-empty-delta-frames",
        "empty",
        on_fetch=lambda liar, r, sig: endless(lambda n: DeltaData(b"")),
    ),
    Attack(
        "silent-mid-delta",
        "idle timeout",
        on_fetch=lambda liar, r, sig: [DeltaData(liar.delta_bytes(r.path, sig)[:20])],
    ),
    Attack("hang-up-mid-delta", "closed the connection", on_fetch=half_delta_then_hang_up),
    Attack(
        "garbage-mid-delta",
        "unknown frame type",
        on_fetch=lambda liar, r, sig: [DeltaData(b"DDLT"), b"\xee" * 32],
    ),
    Attack(
        # honest: the victim is patched from both earlier days' copies
        "several-bases-honest",
        "",
        plant=plant_earlier_days,
    ),
    Attack(
        "bases-not-offered",
        "against 4 bases, 2 given|against 3 bases, 1 given",
        plant=plant_earlier_days,
        on_fetch=fetch_parts(lambda liar, r, sig: [multi_header(liar, extra=2)]),
    ),
    Attack(
        "basis-index-out-of-range",
        "copy from basis 7 of 2|bases, 1 given",
        plant=plant_earlier_days,
        on_fetch=fetch_parts(
            lambda liar, r, sig: [multi_header(liar), b"C" + struct.pack("<BII", 7, 0, 1)]
        ),
    ),
    # honest: the victim moves as its content's delta against last week's content
    compressed_attack("compressed-honest", gz_recipe(GZ_VICTIM)),
    # the recipe rebuilds other bytes: fetched again as its bytes, staged exact
    compressed_attack("recipe-lie", gz_recipe(GZ_VICTIM, level=1)),
    compressed_attack("content-beyond-recipe", gz_recipe(GZ_VICTIM), content_beyond_recipe),
    Attack(
        "recipe-garbage",
        "not a recipe",
        files={"victim.gz": GZ_VICTIM},
        on_list=recipe_listing(b"DSRX" + bytes(10)),
    ),
    Attack(
        "extreme-mtime-and-setuid",
        "",
        on_list=listing_of(
            file_entry("victim.bin", b"v" * 5000, mode=0o7777, mtime_ns=-(1 << 63)),
            file_entry("later.bin", b"w", mtime_ns=(1 << 63) - 1),
        ),
        files={"victim.bin": b"v" * 5000, "later.bin": b"w"},
    ),
    Attack(
        "planted-symlinks",
        "",
        files={"etc/passwd": b"pwned\n", "victim.bin": b"v" * 5000},
        plant=plant_links,
    ),
    Attack(
        "planted-symlinks-then-cut",
        "closed the connection",
        files={"etc/passwd": b"pwned\n", "victim.bin": b"v" * 50_000},
        plant=plant_links,
        on_fetch=half_delta_then_hang_up,
    ),
]


# --- the harness --------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """Every path beneath ``root`` -> its type and content (links: their target)."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = f"link:{os.readlink(path)}"
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = "dir"
            else:
                found[rel] = "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def liar_and_honest_peer(tmp: Path) -> Path:
    """The liar beside an honest peer, under tight bounds and a short idle timeout."""
    return write_config(
        tmp,
        {"liar": {"idle_timeout": IDLE}, "good": {}},
        options={"retries": 0, "max_files_per_peer": MAX_FILES, "max_bytes_per_peer": MAX_BYTES},
    )


@dataclass
class Outcome:
    report: StageReport
    liar: Liar
    before: dict[str, str]
    after: dict[str, str]


def run_attack(tmp: Path, attack: Attack) -> Outcome:
    good = tmp / "collect/good"
    for rel, data in HONEST.items():
        (good / rel).parent.mkdir(parents=True, exist_ok=True)
        (good / rel).write_bytes(data)
    (good / "cback.collect").touch()
    (tmp / "collect/liar").mkdir(parents=True)
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    config = load_config(liar_and_honest_peer(tmp))
    liar_dir = tmp / "staging/2026/11/23/liar"
    if attack.plant is not None:
        attack.plant(liar_dir, outside)
    liar = Liar(
        dict(attack.files),
        on_list=attack.on_list,
        on_fetch=attack.on_fetch,
        on_hello=attack.on_hello,
    )

    def factory(peer: PeerConfig, options: Options) -> PeerSession:
        if peer.name == "liar":
            return bounded_session(HostileTransport(liar, idle_timeout=peer.idle_timeout), options)
        return open_peer_session(peer, options)

    before = snapshot(tmp)
    report = run_stage(config, run_date=DAY, session_factory=factory)
    return Outcome(report, liar, before, snapshot(tmp))


ALLOWED_NEW = {
    "staging",
    "staging/.deltastage.lock",
    "staging/2026",
    "staging/2026/11",
    "staging/2026/11/23",
    "staging/2026/11/23/cback.stage",
    "collect/good/cback.stage",
}


def changed_outside_peer_dirs(outcome: Outcome) -> list[str]:
    before, after = outcome.before, outcome.after
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    return sorted(
        p
        for p in changed
        if p not in ALLOWED_NEW
        and not p.startswith(("staging/2026/11/23/liar/", "staging/2026/11/23/good/"))
        and p not in ("staging/2026/11/23/liar", "staging/2026/11/23/good")
    )


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_refused_and_contained(tmp_path: Path, attack: Attack) -> None:
    outcome = run_attack(tmp_path, attack)
    liar_report, good_report = outcome.report.peers
    liar_dir = tmp_path / "staging/2026/11/23/liar"

    assert good_report.status == "staged", good_report.error
    assert (tmp_path / "collect/good/cback.stage").exists()
    assert verify_peer_dir(tmp_path / "staging/2026/11/23/good").ok

    assert changed_outside_peer_dirs(outcome) == []
    assert (tmp_path / "outside/secret.txt").read_bytes() == SECRET
    assert sorted(os.listdir(tmp_path / "outside")) == ["secret.txt"]

    if attack.expect:
        assert liar_report.status == "failed"
        assert liar_report.error and re.search(attack.expect, liar_report.error), liar_report.error
        assert "\n" not in liar_report.error and len(liar_report.error) < 600
        assert not (liar_dir / MANIFEST_NAME).exists()
        assert outcome.liar.indicators_written == []
    else:
        assert liar_report.status == "staged", liar_report.error
        assert verify_peer_dir(liar_dir).ok
        # the peer is told it was staged exactly when the report says it was
        told = outcome.liar.indicators_written == ["cback.stage"]
        assert told == (liar_report.stage_indicator == "peer"), liar_report
    for path in liar_dir.rglob("*"):
        assert not path.is_symlink() or path.name in ("etc", "victim.bin", ".deltastage-partial")
        if path.is_file() and not path.is_symlink():
            assert not path.stat().st_mode & (stat.S_ISUID | stat.S_ISGID)


def test_the_several_bases_attacks_are_offered_two_bases(tmp_path: Path) -> None:
    """The victim's fetch is made against both earlier days' copies: the lies about bases
    are told to a master that offered two."""
    honest = next(a for a in ATTACKS if a.name == "several-bases-honest")
    outcome = run_attack(tmp_path, honest)
    assert [s.basis_size for s in outcome.liar.signatures] == [100, 5000]
    assert outcome.report.peers[0].status == "staged"


def test_attack_count() -> None:
    """The figure for the report: how many distinct lies the suite tells."""
    assert len(ATTACKS) >= 45
    assert len({a.name for a in ATTACKS}) == len(ATTACKS)


def test_session_bounds_follow_the_config(tmp_path: Path) -> None:
    """max_files_per_peer and max_frame_size reach the session, not just the listing check."""
    (tmp_path / "collect/liar").mkdir(parents=True)
    config = load_config(liar_and_honest_peer(tmp_path))
    session: Any = open_peer_session(config.peer("liar"), config.options)
    try:
        assert session._max_entries == MAX_FILES + LISTED_INDICATORS
        assert session._conn.max_frame == config.options.max_frame_size
    finally:
        session.close()


@pytest.mark.parametrize(
    ("name", "transformed", "rebuild_failures"),
    [
        ("compressed-honest", {"gzip": 1}, 0),
        ("recipe-lie", {}, 1),
        ("content-beyond-recipe", {}, 0),
    ],
)
def test_the_compressed_attacks_reach_the_fetch_of_content(
    tmp_path: Path, name: str, transformed: dict[str, int], rebuild_failures: int
) -> None:
    """The victim is fetched as its content's delta against last week's content; a lie
    there makes it move again as its bytes, staged exact."""
    outcome = run_attack(tmp_path, next(a for a in ATTACKS if a.name == name))
    liar = outcome.report.peers[0]
    assert liar.status == "staged", liar.error
    assert (liar.transformed, liar.rebuild_failures) == (transformed, rebuild_failures)
    assert outcome.liar.fetched == ["victim.gz"] * (1 if transformed else 2)
    staged = tmp_path / "staging/2026/11/23/liar/victim.gz"
    assert staged.read_bytes() == GZ_VICTIM
