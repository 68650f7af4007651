"""The WAN benchmark's repeated runs: each starts from day 1, and the median run is shown."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.wan import Result, fresh_start, median_run  # noqa: E402


def test_median_run_is_the_middle_one_by_wall_time() -> None:
    runs = [Result("t", s, int(s * 10), 1) for s in (1.3, 1.1, 1.5, 1.2)]
    assert median_run(runs).seconds == 1.2  # the lower middle of an even count
    assert median_run(runs[:3]).seconds == 1.3
    assert median_run(runs[:1]).seconds == 1.3


def test_every_tool_starts_again_from_day_one(tmp_path: Path) -> None:
    collect = tmp_path / "peer" / "collect"
    collect.mkdir(parents=True)
    (collect / "cback.stage").touch()
    day_dir = tmp_path / "staging" / "2026" / "01" / "06"
    (day_dir / "wanpeer").mkdir(parents=True)
    (day_dir / "cback.stage").touch()
    fresh_start("deltastage", tmp_path, collect, day_dir / "wanpeer")
    assert not day_dir.exists() and not (collect / "cback.stage").exists()

    (tmp_path / "rsync-day1").mkdir()
    (tmp_path / "rsync-day1" / "old.txt").write_text("day 1")
    (tmp_path / "rsync").mkdir()
    (tmp_path / "rsync" / "new.txt").write_text("day 2")
    fresh_start("rsync", tmp_path, collect, tmp_path / "rsync")
    assert sorted(p.name for p in (tmp_path / "rsync").iterdir()) == ["old.txt"]

    (tmp_path / "scp" / "collect").mkdir(parents=True)
    fresh_start("scp", tmp_path, collect, tmp_path / "scp" / "collect")
    assert not (tmp_path / "scp" / "collect").exists()
