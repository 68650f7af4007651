"""Sparse files (issue 17): holes found with SEEK_DATA/SEEK_HOLE on the agent and never read
there, carried in the delta as zero runs, left holes on the master; a sparse basis signed
without reading its holes. Verified as every file is: the staged copy re-read and hashed."""

from __future__ import annotations

import errno
import itertools
import os
import resource
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from deltastage.agent.rootfs import RootFS
from deltastage.config import Options, PeerConfig, load_config
from deltastage.delta import sketch
from deltastage.delta.signature import SignatureBuilder
from deltastage.hashing import hash_file
from deltastage.holes import pread_sparse, read_sparse, segments
from deltastage.master.connect import bounded_session
from deltastage.master.session import PeerSession
from deltastage.stage.presign import signed_pieces
from deltastage.stage.run import run_stage
from deltastage.transports.pipe import PipeTransport
from tests.helpers.site import make_peer, peer_json, sparse_file, staged, write_config
from tests.helpers.site import stage_json as stage
from tests.helpers.sshd import SSHServer

AGENT = [sys.executable, "-m", "deltastage", "agent"]
DAY1, DAY2 = date(2026, 11, 23), date(2026, 11, 24)
GIB = 1 << 30
# A 1 GiB image with a few written blocks, one of them not block-aligned.
BLOCKS = {
    0: b"head" * 1024,
    (300 << 20) + 1000: os.urandom(8192),
    700 << 20: b"\1" * 65536,
    GIB - 4096: b"tail" * 1024,
}
FEW = 1 << 20  # "a few blocks": what may be allocated, read or sent for such a file


def wire_limit(day: date) -> int:
    """Bytes a day's stage of the image may put on the wire: on the first day, the written
    blocks and a few zero runs (holes sent as zeros, even compressed, take far more); on
    the next, the basis's signature too."""
    return 32 << 10 if day == DAY1 else FEW


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def sparse_collect(tmp: Path, name: str) -> Path:
    collect = make_peer(tmp, name, {"small.txt": b"not sparse\n"})
    sparse_file(collect / "disk.img", GIB, BLOCKS)
    if allocated(collect / "disk.img") > FEW:
        pytest.skip("this filesystem does not keep the test file sparse")
    return collect


def edit(collect: Path) -> None:
    """The next day's change: one block written in a hole."""
    with open(collect / "disk.img", "r+b") as stream:
        stream.seek(500 << 20)
        stream.write(b"new block" * 500)


def assert_staged_sparse(tmp: Path, day: date, peer: str, collect: Path) -> None:
    image = staged(tmp, day, peer) / "disk.img"
    assert os.stat(image).st_size == GIB
    assert allocated(image) < FEW, f"{allocated(image)} bytes allocated"
    # the staged copy re-read whole (holes read as zeros) hashes as the source does
    assert hash_file(image) == hash_file(collect / "disk.img")


# --- finding holes --------------------------------------------------------------------------


def test_read_sparse_gives_the_file_with_its_holes_as_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    blocks = {4096: b"a" * 5000, 3 << 20: b"b" * 10, (8 << 20) - 1: b"c"}
    sparse_file(path, 9 << 20, blocks)
    data = path.read_bytes()
    fd = os.open(path, os.O_RDONLY)
    try:
        pieces = list(read_sparse(fd, len(data)))
        assert b"".join(bytes(p) if isinstance(p, int) else p for p in pieces) == data
        holes = [p for p in pieces if isinstance(p, int)]
        assert sum(holes) > len(data) - (1 << 20), "the holes are told, not read"
        spans = list(segments(fd, 0, len(data)))
        assert spans[0][:2] == (0, spans[1][0]) and spans[-1][1] == len(data)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        for offset, n in ((0, 100), (4000, 6000), (5000, 3 << 20), (3 << 20, 20), (0, len(data))):
            assert pread_sparse(fd, n, offset) == data[offset : offset + n]
        past = list(read_sparse(fd, len(data) + 100))
        assert isinstance(past[-1], int), "past the end: a hole"
        assert sum(p if isinstance(p, int) else len(p) for p in past) == len(data) + 100

        def unsupported(fd: int, offset: int, whence: int) -> int:
            raise OSError(errno.EINVAL, "no SEEK_DATA here")

        monkeypatch.setattr(os, "lseek", unsupported)
        pieces = list(read_sparse(fd, len(data)))
        assert all(isinstance(p, bytes) for p in pieces), "without hole search: all data"
        assert b"".join(p for p in pieces if isinstance(p, bytes)) == data
    finally:
        os.close(fd)


# --- the agent and the master never read a hole ---------------------------------------------


def counting_reads(monkeypatch: pytest.MonkeyPatch, *paths: Path) -> dict[Path, int]:
    """Bytes os.pread returns from each of ``paths``, from now on, in every thread."""
    counts = dict.fromkeys(paths, 0)
    real = os.pread
    wanted = {str(path): path for path in paths}

    def pread(fd: int, n: int, offset: int) -> bytes:
        data = real(fd, n, offset)
        try:
            target = wanted.get(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            target = None
        if target is not None:
            counts[target] += len(data)
        return data

    monkeypatch.setattr(os, "pread", pread)
    return counts


def test_the_listing_hashes_a_hole_without_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collect = sparse_collect(tmp_path, "vm")
    reads = counting_reads(monkeypatch, collect / "disk.img")
    searched: list[int] = []
    find_boundaries = sketch._window_starts
    monkeypatch.setattr(
        sketch, "_window_starts", lambda data: searched.append(len(data)) or find_boundaries(data)
    )
    entries = {entry.path: entry for entry in RootFS([str(collect)]).listing(str(collect))}
    assert entries["disk.img"].xxh3_128 == hash_file(collect / "disk.img")[1]
    assert entries["disk.img"].sketch is not None
    assert reads[collect / "disk.img"] < FEW
    # nor searched for content boundaries: a hole goes to the sketch as a count of zeros
    assert sum(searched) < FEW


def test_staging_a_sparse_file_reads_no_hole_on_either_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local peer (the agent in-process): the source read by the listing and the delta,
    and on the next day the basis read by the signing and the patch, only where data is."""
    collect = sparse_collect(tmp_path, "vm")
    config = write_config(tmp_path, {"vm": {}})
    source = collect / "disk.img"
    reads = counting_reads(monkeypatch, source)
    code, report = stage(config, "--date", DAY1.isoformat())
    assert code == 0, report
    assert reads[source] < 2 * FEW, f"the agent read {reads[source]} bytes"
    assert peer_json(report, "vm")["wire_bytes"] < wire_limit(DAY1)
    assert_staged_sparse(tmp_path, DAY1, "vm", collect)

    edit(collect)
    basis = staged(tmp_path, DAY1, "vm") / "disk.img"
    reads = counting_reads(monkeypatch, source, basis)
    code, report = stage(config, "--date", DAY2.isoformat())
    assert code == 0, report
    assert reads[source] < 2 * FEW, f"the agent read {reads[source]} bytes"
    assert reads[basis] < 4 * FEW, f"the master read {reads[basis]} bytes of its basis"
    assert peer_json(report, "vm")["wire_bytes"] < FEW
    assert_staged_sparse(tmp_path, DAY2, "vm", collect)


def test_a_sparse_basis_signs_as_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "basis"
    sparse_file(path, 256 << 20, {1000: b"x" * 70_000, 200 << 20: b"y" * 3})
    whole = SignatureBuilder(256 << 20)
    expected = b"".join(whole.update(chunk) for chunk in chunks_of(path)) + whole.finish()
    reads = counting_reads(monkeypatch, path)
    builder = SignatureBuilder(256 << 20)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert b"".join(signed_pieces(builder, fd, 256 << 20)) + builder.finish() == expected
    finally:
        os.close(fd)
    assert builder.signature == whole.signature
    assert reads[path] < FEW


def chunks_of(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            yield chunk


# --- over a pipe and over real sshd ---------------------------------------------------------


def timed(run: Callable[[], Any]) -> tuple[Any, float, float]:
    """``run()``, its wall time and the CPU time its child processes (the agent) took."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = run()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result, wall, cpu


def test_a_sparse_file_over_a_pipe(tmp_path: Path) -> None:
    collect = sparse_collect(tmp_path, "vm")
    config = load_config(
        write_config(tmp_path, {"vm": {"type": "remote", "collect_dir": str(collect)}}),
        check_accounts=False,
    )

    def agent(peer: PeerConfig, options: Options) -> PeerSession:
        argv = [*AGENT, "--root", str(collect), "--indicator", "cback.stage"]
        return bounded_session(PipeTransport(argv, idle_timeout=60), options)

    for day in (DAY1, DAY2):
        if day == DAY2:
            edit(collect)
        report, wall, cpu = timed(
            lambda d=day: run_stage(config, run_date=d, session_factory=agent)
        )
        (peer,) = report.peers
        assert (report.exit_code, peer.status) == (0, "staged"), peer.error
        assert peer.wire_bytes < wire_limit(day)
        assert_staged_sparse(tmp_path, day, "vm", collect)
        print(f"pipe {day}: stage {wall:.2f} s, agent CPU {cpu:.2f} s, wire {peer.wire_bytes}")


@pytest.mark.ssh
def test_a_sparse_file_over_sshd(tmp_path: Path, sshd_server: SSHServer) -> None:
    collect = sparse_collect(tmp_path, "vm")
    peer = {
        **sshd_server.peer_settings(collect),
        "agent_command": shlex.join(AGENT),
        "connect_timeout": 10.0,
        "idle_timeout": 60.0,
    }
    config = write_config(tmp_path, {"vm": peer})
    for day in (DAY1, DAY2):
        if day == DAY2:
            edit(collect)
        (code, report), wall, _ = timed(lambda d=day: stage(config, "--date", d.isoformat()))
        assert code == 0, report
        assert peer_json(report, "vm")["wire_bytes"] < wire_limit(day)
        assert_staged_sparse(tmp_path, day, "vm", collect)
        print(f"ssh {day}: stage {wall:.2f} s, wire {peer_json(report, 'vm')['wire_bytes']}")
