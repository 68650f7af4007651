"""The delta core against rdiff (librsync) and rsync, end to end through the CLI.

Data (generated once, reused): a random basis, the same file with scattered edits, and an
unrelated file of the same size (nothing matches). Both tools run as subprocesses on the
same files; times are the best of ``--repeat`` runs; peak RSS comes from ``wait4``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deltastage.delta import choose_block_size

MiB = 1 << 20
OURS = [sys.executable, "-m", "deltastage"]


@dataclass
class Run:
    seconds: float
    max_rss_kib: int


def run(cmd: list[str], *, repeat: int = 1) -> Run:
    best = Run(float("inf"), 0)
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{stderr}")
        best = Run(min(best.seconds, elapsed), max(best.max_rss_kib, usage.ru_maxrss))
    return best


def generate(directory: Path, size: int, edits: int, seed: int = 20240601) -> dict[str, Path]:
    """basis, edited (``edits`` scattered 1..100-byte changes) and unrelated, ``size`` bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / f"{name}-{size}-{edits}" for name in ("basis", "edited", "other")}
    if all(p.exists() for p in paths.values()):
        return paths
    rng = np.random.default_rng(seed)
    positions = np.sort(rng.choice(size, edits, replace=False)) if edits else np.empty(0, int)
    with open(paths["basis"], "wb") as basis, open(paths["other"], "wb") as other:
        for start in range(0, size, 16 * MiB):
            n = min(16 * MiB, size - start)
            basis.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            other.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    with open(paths["basis"], "rb") as src, open(paths["edited"], "wb") as dst:
        at = 0
        for pos in positions.tolist():
            dst.write(src.read(pos - at))
            kind = rng.integers(3)
            n = int(rng.integers(1, 101))
            if kind == 0:  # replace
                dst.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
                src.seek(n, os.SEEK_CUR)
            elif kind == 1:  # insert
                dst.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            else:  # delete
                src.seek(n, os.SEEK_CUR)
            at = src.tell()
        shutil.copyfileobj(src, dst, 16 * MiB)
    return paths


def literal_bytes_of(delta: Path) -> int:
    """Sum the raw literal lengths in a deltastage delta (the header is 36 bytes)."""
    total = 0
    with open(delta, "rb") as stream:
        stream.seek(36)
        while op := stream.read(1):
            if op == b"C":
                stream.seek(8, os.SEEK_CUR)
            elif op == b"L":
                (n,) = struct.unpack("<I", stream.read(4))
                total += n
                stream.seek(n, os.SEEK_CUR)
            elif op == b"Z":
                n, z = struct.unpack("<II", stream.read(8))
                total += n
                stream.seek(z, os.SEEK_CUR)
            else:
                break
    return total


def rsync_literal(basis: Path, new: Path, work: Path, block_size: int) -> tuple[int, float]:
    dest = work / "rsync-dest"
    shutil.copyfile(basis, dest)
    start = time.perf_counter()
    out = subprocess.run(
        [
            "rsync",
            "--no-whole-file",
            "--ignore-times",
            "--stats",
            "-B",
            str(block_size),
            str(new),
            str(dest),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    elapsed = time.perf_counter() - start
    dest.unlink()
    match = re.search(r"Literal data: ([\d,.]+) bytes", out)
    if not match:
        raise SystemExit(f"could not parse rsync --stats:\n{out}")
    return int(match.group(1).replace(",", "").replace(".", "")), elapsed


def core(size: int, edits: int, directory: Path, repeat: int) -> None:
    paths = generate(directory, size, edits)
    w = directory / "work"
    w.mkdir(exist_ok=True)
    bs = choose_block_size(size)
    basis, edited, other = (str(paths[k]) for k in ("basis", "edited", "other"))
    rows: list[tuple[str, Run, Run]] = []
    ours_sig, rd_sig = str(w / "ours.sig"), str(w / "rdiff.sig")
    rows.append(
        (
            "signature",
            run([*OURS, "signature", basis, ours_sig], repeat=repeat),
            run(["rdiff", "-f", "signature", basis, rd_sig], repeat=repeat),
        )
    )
    for label, new in ((f"delta ({edits} edits)", edited), ("delta (nothing matches)", other)):
        tag = "edit" if new == edited else "miss"
        rows.append(
            (
                label,
                run([*OURS, "delta", ours_sig, new, str(w / f"ours.{tag}")], repeat=repeat),
                run(["rdiff", "-f", "delta", rd_sig, new, str(w / f"rdiff.{tag}")], repeat=repeat),
            )
        )
    rows.append(
        (
            f"patch ({edits} edits)",
            run([*OURS, "patch", basis, str(w / "ours.edit"), str(w / "ours.out")], repeat=repeat),
            run(
                ["rdiff", "-f", "patch", basis, str(w / "rdiff.edit"), str(w / "rdiff.out")],
                repeat=repeat,
            ),
        )
    )
    for name in ("ours.out", "rdiff.out"):
        if not filecmp_equal(w / name, Path(edited)):
            raise SystemExit(f"{name} differs from the new file")
    mb = size / 1e6
    print(f"\ndelta core vs rdiff (librsync, defaults): {size / MiB:.0f} MiB, block size {bs}")
    print(
        f"{'operation':<26}{'ours s':>8}{'ours MB/s':>11}{'rdiff s':>9}{'rdiff MB/s':>12}"
        f"{'speedup':>9}"
    )
    for label, ours, theirs in rows:
        print(
            f"{label:<26}{ours.seconds:>8.2f}{mb / ours.seconds:>11.0f}{theirs.seconds:>9.2f}"
            f"{mb / theirs.seconds:>12.0f}{theirs.seconds / ours.seconds:>8.2f}x"
        )
    ours_lit = literal_bytes_of(w / "ours.edit")
    rsync_lit, rsync_s = rsync_literal(paths["basis"], paths["edited"], w, bs)
    sizes = {
        n: os.path.getsize(w / n) for n in ("ours.edit", "rdiff.edit", "ours.sig", "rdiff.sig")
    }
    print(
        f"\nliteral bytes ({edits} edits, -B {bs}): ours {ours_lit:,}  rsync {rsync_lit:,}  "
        f"(rsync end to end {rsync_s:.2f} s)"
    )
    print(
        f"delta file: ours {sizes['ours.edit']:,} B  rdiff {sizes['rdiff.edit']:,} B;  "
        f"signature: ours {sizes['ours.sig']:,} B  rdiff {sizes['rdiff.sig']:,} B"
    )


def filecmp_equal(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(16 * MiB), fb.read(16 * MiB)
            if x != y:
                return False
            if not x:
                return True


def peak_rss(size: int, edits: int, directory: Path) -> None:
    paths = generate(directory, size, edits)
    w = directory / "work-rss"
    w.mkdir(exist_ok=True)
    basis, edited = str(paths["basis"]), str(paths["edited"])
    steps = {
        "signature": run([*OURS, "signature", basis, str(w / "sig")]),
        "delta": run([*OURS, "delta", str(w / "sig"), edited, str(w / "delta")]),
        "patch": run([*OURS, "patch", basis, str(w / "delta"), str(w / "out")]),
    }
    print(f"\npeak RSS, {size / MiB:.0f} MiB pair ({edits} edits):")
    for name, r in steps.items():
        print(
            f"  {name:<10} {r.max_rss_kib / 1024:>7.1f} MB   {r.seconds:6.2f} s "
            f"({size / 1e6 / r.seconds:.0f} MB/s)"
        )
    for name in ("sig", "delta", "out"):
        (w / name).unlink()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks core", description=__doc__)
    parser.add_argument("--size", type=int, default=256, help="data size in MiB (default 256)")
    parser.add_argument("--edits", type=int, default=200, help="scattered edits (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs (default 3)")
    parser.add_argument(
        "--rss-size",
        type=int,
        default=2048,
        help="MiB for the peak-RSS pair, 0 to skip (default 2048)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("/tmp/deltastage-bench"),
        help="where generated data is kept and reused",
    )
    args = parser.parse_args(argv)
    for tool in ("rdiff", "rsync"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed")
            return 2
    core(args.size * MiB, args.edits, args.dir, args.repeat)
    if args.rss_size:
        peak_rss(args.rss_size * MiB, args.edits, args.dir)
    return 0
