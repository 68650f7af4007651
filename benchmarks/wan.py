"""deltastage vs rsync vs scp over a shaped link: two network namespaces, one veth pair.

``python -m benchmarks wan [--size-mb 120] [--rate 8mbit] [--delay-ms 25]`` (root, Linux:
needs ``ip``, ``tc``, ``sshd``, ``ssh``, ``scp``, ``rsync``).

The peer namespace runs OpenSSH's sshd on 10.250.0.2; the master namespace (10.250.0.1)
pulls from it. By default the link is a WAN's: 8 Mbit/s and 25 ms of delay each way (50 ms
round trip). Both veth ends are shaped with ``tc tbf`` for the rate; netem is not available
here, so the delay comes from a forwarder in front of sshd that holds each direction's bytes
for ``--delay-ms`` (``--delay-ms 0``: no added latency). The corpus is a tree of mostly text
files of mixed sizes (deterministic seed) plus an uncompressed tar of that tree. Day 1 is
staged with the link unshaped and undelayed, and not measured; then 2% of the files are
edited (only those get a new mtime), 20 are added and 10 removed, the tar is rebuilt, the
link is shaped and delayed, and day 2 is pulled three ways:

- deltastage: ``deltastage stage`` with one remote peer (basis: the day-1 staged copy);
- rsync: ``rsync -a -z --no-whole-file --delete -e ssh`` into a copy of the day-1 tree;
- scp: ``scp -B -q -C -r`` (Cedar Backup's default copy) into an empty directory.

Each result is checked against the peer's tree (xxh3-128 of every file); wall time and the
master veth's rx/tx byte counters (Ethernet frames, both directions) are reported.
Namespaces and daemons are removed on exit, also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import random
import shutil
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from benchmarks._link import (
    REPO,
    Link,
    check_environment,
    delayed,
    deltastage_cmd,
    digests,
    human,
    measured_run,
    namespaces,
    peer_sshd,
    rsync_cmd,
    scp_cmd,
    stage_config,
    terminate_on_sigterm,
)

MiB = 1 << 20
DAY1 = date(2026, 1, 5)
DAY2 = DAY1 + timedelta(days=1)
DAY1_MTIME = datetime(2026, 1, 5, 1, 0, tzinfo=UTC).timestamp()


# --- the corpus -------------------------------------------------------------------------


class Corpus:
    """Deterministic text-heavy tree; all randomness flows from one seed."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.pyrng = random.Random(seed)
        letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
        words = [
            bytes(letters[self.rng.integers(0, 26, int(n))]) for n in self.rng.integers(2, 11, 6000)
        ]
        # Log-like lines: a timestamp-ish prefix, a level, then words; a finite pool keeps
        # the text as compressible as real logs and configs (zlib ~3x).
        levels = [b"INFO", b"WARN", b"DEBUG", b"ERROR"]
        self.lines = []
        for i in range(40000):
            body = b" ".join(self.pyrng.choices(words, k=self.pyrng.randint(3, 14)))
            stamp = f"{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}.{i % 1000:03d}".encode()
            self.lines.append(b"%s %s %s" % (stamp, self.pyrng.choice(levels), body))
        self.counter = 0

    def size(self) -> int:
        # Heavy-tailed sizes: many small configs and logs, a few multi-megabyte dumps.
        return int(np.clip(self.rng.lognormal(np.log(24_000), 1.7), 300, 12 * MiB))

    def text(self, size: int) -> bytes:
        idx = self.rng.integers(0, len(self.lines), size // 40 + 2)
        data = b"\n".join([self.lines[i] for i in idx])
        while len(data) < size:
            data += b"\n" + data
        return data[:size]

    def content(self, size: int) -> bytes:
        # One file in ten is incompressible (an already-compressed archive or image).
        return self.rng.bytes(size) if self.rng.random() < 0.1 else self.text(size)

    def new_path(self) -> str:
        self.counter += 1
        d, s = self.pyrng.randrange(12), self.pyrng.randrange(8)
        ext = self.pyrng.choice(["log", "txt", "conf", "csv", "sql", "dat"])
        return f"d{d:02d}/s{s:02d}/f{self.counter:05d}.{ext}"

    def edit(self, data: bytes) -> bytes:
        """A few in-place changes, an insertion and a tail append, like a day of edits."""
        out = bytearray(data)
        for _ in range(self.pyrng.randint(1, 3)):
            at = self.pyrng.randrange(max(1, len(out)))
            out[at : at + 80] = self.text(self.pyrng.randint(20, 200))
        at = self.pyrng.randrange(max(1, len(out)))
        out[at:at] = self.text(self.pyrng.randint(100, 2000))
        out += b"\n" + self.text(self.pyrng.randint(200, 20_000))
        return bytes(out)


def write_file(root: Path, rel: str, data: bytes, mtime: float) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def tree_files(tree: Path) -> list[str]:
    return sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())


def write_tar(tree: Path, out: Path, mtime: float) -> None:
    """An uncompressed tar with fixed owners and sorted members: identical input, same bytes."""
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for rel in tree_files(tree):
            info = tar.gettarinfo(str(tree / rel), arcname=f"tree/{rel}")
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with (tree / rel).open("rb") as src:
                tar.addfile(info, src)
    os.utime(out, (mtime, mtime))


def build_day1(corpus: Corpus, collect: Path, size_bytes: int) -> int:
    tree = collect / "tree"
    total = 0
    while total < size_bytes:
        size = min(corpus.size(), size_bytes - total + 300)
        write_file(tree, corpus.new_path(), corpus.content(size), DAY1_MTIME)
        total += size
    write_tar(tree, collect / "tree.tar", DAY1_MTIME)
    (collect / "cback.collect").touch()
    return len(tree_files(tree))


def build_day2(
    corpus: Corpus, collect: Path, fraction: float, added: int, removed: int
) -> dict[str, int]:
    tree = collect / "tree"
    names = tree_files(tree)
    day2_mtime = DAY1_MTIME + 86400
    edited = corpus.pyrng.sample(names, max(1, round(fraction * len(names))))
    untouched = sorted(set(names) - set(edited))
    for rel in edited:
        write_file(tree, rel, corpus.edit((tree / rel).read_bytes()), day2_mtime)
    for rel in corpus.pyrng.sample(untouched, removed):
        (tree / rel).unlink()
    for _ in range(added):
        write_file(tree, corpus.new_path(), corpus.content(corpus.size()), day2_mtime)
    write_tar(tree, collect / "tree.tar", day2_mtime)
    (collect / "cback.stage").unlink(missing_ok=True)
    (collect / "cback.collect").touch()
    return {"edited": len(edited), "added": added, "removed": removed}


# --- the three contenders ---------------------------------------------------------------


@dataclass
class Result:
    tool: str
    seconds: float
    rx_bytes: int  # peer -> master
    tx_bytes: int  # master -> peer

    @property
    def total(self) -> int:
        return self.rx_bytes + self.tx_bytes


def measured(link: Link, tool: str, cmd: list[str]) -> Result:
    run = measured_run(link, cmd, tool)
    return Result(tool, run.seconds, run.rx_bytes, run.tx_bytes)


def fresh_start(tool: str, work: Path, collect: Path, output: Path) -> None:
    """Put ``tool``'s side back to the end of day 1, so every run does day 2's whole work."""
    if tool == "deltastage":
        shutil.rmtree(output.parent, ignore_errors=True)  # the day's dir
        (collect / "cback.stage").unlink(missing_ok=True)
    elif tool == "rsync":
        shutil.rmtree(output, ignore_errors=True)
        shutil.copytree(work / "rsync-day1", output, symlinks=True)
    else:
        shutil.rmtree(output, ignore_errors=True)


def median_run(runs: list[Result]) -> Result:
    """The run with the median wall time (the lower middle one of an even count)."""
    return sorted(runs, key=lambda r: r.seconds)[(len(runs) - 1) // 2]


def table(results: dict[str, Result], payload: int) -> str:
    head = f"{'tool':<11}{'wall s':>9}{'peer->master':>15}{'master->peer':>15}{'total':>13}"
    rows = [head, "-" * len(head)]
    for r in results.values():
        rows.append(
            f"{r.tool:<11}{r.seconds:>9.2f}{human(r.rx_bytes):>15}{human(r.tx_bytes):>15}"
            f"{human(r.total):>13}"
        )
    ours = results.get("deltastage")
    if ours is not None:
        rows.append("")
        for other in ("rsync", "scp"):
            if other in results:
                theirs = results[other]
                rows.append(
                    f"deltastage/{other}: time {ours.seconds / theirs.seconds:.3f}x, "
                    f"bytes {ours.total / max(1, theirs.total):.3f}x"
                )
    rows.append(f"day-2 payload: {human(payload)} (tree + tar)")
    return "\n".join(rows)


# --- driver -----------------------------------------------------------------------------


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks wan", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--size-mb", type=float, default=120.0, help="tree size (the tar doubles it)"
    )
    parser.add_argument("--rate", default="8mbit", help="tbf rate on both veth ends")
    parser.add_argument("--burst", default="32kb", help="tbf burst")
    parser.add_argument("--latency", default="100ms", help="tbf queue latency bound")
    parser.add_argument(
        "--delay-ms", type=float, default=25.0,
        help="added one-way delay, 0 for none (a forwarder in front of sshd; netem is"
        " unavailable; default 25 ms, a 50 ms round trip)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=20260105)
    parser.add_argument("--edit-fraction", type=float, default=0.02)
    parser.add_argument("--added", type=int, default=20)
    parser.add_argument("--removed", type=int, default=10)
    parser.add_argument("--tools", default="deltastage,rsync,scp", help="comma-separated subset")
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="day-2 runs per tool, interleaved; the table shows each tool's median run",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None, help="default: a fresh dir in /tmp")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    return parser


def main(argv: list[str]) -> int:
    parser = arguments()
    args = parser.parse_args(argv)
    tools = [t for t in args.tools.split(",") if t]
    unknown = set(tools) - {"deltastage", "rsync", "scp"}
    if unknown:
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    problem = check_environment()
    if problem:
        print(f"wan benchmark skipped: {problem}", file=sys.stderr)
        return 2

    terminate_on_sigterm()
    # Both ends import deltastage from this checkout (PYTHONPATH): write its bytecode as an
    # install does, or an edited tree under PYTHONDONTWRITEBYTECODE compiles on every run.
    compileall.compile_dir(str(REPO / "deltastage"), quiet=1)
    work = args.workdir or Path(f"/tmp/deltastage-wan-{os.getpid()}")
    work.mkdir(parents=True, exist_ok=True)
    collect = work / "peer" / "collect"
    try:
        started = time.perf_counter()
        corpus = Corpus(args.seed)
        count = build_day1(corpus, collect, int(args.size_mb * MiB))
        tree_bytes = sum(
            (collect / "tree" / p).stat().st_size for p in tree_files(collect / "tree")
        )
        elapsed = time.perf_counter() - started
        print(f"corpus: {count} files, {human(tree_bytes)} + tar ({elapsed:.1f}s)", flush=True)
        with (
            namespaces() as link,
            peer_sshd(link, work / "sshd") as keys,
            contextlib.ExitStack() as stack,
        ):
            config = stage_config(work, collect, keys)
            # Day 1, unshaped and unmeasured: deltastage's basis and rsync's copy of yesterday.
            if "deltastage" in tools:
                measured(link, "deltastage", deltastage_cmd(config, DAY1))
            if "rsync" in tools:
                shutil.copytree(collect, work / "rsync-day1", symlinks=True)
            changes = build_day2(corpus, collect, args.edit_fraction, args.added, args.removed)
            expected = digests(collect)
            payload = sum((collect / rel).stat().st_size for rel in expected)
            print(f"day 2: {changes}; payload {human(payload)}", flush=True)
            link.shape(args.rate, args.burst, args.latency)
            results: dict[str, Result] = {}
            day2_keys = stack.enter_context(delayed(link, keys, args.delay_ms))
            config = stage_config(work, collect, day2_keys)
            outputs = {
                "deltastage": work / "staging" / f"{DAY2:%Y/%m/%d}" / "wanpeer",
                "rsync": work / "rsync",
                "scp": work / "scp" / "collect",
            }
            commands = {
                "deltastage": lambda: deltastage_cmd(config, DAY2),
                "rsync": lambda: rsync_cmd(day2_keys, collect, work / "rsync"),
                "scp": lambda: scp_cmd(day2_keys, collect, work / "scp"),
            }
            (work / "scp").mkdir(exist_ok=True)
            runs: dict[str, list[Result]] = {tool: [] for tool in tools}
            for _ in range(args.repeat):
                for tool in tools:
                    fresh_start(tool, work, collect, outputs[tool])
                    result = measured(link, tool, commands[tool]())
                    got = digests(outputs[tool])
                    if got != expected:
                        diff = sorted(set(got.items()) ^ set(expected.items()))[:5]
                        raise SystemExit(f"{tool}: output differs from the peer's tree: {diff}")
                    runs[tool].append(result)
                    print(
                        f"  {tool}: {result.seconds:.3f}s, {human(result.total)} (verified)",
                        flush=True,
                    )
            results = {tool: median_run(each) for tool, each in runs.items()}
        print()
        delay = f", +{args.delay_ms:g} ms each way" if args.delay_ms > 0 else ""
        shaping = f"tbf rate {args.rate} burst {args.burst} latency {args.latency}"
        print(f"link: {shaping}, both ends{delay}")
        if args.repeat > 1:
            print(f"median of {args.repeat} interleaved runs per tool")
        print(table(results, payload))
        if args.json:
            print(
                json.dumps(
                    {
                        "changes": changes,
                        "payload": payload,
                        "results": [asdict(r) for r in results.values()],
                        "runs": {t: [asdict(r) for r in each] for t, each in runs.items()},
                    },
                    indent=2,
                )
            )
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
