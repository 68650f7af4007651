"""Faults mid-run: a link cut at random byte offsets, SIGKILL of a real CLI run, a full disk.

After every fault the invariants hold: a manifest exists only if every file it lists is
complete and matches the source (re-hashed here), the peer's stage indicator only beside
such a manifest, no temp file is left where a staged file would be, and the next run stages
correct data. Offsets and kill times are drawn from fixed seeds.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from deltastage.config import Options, PeerConfig, load_config
from deltastage.hashing import hash_bytes
from deltastage.manifest import INTERNAL_PREFIX, MANIFEST_NAME
from deltastage.master.connect import bounded_session, open_peer_session
from deltastage.master.session import PeerSession
from deltastage.stage.run import run_stage
from deltastage.verify import verify_peer_dir
from tests.helpers.site import make_peer, source_tree, write_config
from tests.helpers.transports import CuttingTransport

START = date(2026, 11, 23)
FIGURES: dict[str, int] = {}
# A fault must fail the run, not be retried away.
NO_RETRIES = {"retries": 0}


def make_source(tmp: Path, rng: random.Random, sizes: dict[str, int]) -> Path:
    """Peer p's collect dir: random files of the given sizes, ready to stage."""
    return make_peer(tmp, "p", {rel: rng.randbytes(size) for rel, size in sizes.items()})


def edit_source(collect: Path, rng: random.Random) -> None:
    """A night's changes: a few scattered edits, one file grows, one is replaced."""
    files = sorted(p for p in collect.rglob("*") if p.is_file() and not p.name.startswith("cback"))
    for path in rng.sample(files, k=min(3, len(files))):
        data = bytearray(path.read_bytes())
        for _ in range(3):
            at = rng.randrange(max(1, len(data)))
            data[at : at + 16] = rng.randbytes(16)
        path.write_bytes(bytes(data) + rng.randbytes(rng.randrange(2000)))


def peer_dir(staging: Path, day: date) -> Path:
    return staging / f"{day:%Y/%m/%d}" / "p"


def check_invariants(staging: Path, day: date, collect: Path) -> bool:
    """The promises after any fault; True when the peer counts as staged."""
    directory = peer_dir(staging, day)
    indicator = (collect / "cback.stage").exists()
    manifest = directory / MANIFEST_NAME
    if not manifest.exists():
        assert not indicator, "an indicator without a manifest"
        assert_nothing_looks_complete(directory, collect)
        return False
    verification = verify_peer_dir(directory)
    assert verification.ok, verification
    listed = {f["path"]: f for f in json.loads(manifest.read_text())["files"]}
    source = source_tree(collect)
    assert sorted(listed) == sorted(source), "a manifest must cover the whole source"
    for rel, data in source.items():
        assert (directory / rel).read_bytes() == data
        assert listed[rel]["xxh3_128"] == hash_bytes(data).hex()
    return True


def assert_nothing_looks_complete(directory: Path, collect: Path) -> None:
    """Every file under a staged name holds the source's content: a copy still being made,
    or one not yet verified, has a temp name."""
    source = source_tree(collect)
    for path in directory.rglob("*"):
        rel = path.relative_to(directory).as_posix()
        if path.is_dir() or any(p.startswith(INTERNAL_PREFIX) for p in rel.split("/")):
            continue
        assert path.read_bytes() == source.get(rel), f"{rel} looks complete and is not"


def leftovers(directory: Path) -> list[str]:
    """Temp or partial files a finished run must not leave."""
    return sorted(
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.name.startswith(INTERNAL_PREFIX)
    )


def cut_campaign(tmp: Path, seed: int, rounds: int) -> int:
    rng = random.Random(seed)
    collect = make_source(
        tmp, rng, {"big.bin": 600_000, "logs/a.log": 90_000, "logs/b.log": 3000, "c": 10}
    )
    config = load_config(write_config(tmp, options=NO_RETRIES))
    staging = tmp / "staging"
    received = 700_000
    faults = failed = 0
    for round_ in range(rounds):
        day = START + timedelta(days=round_)
        if round_:
            edit_source(collect, rng)
        (collect / "cback.stage").unlink(missing_ok=True)
        counted: list[CuttingTransport] = []
        factory = cutting_factory([rng.randrange(1, max(2, received)), None], counted)
        cut = run_stage(config, run_date=day, session_factory=factory).peers[0]
        faults += 1
        failed += cut.status == "failed"
        assert cut.status in ("staged", "failed"), cut
        assert check_invariants(staging, day, collect) == (cut.status == "staged")
        again = run_stage(config, run_date=day, session_factory=factory).peers[0]
        assert again.status == "staged", again.error
        assert check_invariants(staging, day, collect)
        assert leftovers(peer_dir(staging, day)) == []
        received = counted[-1].bytes_received + counted[0].bytes_received
    assert failed >= faults // 2, "most cuts must land inside the transfer"
    return faults


def cutting_factory(
    budgets: list[int | None], counted: list[CuttingTransport]
) -> Callable[[PeerConfig, Options], PeerSession]:
    """Each new session gets the next receive budget (None: uncut)."""

    def factory(peer: PeerConfig, options: Options) -> PeerSession:
        inner = open_peer_session(peer, options).transport
        transport = CuttingTransport(inner, budgets.pop(0))
        counted.append(transport)
        return bounded_session(transport, options)

    return factory


def test_link_cut_at_random_offsets(tmp_path: Path) -> None:
    FIGURES["cuts"] = cut_campaign(tmp_path, seed=5, rounds=24)


@pytest.mark.slow
def test_link_cut_at_random_offsets_long(tmp_path: Path) -> None:
    FIGURES["cuts_long"] = cut_campaign(tmp_path, seed=6, rounds=150)


# --- SIGKILL of a real CLI run ------------------------------------------------------------


STAGE = [sys.executable, "-m", "deltastage", "stage"]


def cli(config: Path, day: date) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*STAGE, "--config", str(config), "--date", day.isoformat(), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def kill_campaign(tmp: Path, seed: int, rounds: int) -> int:
    rng = random.Random(seed)
    sizes = {f"d{i}/f{j}.bin": 200_000 for i in range(4) for j in range(5)}
    sizes["huge.bin"] = 12 << 20
    collect = make_source(tmp, rng, sizes)
    config = write_config(tmp, options=NO_RETRIES)
    started = time.monotonic()
    first = cli(config, START - timedelta(days=1))
    assert first.wait(120) == 0, first.communicate()
    duration = time.monotonic() - started
    # Day-N runs move only deltas and finish well before the first full run's duration:
    # aim within the first half of a short run (start-up included) so most kills land.
    return kill_rounds(
        config,
        collect,
        rng,
        rounds,
        lambda _: time.sleep(rng.uniform(0.05, min(duration, 1.0) / 2)),
    )


def kill_rounds(
    config: Path, collect: Path, rng: random.Random, rounds: int, wait: Callable[[date], None]
) -> int:
    """Each round a night's edits, a run of the day killed once ``wait(day)`` returns, the
    invariants, then a run of the same day that must stage; how many kills landed."""
    staging = config.parent / "staging"
    kills = 0
    for round_ in range(rounds):
        day = START + timedelta(days=round_)
        edit_source(collect, rng)
        (collect / "cback.stage").unlink(missing_ok=True)
        victim = cli(config, day)
        wait(day)
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        kills += victim.returncode == -signal.SIGKILL
        check_invariants(staging, day, collect)
        survivor = cli(config, day)
        out, err = survivor.communicate(timeout=120)
        assert survivor.returncode == 0, err.decode()
        assert json.loads(out)["peers"][0]["status"] == "staged"
        assert check_invariants(staging, day, collect)
        assert leftovers(peer_dir(staging, day)) == []
    # A kill that arrives after the run ended is harmless and its invariants were still
    # checked; the campaign is only worth its name if kills do land.
    assert kills >= 1, "no kill landed before the run ended"
    return kills


def test_sigkill_at_random_points_of_a_cli_run(tmp_path: Path) -> None:
    FIGURES["kills"] = kill_campaign(tmp_path, seed=11, rounds=5)


@pytest.mark.slow
def test_sigkill_at_random_points_of_a_cli_run_long(tmp_path: Path) -> None:
    FIGURES["kills_long"] = kill_campaign(tmp_path, seed=12, rounds=30)


def small_files_kill_campaign(tmp: Path, seed: int, rounds: int, *, mode: str) -> int:
    """Kills inside the commit of many small files: each day links (``links``) or copies
    (``copies``) yesterday's copies into a new day's dir, batch after batch; or (``fetches``,
    with no day before) fetches them all, many to a request, and commits them in batches."""
    rng = random.Random(seed)
    sizes = {
        f"d{i:02d}/f{j:03d}.txt": 1000 + rng.randrange(100) for i in range(20) for j in range(100)
    }
    collect = make_source(tmp, rng, sizes)
    config = write_config(tmp, options={**NO_RETRIES, "link_unchanged": mode == "links"})
    if mode != "fetches":
        first = cli(config, START - timedelta(days=1))
        assert first.wait(120) == 0, first.communicate()
    staging = tmp / "staging"

    def in_the_commits(day: date) -> None:
        """Until the day's first dir is made (its files are being queued), then a little."""
        first_dir = peer_dir(staging, day) / "d00"
        deadline = time.monotonic() + 30
        while not first_dir.exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.3))

    return kill_rounds(config, collect, rng, rounds, in_the_commits)


@pytest.mark.parametrize(
    ("mode", "seed", "rounds"), [("links", 31, 3), ("copies", 32, 3), ("fetches", 33, 1)]
)
def test_sigkill_inside_a_batch_of_small_files(
    tmp_path: Path, mode: str, seed: int, rounds: int
) -> None:
    FIGURES[f"kills_small_{mode}"] = small_files_kill_campaign(
        tmp_path, seed=seed, rounds=rounds, mode=mode
    )


# --- a full disk --------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"mount tmpfs failed: {result.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def can_mount() -> bool:
    return os.geteuid() == 0 and os.path.exists("/proc/filesystems")


def test_full_disk_fails_cleanly_then_recovers(tmp_path: Path, monkeypatch: Any) -> None:
    rng = random.Random(21)
    collect = make_source(tmp_path, rng, {"a.bin": 1 << 20, "b.bin": 3 << 20, "c.txt": 100})
    if can_mount():
        staging = tmp_path / "disk"
        mounted = small_tmpfs(staging, "2m")
        mounted.__enter__()
        config = load_config(write_config(tmp_path, options=NO_RETRIES, staging=staging))
    else:  # no mount: every write to the staging tree fails with ENOSPC past 2 MiB
        staging = tmp_path / "staging"
        config = load_config(write_config(tmp_path, options=NO_RETRIES, staging=staging))
        real_write, real_pwrite, budget = os.write, os.pwrite, [2 << 20]

        def spend(data: Any) -> None:
            budget[0] -= len(data)
            if budget[0] < 0:
                raise OSError(28, "No space left on device")

        def write(fd: int, data: Any) -> int:
            spend(data)
            return real_write(fd, data)

        def pwrite(fd: int, data: Any, offset: int) -> int:  # the receiver writes with it
            spend(data)
            return real_pwrite(fd, data, offset)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "pwrite", pwrite)
        mounted = None
    try:
        report = run_stage(config, run_date=START).peers[0]
        assert report.status == "failed"
        assert report.error and "No space left on device" in report.error
        assert "\n" not in report.error
        assert not check_invariants(staging, START, collect)
        assert not (collect / "cback.stage").exists()
        FIGURES["enospc"] = 1
        if mounted is not None:
            subprocess.run(["mount", "-o", "remount,size=64m", str(staging)], check=True)
        else:
            monkeypatch.undo()
        report = run_stage(config, run_date=START).peers[0]
        assert report.status == "staged", report.error
        assert check_invariants(staging, START, collect)
        assert leftovers(peer_dir(staging, START)) == []
    finally:
        if mounted is not None:
            mounted.__exit__(None, None, None)
