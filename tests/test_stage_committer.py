"""stage.committer (and the read back from the disk it relies on) directly: what verifies is
renamed into place, what does not is reported and removed, and nothing is left behind."""

from __future__ import annotations

import contextlib
import errno
import marshal
import os
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deltastage.errors import DeltastageError
from deltastage.hashing import hash_bytes
from deltastage.models import RemoteEntry
from deltastage.safefs import DirCache, open_dir
from deltastage.stage import batchcommit, commitworker
from deltastage.stage import committer as committer_module
from deltastage.stage.basis import Basis, BasisOpener
from deltastage.stage.batchcommit import BatchCommitter, BatchResult, Pending
from deltastage.stage.committer import Committer
from deltastage.stage.commitworker import WorkerSetup
from deltastage.stage.localcopy import LocalCopier
from deltastage.stage.ownership import Ownership
from deltastage.stage.peerdir import temp_name
from deltastage.stage.readback import EarlyCheck, verify_on_disk

OWNERSHIP = Ownership(None, None, None, 0o755)


@contextlib.contextmanager
def committer_of(
    tmp_path: Path,
    *,
    fresh: bool = False,
    link: bool = True,
    worker: Callable[[Path], WorkerSetup | None] = lambda peer_dir: None,
) -> Iterator[tuple[Path, Committer]]:
    """A committer of the new peer dir ``tmp_path/peer``, with a worker process when
    ``worker`` gives its setup; closed (with its fds) at the end."""
    peer_dir = tmp_path / "peer"
    peer_dir.mkdir()
    peer_fd = open_dir(peer_dir)
    dirs = DirCache(peer_fd, create=True)
    bases = BasisOpener()
    copier = LocalCopier(bases, OWNERSHIP, link=link)
    batches = BatchCommitter(peer_fd, dirs, copier, OWNERSHIP, fresh=fresh)
    committer = Committer(batches, worker=worker(peer_dir))
    try:
        yield peer_dir, committer
    finally:
        committer.close()
        bases.close()
        dirs.close()
        os.close(peer_fd)


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[tuple[Path, Committer]]:
    with committer_of(tmp_path) as made:
        yield made


def written(peer_dir: Path, path: str, data: bytes, source: bytes | None = None) -> Pending:
    """A file received in full: its temp file holds ``data``; the source is ``source``."""
    source = data if source is None else source
    parts = path.split("/")
    (peer_dir / path).parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name()
    (peer_dir / path).parent.joinpath(tmp).write_bytes(data)
    entry = RemoteEntry(path, "file", len(source), 1_000_000_000, 0o640, hash_bytes(source))
    return Pending(entry, parts, tmp, len(source), hash_bytes(source))


def names(peer_dir: Path) -> list[str]:
    return sorted(p.relative_to(peer_dir).as_posix() for p in peer_dir.rglob("*") if p.is_file())


def test_a_verified_file_takes_its_name(peer: tuple[Path, Committer]) -> None:
    peer_dir, committer = peer
    committer.add(written(peer_dir, "sub/a.txt", b"hello"))
    verified, mismatched = committer.settle()
    assert mismatched == []
    assert (peer_dir / "sub/a.txt").read_bytes() == b"hello"
    entry = verified["sub/a.txt"]
    assert (entry.size, entry.xxh3_128, entry.mode) == (5, hash_bytes(b"hello"), 0o640)
    assert names(peer_dir) == ["sub/a.txt"]


def test_a_flipped_byte_is_a_mismatch_not_renamed(peer: tuple[Path, Committer]) -> None:
    peer_dir, committer = peer
    (peer_dir / "b.bin").write_bytes(b"what an earlier run staged")
    good = written(peer_dir, "a.bin", b"x" * 1000)
    bad = written(peer_dir, "b.bin", b"y" * 499 + b"Y" + b"y" * 500, source=b"y" * 1000)
    committer.add(good)
    committer.add(bad)
    verified, mismatched = committer.settle()
    assert list(verified) == ["a.bin"]
    assert mismatched == [bad]
    assert (peer_dir / "b.bin").read_bytes() == b"what an earlier run staged", "not replaced"
    assert names(peer_dir) == ["a.bin", "b.bin"], "the bad temp file is gone"


def test_a_file_cut_short_or_grown_does_not_verify(peer: tuple[Path, Committer]) -> None:
    peer_dir, committer = peer
    committer.add(written(peer_dir, "short", b"abc", source=b"abcd"))
    committer.add(written(peer_dir, "long", b"abcde", source=b"abcd"))
    verified, mismatched = committer.settle()
    assert verified == {} and {m.entry.path for m in mismatched} == {"short", "long"}
    assert names(peer_dir) == []


def test_a_local_copy_is_made_and_verified_by_the_committer(
    peer: tuple[Path, Committer], tmp_path: Path
) -> None:
    peer_dir, committer = peer
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "same").write_bytes(b"kept")
    (earlier / "rotten").write_bytes(b"bit rot")
    for name, source in (("same", b"kept"), ("rotten", b"bit r0t")):
        entry = RemoteEntry(name, "file", len(source), 0, 0o644, hash_bytes(source))
        basis = Basis(earlier, name, "previous", len(source), hash_bytes(source))
        committer.add(Pending(entry, [name], temp_name(), entry.size, hash_bytes(source), basis))
    verified, mismatched = committer.settle()
    assert list(verified) == ["same"] and [m.entry.path for m in mismatched] == ["rotten"]
    assert (peer_dir / "same").read_bytes() == b"kept"
    assert names(peer_dir) == ["same"]


def test_a_full_batch_goes_to_the_thread_at_once(
    peer: tuple[Path, Committer], monkeypatch: pytest.MonkeyPatch
) -> None:
    peer_dir, committer = peer
    monkeypatch.setattr(committer_module, "BATCH_FILES", 2)
    committer.add(written(peer_dir, "a", b"a"))
    time.sleep(0.2)
    assert not (peer_dir / "a").exists(), "one file is not a batch yet"
    committer.add(written(peer_dir, "b", b"b"))
    deadline = time.monotonic() + 10
    while not (peer_dir / "b").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert names(peer_dir) == ["a", "b"], "committed without being asked to settle"
    verified, _ = committer.settle()
    assert sorted(verified) == ["a", "b"]


def test_close_removes_what_was_never_committed(tmp_path: Path) -> None:
    with committer_of(tmp_path, fresh=True, link=False) as (peer_dir, committer):
        committer.add(written(peer_dir, "d/a", b"never committed"))
    assert names(peer_dir) == []


def test_an_early_check_that_fails_leaves_the_whole_file_to_the_commit(tmp_path: Path) -> None:
    data = random.Random(13).randbytes(300_000)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)  # fdatasync works on it; a short file does not
    with ThreadPoolExecutor(max_workers=1) as worker:
        good = EarlyCheck(worker, fd)
        good.advance(100_000)
        good.advance(200_000)
        start, hasher = good.finish()
        assert start == 200_000
        assert verify_on_disk(fd, len(data), hash_bytes(data), start, hasher)
        short = EarlyCheck(worker, fd)
        short.advance(400_000)  # past the end: the read back comes up short
        assert short.finish() == (0, None)
        dropped = EarlyCheck(worker, fd)
        dropped.advance(100_000)
        dropped.abandon()
    assert verify_on_disk(fd, len(data), hash_bytes(data))
    assert not verify_on_disk(fd, len(data) + 1, hash_bytes(data))
    os.close(fd)
    assert len(os.listdir("/proc/self/fd")) < 64, "the checks' own fds were closed"


def test_batches_in_flight_are_bounded(
    peer: tuple[Path, Committer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # whoever queues more than BATCHES_IN_FLIGHT batches waits for the oldest, whose
    # results are kept for the settle
    peer_dir, committer = peer
    monkeypatch.setattr(committer_module, "BATCH_FILES", 1)
    monkeypatch.setattr(committer_module, "BATCHES_IN_FLIGHT", 2)
    for name in "abcdef":
        committer.add(written(peer_dir, name, name.encode()))
        assert len(committer._in_flight) <= 2
    assert not committer.has_room()
    verified, mismatched = committer.settle()
    assert sorted(verified) == list("abcdef") and mismatched == []
    assert committer.has_room()
    assert committer.settle() == ({}, [])


def test_every_rename_is_synced_before_settle_returns(
    peer: tuple[Path, Committer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch syncs its data before its re-read (its files still under their temp
    names), and settle syncs once more after the last rename: nothing it vouches for has a
    name the disk does not hold yet."""
    peer_dir, committer = peer
    monkeypatch.setattr(committer_module, "BATCH_FILES", 2)
    synced: list[list[str]] = []  # the final names present at each syncfs
    real_syncfs = committer_module.syncfs

    def recording_syncfs(fd: int) -> None:
        synced.append([n for n in names(peer_dir) if not n.startswith(".")])
        real_syncfs(fd)

    monkeypatch.setattr(committer_module, "syncfs", recording_syncfs)
    monkeypatch.setattr(batchcommit, "syncfs", recording_syncfs)
    for name in ("a", "b", "c", "d", "e"):
        committer.add(written(peer_dir, name, name.encode()))
    verified, mismatched = committer.settle()
    assert sorted(verified) == ["a", "b", "c", "d", "e"] and mismatched == []
    assert synced[0] == [], "the first batch is synced before anything is renamed"
    assert synced[-1] == ["a", "b", "c", "d", "e"], "the last renames are synced too"
    assert len(synced) == 4, "one sync per batch of 2, 2, 1 and one for the last renames"


def _worker_setup(peer_dir: Path, *, fresh: bool = False) -> WorkerSetup:
    st = peer_dir.stat()
    return WorkerSetup(peer_dir, (st.st_dev, st.st_ino), OWNERSHIP, link=True, fresh=fresh)


@pytest.fixture
def with_worker(tmp_path: Path) -> Iterator[tuple[Path, Committer]]:
    """A committer whose full batches go to its worker process."""
    with committer_of(tmp_path, worker=_worker_setup) as made:
        yield made


def test_full_batches_are_committed_by_the_worker_process(
    with_worker: tuple[Path, Committer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full batches go to the worker (a process of its own), the rest to the thread; both
    verify what they commit, and a mismatch found by the worker is reported and removed."""
    peer_dir, committer = with_worker
    monkeypatch.setattr(committer_module, "BATCH_FILES", 2)
    pids: list[int] = []
    real_commit = BatchCommitter.commit

    def thread_commit(self: BatchCommitter, batch: list[Pending]) -> BatchResult:
        pids.append(os.getpid())  # runs here only for batches not sent to the worker
        return real_commit(self, batch)

    monkeypatch.setattr(BatchCommitter, "commit", thread_commit)
    committer.add(written(peer_dir, "d/a", b"aaa"))
    committer.add(written(peer_dir, "d/b", b"bbb"))
    committer.add(written(peer_dir, "e/c", b"ccc"))
    committer.add(written(peer_dir, "e/d", b"dXd", source=b"ddd"))
    # small files received into memory: the worker writes their temp files itself
    for name in ("f/e", "f/f"):
        item = written(peer_dir, name, name.encode())
        (peer_dir / name).parent.joinpath(item.tmp).unlink()
        item.data = name.encode()
        committer.add(item)
    committer.add(written(peer_dir, "g/last", b"settled on the thread"))
    assert committer._worker is not None, "a full batch started the worker"
    verified, mismatched = committer.settle()
    assert sorted(verified) == ["d/a", "d/b", "e/c", "f/e", "f/f", "g/last"]
    assert [m.entry.path for m in mismatched] == ["e/d"]
    assert names(peer_dir) == ["d/a", "d/b", "e/c", "f/e", "f/f", "g/last"]
    assert (peer_dir / "f/f").read_bytes() == b"f/f"
    assert pids == [os.getpid()], "only the last, partial batch ran in this process"


def test_a_batch_with_a_file_read_back_early_stays_on_the_thread(
    with_worker: tuple[Path, Committer], monkeypatch: pytest.MonkeyPatch
) -> None:
    peer_dir, committer = with_worker
    monkeypatch.setattr(committer_module, "BATCH_FILES", 2)
    big = written(peer_dir, "big", b"x" * 300_000)
    fd = os.open(peer_dir / big.tmp, os.O_RDONLY)
    with ThreadPoolExecutor(max_workers=1) as checker:
        big.early = EarlyCheck(checker, fd)
        big.early.advance(100_000)
        os.close(fd)
        committer.add(big)
        committer.add(written(peer_dir, "small", b"y"))
        verified, mismatched = committer.settle()
    assert sorted(verified) == ["big", "small"] and mismatched == []
    assert committer._worker is None, "the batch holds a hash in progress: not sent"


def test_a_worker_that_cannot_open_the_peer_dir_fails_the_batch(tmp_path: Path) -> None:
    """The worker refuses a dir that is not the one the master holds (here: another
    inode at that path): the attempt's batch fails with a clear error, nothing renamed."""

    def wrong(peer_dir: Path) -> WorkerSetup:
        device, inode = _worker_setup(peer_dir).identity
        return WorkerSetup(peer_dir, (device, inode + 1), OWNERSHIP, link=True, fresh=False)

    with committer_of(tmp_path, worker=wrong) as (peer_dir, committer):
        committer.add(written(peer_dir, "a", b"a"))
        committer.submit(full=True)
        with pytest.raises(DeltastageError, match="commit worker process ended"):
            committer.settle()
    assert not (peer_dir / "a").exists(), "not renamed (the next run sweeps its temp file)"


_names = st.text(st.characters(blacklist_characters="/\x00"), min_size=1, max_size=12) | st.just(
    "caf\udce9"  # a name that is not UTF-8, as surrogateescape holds it
)
_maybe_bytes = st.none() | st.binary(max_size=40)


@st.composite
def _pending_items(draw: st.DrawFn) -> Pending:
    parts = draw(st.lists(_names, min_size=1, max_size=4))
    path = "/".join(parts)
    size = draw(st.integers(0, 1 << 40))
    entry = RemoteEntry(
        path,
        "file",
        size,
        draw(st.integers(-(1 << 62), 1 << 62)),
        draw(st.none() | st.integers(0, 0o7777)),
        draw(st.binary(min_size=16, max_size=16)),
        draw(_maybe_bytes),
        draw(_maybe_bytes),
    )
    basis = draw(
        st.none()
        | st.builds(
            Basis,
            st.just(Path("/staging/2026/11/22/p")),
            st.just(path),
            st.sampled_from(["previous", "similar", "today", "partial"]),
            st.integers(0, 1 << 40),
            st.none() | st.binary(min_size=16, max_size=16),
            st.none() | st.dates(),
            _maybe_bytes,
            st.none() | st.integers(0, 1 << 40),
        )
    )
    data = draw(_maybe_bytes)
    return Pending(entry, parts, temp_name(), size, entry.xxh3_128 or b"", basis, data=data)


@given(st.lists(_pending_items(), max_size=5))
def test_a_packed_batch_reads_back_as_it_was(batch: list[Pending]) -> None:
    """What the worker reads is what the master queued, field for field."""
    unpacked = [commitworker._pending(row) for row in marshal.loads(commitworker.pack(batch))]
    assert unpacked == batch


def test_a_file_read_back_early_is_never_packed() -> None:
    item = Pending(RemoteEntry("a", "file", 1, 0, 0o644, bytes(16)), ["a"], "t", 1, bytes(16))
    item.early = object()  # type: ignore[assignment]
    with pytest.raises(ValueError, match="committed in place"):
        commitworker.pack([item])


def test_a_worker_that_cannot_start_leaves_the_batches_to_the_thread(
    with_worker: tuple[Path, Committer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No process to be had (a process limit under cron, say): one warning, and every
    batch is committed on the thread as before."""
    peer_dir, committer = with_worker
    monkeypatch.setattr(committer_module, "BATCH_FILES", 2)

    def no_process(setup: WorkerSetup) -> Any:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(commitworker, "start_worker", no_process)
    for name in "abcde":
        committer.add(written(peer_dir, name, name.encode()))
    verified, mismatched = committer.settle()
    assert sorted(verified) == list("abcde") and mismatched == []
    warnings = [r.getMessage() for r in caplog.records if "commit worker" in r.getMessage()]
    assert warnings == [
        "could not start a commit worker process (Resource temporarily unavailable): "
        "committing on a thread"
    ]
