"""The cedar-week benchmark's pure parts: the week's plan, the client's data, Cedar's config,
the report's arithmetic. Cedar itself, the link and the tools are not run here."""

from __future__ import annotations

import random
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import cedar_week as cw  # noqa: E402
from benchmarks.__main__ import available  # noqa: E402

NAMES = [f"pkg{d}/mod{i:03d}.py" for d in range(4) for i in range(60)] + [
    f"lib-dynload/ext{i}.so" for i in range(20)
]
POOL = [f"test/test_{i:03d}.py" for i in range(40)]


def test_registered_as_cedar_week() -> None:
    assert "cedar-week" in available()


def test_the_week_is_the_same_for_the_same_seed_and_follows_the_tree() -> None:
    plans = cw.plan_week(NAMES, POOL, seed=7, days=8)
    assert plans == cw.plan_week(NAMES, POOL, seed=7, days=8)
    assert plans != cw.plan_week(NAMES, POOL, seed=8, days=8)
    assert plans[0] == cw.DayPlan(0)
    current = set(NAMES)
    for plan in plans[1:]:
        assert len(plan.edited) == round(0.01 * len(current))
        assert set(plan.edited) <= current and all(cw.is_text(n) for n in plan.edited)
        assert set(plan.removed) <= current and not set(plan.removed) & set(plan.edited)
        new = [name for name, _ in plan.added]
        assert len(plan.added) == 3 and len(set(new)) == 3 and not set(new) & current
        assert all(source in POOL for _, source in plan.added)
        current = (current - set(plan.removed)) | set(new)
    gone = {n for p in plans for n in p.removed}
    assert gone and not gone & current


def test_an_edit_changes_lines_and_is_repeatable() -> None:
    data = b"\n".join(b"line %d" % i for i in range(200))
    donor = b"\n".join(b"donor %d" % i for i in range(50))
    first = cw.edit_text(data, donor, random.Random("x"))
    assert first != data
    assert first == cw.edit_text(data, donor, random.Random("x"))
    kept = set(first.split(b"\n")) & set(data.split(b"\n"))
    assert len(kept) > 150  # a few lines touched, not a rewrite


def test_library_files_leave_out_bytecode_packages_libpython_and_tests(tmp_path: Path) -> None:
    for rel in ("os.py", "json/__init__.py", "json/__pycache__/x.pyc", "site-packages/a.py",
                "config-3.11-x86_64-linux-gnu/libpython3.11.a", "test/test_os.py",
                "test/data.bin", "lib2to3/tests/test_fixers.py", "lib-dynload/_x.so"):  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * 10)
    (tmp_path / "link.py").symlink_to(tmp_path / "os.py")
    sizes, pool = cw.library_files(tmp_path)
    assert sorted(sizes) == ["json/__init__.py", "lib-dynload/_x.so", "os.py"]
    assert pool == ["lib2to3/tests/test_fixers.py", "test/test_os.py"]


def test_the_tree_sample_fits_its_budget_and_is_repeatable() -> None:
    sizes = {n: 1000 + 37 * i for i, n in enumerate(NAMES)}
    tree = cw.select_tree(sizes, 50_000, seed=1)
    assert tree == sorted(tree) == cw.select_tree(sizes, 50_000, seed=1)
    assert 45_000 < sum(sizes[n] for n in tree) <= 50_000
    assert cw.select_tree(sizes, 10**9, seed=1) == sorted(NAMES)


def test_the_dump_grows_a_little_each_day_in_mysqldumps_shape() -> None:
    lines = [f"line {i} it's a \\ test" for i in range(500)]
    table = cw.Table()
    table.add(lines, random.Random(0), 30_000)
    day0 = cw.sql_dump(table, 0)
    table.day(lines, seed=3, day=1)
    day1 = cw.sql_dump(table, 1)
    assert len(day0) < len(day1) < len(day0) * 1.02
    statements = [s for s in day1.split(b"\n") if s.startswith(b"INSERT INTO")]
    assert len(statements) > 1 and all(len(s) <= cw.NET_BUFFER for s in statements)
    assert b"it\\'s a \\\\ test" in day1
    assert b"-- Dump completed on 2026-01-06" in day1 and b"2026-01-05" in day0[-40:]
    assert day0[:3000] == day1[:3000]  # most of it unchanged


def test_the_mailbox_keeps_its_messages_and_adds_some() -> None:
    box = cw.Mailbox(list(range(1000)))
    box.day(seed=1, day=1)
    assert len(box.numbers) == 1000 - 5 + 19
    assert box.numbers[-1] == 1018 and len(set(box.numbers)) == len(box.numbers)
    lines = ["From here on", "text"]
    one = cw.message(lines, 1, 42)
    assert one == cw.message(lines, 1, 42) and one.startswith(b"From sender")
    assert b"\nFrom here" not in one  # body lines starting "From " are quoted, as mbox does


def test_cedar_config_is_the_sample_shape() -> None:
    text = cw.cedar_config(
        working_dir=Path("/w/cedar"), collect_dir=Path("/w/collect"),
        dirs=[Path("/w/lib"), Path("/w/db & more")], files=[Path("/w/mail/archive.mbox")],
        archive_mode="targz", start="friday", user="backup", group="backup",
    )  # fmt: skip
    root = ET.fromstring(text)
    assert root.findtext("options/starting_day") == "friday"
    assert root.findtext("options/working_dir") == "/w/cedar"
    collect = root.find("collect")
    assert collect is not None
    assert collect.findtext("collect_dir") == "/w/collect"
    assert collect.findtext("collect_mode") == "incr"
    assert collect.findtext("archive_mode") == "targz"
    assert [d.findtext("abs_path") for d in collect.findall("dir")] == ["/w/lib", "/w/db & more"]
    assert all(d.find("collect_mode") is None for d in collect.findall("dir"))  # incr, inherited
    (mbox,) = collect.findall("file")
    assert mbox.findtext("abs_path") == "/w/mail/archive.mbox"
    assert mbox.findtext("collect_mode") == "weekly"
    assert root.findtext("purge/dir/abs_path") == "/w/collect"
    assert root.findtext("purge/dir/retain_days") == "0"


def test_the_starting_day_is_none_the_run_reaches() -> None:
    for offset in range(7):
        now = datetime(2026, 1, 5, 23, 59) + timedelta(days=offset)
        later = {cw.WEEKDAYS[(now + timedelta(days=d)).weekday()] for d in range(3)}
        assert cw.starting_day(now) not in later


def day(n: int, collect: int, ours: int, rsync: int, *, full: bool = False) -> cw.DayResult:
    return cw.DayResult(
        n, full, 2, collect, 0.5,
        {"deltastage": cw.ToolDay(2.0, ours, ours, 1.0, 0.5),
         "rsync": cw.ToolDay(1.0, rsync, rsync, 0.25, None)},
    )  # fmt: skip


WEEK = [
    day(0, 80_000_000, 20_000_000, 21_000_000, full=True),
    *(day(i, 24_000_000, 400_000, 500_000) for i in range(1, 7)),
    day(7, 80_000_000, 8_000_000, 7_000_000, full=True),
]


def test_the_week_counts_days_after_the_first() -> None:
    week = cw.summarize(WEEK)
    assert week["days"] == 7
    assert week["collect_bytes"] == 6 * 24_000_000 + 80_000_000
    assert week["tools"] == {
        "deltastage": {"wire": 6 * 400_000 + 8_000_000, "seconds": 14.0},
        "rsync": {"wire": 6 * 500_000 + 7_000_000, "seconds": 7.0},
    }
    assert week["full_over_mean_incr"] == pytest.approx(20.0)
    assert week["week_over_collect"] == pytest.approx(10_400_000 / 224_000_000)
    assert week["over_rsync"] == pytest.approx(1.04)
    assert week["days_above_rsync"] == 1
    gigabytes = (2 * 80_000_000 + 6 * 24_000_000) / 1e9
    assert week["cpu_seconds_per_gb"] == {
        "deltastage": {
            "master": pytest.approx(8 / gigabytes),
            "peer": pytest.approx(4 / gigabytes),
        },
        "rsync": {"master": pytest.approx(2 / gigabytes), "peer": None},
    }


def test_targets_say_where_today_stands() -> None:
    week = cw.summarize(WEEK)
    tar = {t["key"]: (t["value"], t["met"]) for t in cw.check_targets("tar", week)}
    assert tar["full_over_mean_incr"] == (pytest.approx(20.0), False)
    assert tar["days_above_rsync"] == (1, False)
    targz = {t["key"]: t["met"] for t in cw.check_targets("targz", week)}
    assert targz == {"week_over_collect": True, "full_over_mean_incr": False,
                     "seconds_over_rsync": False}  # fmt: skip
    table = cw.mode_table("tar", WEEK, week)
    assert " 7 full" in table and "wk 1-7" in table and "1.040" in table
    assert "deltastage master 26.3, peer 13.2; rsync master 6.6, peer n/a" in table
    assert "NOT met" in cw.targets_text("tar", cw.check_targets("tar", week))


def test_a_week_without_a_second_full_day_has_no_full_ratio() -> None:
    week = cw.summarize(WEEK[:3])
    assert week["full_over_mean_incr"] is None
    assert "n/a" in cw.targets_text("tar", cw.check_targets("tar", week))


def test_tool_reports_are_read(tmp_path: Path) -> None:
    stats = "Number of files: 3\nTotal bytes sent: 1,208,182\nTotal bytes received: 35\n"
    assert cw.rsync_stats(stats) == 1_208_217
    with pytest.raises(SystemExit):
        cw.rsync_stats("nothing")
    times = tmp_path / "agent.cpu"
    times.write_text("0.50 0.25\nCommand exited with non-zero status 1\n1.00 0.00\n")
    assert cw.cpu_from_time_file(times) == pytest.approx(1.75)
    assert not times.exists()
    assert cw.cpu_from_time_file(times) is None


def test_cpu_is_read_once_the_processes_writing_it_are_gone(tmp_path: Path) -> None:
    times = tmp_path / "agent.cpu"
    script = f"import time; time.sleep(0.5); open({str(times)!r}, 'a').write('0.25 0.25\\n')"
    writer = subprocess.Popen([sys.executable, "-c", script, str(times)])
    try:
        deadline = time.monotonic() + 5  # its command line shows once exec is done
        while not cw.writers_of(times) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cw.writers_of(times) == 1
        assert cw.cpu_from_time_file(times) == pytest.approx(0.5)
        assert cw.writers_of(times) == 0
    finally:
        writer.wait()
