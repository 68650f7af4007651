"""Compressed files staged day after day through the real CLI on real dirs: a gzip or bzip2
file a recipe rebuilds moves as the delta of its content and is rebuilt bit for bit; any
other (GNU gzip, a bad CRC, a truncated stream, a bomb, a ``.gz`` that is not gzip) moves as
its bytes. Either way the staged copy is the source's exact bytes, ``verify`` passes, and
no temp file is left."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from deltastage.agent import compressed
from deltastage.agent.compressed import LIMITS
from deltastage.cli.main import app
from deltastage.hashing import hash_bytes
from deltastage.manifest import INTERNAL_PREFIX, read_manifest
from deltastage.safefs import open_dir
from deltastage.stage.content import ContentBases, RebuildingWriter
from deltastage.transform.recipe import DeflateParams, GzipMember, Recipe, decode_recipe
from deltastage.transform.recipe import encode_recipe as encode
from deltastage.transform.search import Limits, Verdict, find_recipe
from tests.helpers.site import make_peer, peer_json, staged, tree, write_config
from tests.helpers.sshd import SSHServer
from tests.helpers.transports import serve_local_peers_in_this_process

MONDAY = date(2026, 11, 16)
WORDS = [f"w{n}x{n * 7 % 13}".encode() for n in range(3000)]


def text(seed: int, size: int) -> bytes:
    """Compressible text (words), different for each seed."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += rng.choice(WORDS) + b" "
    return bytes(out[:size])


def members(day: int, count: int = 24, size: int = 32 << 10) -> list[bytes]:
    """A tree's files on ``day``: each day changes a few of them."""
    files = [text(index, size) for index in range(count)]
    for edit in range(day):
        for index in random.Random(edit).sample(range(count), 2):
            files[index] = text(1000 * (edit + 1) + index, size)
    return files


def targz(files: list[bytes], level: int = 9) -> bytes:
    """What Cedar's ``archive_mode targz`` writes (``tarfile`` mode ``w:gz``)."""
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=level) as archive:
        for index, data in enumerate(files):
            info = tarfile.TarInfo(f"f{index:03d}.txt")
            info.size, info.mtime = len(data), 1_700_000_000
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def stage_day(tmp: Path, config: Path, day: int, files: dict[str, bytes]) -> dict[str, object]:
    """Put ``files`` in the peer's collect dir, stage day ``day``; the peer's report."""
    collect = tmp / "collect" / "p"
    if collect.exists():
        shutil.rmtree(collect)
    make_peer(tmp, "p", files)
    when = (MONDAY + timedelta(days=day)).isoformat()
    result = CliRunner().invoke(app, ["stage", "--config", str(config), "--json", "--date", when])
    peer = peer_json(json.loads(result.stdout), "p")
    peer["log"] = result.stderr
    assert result.exit_code == 0, peer
    staged_dir = staged(tmp, MONDAY + timedelta(days=day), "p")
    assert tree(staged_dir) == files, "the staged copies are the source's exact bytes"
    leftovers = [p.name for p in staged_dir.rglob("*") if p.name.startswith(INTERNAL_PREFIX)]
    assert leftovers == [], "no temp file (nor decompressed basis) left"
    verify = CliRunner().invoke(
        app, ["verify", "--config", str(config), "--date", f"{MONDAY + timedelta(days=day)}"]
    )
    assert verify.exit_code == 0, verify.output
    return peer


def test_targz_and_tarbz2_move_as_their_contents_delta(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    sizes = {}
    for day in range(3):
        files = members(day)
        tar = b"".join(files)
        source = {"lib.tar.gz": targz(files), "db.sql.bz2": bz2.compress(tar, 9)}
        sizes = {name: len(data) for name, data in source.items()}
        peer = stage_day(tmp_path, config, day, source)
        if day == 0:
            assert peer["transformed"] == {}, "no basis yet: the files move as their bytes"
            continue
        assert peer["transformed"] == {"gzip": 1, "bzip2": 1}
        assert peer["transformed_bytes"] == sum(sizes.values())
        # two of 24 members changed a day: the deltas are a fraction of the files
        assert peer["transformed_delta_bytes"] < sum(sizes.values()) / 3
        assert peer["wire_bytes"] < sum(sizes.values()) / 3
    fd = open_dir(staged(tmp_path, MONDAY + timedelta(days=2), "p"))
    try:
        manifest = read_manifest(fd)
    finally:
        os.close(fd)
    assert manifest is not None
    recorded = {e.path: decode_recipe(e.recipe) for e in manifest.files if e.recipe}
    assert {path: recipe.kind.name for path, recipe in recorded.items()} == {
        "lib.tar.gz": "GZIP",
        "db.sql.bz2": "BZIP2",
    }
    assert recorded["db.sql.bz2"].content_size == len(b"".join(members(2)))


def gnu_gzip(data: bytes) -> bytes:
    gzip_cli = shutil.which("gzip")
    if gzip_cli is None:
        pytest.skip("no gzip command")
    return subprocess.run(
        [gzip_cli, "-9", "-n"], input=data, capture_output=True, check=True
    ).stdout


def bad_crc(data: bytes) -> bytes:
    packed = bytearray(gzip.compress(data, mtime=0))
    packed[-8] ^= 0xFF
    return bytes(packed)


def truncated(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)[:-1000]


def bomb(_: bytes) -> bytes:
    """1 GiB of zeros, gzipped (about 1 MiB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(16 << 20)
    return b"".join([*(packer.compress(zeros) for _ in range(64)), packer.flush()])


def not_gzip(data: bytes) -> bytes:
    return data  # named .gz, not gzip


@pytest.mark.parametrize("make", [gnu_gzip, bad_crc, truncated, bomb, not_gzip])
def test_what_no_recipe_rebuilds_moves_as_its_bytes(
    tmp_path: Path, make: Callable[[bytes], bytes]
) -> None:
    config = write_config(tmp_path)
    for day in range(2):
        data = make(b"".join(members(day)))
        peer = stage_day(tmp_path, config, day, {"x.gz": data})
        verdict = find_recipe(lambda at, n, d=data: d[at : at + n], len(data), LIMITS).verdict
        # GNU gzip's deflate matches zlib's on some content: then the proven recipe is used
        assert (peer["transformed"] != {}) == (day > 0 and verdict is Verdict.REBUILT)
        assert make is gnu_gzip or verdict is not Verdict.REBUILT


def test_a_recipe_that_does_not_rebuild_the_file_is_fetched_again_as_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The master's rebuild is not the listed file (another zlib; here, a wrong level): it
    is fetched again as its bytes, staged exact, and the log says so once for the peer."""
    config = write_config(tmp_path)
    stage_day(tmp_path, config, 0, {"a.tar.gz": targz(members(0)), "b.tar.gz": targz([b"b"])})
    listed = compressed.listed_recipe

    def wrong_level(
        fd: int, size: int, prefix: bytes, on_content: Callable[[bytes], None] | None = None
    ) -> tuple[bytes, int] | None:
        found = listed(fd, size, prefix, on_content)
        if found is None:
            return None
        recipe = decode_recipe(found[0])
        first = recipe.members[0]
        assert isinstance(first, GzipMember)
        wrong = GzipMember(first.header, DeflateParams(1), first.size)
        return encode(Recipe(recipe.kind, (wrong, *recipe.members[1:]))), found[1]

    serve_local_peers_in_this_process(monkeypatch)
    monkeypatch.setattr("deltastage.agent.rootfs.listed_recipe", wrong_level)
    peer = stage_day(
        tmp_path, config, 1, {"a.tar.gz": targz(members(1)), "b.tar.gz": targz(members(2))}
    )
    assert peer["rebuild_failures"] == 2
    assert peer["transformed"] == {}, "none went through its content in the end"
    warnings = [line for line in str(peer["log"]).splitlines() if "not the peer's" in line]
    assert len(warnings) == 1 and "2 compressed file(s)" in warnings[0], peer["log"]


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"transform_compressed": False}, "off"),
        ({"transform_max_ratio": 2}, "content declared beyond the ratio"),
        ({"transform_temp_bytes": 1000}, "no room for the decompressed basis"),
    ],
)
def test_limits_make_a_compressed_file_move_as_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: dict[str, object], why: str
) -> None:
    proven: list[int] = []
    listed = compressed.listed_recipe

    def counted(
        fd: int, size: int, prefix: bytes, on_content: Callable[[bytes], None] | None = None
    ) -> tuple[bytes, int] | None:
        proven.append(size)
        return listed(fd, size, prefix, on_content)

    serve_local_peers_in_this_process(monkeypatch)
    monkeypatch.setattr("deltastage.agent.rootfs.listed_recipe", counted)
    config = write_config(tmp_path, options=options)
    for day in range(2):
        peer = stage_day(tmp_path, config, day, {"lib.tar.gz": targz(members(day))})
        assert peer["transformed"] == {}, why
    # turned off, the agent is not even asked to prove recipes (a recompression each)
    assert (proven == []) == (options.get("transform_compressed") is False)


def gzip_file(
    content: bytes, level: int, name: bytes | None, mtime: int, comment: bytes, extra: bytes
) -> bytes:
    """One gzip member with the header fields given, as Python's zlib deflates it."""
    flags = (0x08 if name else 0) | (0x10 if comment else 0) | (0x04 if extra else 0)
    header = b"\x1f\x8b\x08" + bytes([flags]) + mtime.to_bytes(4, "little") + b"\x02\xff"
    if extra:
        header += len(extra).to_bytes(2, "little") + extra
    if name:
        header += name + b"\0"
    if comment:
        header += comment + b"\0"
    packer = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = packer.compress(content) + packer.flush()
    trailer = zlib.crc32(content).to_bytes(4, "little") + len(content).to_bytes(4, "little")
    return header + body + trailer


@pytest.mark.slow
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 1000),
    level=st.integers(1, 9),
    name=st.none() | st.binary(min_size=1, max_size=20).filter(lambda b: b"\0" not in b),
    mtime=st.integers(0, 2**32 - 1),
    comment=st.binary(max_size=20).filter(lambda b: b"\0" not in b),
    extra=st.binary(max_size=30),
    splits=st.integers(1, 3),
    bzip2_level=st.integers(1, 9),
)
def test_any_python_gzip_or_bzip2_is_staged_exact_day_after_day(
    tmp_path_factory: pytest.TempPathFactory,
    seed: int,
    level: int,
    name: bytes | None,
    mtime: int,
    comment: bytes,
    extra: bytes,
    splits: int,
    bzip2_level: int,
) -> None:
    tmp = tmp_path_factory.mktemp("site")
    config = write_config(tmp)
    for day in range(2):
        content = b"".join(members(day + seed))
        cut = len(content) // splits
        parts = [
            content[i * cut : (i + 1) * cut if i < splits - 1 else None] for i in range(splits)
        ]
        gz = b"".join(gzip_file(part, level, name, mtime, comment, extra) for part in parts)
        peer = stage_day(
            tmp, config, day, {"a.gz": gz, "b.bz2": bz2.compress(content, bzip2_level)}
        )
        if day:
            assert peer["transformed"] == {"gzip": 1, "bzip2": 1}


@pytest.mark.ssh
def test_a_targz_and_a_tarbz2_over_sshd_day_after_day(
    tmp_path: Path, sshd_server: SSHServer
) -> None:
    """The agent as a process behind real sshd: the same content fetches and rebuilds."""
    collect = tmp_path / "collect" / "p"
    peer = {
        **sshd_server.peer_settings(collect),
        "agent_command": shlex.join([sys.executable, "-m", "deltastage", "agent"]),
        "idle_timeout": 30.0,
    }
    config = write_config(tmp_path, {"p": peer}, options={"retries": 0})
    for day in range(2):
        files = members(day)
        source = {"lib.tar.gz": targz(files), "db.sql.bz2": bz2.compress(b"".join(files), 9)}
        report = stage_day(tmp_path, config, day, source)
        if day:
            assert report["transformed"] == {"gzip": 1, "bzip2": 1}
            assert report["wire_bytes"] < sum(map(len, source.values())) / 3


def test_a_zero_run_in_a_content_delta_is_rebuilt_as_zeros() -> None:
    """A delta's zero runs (``H`` ops) reach the rebuild as the zeros they stand for."""
    content = b"head" + bytes(3 << 20) + b"tail"
    packed = gzip.compress(content, mtime=0)
    found = find_recipe(lambda at, n: packed[at : at + n], len(packed), Limits(1 << 30, 1 << 20))
    assert found.recipe is not None
    written: list[bytes] = []
    writer = RebuildingWriter(found.recipe, written.append)
    writer.content(b"head")
    writer.zeros(3 << 20)
    writer.content(b"tail")
    size, digest = writer.finish()
    assert b"".join(written) == packed and (size, digest) == (len(packed), hash_bytes(packed))


def test_a_decompressed_basis_reads_as_its_content_to_its_last_zero(tmp_path: Path) -> None:
    """Inflated with its runs of zeros left as holes, a trailing one included; a basis not
    the size its manifest says is left out, its reservation given back."""
    content = b"head" + bytes(3 << 20)
    (tmp_path / "basis.gz").write_bytes(gzip.compress(content, mtime=0))
    peer_fd = open_dir(tmp_path)
    contents = ContentBases(peer_fd, budget=len(content))
    try:
        for declared in (len(content) - 1, len(content)):
            fd = os.open(tmp_path / "basis.gz", os.O_RDONLY)
            try:
                out = contents.open(fd, declared)
            finally:
                os.close(fd)
            if declared != len(content):
                assert out is None
                continue
            assert out is not None
            try:
                assert os.fstat(out).st_size == len(content)
                assert os.pread(out, len(content) + 1, 0) == content
            finally:
                os.close(out)
            contents.release(declared)
    finally:
        os.close(peer_fd)
    assert os.listdir(tmp_path) == ["basis.gz"], "nothing named is left"
