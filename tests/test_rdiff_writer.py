"""The patch path's second core: OUT is written by a writer thread while the main thread reads
the basis into a ring of reused buffers and hashes. A write error ends in one line and no
output, never a hang; a slow writer never sees its buffer refilled under it."""

from __future__ import annotations

import errno
import os
import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deltastage import fastargv
from deltastage.rdiff import files, patch, sigdelta

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A 9 MiB basis, its edited version and their delta: copies span many 1 MiB reads, so
    the basis ring (6 buffers) wraps around several times."""
    directory = tmp_path_factory.mktemp("pair")
    rng = random.Random(20240601)
    basis = rng.randbytes(9 * MiB)
    edited = bytearray(basis)
    for pos in (100, 3 * MiB + 5, 7 * MiB):
        edited[pos : pos + 50] = rng.randbytes(50)
    new = bytes(edited[: 5 * MiB]) + b"inserted" + bytes(edited[5 * MiB :])
    paths = {name: str(directory / name) for name in ("basis", "new", "sig", "delta")}
    Path(paths["basis"]).write_bytes(basis)
    Path(paths["new"]).write_bytes(new)
    sigdelta.signature_file(paths["basis"], paths["sig"])
    sigdelta.delta_file(paths["sig"], paths["new"], paths["delta"])
    assert os.path.getsize(paths["delta"]) < MiB
    return paths


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".part")]


def test_a_slow_writer_never_sees_its_buffer_refilled(
    pair: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def slow_write(fd: int, data: bytes | memoryview) -> int:
        # The reader runs a whole ring ahead: a buffer reused too early shows in OUT's bytes
        # (the patcher hashed it before handing it over, so only the content can tell).
        time.sleep(0.003)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", slow_write)
    out = tmp_path / "out"
    patch.patch_file(pair["basis"], pair["delta"], str(out))
    monkeypatch.undo()
    assert out.read_bytes() == Path(pair["new"]).read_bytes()
    assert not leftovers(tmp_path)


def test_a_full_disk_leaves_no_output_and_one_line(
    pair: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real_write = os.write
    calls = 0

    def full_after_two(fd: int, data: bytes | memoryview) -> int:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_after_two)
    out = tmp_path / "out"
    code = fastargv.run(["patch", pair["basis"], pair["delta"], str(out)])
    monkeypatch.undo()
    assert code == 1
    assert capsys.readouterr().err == f"deltastage: error: {out}: No space left on device\n"
    assert not out.exists() and not leftovers(tmp_path)


def test_a_real_write_error_in_the_cli(pair: dict[str, str], tmp_path: Path) -> None:
    def limit_file_size() -> None:
        # Python ignores SIGXFSZ, so writing past the limit fails with EFBIG, as a full
        # disk fails with ENOSPC, from the writer thread's os.write.
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 * MiB, 2 * MiB))

    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "deltastage", "patch", pair["basis"], pair["delta"], str(out)],
        cwd=ROOT,
        capture_output=True,
        preexec_fn=limit_file_size,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"deltastage: error: {out}: File too large\n"
    assert not out.exists() and not leftovers(tmp_path)


def test_a_writer_error_wakes_a_producer_waiting_for_room() -> None:
    read_end, write_end = os.pipe()
    writer = files._Writer(write_end, "the pipe", limit=64 * 1024)
    failures: list[OSError] = []

    def produce() -> None:
        try:
            for _ in range(1000):
                writer.write(bytes(64 * 1024))
        except OSError as exc:
            failures.append(exc)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    # By now the pipe is full, the writer blocks in os.write and the producer waits for room.
    time.sleep(0.2)
    assert producer.is_alive() and not failures
    os.close(read_end)
    producer.join(10)
    try:
        assert not producer.is_alive(), "the producer still waits on a failed writer"
        assert len(failures) == 1
        assert failures[0].errno == errno.EPIPE and failures[0].filename == "the pipe"
        with pytest.raises(OSError, match="the pipe"):
            writer.wait_for(10**9)
    finally:
        writer.abort()
        os.close(write_end)


def test_the_writer_keeps_order_and_close_waits_for_all(tmp_path: Path) -> None:
    pieces = [bytes([i]) * (i * 7919 % 70000 + 1) for i in range(200)]
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        writer = files._Writer(fd, "f", limit=100_000)
        jobs = [writer.write(piece) for piece in pieces]
        assert jobs == list(range(1, 201))
        writer.wait_for(100)
        writer.close()
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"".join(pieces)


def test_out_gets_the_mode_open_would_give(pair: dict[str, str], tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        patch.patch_file(pair["basis"], pair["delta"], str(tmp_path / "out"))
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o640
