"""How long the master takes to plan a peer with many files and many retained days.

``python -m benchmarks plan-days [--files 100000] [--days 14] [--older 0.01] [--json]``

Builds a staging tree of ``--days`` earlier days of one peer, each a manifest of ``--files``
files (about 2% of them changed from one day to the next), the most recent day's files on
disk too (sparse, of their sizes: the master walks that day's dir, and reads the older ones'
manifests only). Today's listing has every file: most unchanged (linked), some changed, and
``--older`` of them shaped like an incremental archive whose most recent copy is small, so
their bases are looked for in every older day's manifest. Prints the time of finding the
earlier days, of building the basis finder (the most recent day walked), and of planning
every listed file (``stage.plan.order_by_work``, the older days' manifests read on first
need), and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from deltastage.hashing import hash_bytes
from deltastage.manifest import Manifest, ManifestEntry, write_manifest
from deltastage.models import RemoteEntry
from deltastage.safefs import open_dir
from deltastage.stage.basis import BasisFinder, daily_dir_for, earlier_peer_dirs
from deltastage.stage.plan import order_by_work

PEER = "p"
TODAY = date(2026, 3, 1)


def name(index: int) -> str:
    return f"d{index // 1000:03d}/f{index:06d}.dat"


def digest(index: int, version: int) -> bytes:
    return hash_bytes(f"{index}:{version}".encode())


def build(staging: Path, files: int, days: int, older: float, seed: int) -> list[RemoteEntry]:
    """The staging tree's earlier days, and today's listing."""
    rng = random.Random(seed)
    sizes = [rng.randrange(1, 1 << 20) for _ in range(files)]
    versions = [0] * files
    small = set(rng.sample(range(files), int(files * older)))
    for back in range(days, 0, -1):
        when = TODAY - timedelta(days=back)
        for index in rng.sample(range(files), files // 50):
            versions[index] += 1
            sizes[index] = max(1, sizes[index] + rng.randrange(-4096, 4096))
        # an incremental archive's most recent copies are small; last week's is full
        shown = [max(1, sizes[i] // 100) if i in small and back == 1 else sizes[i]
                 for i in range(files)]  # fmt: skip
        peer_dir = daily_dir_for(staging, when) / PEER
        peer_dir.mkdir(parents=True)
        entries = tuple(
            ManifestEntry(name(i), shown[i], digest(i, versions[i]), 0o644, 0) for i in range(files)
        )
        fd = open_dir(peer_dir)
        try:
            write_manifest(fd, Manifest(PEER, when.isoformat(), entries))
        finally:
            os.close(fd)
        if back == 1:
            for i in range(files):
                path = peer_dir / name(i)
                path.parent.mkdir(exist_ok=True)
                with open(path, "wb") as out:
                    out.truncate(shown[i])
    listing = []
    for index in range(files):
        changed = rng.random() < 0.02 or index in small
        version = versions[index] + 1 if changed else versions[index]
        size = sizes[index] + (64 if changed else 0)
        listing.append(RemoteEntry(name(index), "file", size, 0, 0o644, digest(index, version)))
    return listing


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks plan-days")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=14, help="retained earlier days")
    parser.add_argument(
        "--older", type=float, default=0.01, help="share of files based on the older days"
    )
    parser.add_argument("--seed", type=int, default=20260301)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.files < 1 or args.days < 1 or not 0 <= args.older <= 1:
        parser.error("--files and --days must be positive, --older within 0..1")
    work = Path(tempfile.mkdtemp(prefix="deltastage-plan-days-"))
    try:
        staging = work / "staging"
        started = time.perf_counter()
        listing = build(staging, args.files, args.days, args.older, args.seed)
        built = time.perf_counter() - started
        today = daily_dir_for(staging, TODAY) / PEER
        today.mkdir(parents=True)
        t0 = time.perf_counter()
        days = earlier_peer_dirs(staging, PEER, TODAY, days=args.days)
        t1 = time.perf_counter()
        finder = BasisFinder(staging, PEER, TODAY, today, basis_days=args.days)
        t2 = time.perf_counter()
        local, remote = order_by_work(listing, finder)
        t3 = time.perf_counter()
        several = sum(1 for _, bases in remote if len(bases) > 1)
        result = {
            "files": args.files,
            "earlier_days": len(days),
            "setup_s": round(built, 2),
            "find_days_s": round(t1 - t0, 3),
            "finder_s": round(t2 - t1, 3),
            "plan_s": round(t3 - t2, 3),
            "total_s": round(t3 - t0, 3),
            "linked": len(local),
            "fetched": len(remote),
            "several_bases": several,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        print(
            f"plan-days: {args.files} files, {len(days)} earlier days: days found in"
            f" {result['find_days_s']} s, finder {result['finder_s']} s, plan"
            f" {result['plan_s']} s (total {result['total_s']} s); {len(local)} linked,"
            f" {len(remote)} fetched ({several} against several bases); peak RSS"
            f" {result['peak_rss_mib']} MiB (setup {built:.1f} s)"
        )
        if args.json:
            print(json.dumps(result))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
