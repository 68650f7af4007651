"""A self-contained HTML report of the run history: one chart per peer and a summary table.

The page is read on a backup master that may have no internet access (and should not leak
that it exists), so everything is inline: CSS, SVG drawn here, and a tiny self-check script.
A Content-Security-Policy forbids any fetch, so a mistake that adds one fails loudly.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from deltastage.history import HistoryRow, read_history
from deltastage.safefs import replace_file
from deltastage.text import shown

__all__ = [
    "ChartPoint",
    "PeerSummary",
    "human_bytes",
    "peer_chart_svg",
    "render_html",
    "summarise",
    "write_report",
]

CHART_WIDTH = 640
CHART_HEIGHT = 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 72, 16, 28, 40
_STAGED_COLOR = "#1f6fb2"
_WIRE_COLOR = "#e07b00"
_FAILED_COLOR = "#c62828"
_NOT_READY_COLOR = "#b8860b"


@dataclass(frozen=True)
class ChartPoint:
    """One run of one peer as the chart sees it."""

    day: date
    run_id: int
    status: str
    bytes: int
    wire_bytes: int
    error: str | None


@dataclass(frozen=True)
class PeerSummary:
    name: str
    runs: int
    first_date: str
    last_date: str
    last_status: str
    last_bytes: int
    last_wire_bytes: int
    failures: int
    not_ready: int
    growth_percent: float | None  # first to last staged size in the window; None if unknown
    last_error: str | None
    last_error_date: str | None

    @property
    def attention(self) -> str:
        """Row class: bad when the last run failed, warn when it was not ready or any run failed."""
        if self.last_status == "failed":
            return "bad"
        if self.last_status != "staged" or self.failures or self.not_ready:
            return "warn"
        return "ok"


def human_bytes(count: int | float) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable: the loop returns at TiB")


def _parse_day(value: str) -> date | None:
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _by_peer(rows: Iterable[HistoryRow]) -> dict[str, list[HistoryRow]]:
    """Rows grouped per peer, each group in run order (by run date, then by recording)."""
    groups: dict[str, list[HistoryRow]] = {}
    for row in rows:
        groups.setdefault(row.peer, []).append(row)
    return {
        name: sorted(group, key=lambda r: (r.run_date, r.run_id))
        for name, group in sorted(groups.items())
    }


def summarise(rows: Iterable[HistoryRow]) -> list[PeerSummary]:
    """One summary per peer, sorted by name."""
    summaries = []
    for name, group in _by_peer(rows).items():
        last = group[-1]
        staged = [r for r in group if r.status == "staged"]
        growth = None
        if len(staged) >= 2 and staged[0].bytes > 0:
            growth = 100.0 * (staged[-1].bytes - staged[0].bytes) / staged[0].bytes
        errors = [r for r in group if r.error]
        summaries.append(
            PeerSummary(
                name=name,
                runs=len(group),
                first_date=group[0].run_date,
                last_date=last.run_date,
                last_status=last.status,
                last_bytes=last.bytes,
                last_wire_bytes=last.wire_bytes,
                failures=sum(r.status == "failed" for r in group),
                not_ready=sum(r.status == "not-ready" for r in group),
                growth_percent=growth,
                last_error=errors[-1].error if errors else None,
                last_error_date=errors[-1].run_date if errors else None,
            )
        )
    return summaries


def _nice_ceiling(value: int) -> int:
    """The smallest round size >= value: 1, 1.5, 2, 3, 4, 5, 6 or 8 times 1, 10 or 100 of a
    binary unit (B, KiB, MiB...), so the axis and its half-way tick read as round sizes."""
    if value <= 0:
        return 1
    unit = 1
    while value > unit * 1000:
        unit *= 1024
    for scale in (1, 10, 100):
        for factor in (1, 1.5, 2, 3, 4, 5, 6, 8):
            if unit * factor * scale >= value:
                return round(unit * factor * scale)
    return unit * 1024


def _points(rows: Sequence[HistoryRow]) -> list[tuple[float, ChartPoint]]:
    """Chart points with an x value in days; reruns of one day share that day's slot."""
    parsed = [(day, r) for r in rows if (day := _parse_day(r.run_date)) is not None]
    per_day: dict[date, int] = {}
    for day, _ in parsed:
        per_day[day] = per_day.get(day, 0) + 1
    seen: dict[date, int] = {}
    points = []
    for day, r in parsed:
        index = seen.get(day, 0)
        seen[day] = index + 1
        count = per_day[day]
        offset = 0.0 if count == 1 else -0.3 + 0.6 * index / (count - 1)
        point = ChartPoint(day, r.run_id, r.status, r.bytes, r.wire_bytes, r.error)
        points.append((day.toordinal() + offset, point))
    return points


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def peer_chart_svg(peer: str, rows: Sequence[HistoryRow]) -> str:
    """An inline SVG chart of bytes staged vs bytes on the wire per run date for one peer.

    Lines join staged runs only: a failed run's partial sizes would draw a false dip. Failed
    and not-ready runs get a marker on the baseline and a shaded band so they stand out.
    """
    points = _points(rows)
    plot_w = CHART_WIDTH - _LEFT - _RIGHT
    plot_h = CHART_HEIGHT - _TOP - _BOTTOM
    base_y = _TOP + plot_h
    if points:
        lo = min(x for x, _ in points) - 0.5
        hi = max(x for x, _ in points) + 0.5
    else:
        lo, hi = 0.0, 1.0
    y_max = _nice_ceiling(max([max(p.bytes, p.wire_bytes) for _, p in points] + [1]))

    def sx(x: float) -> float:
        return _LEFT + (x - lo) / (hi - lo) * plot_w

    def sy(v: int) -> float:
        return base_y - v / y_max * plot_h

    name = html.escape(peer)
    parts = [
        f'<svg class="peer-chart" data-peer="{name}" role="img" '
        f'viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" width="{CHART_WIDTH}" '
        f'height="{CHART_HEIGHT}" aria-label="{name}: bytes staged and transferred per run">',
        f"<title>{name}: bytes staged and transferred per run</title>",
        f'<rect class="plot" x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = base_y - fraction * plot_h
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{_fmt(y)}" y2="{_fmt(y)}"/>'
            f'<text class="tick" x="{_LEFT - 6}" y="{_fmt(y + 4)}" text-anchor="end">'
            f"{human_bytes(y_max * fraction)}</text>"
        )
    days = sorted({p.day for _, p in points})
    stride = max(1, -(-len(days) // 6))  # at most ~6 date labels, always the first and last
    labelled = set(days[::stride]) | ({days[-1]} if days else set())
    for day in sorted(labelled):
        parts.append(
            f'<text class="tick" x="{_fmt(sx(day.toordinal()))}" y="{base_y + 18}" '
            f'text-anchor="middle">{day.isoformat()}</text>'
        )
    for x, p in points:
        if p.status in ("failed", "not-ready"):
            cls = "failed" if p.status == "failed" else "not-ready"
            band = plot_w / (hi - lo) * 0.5
            parts.append(
                f'<rect class="band {cls}" x="{_fmt(sx(x) - band / 2)}" y="{_TOP}" '
                f'width="{_fmt(band)}" height="{plot_h}"/>'
            )
    for key, cls in (("bytes", "staged"), ("wire_bytes", "wire")):
        coords = " ".join(
            f"{_fmt(sx(x))},{_fmt(sy(getattr(p, key)))}" for x, p in points if p.status == "staged"
        )
        if coords:
            parts.append(f'<polyline class="line {cls}" points="{coords}"/>')
    for x, p in points:
        tip = (
            f"{p.day.isoformat()} run {p.run_id}: {p.status}, staged {human_bytes(p.bytes)}, "
            f"transferred {human_bytes(p.wire_bytes)}" + (f" \u2014 {p.error}" if p.error else "")
        )
        title = f"<title>{html.escape(tip)}</title>"
        cx = sx(x)
        if p.status == "staged":
            for value, cls in ((p.bytes, "staged"), (p.wire_bytes, "wire")):
                parts.append(
                    f'<circle class="dot {cls}" cx="{_fmt(cx)}" cy="{_fmt(sy(value))}" r="3.5">'
                    f"{title}</circle>"
                )
        elif p.status == "failed":
            d = 6
            parts.append(
                f'<path class="marker failed" data-status="failed" d="M{_fmt(cx - d)},'
                f'{_fmt(base_y - 8 - d)} l{2 * d},{2 * d} m0,{-2 * d} l{-2 * d},{2 * d}">'
                f"{title}</path>"
            )
        else:
            parts.append(
                f'<path class="marker not-ready" data-status="{html.escape(p.status)}" '
                f'd="M{_fmt(cx)},{_fmt(base_y - 16)} l6,10 h-12 z">{title}</path>'
            )
    legend_x = _LEFT
    for label, cls in (
        ("staged", "staged"),
        ("transferred", "wire"),
        ("failed", "failed"),
        ("not ready", "not-ready"),
    ):
        parts.append(
            f'<rect class="key {cls}" x="{legend_x}" y="8" width="12" height="12"/>'
            f'<text class="legend" x="{legend_x + 16}" y="18">{label}</text>'
        )
        legend_x += 110
    parts.append("</svg>")
    return "".join(parts)


_CSS = f"""
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }}
h1 {{ font-size: 1.4em; margin-bottom: .2em; }}
.meta {{ color: #555; margin-top: 0; }}
table {{ border-collapse: collapse; margin: 1em 0 2em; width: 100%; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .3em .6em; text-align: right;
          white-space: nowrap; }}
th:first-child, td:first-child, td.status, td.error {{ text-align: left; }}
td.error {{ max-width: 28em; overflow-wrap: anywhere; color: #7a1f1f; white-space: normal; }}
tr.bad {{ background: #fdecea; }}
tr.warn {{ background: #fff8e1; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; border: 1px solid #ddd; border-radius: 4px; padding: .5em; }}
figure.bad {{ border-color: {_FAILED_COLOR}; }}
figure.warn {{ border-color: {_NOT_READY_COLOR}; }}
figcaption {{ font-weight: 600; }}
svg .plot {{ fill: #fafafa; stroke: #ccc; }}
svg .grid {{ stroke: #e4e4e4; }}
svg .tick, svg .legend {{ font-size: 11px; fill: #555; }}
svg .line {{ fill: none; stroke-width: 2; }}
svg .line.staged, svg .dot.staged {{ stroke: {_STAGED_COLOR}; }}
svg .line.wire, svg .dot.wire {{ stroke: {_WIRE_COLOR}; }}
svg .dot.staged {{ fill: {_STAGED_COLOR}; }}
svg .dot.wire {{ fill: {_WIRE_COLOR}; }}
svg .marker.failed {{ stroke: {_FAILED_COLOR}; stroke-width: 3; fill: none; }}
svg .marker.not-ready {{ fill: {_NOT_READY_COLOR}; }}
svg .band.failed {{ fill: {_FAILED_COLOR}; opacity: .12; }}
svg .band.not-ready {{ fill: {_NOT_READY_COLOR}; opacity: .12; }}
svg .key.staged {{ fill: {_STAGED_COLOR}; }}
svg .key.wire {{ fill: {_WIRE_COLOR}; }}
svg .key.failed {{ fill: {_FAILED_COLOR}; }}
svg .key.not-ready {{ fill: {_NOT_READY_COLOR}; }}
"""

# Checks the page as rendered, so a headless browser (and the tests) can tell a broken page
# from a good one: the body's data-check becomes "ok" or "error", problems go to the console.
_SCRIPT = """
(function () {
  var body = document.body;
  window.addEventListener("error", function (event) {
    body.setAttribute("data-check", "error");
    console.error("deltastage report: " + event.message);
  });
  var problems = [];
  var expected = Number(body.getAttribute("data-peers"));
  var charts = document.querySelectorAll("svg.peer-chart");
  if (charts.length !== expected) {
    problems.push("expected " + expected + " charts, found " + charts.length);
  }
  for (var i = 0; i < charts.length; i++) {
    var box = charts[i].getBoundingClientRect();
    if (!(box.width > 0 && box.height > 0)) {
      problems.push("chart " + charts[i].getAttribute("data-peer") + " has no size");
    }
  }
  body.setAttribute("data-check", problems.length ? "error" : "ok");
  for (var j = 0; j < problems.length; j++) {
    console.error("deltastage report: " + problems[j]);
  }
})();
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _summary_table(summaries: Sequence[PeerSummary]) -> str:
    head = (
        "<tr><th>peer</th><th>runs</th><th>last run</th><th>last status</th>"
        "<th>staged</th><th>transferred</th><th>saved</th><th>growth</th>"
        "<th>failed</th><th>not ready</th><th>latest error</th></tr>"
    )
    body = []
    for s in summaries:
        saved = (
            f"{max(0.0, 100.0 * (1 - s.last_wire_bytes / s.last_bytes)):.1f}%"
            if s.last_bytes
            else "\u2013"
        )
        growth = "\u2013" if s.growth_percent is None else f"{s.growth_percent:+.1f}%"
        error = f"{s.last_error_date}: {s.last_error}" if s.last_error else ""
        body.append(
            f'<tr class="{s.attention}" data-peer="{html.escape(s.name)}">'
            f"<td>{html.escape(s.name)}</td><td>{s.runs}</td>"
            f"<td>{html.escape(s.last_date)}</td>"
            f'<td class="status">{html.escape(s.last_status)}</td>'
            f"<td>{human_bytes(s.last_bytes)}</td><td>{human_bytes(s.last_wire_bytes)}</td>"
            f"<td>{saved}</td><td>{growth}</td><td>{s.failures}</td><td>{s.not_ready}</td>"
            f'<td class="error">{html.escape(error)}</td></tr>'
        )
    return f'<table class="summary"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def render_html(
    rows: Iterable[HistoryRow], *, title: str = "deltastage report", generated: datetime
) -> str:
    """The whole page as a string; every name and error from the catalog is escaped."""
    groups = _by_peer(rows)
    summaries = summarise(row for group in groups.values() for row in group)
    run_ids = {r.run_id for group in groups.values() for r in group}
    dates = sorted({r.run_date for group in groups.values() for r in group})
    attention = {s.name: s.attention for s in summaries}
    failing = [s.name for s in summaries if s.attention == "bad"]
    if groups:
        meta = (
            f"{len(groups)} peers, {len(run_ids)} runs from {html.escape(dates[0])} to "
            f"{html.escape(dates[-1])}; generated {generated:%Y-%m-%d %H:%M}."
        )
        if failing:
            meta += " Last run failed: " + ", ".join(html.escape(n) for n in failing) + "."
    else:
        meta = f"No stage runs recorded yet; generated {generated:%Y-%m-%d %H:%M}."
    figures = "".join(
        f'<figure class="{attention[name]}"><figcaption>{html.escape(name)}</figcaption>'
        f"{peer_chart_svg(name, group)}</figure>"
        for name, group in groups.items()
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
        f'<body data-peers="{len(groups)}" data-check="pending">'
        f'<h1>{html.escape(title)}</h1><p class="meta">{meta}</p>'
        f"{_summary_table(summaries) if summaries else ''}"
        f'<section class="charts">{figures}</section>'
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


def write_report(
    staging_dir: Path, out: Path, *, limit: int = 30, now: datetime | None = None
) -> list[PeerSummary]:
    """Render the last ``limit`` stage runs of ``staging_dir`` into ``out``, atomically.

    A reader (a web server, a browser refresh) sees the old page or the new one, never half.
    """
    rows = read_history(staging_dir, limit=limit)
    page = render_html(
        rows,
        title=f"deltastage report \u2014 {staging_dir}",
        generated=now or datetime.now(),
    )
    # a file name's undecodable bytes as \xNN; a report is meant to be read (served) by others
    replace_file(out.absolute(), shown(page), mode=0o644)
    return summarise(rows)
