"""The run history catalog, the `history` command and the self-contained HTML report.

Stage runs go through the real CLI on real directories with local peers; the report is
rendered by a real headless Chromium, which must see no console errors and one chart per peer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
from datetime import date, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from deltastage.cli.main import app
from deltastage.history import CATALOG_NAME, HistoryRow, read_history
from deltastage.report import (
    human_bytes,
    peer_chart_svg,
    render_html,
    summarise,
    write_report,
)
from tests.helpers.site import make_peer, write_config

runner = CliRunner()
DAYS = ("2026-11-23", "2026-11-24", "2026-11-25")
BIG = 2 << 20


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def history_json(config: Path, *args: str) -> list[dict[str, Any]]:
    result = invoke("history", "--config", str(config), "--json", *args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    return rows


@pytest.fixture(scope="module")
def three_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three staged days: web1 grows, db1 stays put, mail1 is not ready on day 1 and 3.

    Day 2 and 3 use the day before as their basis, so web1's big file moves only its edits.
    """
    tmp = tmp_path_factory.mktemp("site")
    big = bytearray(os.urandom(BIG))
    make_peer(tmp, "web1", {"access.log": b"GET /\n" * 4000, "big.bin": bytes(big)})
    make_peer(tmp, "db1", {"dump.sql": b"INSERT 1;\n" * 10000})
    make_peer(tmp, "mail1", {"spool": b"mail\n" * 100}, ready=False)
    config = write_config(tmp, ["web1", "db1", "mail1"])
    for number, day in enumerate(DAYS):
        if number:
            big[1000 * number : 1000 * number + 8] = b"EDITEDIT"
            make_peer(tmp, "web1", {"access.log": b"GET /\n" * (4000 + 2000 * number)})
            (tmp / "collect/web1/big.bin").write_bytes(bytes(big))
        mail_ready = tmp / "collect/mail1/cback.collect"
        if number == 1:
            mail_ready.touch()
        else:
            mail_ready.unlink(missing_ok=True)
        result = invoke("stage", "--config", str(config), "--date", day, "--json")
        # mail1's failure to be ready is not ignored: it fails day 1 and 3.
        assert result.exit_code == (0 if number == 1 else 1), result.output
    return config


def test_history_json_shape_and_order(three_days: Path) -> None:
    rows = history_json(three_days)
    assert len(rows) == 9, "three runs of three peers"
    keys = {
        "run_id",
        "action",
        "recorded",
        "date",
        "peer",
        "status",
        "files",
        "bytes",
        "wire_bytes",
        "seconds",
        "error",
    }
    assert all(set(row) == keys for row in rows)
    assert [row["date"] for row in rows[::3]] == list(reversed(DAYS)), "newest run first"
    by = {(row["date"], row["peer"]): row for row in rows}
    assert [by[(d, "mail1")]["status"] for d in DAYS] == ["not-ready", "staged", "not-ready"]
    assert "cback.collect" in by[(DAYS[0], "mail1")]["error"]
    web = [by[(d, "web1")] for d in DAYS]
    assert all(row["status"] == "staged" and row["files"] == 2 for row in web)
    assert [row["bytes"] for row in web] == [
        BIG + len(b"GET /\n") * (4000 + 2000 * n) for n in range(3)
    ], "web1 grows by its log"
    assert web[0]["wire_bytes"] > BIG // 2, "day 1 has no basis: the random file is sent whole"
    assert all(row["wire_bytes"] < BIG // 10 for row in web[1:]), "day 2 and 3 use a basis"
    assert all(row["action"] == "stage" and row["seconds"] >= 0 for row in rows)


def test_history_limit_and_peer_filter(three_days: Path) -> None:
    last = history_json(three_days, "--limit", "1")
    assert {row["date"] for row in last} == {DAYS[-1]} and len(last) == 3
    db = history_json(three_days, "--peer", "db1", "--limit", "2")
    assert [(row["peer"], row["date"]) for row in db] == [("db1", DAYS[2]), ("db1", DAYS[1])]
    assert history_json(three_days, "--peer", "nobody") == []


def test_history_table(three_days: Path) -> None:
    result = invoke("history", "--config", str(three_days), "--limit", "2")
    assert result.exit_code == 0, result.output
    assert "history" in result.stdout and "mail1" in result.stdout
    assert DAYS[2] in result.stdout and DAYS[1] in result.stdout
    assert DAYS[0] not in result.stdout, "--limit 2 shows two runs"


def test_history_verify_runs_stay_out_of_stage_history(three_days: Path) -> None:
    before = history_json(three_days)
    result = invoke("verify", "--config", str(three_days), "--date", DAYS[1], "--json")
    assert result.exit_code == 0, result.output
    assert history_json(three_days) == before
    verify_rows = read_history(three_days.parent / "staging", action="verify")
    assert {row.status for row in verify_rows} == {"verify-ok"}


def test_history_without_catalog_and_with_bad_options(tmp_path: Path) -> None:
    config = write_config(tmp_path, ["a"])
    (tmp_path / "staging").mkdir()
    assert history_json(config) == []
    empty = invoke("history", "--config", str(config))
    assert empty.exit_code == 0 and "no stage runs recorded yet" in empty.stdout
    neither = invoke("history")
    assert neither.exit_code == 2 and "exactly one of --config" in neither.stderr
    assert invoke("history", "--config", str(config), "--limit", "0").exit_code == 2


def test_damaged_catalog_is_a_one_line_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, ["a"])
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / CATALOG_NAME).write_bytes(b"this is not sqlite" * 100)
    for command in (["history"], ["report", "--html", str(tmp_path / "r.html")]):
        result = invoke(*command, "--config", str(config))
        assert result.exit_code == 1
        assert result.stderr.startswith("deltastage: error: history catalog ")
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# --- the HTML report ------------------------------------------------------------------------


def row(run_id: int, day: str, peer: str, status: str = "staged", **kw: Any) -> HistoryRow:
    values: dict[str, Any] = dict(files=3, bytes=1000 * run_id, wire_bytes=100, seconds=1.0)
    values.update(kw)
    return HistoryRow(
        run_id=run_id,
        action="stage",
        recorded=0.0,
        run_date=day,
        peer=peer,
        status=status,
        error=values.pop("error", None),
        **values,
    )


class TagCollector(HTMLParser):
    """Every element name, and any attribute that could make the browser fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.fetching: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.add(tag)
        for name, _ in attrs:
            if name in ("src", "href", "srcset", "xlink:href", "action", "data"):
                self.fetching.append((tag, name))


HOSTILE = '<img src=x onerror="alert(1)">&"\''


def synthetic_rows() -> list[HistoryRow]:
    rows = []
    for n in range(1, 8):
        day = f"2026-11-{n:02d}"
        rows.append(row(n, day, "web1", bytes=n << 20, wire_bytes=(n << 20) // 20))
        status = "failed" if n in (3, 7) else "staged"
        error = f"connect failed: {HOSTILE}" if status == "failed" else None
        rows.append(row(n, day, HOSTILE, status=status, error=error))
        rows.append(row(n, day, "mail1", status="not-ready" if n == 5 else "staged"))
    rows.append(row(8, "2026-11-07", "web1", bytes=7 << 20, wire_bytes=10))  # a same-day rerun
    return rows


def test_report_escapes_every_name_and_error() -> None:
    page = render_html(synthetic_rows(), title=f"t {HOSTILE}", generated=datetime(2026, 11, 8))
    assert HOSTILE not in page and "<img" not in page and 'onerror="' not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;&quot;&#x27;" in page
    assert page.count('<svg class="peer-chart"') == 3
    assert "http://" not in page and "https://" not in page
    tags = TagCollector()
    tags.feed(page)
    assert not tags.fetching, "nothing is fetched"
    assert tags.names >= {"html", "style", "svg", "polyline", "circle", "table", "script"}
    assert "default-src 'none'" in page


def test_report_summary_flags_failing_and_growing_peers() -> None:
    summaries = {s.name: s for s in summarise(synthetic_rows())}
    hostile, web, mail = summaries[HOSTILE], summaries["web1"], summaries["mail1"]
    assert (hostile.last_status, hostile.failures, hostile.attention) == ("failed", 2, "bad")
    assert hostile.last_error_date == "2026-11-07" and HOSTILE in (hostile.last_error or "")
    assert (web.runs, web.last_status, web.attention) == (8, "staged", "ok")
    assert web.growth_percent == pytest.approx(600.0), "1 MiB on day 1, 7 MiB at the last run"
    assert (mail.not_ready, mail.attention) == (1, "warn")
    page = render_html(synthetic_rows(), generated=datetime(2026, 11, 8))
    assert re.search(r'<tr class="bad" data-peer="&lt;img', page)
    assert "Last run failed: &lt;img" in page


def test_chart_marks_failed_and_not_ready_runs_and_joins_only_staged_ones() -> None:
    rows = [r for r in synthetic_rows() if r.peer == HOSTILE]
    svg = peer_chart_svg(HOSTILE, rows)
    assert svg.count('data-status="failed"') == 2
    assert svg.count('class="dot staged"') == 5 and svg.count('class="dot wire"') == 5
    staged_line = re.search(r'<polyline class="line staged" points="([^"]+)"', svg)
    assert staged_line and len(staged_line.group(1).split()) == 5
    mail = peer_chart_svg("mail1", [r for r in synthetic_rows() if r.peer == "mail1"])
    assert mail.count('data-status="not-ready"') == 1
    xs = [float(x) for x in re.findall(r'<circle class="dot staged" cx="([0-9.]+)"', svg)]
    assert xs == sorted(xs) and len(set(xs)) == len(xs), "runs in date order"


def test_same_day_reruns_get_distinct_points() -> None:
    svg = peer_chart_svg("web1", [r for r in synthetic_rows() if r.peer == "web1"])
    xs = [float(x) for x in re.findall(r'<circle class="dot staged" cx="([0-9.]+)"', svg)]
    assert len(xs) == 8 and len(set(xs)) == 8 and xs == sorted(xs)


def test_report_write_is_atomic_and_readable(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    out = tmp_path / "www" / "report.html"
    out.parent.mkdir()
    out.write_text("old page")
    summaries = write_report(staging, out, now=datetime(2026, 11, 8))
    assert summaries == []
    page = out.read_text()
    assert "No stage runs recorded yet" in page and 'data-peers="0"' in page
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"], "no temp left"
    with pytest.raises(IsADirectoryError):
        write_report(staging, out.parent, now=datetime(2026, 11, 8))
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"], "no temp left"


def test_report_command_on_a_real_history(three_days: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = invoke("report", "--config", str(three_days), "--html", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {out}: 3 peers")
    page = out.read_text(encoding="utf-8")
    assert page.count('<svg class="peer-chart"') == 3
    for name in ("web1", "db1", "mail1"):
        assert f'data-peer="{name}"' in page
    assert page.count('data-status="not-ready"') == 2, "mail1 on day 1 and 3"
    missing = invoke("report", "--config", str(three_days), "--html", str(tmp_path / "no/x.html"))
    assert missing.exit_code == 1 and missing.stderr.startswith("deltastage: error: ")
    assert invoke("report", "--config", str(three_days)).exit_code == 2, "--html is required"


# --- the report in a real browser --------------------------------------------------------------


def chromium_dump(page: Path, tmp: Path) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and the console/uncaught-error lines Chromium logged."""
    exe = next(
        (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))),
        None,
    )
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed; apt-get install chromium")
    profile = tmp / "chromium-profile"
    command = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp)}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # Chromium logs every console message (and uncaught exceptions, CSP refusals) this way.
    console = [
        line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line
    ]
    return done.stdout, console


def check_in_browser(page: Path, tmp: Path, peers: int) -> None:
    dom, console = chromium_dump(page, tmp)
    assert console == [], console
    assert 'data-check="ok"' in dom, "the page's own check ran and passed"
    assert dom.count('<svg class="peer-chart"') == peers


@pytest.mark.slow
def test_report_renders_in_chromium(three_days: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert invoke("report", "--config", str(three_days), "--html", str(out)).exit_code == 0
    check_in_browser(out, tmp_path, 3)


@pytest.mark.slow
def test_hostile_report_renders_in_chromium(tmp_path: Path) -> None:
    out = tmp_path / "hostile.html"
    out.write_text(render_html(synthetic_rows(), generated=datetime(2026, 11, 8)))
    check_in_browser(out, tmp_path, 3)


@pytest.mark.slow
def test_browser_check_catches_a_broken_page(tmp_path: Path) -> None:
    """The harness itself must be able to fail: a missing chart and a script error show up."""
    page = render_html(synthetic_rows(), generated=datetime(2026, 11, 8))
    broken = page.replace('data-peers="3"', 'data-peers="4"', 1)
    out = tmp_path / "broken.html"
    out.write_text(broken.replace("<script>", "<script>undefinedCall();</script><script>", 1))
    dom, console = chromium_dump(out, tmp_path)
    assert any("expected 4 charts, found 3" in line for line in console), console
    assert any("Uncaught ReferenceError" in line for line in console), console
    assert 'data-check="error"' in dom


def test_catalog_written_by_stage_is_plain_sqlite(three_days: Path) -> None:
    catalog = three_days.parent / "staging" / CATALOG_NAME
    with sqlite3.connect(catalog) as db:
        (runs,) = db.execute("SELECT count(*) FROM runs WHERE action = 'stage'").fetchone()
    assert runs == len(DAYS)


def test_peer_filter_counts_that_peers_runs_and_failures_are_kept(tmp_path: Path) -> None:
    """`stage --peer a` runs in between do not push b's runs out of `history --peer b`."""
    from deltastage.history import record_stage
    from deltastage.stage.report import PeerReport, StageReport

    for n, names in enumerate([["a", "b"], ["a"], ["a"], ["a"]], start=1):
        peers = [
            PeerReport(name, status="failed" if name == "b" else "staged", files=n, error="boom")
            for name in names
        ]
        record_stage(tmp_path, StageReport(date(2026, 11, n), tmp_path / "x", peers))
    assert [r.run_id for r in read_history(tmp_path, limit=2)] == [4, 3]
    only_b = read_history(tmp_path, limit=2, peer="b")
    assert [(r.run_id, r.peer, r.status, r.error) for r in only_b] == [(1, "b", "failed", "boom")]
    assert [r.run_date for r in read_history(tmp_path, limit=3, peer="a")] == [
        "2026-11-04",
        "2026-11-03",
        "2026-11-02",
    ]


@given(st.integers(min_value=1, max_value=1 << 50))
def test_chart_scale_is_round_and_tight(value: int) -> None:
    from deltastage.report import _nice_ceiling

    top = _nice_ceiling(value)
    assert value <= top <= 1.5 * value + 1, "the busiest run fills at least 2/3 of the chart"
    number = human_bytes(top).split()[0].removesuffix(".0")
    assert re.fullmatch(r"[1-9][0-9]{0,2}|[1-9]\.5|1024", number), human_bytes(top)
