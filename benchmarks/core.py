"""The delta core against rdiff (librsync) and rsync, end to end through the CLI.

Data (generated once, reused): a random basis, the same file with scattered edits, and an
unrelated file of the same size (nothing matches). Both tools run as subprocesses on the
same files; times are the best of ``--repeat`` runs (of more for sub-second commands, both
tools alike); peak RSS comes from GNU time.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deltastage.delta.params import choose_block_size

MiB = 1 << 20
OURS = [sys.executable, "-m", "deltastage"]
# A command is repeated until its runs add up to this many seconds (up to 5x --repeat): on a
# shared 2-core machine one busy moment spoils a 0.1 s run, and best of 3 is too few for it.
SHORT = 1.0


@dataclass
class Run:
    seconds: float
    max_rss_kib: int
    # user + system CPU seconds: on a shared machine, wall time also counts waiting for a core.
    cpu: float = float("inf")


def run(cmd: list[str], *, repeat: int = 1, fresh: Path | None = None) -> Run:
    """Best time of ``repeat`` runs, more for a short command (see ``SHORT``); ``fresh`` is
    deleted before each so every run creates it.

    Peak RSS comes from GNU time when present: a child forked from this (numpy-laden)
    process would otherwise report our RSS at fork time as its own maximum.
    """
    timer = ["/usr/bin/time", "-f", "%M %U %S"] if os.path.exists("/usr/bin/time") else []
    best = Run(float("inf"), 0)
    runs, spent = 0, 0.0
    while runs < repeat or (spent < SHORT and runs < 5 * repeat):
        runs += 1
        if fresh is not None:
            fresh.unlink(missing_ok=True)
        start = time.perf_counter()
        proc = subprocess.run([*timer, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        spent += elapsed
        stderr = proc.stderr.decode(errors="replace")
        if proc.returncode != 0:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{stderr}")
        fields = stderr.strip().splitlines()[-1].split() if timer and stderr.strip() else []
        rss = int(fields[0]) if len(fields) == 3 and fields[0].isdigit() else 0
        cpu = float(fields[1]) + float(fields[2]) if len(fields) == 3 else float("inf")
        best = Run(min(best.seconds, elapsed), max(best.max_rss_kib, rss), min(best.cpu, cpu))
    return best


def generate(
    directory: Path, size: int, edits: int, *, other: bool = True, seed: int = 20240601
) -> dict[str, Path]:
    """basis, edited (``edits`` scattered 1..100-byte changes) and unrelated, ``size`` bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    names = ("basis", "edited", "other") if other else ("basis", "edited")
    paths = {name: directory / f"{name}-{size}-{edits}" for name in names}
    done = directory / f".complete-{size}-{edits}-{int(other)}"
    if done.exists() and all(p.exists() for p in paths.values()):
        return paths
    unrelated = paths.get("other", Path(os.devnull))
    rng = np.random.default_rng(seed)
    positions = np.sort(rng.choice(size, edits, replace=False)) if edits else np.empty(0, int)
    with open(paths["basis"], "wb") as basis, open(unrelated, "wb") as unrelated_out:
        for start in range(0, size, 16 * MiB):
            n = min(16 * MiB, size - start)
            basis.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            if other:
                unrelated_out.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
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
    done.touch()
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


def rsync_literal(
    basis: Path, new: Path, work: Path, block_size: int, repeat: int = 1
) -> tuple[int, float]:
    """rsync's literal bytes and its best end-to-end time (signature, delta and patch)."""
    dest = work / "rsync-dest"
    elapsed = float("inf")
    for _ in range(repeat):
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
        elapsed = min(elapsed, time.perf_counter() - start)
        dest.unlink()
    match = re.search(r"Literal data: ([\d,.]+) bytes", out)
    if not match:
        raise SystemExit(f"could not parse rsync --stats:\n{out}")
    return int(match.group(1).replace(",", "").replace(".", "")), elapsed


def lib_time(action: Callable[[], None], repeat: int, fresh: Path) -> float:
    """In-process time of the same rdiff-like call: the CLI's figure minus interpreter start."""
    best = float("inf")
    for _ in range(repeat):
        fresh.unlink(missing_ok=True)
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def core(size: int, edits: int, directory: Path, repeat: int) -> None:
    from deltastage.rdiff import patch as rdiff_patch
    from deltastage.rdiff import sigdelta

    paths = generate(directory, size, edits)
    w = directory / "work"
    w.mkdir(exist_ok=True)
    bs = choose_block_size(size)
    basis, edited, other = (str(paths[k]) for k in ("basis", "edited", "other"))
    sig = str(w / "ours.sig")
    empty = w / "empty"
    empty.write_bytes(b"")
    # The fixed cost rdiff does not pay: the interpreter, plus numpy for signature and delta.
    startup = run(
        [*OURS, "signature", str(empty), str(w / "empty.sig")], repeat=repeat, fresh=w / "empty.sig"
    ).seconds
    bare = run([sys.executable, "-c", "pass"], repeat=repeat).seconds
    rows: list[tuple[str, Run, float, Run]] = []

    def step(label: str, ours: list[str], lib: Callable[[], None], theirs: list[str]) -> None:
        out_ours, out_theirs = Path(ours[-1]), Path(theirs[-1])
        # The steps before leave up to 1.5 GB dirty (six 256 MiB delta outputs): flushing it
        # now keeps writeback's kernel threads and disk traffic out of this step's timings.
        os.sync()
        cli = run([*OURS, *ours], repeat=repeat, fresh=out_ours)
        rd = run(["rdiff", "-f", *theirs], repeat=repeat, fresh=out_theirs)
        rows.append((label, cli, lib_time(lib, repeat, out_ours), rd))

    step(
        "signature",
        ["signature", basis, sig],
        lambda: sigdelta.signature_file(basis, sig),
        ["signature", basis, str(w / "rdiff.sig")],
    )
    for label, new, tag in (
        (f"delta ({edits} edits)", edited, "edit"),
        ("delta (nothing matches)", other, "miss"),
    ):
        out = str(w / f"ours.{tag}")
        step(
            label,
            ["delta", sig, new, out],
            lambda new=new, out=out: sigdelta.delta_file(sig, new, out),  # type: ignore[misc]
            ["delta", str(w / "rdiff.sig"), new, str(w / f"rdiff.{tag}")],
        )
    step(
        f"patch ({edits} edits)",
        ["patch", basis, str(w / "ours.edit"), str(w / "ours.out")],
        lambda: rdiff_patch.patch_file(basis, str(w / "ours.edit"), str(w / "ours.out")),
        ["patch", basis, str(w / "rdiff.edit"), str(w / "rdiff.out")],
    )
    for name in ("ours.out", "rdiff.out"):
        if not filecmp_equal(w / name, Path(edited)):
            raise SystemExit(f"{name} differs from the new file")
    mb = size / 1e6
    print(f"\ndelta core vs rdiff (librsync, defaults): {size / MiB:.0f} MiB, block size {bs}")
    print(
        f"ours = `python -m deltastage ...` (start-up included: {startup:.2f} s with numpy, "
        f"bare interpreter {bare:.2f} s); lib = the same call in-process; best of {repeat}"
        f" (CLI runs under {SHORT:.0f} s: of up to {5 * repeat})"
    )
    print(
        f"{'operation':<26}{'ours s':>8}{'MB/s':>7}{'lib MB/s':>10}{'rdiff s':>9}"
        f"{'MB/s':>7}{'ours/rdiff':>12}{'lib/rdiff':>11}{'cpu ours':>9}{'rdiff':>8}{'cpu x':>10}"
    )
    for label, cli, lib, theirs in rows:
        print(
            f"{label:<26}{cli.seconds:>8.2f}{mb / cli.seconds:>7.0f}{mb / lib:>10.0f}"
            f"{theirs.seconds:>9.2f}{mb / theirs.seconds:>7.0f}"
            f"{theirs.seconds / cli.seconds:>11.2f}x{theirs.seconds / lib:>10.2f}x"
            f"{cli.cpu:>9.2f}{theirs.cpu:>8.2f}{theirs.cpu / cli.cpu:>9.2f}x"
        )
    ours_lit = literal_bytes_of(w / "ours.edit")
    rsync_lit, rsync_s = rsync_literal(paths["basis"], paths["edited"], w, bs, repeat)
    # rsync does signature, delta and patch in one run: compare it with the three commands.
    trio = [rows[i] for i in (0, 1, 3)]
    ours_e2e = sum(r[1].seconds for r in trio)
    lib_e2e = sum(r[2] for r in trio)
    rdiff_e2e = sum(r[3].seconds for r in trio)
    print(
        f"{'sig+delta+patch':<26}{ours_e2e:>8.2f}{mb / ours_e2e:>7.0f}"
        f"{mb / lib_e2e:>10.0f}{rdiff_e2e:>9.2f}{mb / rdiff_e2e:>7.0f}"
        f"{rdiff_e2e / ours_e2e:>11.2f}x{rdiff_e2e / lib_e2e:>10.2f}x"
    )
    print(
        f"  vs rsync --no-whole-file (local, one process pair): rsync {rsync_s:.2f} s;"
        f" rsync/ours {rsync_s / ours_e2e:.2f}x, rsync/lib {rsync_s / lib_e2e:.2f}x"
    )
    sizes = {
        n: os.path.getsize(w / n) for n in ("ours.edit", "rdiff.edit", "ours.sig", "rdiff.sig")
    }
    print(f"\nliteral bytes ({edits} edits, -B {bs}): ours {ours_lit:,}  rsync {rsync_lit:,}")
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
    paths = generate(directory, size, edits, other=False)
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


def precompile() -> None:
    """Write deltastage's bytecode, as installing it does: with PYTHONDONTWRITEBYTECODE set
    (or a read-only tree), every timed run of an edited checkout would otherwise compile
    the modules it imports, a few ms for the rdiff modules alone, which no installed copy pays."""
    import compileall

    import deltastage

    compileall.compile_dir(os.path.dirname(deltastage.__file__), quiet=1)


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
    precompile()
    core(args.size * MiB, args.edits, args.dir, args.repeat)
    if args.rss_size:
        peak_rss(args.rss_size * MiB, args.edits, args.dir)
    return 0
