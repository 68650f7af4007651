"""A week of the real Cedar Backup 3 ``collect`` action, staged by deltastage and by rsync.

``python -m benchmarks cedar-week [--modes tar,targz,tarbz2] [--link local|wan] [--days 8]
[--tree-mb 32] [--json]`` (needs the ``bench`` extra: ``pip install '.[bench]'``, which
installs cedar-backup3 and its ``cback3`` script; the WAN link needs what benchmarks/wan.py
needs: root, ``ip``, ``tc``, sshd).

The client's data is real, not generated words: a copy of this Python's standard library
(site-packages, ``__pycache__``, the test suites and the static libpython left out; at most
``--tree-mb``), an SQL dump (mysqldump's shape, rows made of the library's source lines)
that changes a little and grows each day, and a mailbox (messages made the same way) that
grows too. Cedar collects them in its sample shape: both directories (the library, the
dump's) in ``incr`` mode, the mailbox file in ``weekly`` mode, ``--full`` on days 0 and 7,
the week starting on day 0; its ``purge`` empties the collect dir after each day, as a
client's nightly run does. Each day a seeded plan edits about 1% of the library's text files,
adds files (taken from the library's own test suites) and removes some, all with that day's
mtime, so Cedar's digest comparison sees them.

Cedar decides "start of week" from the real clock (``time.localtime``), which the week here
does not follow: the generated config names as starting day the weekday three days from
now, which no day of the run falls on, and ``--full`` on days 0 and 7 does what the start of
the week does (the digest is reset, the weekly file collected). No clock faking is needed.

Each day's collect dir is then staged twice, into fresh dirs: by ``deltastage stage --date``
(one peer; its basis is its own staging tree of the earlier days) and by ``rsync -a -z
--no-whole-file --copy-dest=<the previous day's rsync copy>``; on the WAN link, also by
Cedar's own copy, ``scp -C``. Every copy is checked against the collect dir. Over the WAN
link (two namespaces, ``tc tbf`` at 8 Mbit/s, 25 ms each way through the delaying forwarder,
sshd in the peer's namespace; day 0, which only seeds the staging trees and is not part of
the week's figures, crosses it without the rate limit) every tool's bytes come from the
master's veth counters; on the local link from the tools' own reports (deltastage's
``--json`` ``wire_bytes``, rsync's ``--stats``). CPU: the master's side from the resource
usage of the command; the peer's (deltastage's agent, rsync's server) from GNU time wrapped
around it over ssh; on the local link both run within the master's figure.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import grp
import json
import os
import posixpath
import pwd
import random
import re
import shlex
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import escape

from benchmarks._link import (
    Keys,
    Link,
    Run,
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

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20
GB = 10**9
MODES = ("tar", "targz", "tarbz2")
DAY0 = date(2026, 1, 5)
WEEK = 7  # --full every WEEK days from day 0, as on a starting day
BEFORE_DAY0 = datetime(2026, 1, 4, 12, 0, tzinfo=UTC).timestamp()  # the library's mtimes
PEER = "cedarpeer"
GNU_TIME = "/usr/bin/time"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
TEXT_SUFFIXES = frozenset({".py", ".txt", ".rst", ".cfg", ".html", ".css", ".xml", ".json"})
TEST_DIRS = frozenset({"test", "tests", "idle_test"})  # the test suites: additions come from them
# mysqldump's default --net-buffer-length: an extended INSERT is cut before this many bytes.
NET_BUFFER = 1_046_528
SQL_SHARE, MBOX_SHARE = 0.4, 0.25  # their day-0 sizes, as parts of the library's


def day_date(day: int) -> date:
    return DAY0 + timedelta(days=day)


def day_mtime(day: int) -> float:
    return datetime.combine(day_date(day), datetime.min.time(), UTC).timestamp() + 3600


def is_full(day: int) -> bool:
    return day % WEEK == 0


# --- the library: which files, and each day's plan ---------------------------------------


def library_files(stdlib: Path) -> tuple[dict[str, int], list[str]]:
    """(size of each file the tree may hold, the test suites' .py files for additions)."""
    sizes: dict[str, int] = {}
    pool: list[str] = []
    for top, dirs, files in os.walk(stdlib):
        rel_top = Path(top).relative_to(stdlib).as_posix()
        in_tests = any(part in TEST_DIRS for part in Path(rel_top).parts)
        # Installed packages, bytecode and the static libpython (config-*) are not the library.
        dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "site-packages"))
        dirs[:] = [d for d in dirs if not (rel_top == "." and d.startswith("config-"))]
        for name in sorted(files):
            path = Path(top) / name
            if path.is_symlink() or not path.is_file():
                continue
            rel = posixpath.normpath(posixpath.join(rel_top, name))
            if in_tests:
                if name.endswith(".py"):
                    pool.append(rel)
            else:
                sizes[rel] = path.stat().st_size
    return sizes, pool


def select_tree(sizes: dict[str, int], budget: int, seed: int) -> list[str]:
    """A seeded sample of the library (a mix of every kind of file) of at most ``budget``
    bytes, sorted."""
    names = sorted(sizes)
    random.Random(f"{seed}:tree").shuffle(names)
    chosen, total = [], 0
    for name in names:
        if total + sizes[name] <= budget:
            chosen.append(name)
            total += sizes[name]
    return sorted(chosen)


def is_text(name: str) -> bool:
    return posixpath.splitext(name)[1] in TEXT_SUFFIXES


@dataclass(frozen=True)
class DayPlan:
    day: int
    edited: tuple[str, ...] = ()
    added: tuple[tuple[str, str], ...] = ()  # (new name in the tree, the pool file copied)
    removed: tuple[str, ...] = ()


def plan_day(
    names: Sequence[str],
    pool: Sequence[str],
    seed: int,
    day: int,
    *,
    edit_fraction: float = 0.01,
    added: int = 3,
    removed: int = 2,
) -> DayPlan:
    """What changes in the tree ``names`` on ``day`` (day 0 is the initial state)."""
    if day == 0:
        return DayPlan(0)
    rng = random.Random(f"{seed}:plan:{day}")
    editable = sorted(n for n in names if is_text(n))
    edited = rng.sample(editable, min(len(editable), max(1, round(edit_fraction * len(names)))))
    rest = sorted(set(names) - set(edited))
    gone = rng.sample(rest, min(removed, len(rest)))
    taken = set(names)
    new: list[tuple[str, str]] = []
    for source in rng.sample(list(pool), min(added, len(pool))):
        where = posixpath.dirname(rng.choice(list(names))) if names else ""
        name = posixpath.join(where, posixpath.basename(source))
        while name in taken:
            name = posixpath.join(where, f"new_{posixpath.basename(name)}")
        taken.add(name)
        new.append((name, source))
    return DayPlan(day, tuple(sorted(edited)), tuple(sorted(new)), tuple(sorted(gone)))


def plan_week(
    names: Sequence[str], pool: Sequence[str], seed: int, days: int, edit_fraction: float = 0.01
) -> list[DayPlan]:
    """Each day's plan, on the tree as the days before it left it."""
    plans, current = [], list(names)
    for day in range(days):
        plan = plan_day(current, pool, seed, day, edit_fraction=edit_fraction)
        current = sorted((set(current) - set(plan.removed)) | {n for n, _ in plan.added})
        plans.append(plan)
    return plans


def edit_text(data: bytes, donor: bytes, rng: random.Random) -> bytes:
    """One to three edits as a person makes them: lines inserted (from ``donor``), lines
    deleted, a line replaced."""
    lines = data.split(b"\n")
    extra = donor.split(b"\n")
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(lines) + 1)
        kind = rng.choice(("insert", "delete", "replace"))
        if kind == "insert" or len(lines) < 2:
            start = rng.randrange(len(extra))
            lines[at:at] = extra[start : start + rng.randint(1, 20)]
        elif kind == "delete":
            del lines[at : at + rng.randint(1, 5)]
        else:
            lines[min(at, len(lines) - 1)] = rng.choice(extra)
    out = b"\n".join(lines)
    return out if out != data else data + b"\n# edited\n"


# --- the SQL dump and the mailbox -----------------------------------------------------------


def source_lines(tree: Path, names: Sequence[str], limit: int) -> list[str]:
    """Up to ``limit`` non-blank source lines of the tree's .py files, in name order."""
    out: list[str] = []
    for name in names:
        if not name.endswith(".py"):
            continue
        text = (tree / name).read_text(encoding="utf-8", errors="replace")
        out.extend(s for line in text.splitlines() if 0 < len(s := line.strip()) <= 160)
        if len(out) >= limit:
            break
    return out[:limit] or ["pass"]


@dataclass
class Table:
    """A table's rows (id, module, line number, text), as an SQL dump writes them."""

    rows: dict[int, tuple[str, int, str]] = field(default_factory=dict)
    next_id: int = 1

    def add(self, lines: Sequence[str], rng: random.Random, count: int) -> None:
        for _ in range(count):
            i = rng.randrange(len(lines))
            self.rows[self.next_id] = (f"mod{i % 997:03d}", i % 5000 + 1, lines[i])
            self.next_id += 1

    def day(self, lines: Sequence[str], seed: int, day: int) -> None:
        """A day of use: about 0.05% of the rows deleted, 0.2% updated, 0.8% added."""
        rng = random.Random(f"{seed}:sql:{day}")
        ids = sorted(self.rows)
        for row in rng.sample(ids, len(ids) // 2000):
            del self.rows[row]
        for row in rng.sample(sorted(self.rows), len(self.rows) // 500):
            module, lineno, _ = self.rows[row]
            self.rows[row] = (module, lineno, rng.choice(lines))
        self.add(lines, rng, max(1, len(ids) // 125))


def sql_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_dump(table: Table, day: int) -> bytes:
    """mysqldump's layout: a header, the table's DDL, extended INSERTs cut at its net
    buffer length, and a footer with the dump's date."""
    head = (
        "-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)\n--\n"
        "-- Host: localhost    Database: app\n"
        "-- ------------------------------------------------------\n"
        "-- Server version\t8.0.36\n\n"
        "DROP TABLE IF EXISTS `source_lines`;\n"
        "CREATE TABLE `source_lines` (\n"
        "  `id` int NOT NULL AUTO_INCREMENT,\n  `module` varchar(64) NOT NULL,\n"
        "  `lineno` int NOT NULL,\n  `text` text NOT NULL,\n  PRIMARY KEY (`id`)\n"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n\n"
        "LOCK TABLES `source_lines` WRITE;\n"
    )
    parts = [head]
    prefix = "INSERT INTO `source_lines` VALUES "
    statement: list[str] = []
    length = len(prefix)
    for row in sorted(table.rows):
        module, lineno, text = table.rows[row]
        value = f"({row},{sql_quote(module)},{lineno},{sql_quote(text)})"
        if statement and length + len(value) + 2 > NET_BUFFER:
            parts.append(prefix + ",".join(statement) + ";\n")
            statement, length = [], len(prefix)
        statement.append(value)
        length += len(value) + 1
    if statement:
        parts.append(prefix + ",".join(statement) + ";\n")
    stamp = datetime.fromtimestamp(day_mtime(day), UTC)
    parts.append(f"UNLOCK TABLES;\n\n-- Dump completed on {stamp:%Y-%m-%d %H:%M:%S}\n")
    return "".join(parts).encode()


def message(lines: Sequence[str], seed: int, number: int) -> bytes:
    """Message ``number`` of the mailbox, always the same bytes."""
    rng = random.Random(f"{seed}:msg:{number}")
    sent = datetime.fromtimestamp(BEFORE_DAY0 - 90 * 86400 + number * 1500, UTC)
    body = [lines[rng.randrange(len(lines))] for _ in range(rng.randint(5, 80))]
    text = "\n".join(">" + b if b.startswith("From ") else b for b in body)
    return (
        f"From sender{number % 37}@example.org {sent:%a %b %d %H:%M:%S %Y}\n"
        f"From: sender{number % 37}@example.org\nTo: backup@example.org\n"
        f"Subject: {rng.choice(lines)[:70]}\nDate: {sent:%a, %d %b %Y %H:%M:%S +0000}\n"
        f"Message-ID: <{number}.{seed}@example.org>\n\n{text}\n\n"
    ).encode()


@dataclass
class Mailbox:
    numbers: list[int] = field(default_factory=list)

    def day(self, seed: int, day: int) -> None:
        """About 0.5% of the messages deleted, 2% arrive."""
        rng = random.Random(f"{seed}:mbox:{day}")
        for number in rng.sample(self.numbers, len(self.numbers) // 200):
            self.numbers.remove(number)
        last = max(self.numbers, default=-1)
        self.numbers.extend(range(last + 1, last + 1 + max(1, len(self.numbers) // 50)))


# --- Cedar's configuration -----------------------------------------------------------------


def starting_day(now: datetime) -> str:
    """A weekday the run does not reach: three days from ``now``."""
    return WEEKDAYS[(now + timedelta(days=3)).weekday()]


def cedar_config(
    *,
    working_dir: Path,
    collect_dir: Path,
    dirs: Sequence[Path],
    files: Sequence[Path],
    archive_mode: str,
    start: str,
    user: str,
    group: str,
) -> str:
    """cback3.conf for a client: the dirs in ``incr`` mode, the files ``weekly``, and a
    purge that empties the collect dir (retain 0 days)."""

    def path(p: Path) -> str:
        return escape(str(p))

    dir_items = "".join(f"      <dir><abs_path>{path(d)}</abs_path></dir>\n" for d in dirs)
    file_items = "".join(
        f"      <file><abs_path>{path(f)}</abs_path><collect_mode>weekly</collect_mode></file>\n"
        for f in files
    )
    return f"""\
<?xml version="1.0"?>
<cb_config>
   <reference>
      <author>deltastage benchmarks</author>
      <revision>1</revision>
      <description>cedar-week: Cedar's sample client shape</description>
   </reference>
   <options>
      <starting_day>{start}</starting_day>
      <working_dir>{path(working_dir)}</working_dir>
      <backup_user>{escape(user)}</backup_user>
      <backup_group>{escape(group)}</backup_group>
      <rcp_command>/usr/bin/scp -B</rcp_command>
   </options>
   <collect>
      <collect_dir>{path(collect_dir)}</collect_dir>
      <collect_mode>incr</collect_mode>
      <archive_mode>{archive_mode}</archive_mode>
      <ignore_file>.cbignore</ignore_file>
{dir_items}{file_items}   </collect>
   <purge>
      <dir>
         <abs_path>{path(collect_dir)}</abs_path>
         <retain_days>0</retain_days>
      </dir>
   </purge>
</cb_config>
"""


# --- the report -----------------------------------------------------------------------------


@dataclass
class ToolDay:
    seconds: float
    wire: int  # the bytes compared: the veth counters (WAN link), else the tool's own count
    reported: int | None  # the tool's own count (deltastage wire_bytes, rsync --stats)
    cpu_master: float
    cpu_peer: float | None  # None: not measured apart (in the master's process, or scp)


@dataclass
class DayResult:
    day: int
    full: bool
    collect_files: int
    collect_bytes: int
    cedar_seconds: float
    tools: dict[str, ToolDay]
    unshaped: bool = False  # crossed the WAN link without its rate limit (day 0)


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def summarize(days: Sequence[DayResult]) -> dict[str, object]:
    """The week's figures: days after day 0 (day 0 seeds the staging trees, as the issues'
    tables count it), and the ratios the feature issues set targets on."""
    week = [d for d in days if d.day > 0]
    tools = sorted({t for d in days for t in d.tools})
    collect = sum(d.collect_bytes for d in week)
    totals = {
        t: {
            "wire": sum(d.tools[t].wire for d in week),
            "seconds": sum(d.tools[t].seconds for d in week),
        }
        for t in tools
    }
    out: dict[str, object] = {"days": len(week), "collect_bytes": collect, "tools": totals}
    if "deltastage" in totals:
        ours = [d.tools["deltastage"].wire for d in week]
        incr = [w for d, w in zip(week, ours, strict=True) if not d.full]
        full = [w for d, w in zip(week, ours, strict=True) if d.full]
        mean_incr = sum(incr) / len(incr) if incr else 0.0
        out["full_over_mean_incr"] = ratio(max(full), mean_incr) if full and incr else None
        out["week_over_collect"] = ratio(totals["deltastage"]["wire"], collect)
        if "rsync" in totals:
            out["over_rsync"] = ratio(totals["deltastage"]["wire"], totals["rsync"]["wire"])
            out["days_above_rsync"] = sum(
                d.tools["deltastage"].wire > d.tools["rsync"].wire for d in week
            )
    gigabytes = sum(d.collect_bytes for d in days) / GB
    cpu: dict[str, dict[str, float | None]] = {}
    for t in tools:
        peer = [d.tools[t].cpu_peer for d in days]
        cpu[t] = {
            "master": ratio(sum(d.tools[t].cpu_master for d in days), gigabytes),
            "peer": None if None in peer else ratio(sum(p or 0.0 for p in peer), gigabytes),
        }
    out["cpu_seconds_per_gb"] = cpu
    return out


@dataclass(frozen=True)
class Target:
    issue: int
    what: str
    key: str
    limit: float


TARGETS = {
    "tar": (
        Target(12, "full day / mean incremental day", "full_over_mean_incr", 2.0),
        Target(12, "week wire / collect files", "week_over_collect", 0.03),
        Target(12, "days above rsync's bytes", "days_above_rsync", 0),
    ),
    "targz": (
        Target(13, "week wire / collect files", "week_over_collect", 0.15),
        Target(13, "full day / mean incremental day", "full_over_mean_incr", 2.0),
    ),
    "tarbz2": (
        Target(13, "week wire / collect files", "week_over_collect", 0.15),
        Target(13, "full day / mean incremental day", "full_over_mean_incr", 2.0),
    ),
}


def check_targets(mode: str, week: dict[str, object]) -> list[dict[str, object]]:
    """Each target the issues set for ``mode``: the value today, and whether it is met."""
    out: list[dict[str, object]] = []
    for target in TARGETS.get(mode, ()):
        value = week.get(target.key)
        met = None if not isinstance(value, int | float) else value <= target.limit
        out.append({**asdict(target), "value": value, "met": met})
    if mode in ("targz", "tarbz2"):
        totals = week["tools"]
        assert isinstance(totals, dict)
        if "deltastage" in totals:
            ours = totals["deltastage"]["seconds"]
            for other in ("rsync", "scp"):
                if other in totals:
                    theirs = totals[other]["seconds"]
                    out.append(
                        {"issue": 13, "what": f"week wall time / {other}'s",
                         "key": f"seconds_over_{other}", "limit": 1.0,
                         "value": ratio(ours, theirs), "met": ours < theirs}
                    )  # fmt: skip
    return out


def fmt_ratio(value: object) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def mode_table(mode: str, days: Sequence[DayResult], week: dict[str, object]) -> str:
    tools = [t for t in ("deltastage", "rsync", "scp") if days and t in days[0].tools]
    head = f"{'day':>3} {'kind':<5}{'collect':>11}{'files':>6}"
    for t in tools:
        head += f" |{t + ' wire':>17}{'/coll':>7}{'wall s':>8}"
    if "rsync" in tools:
        head += f" |{'ds/rsync':>9}"
    rows = [f"mode {mode}", head, "-" * len(head)]

    def line(
        label: str, kind: str, collect: int, files: str, got: dict[str, tuple[int, float]]
    ) -> str:
        row = f"{label:>3} {kind:<5}{human(collect):>11}{files:>6}"
        for t in tools:
            wire, seconds = got[t]
            row += f" |{human(wire):>17}{fmt_ratio(ratio(wire, collect)):>7}{seconds:>8.2f}"
        if "rsync" in tools:
            row += f" |{fmt_ratio(ratio(got['deltastage'][0], got['rsync'][0])):>9}"
        return row

    for d in days:
        got = {t: (d.tools[t].wire, d.tools[t].seconds) for t in tools}
        kind = ("full" if d.full else "incr") + ("*" if d.unshaped else "")
        rows.append(line(str(d.day), kind, d.collect_bytes, str(d.collect_files), got))
    totals = week["tools"]
    assert isinstance(totals, dict)
    got = {t: (totals[t]["wire"], totals[t]["seconds"]) for t in tools}
    collect = week["collect_bytes"]
    assert isinstance(collect, int)
    rows.append("-" * len(head))
    rows.append(line("wk", f"1-{week['days']}", collect, "", got))
    cpu = week["cpu_seconds_per_gb"]
    assert isinstance(cpu, dict)
    parts = []
    for t in tools:
        master, peer = cpu[t]["master"], cpu[t]["peer"]
        if t == "scp":
            continue
        peer_text = "n/a" if peer is None else f"{peer:.1f}"
        master_text = "n/a" if master is None else f"{master:.1f}"
        parts.append(f"{t} master {master_text}, peer {peer_text}")
    rows.append("CPU s per GB collected (all days): " + "; ".join(parts))
    if any(d.unshaped for d in days):
        rows.append("* seeds the staging trees, not in the week: the link's rate was not limited")
    return "\n".join(rows)


def targets_text(mode: str, targets: Sequence[dict[str, object]]) -> str:
    rows = []
    for t in targets:
        met = "n/a" if t["met"] is None else "met" if t["met"] else "NOT met"
        rows.append(
            f"  issue {t['issue']}: {t['what']}: {fmt_ratio(t['value'])} "
            f"(target <= {t['limit']:g}) {met}"
        )
    return f"targets, {mode}:\n" + "\n".join(rows) if rows else ""


# --- running it ------------------------------------------------------------------------------


@dataclass
class Setting:
    """What every mode's week shares."""

    work: Path
    stdlib: Path
    tree: list[str]
    pool: list[str]
    plans: list[DayPlan]
    lines: list[str]
    sql_rows: int
    mbox_messages: int
    seed: int
    tools: list[str]
    link: Link | None
    keys: Keys | None
    shaping: tuple[str, str, str]  # tbf rate, burst, latency
    cback3: str


def writers_of(path: Path) -> int:
    """How many processes here name ``path`` in their command line (GNU time's ``-o``)."""
    count = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            count += str(path).encode() in cmdline.read_bytes().split(b"\0")
    return count


def cpu_from_time_file(path: Path, wait: float = 10.0) -> float | None:
    """User + system seconds GNU time appended to ``path`` (one line per process), and
    empty the file for the next day; None if nothing was written.

    The master may finish before the peer's processes do (deltastage closes the connection
    without waiting for the agent's exit): wait up to ``wait`` seconds for the GNU time
    processes writing ``path`` to end."""
    deadline = time.monotonic() + wait
    while writers_of(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not path.exists():
        return None
    total, found = 0.0, False
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) == 2 and all(re.fullmatch(r"\d+(\.\d+)?", f) for f in fields):
            total += float(fields[0]) + float(fields[1])
            found = True
    path.unlink()
    return total if found else None


def rsync_stats(stdout: str) -> int:
    """Total bytes sent plus received, from ``rsync --stats``."""
    total = 0
    for key in ("sent", "received"):
        match = re.search(rf"Total bytes {key}: ([\d,]+)", stdout)
        if match is None:
            raise SystemExit(f"rsync --stats without 'Total bytes {key}':\n{stdout[-500:]}")
        total += int(match.group(1).replace(",", ""))
    return total


def timed(output: Path) -> list[str]:
    """GNU time's prefix appending a process's user and system seconds to ``output``."""
    return [GNU_TIME, "-a", "-o", str(output), "-f", "%U %S"] if Path(GNU_TIME).exists() else []


class Week:
    """One archive mode's week: the client's data, Cedar, and the tools' copies."""

    def __init__(self, s: Setting, mode: str) -> None:
        self.s, self.mode = s, mode
        self.root = s.work / mode
        self.lib = self.root / "client" / "lib"
        self.db = self.root / "client" / "db"
        self.mail = self.root / "client" / "mail"
        self.collect = self.root / "collect"
        self.cedar = self.root / "cedar"
        for d in (self.db, self.mail, self.collect, self.cedar):
            d.mkdir(parents=True)
        shutil.copytree(s.work / "library", self.lib)
        self.table = Table()
        self.table.add(s.lines, random.Random(f"{s.seed}:sql:0"), s.sql_rows)
        self.mailbox = Mailbox(list(range(s.mbox_messages)))
        user, group = _account()
        self.config = self.root / "cback3.conf"
        self.config.write_text(
            cedar_config(
                working_dir=self.cedar, collect_dir=self.collect, dirs=[self.lib, self.db],
                files=[self.mail / "archive.mbox"], archive_mode=mode,
                start=starting_day(datetime.now()), user=user, group=group,
            )
        )  # fmt: skip
        self.agent_cpu = self.root / "agent.cpu"
        self.rsync_cpu = self.root / "rsync-server.cpu"
        agent = [*timed(self.agent_cpu), sys.executable, "-m", "deltastage", "agent"]
        self.stage_config = stage_config(self.root, self.collect, s.keys, peer=PEER,
                                         agent_command=agent)  # fmt: skip

    def cedar_run(self, *args: str) -> Run:
        log = self.root / "cback3.log"
        owner = ":".join(_account())
        cmd = [self.s.cback3, "--quiet", "--config", str(self.config), "--logfile", str(log),
               "--owner", owner, *args]  # fmt: skip
        return measured_run(None, cmd, f"cback3 {' '.join(args)}")

    def change_client(self, day: int) -> None:
        plan = self.s.plans[day]
        mtime = day_mtime(day)
        for name in plan.edited:
            rng = random.Random(f"{self.s.seed}:edit:{day}:{name}")
            donor = (self.s.stdlib / rng.choice(self.s.pool)).read_bytes() if self.s.pool else b""
            path = self.lib / name
            path.write_bytes(edit_text(path.read_bytes(), donor, rng))
            os.utime(path, (mtime, mtime))
        for name in plan.removed:
            (self.lib / name).unlink()
        for name, source in plan.added:
            path = self.lib / name
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.s.stdlib / source, path)
            os.utime(path, (mtime, mtime))
        if day > 0:
            self.table.day(self.s.lines, self.s.seed, day)
            self.mailbox.day(self.s.seed, day)
        for path, data in (
            (self.db / "app.sql", sql_dump(self.table, day)),
            (self.mail / "archive.mbox",
             b"".join(message(self.s.lines, self.s.seed, n) for n in self.mailbox.numbers)),
        ):  # fmt: skip
            path.write_bytes(data)
            os.utime(path, (mtime, mtime))

    def stage(self, tool: str, day: int) -> tuple[ToolDay, Path]:
        s, link = self.s, self.s.link
        if tool == "deltastage":
            run = measured_run(link, deltastage_cmd(self.stage_config, day_date(day)), tool)
            report = json.loads(run.stdout)
            peer = report["peers"][0]
            if peer["status"] != "staged":
                raise SystemExit(f"deltastage: {peer}")
            reported = int(peer["wire_bytes"])
            out = self.root / "staging" / f"{day_date(day):%Y/%m/%d}" / PEER
            peer_cpu = cpu_from_time_file(self.agent_cpu) if link else None
        elif tool == "rsync":
            out = self.root / "rsync" / str(day)
            out.parent.mkdir(exist_ok=True)
            extra = ["--stats"]
            if day > 0:
                extra.append(f"--copy-dest={self.root / 'rsync' / str(day - 1)}")
            if link and timed(self.rsync_cpu):
                extra.append("--rsync-path=" + shlex.join([*timed(self.rsync_cpu), "rsync"]))
            run = measured_run(link, rsync_cmd(s.keys, self.collect, out, *extra), tool)
            reported = rsync_stats(run.stdout)
            peer_cpu = cpu_from_time_file(self.rsync_cpu) if link else None
        else:
            assert link is not None and s.keys is not None
            (self.root / "scp" / str(day)).mkdir(parents=True)
            out = self.root / "scp" / str(day) / self.collect.name
            run = measured_run(link, scp_cmd(s.keys, self.collect, out.parent), tool)
            reported, peer_cpu = None, None
        wire = run.rx_bytes + run.tx_bytes if link else (reported or 0)
        return ToolDay(run.seconds, wire, reported, run.cpu, peer_cpu), out

    def day(self, day: int) -> DayResult:
        self.change_client(day)
        cedar = self.cedar_run(*(["--full"] if is_full(day) else []), "collect")
        expected = digests(self.collect)
        collect_bytes = sum((self.collect / rel).stat().st_size for rel in expected)
        tools: dict[str, ToolDay] = {}
        for tool in self.s.tools:
            tools[tool], out = self.stage(tool, day)
            got = digests(out)
            if got != expected:
                diff = sorted(set(got.items()) ^ set(expected.items()))[:5]
                raise SystemExit(
                    f"{tool}, day {day}: the copy differs from the collect dir: {diff}"
                )
        # rsync's --copy-dest needs only yesterday's copy; scp's is never read again.
        shutil.rmtree(self.root / "rsync" / str(day - 1), ignore_errors=True)
        shutil.rmtree(self.root / "scp", ignore_errors=True)
        self.cedar_run("purge")
        return DayResult(day, is_full(day), len(expected), collect_bytes, cedar.seconds, tools)


def _account() -> tuple[str, str]:
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def find_cback3() -> str | None:
    beside = Path(sys.executable).parent / "cback3"
    return str(beside) if beside.exists() else shutil.which("cback3")


def prepare(work: Path, args: argparse.Namespace) -> tuple[Path, list[str], list[str], list[str]]:
    """Copy the library's sample into ``work/library`` (mtimes before day 0)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sizes, pool = library_files(stdlib)
    tree = select_tree(sizes, int(args.tree_mb * MiB), args.seed)
    library = work / "library"
    for name in tree:
        path = library / name
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stdlib / name, path)
        os.utime(path, (BEFORE_DAY0, BEFORE_DAY0))
    # Without the test suites (some distributions split them off), additions come from
    # the tree itself, under new names.
    return stdlib, tree, pool or list(tree), source_lines(library, tree, 2_000_000)


def run_week(s: Setting, mode: str, days: int) -> list[DayResult]:
    week = Week(s, mode)
    results = []
    try:
        for day in range(days):
            # Day 0 only seeds the staging trees (the week's figures start on day 1): it
            # crosses the link unshaped, which saves minutes of full archives at 8 Mbit/s.
            if s.link is not None and day == 0:
                s.link.unshape()
            elif s.link is not None:
                s.link.shape(*s.shaping)
            result = week.day(day)
            result.unshaped = s.link is not None and day == 0
            results.append(result)
            parts = [f"{t} {human(r.wire)} {r.seconds:.2f}s" for t, r in result.tools.items()]
            print(
                f"  {mode} day {day} ({'full' if result.full else 'incr'}): collect "
                f"{human(result.collect_bytes)} (cedar {result.cedar_seconds:.1f}s); "
                + ", ".join(parts),
                flush=True,
            )
    finally:
        shutil.rmtree(week.root, ignore_errors=True)
    return results


@contextlib.contextmanager
def wan_link(work: Path, args: argparse.Namespace) -> Iterator[tuple[Link | None, Keys | None]]:
    if args.link == "local":
        yield None, None
        return
    with (
        namespaces() as link,
        peer_sshd(link, work / "sshd") as direct,
        delayed(link, direct, args.delay_ms) as keys,
    ):
        yield link, keys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks cedar-week", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated archive modes")
    parser.add_argument(
        "--link",
        choices=("local", "wan"),
        default=None,
        help="default: wan if it can be set up (root, ip, tc, sshd), else local",
    )
    parser.add_argument("--days", type=int, default=8, help="days, from day 0 (full)")
    parser.add_argument("--tree-mb", type=float, default=32.0, help="the library's sample size")
    parser.add_argument("--edit-fraction", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=20260105)
    parser.add_argument("--tools", default=None,
                        help="comma-separated: deltastage, rsync, scp (WAN only); default all "
                             "the link allows")  # fmt: skip
    parser.add_argument("--rate", default="8mbit", help="tbf rate on both veth ends")
    parser.add_argument("--burst", default="32kb", help="tbf burst")
    parser.add_argument("--latency", default="100ms", help="tbf queue latency bound")
    parser.add_argument("--delay-ms", type=float, default=25.0, help="added one-way delay")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a fresh dir in /tmp")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    if args.days < 1 or args.tree_mb <= 0:
        parser.error("--days and --tree-mb must be positive")
    problem = check_environment()
    if args.link is None:
        args.link = "local" if problem else "wan"
    elif args.link == "wan" and problem:
        print(f"cedar-week: no WAN link here: {problem}", file=sys.stderr)
        return 2
    allowed = ["deltastage", "rsync", *(["scp"] if args.link == "wan" else [])]
    tools = args.tools.split(",") if args.tools else allowed
    if not tools or set(tools) - set(allowed):
        parser.error(f"--tools: choose from {', '.join(allowed)} on the {args.link} link")
    cback3 = find_cback3()
    if cback3 is None:
        print("cedar-week skipped: no cback3 (pip install '.[bench]')", file=sys.stderr)
        return 2

    terminate_on_sigterm()
    # The agent over ssh imports deltastage from this checkout: write its bytecode once.
    compileall.compile_dir(str(REPO / "deltastage"), quiet=1)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="deltastage-cedar-week-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        stdlib, tree, pool, lines = prepare(work, args)
        tree_bytes = sum((work / "library" / n).stat().st_size for n in tree)
        plans = plan_week(tree, pool, args.seed, args.days, args.edit_fraction)
        # The dump's and the mailbox's day-0 sizes, from their average row and message.
        sql_rows = int(SQL_SHARE * tree_bytes / 75)
        mean_message = sum(len(message(lines, args.seed, n)) for n in range(200)) / 200
        mbox_messages = max(1, int(MBOX_SHARE * tree_bytes / mean_message))
        print(
            f"library: {len(tree)} files, {human(tree_bytes)} from {stdlib}; link {args.link}"
            f" ({time.perf_counter() - started:.1f}s)",
            flush=True,
        )
        results: dict[str, list[DayResult]] = {}
        with wan_link(work, args) as (link, keys):
            shaping = (args.rate, args.burst, args.latency)
            setting = Setting(work, stdlib, tree, pool, plans, lines, sql_rows, mbox_messages,
                              args.seed, tools, link, keys, shaping, cback3)  # fmt: skip
            for mode in modes:
                results[mode] = run_week(setting, mode, args.days)
        elapsed = time.perf_counter() - started
        report(args, results, tree, tree_bytes, elapsed)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(
    args: argparse.Namespace,
    results: dict[str, list[DayResult]],
    tree: list[str],
    tree_bytes: int,
    elapsed: float,
) -> None:
    if args.link == "wan":
        where = (
            f"wan: tbf rate {args.rate} burst {args.burst} latency {args.latency}, both ends, "
            f"+{args.delay_ms:g} ms each way; bytes from the master's veth counters"
        )
    else:
        where = (
            "local: bytes from deltastage's wire_bytes and rsync's --stats; the peers' CPU is "
            "in the master's (deltastage's agent and rsync's sender are its children)"
        )
    print(f"\nlink {where}")
    print("collect = the collect files' bytes (what Cedar's stage copies with scp)")
    modes: dict[str, object] = {}
    for mode, days in results.items():
        week = summarize(days)
        targets = check_targets(mode, week)
        print()
        print(mode_table(mode, days, week))
        print(targets_text(mode, targets))
        modes[mode] = {"days": [asdict(d) for d in days], "week": week, "targets": targets}
    print(f"\nwhole run: {elapsed:.0f}s")
    if args.json:
        library = {"files": len(tree), "bytes": tree_bytes}
        print(json.dumps({"link": args.link, "seed": args.seed, "library": library,
                          "seconds": elapsed, "modes": modes}, indent=2))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
