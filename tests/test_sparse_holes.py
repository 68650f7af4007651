"""Sparse files (issue 17): holes found with SEEK_DATA/SEEK_HOLE, hashed by the agent's
listing without being read; a sparse basis signed without reading its holes."""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from deltastage.agent.rootfs import RootFS
from deltastage.delta.signature import SignatureBuilder
from deltastage.hashing import hash_file
from deltastage.holes import read_sparse, segments
from deltastage.stage.presign import signed_pieces
from tests.helpers.site import make_peer, sparse_file

GIB = 1 << 30
# A 1 GiB image with a few written blocks, one of them not block-aligned.
BLOCKS = {
    0: b"head" * 1024,
    (300 << 20) + 1000: os.urandom(8192),
    700 << 20: b"\1" * 65536,
    GIB - 4096: b"tail" * 1024,
}
FEW = 1 << 20  # "a few blocks": what may be allocated, read or sent for such a file


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def sparse_collect(tmp: Path, name: str) -> Path:
    collect = make_peer(tmp, name, {"small.txt": b"not sparse\n"})
    sparse_file(collect / "disk.img", GIB, BLOCKS)
    if allocated(collect / "disk.img") > FEW:
        pytest.skip("this filesystem does not keep the test file sparse")
    return collect


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
    entries = {entry.path: entry for entry in RootFS([str(collect)]).listing(str(collect))}
    assert entries["disk.img"].xxh3_128 == hash_file(collect / "disk.img")[1]
    assert reads[collect / "disk.img"] < FEW


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
