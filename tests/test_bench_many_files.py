"""The many-files benchmark's pure parts: the tree's plan, the files' content, the table and
the targets. The tools are not run here."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import many_files as mf  # noqa: E402
from benchmarks.__main__ import available  # noqa: E402


def test_registered_as_many_files() -> None:
    assert "many-files" in available()


def test_the_plan_spreads_the_files_and_changes_one_percent() -> None:
    plan = mf.plan_tree(10_000, 300, seed=3)
    assert plan == mf.plan_tree(10_000, 300, seed=3)
    assert plan != mf.plan_tree(10_000, 300, seed=4)
    assert len(set(plan.names)) == 10_000
    assert len({n.rpartition("/")[0] for n in plan.names}) == 300
    assert len(plan.changed) == 100
    assert len(plan.added) == len(plan.removed) == 10
    names = set(plan.names)
    assert set(plan.changed) <= names and set(plan.removed) <= names
    assert not set(plan.changed) & set(plan.removed)
    assert not set(plan.added) & names
    day2 = plan.day2_names()
    assert len(day2) == len(set(day2)) == 10_000
    assert not set(plan.removed) & set(day2) and set(plan.added) <= set(day2)


def test_a_tiny_tree_still_has_its_churn() -> None:
    plan = mf.plan_tree(3, 400)
    assert len(plan.names) == 3 and len(plan.added) == len(plan.removed) == 1


def test_content_differs_by_name_and_day_and_has_the_size() -> None:
    one = mf.content("d0/s0/f1.dat", 1024, 1)
    assert len(one) == 1024
    assert one != mf.content("d0/s0/f2.dat", 1024, 1)
    assert one != mf.content("d0/s0/f1.dat", 1024, 2)


def test_the_trees_days(tmp_path: Path) -> None:
    plan = mf.plan_tree(50, 5)
    mf.write_tree(tmp_path, plan, 100)
    assert (tmp_path / mf.COLLECT_INDICATOR).exists()
    before = {n: (tmp_path / n).read_bytes() for n in plan.names}
    mf.change_tree(tmp_path, plan, 100)
    for name in plan.removed:
        assert not (tmp_path / name).exists()
    for name in plan.changed:
        assert (tmp_path / name).read_bytes() != before[name]
    unchanged = set(plan.names) - set(plan.changed) - set(plan.removed)
    assert all((tmp_path / n).read_bytes() == before[n] for n in unchanged)
    assert all((tmp_path / n).exists() for n in plan.added)


def day(label: str, ours: mf.Measure, theirs: mf.Measure) -> mf.DayResult:
    return mf.DayResult(label, 1000, {"deltastage": ours, "rsync": theirs})


def test_table_and_targets() -> None:
    days = [
        day("day 1", mf.Measure(6.0, 5.0, 100 * 1024), mf.Measure(2.0, 1.0, 7 * 1024)),
        day("day 2", mf.Measure(4.0, 2.0, 160 * 1024), mf.Measure(2.0, 1.0, 7 * 1024)),
    ]
    text = mf.table(days)
    assert "3.00x" in text and "5.00x" in text and "2.00x" in text
    assert "100.0 MB" in text and "7.0 MB" in text
    assert mf.targets(days) == [
        ("day 1 wall at most 3.0x rsync's", True),
        ("day 1 peak RSS at most 150 MB", True),
        ("day 2 wall at most 1.5x rsync's", False),
        ("day 2 peak RSS at most 150 MB", False),
    ]
    assert mf.ratio(1.0, 0.0) is None and mf.fmt_ratio(None) == "-"


def test_measure_reports_a_child_and_a_failure() -> None:
    got = mf.measure([sys.executable, "-c", "x = bytearray(40 << 20)"])
    assert got.max_rss_kib > 40 * 1024 and got.cpu >= 0 and got.seconds > 0
    small = mf.measure(["true"])
    assert small.max_rss_kib < 20 * 1024
    try:
        mf.measure(["false"])
    except SystemExit as exc:
        assert "failed (1)" in str(exc)
    else:
        raise AssertionError("a failing command passed")


def test_the_rss_target_grows_slower_than_the_tree() -> None:
    """150 MB for 100,000 files or fewer; for a million, under ten times that."""
    ours, theirs = mf.Measure(1.0, 1.0, 800 * 1024), mf.Measure(1.0, 1.0, 8 * 1024)
    million = mf.DayResult("day 2", 1_000_000, {"deltastage": ours, "rsync": theirs})
    assert mf.targets([million]) == [
        ("day 2 wall at most 1.5x rsync's", True),
        ("day 2 peak RSS under 1500 MB (150 MB per 100,000 files)", True),
    ]
    over = mf.DayResult(
        "day 2", 1_000_000, {"deltastage": mf.Measure(1, 1, 1500 * 1024), "rsync": theirs}
    )
    assert mf.targets([over])[1][1] is False
    assert mf.rss_budget_mib(1000) == 150
