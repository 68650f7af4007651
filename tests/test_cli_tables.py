"""The tables of stage, verify, check and history at 60 and 80 columns and without a TTY:
every peer name, path and error appears whole, never cut with "…" nor folded."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from deltastage.check import CheckReport, PeerCheck, compression_hint
from deltastage.cli.render import (
    render_check,
    render_history_table,
    render_stage_table,
    render_verify_table,
)
from deltastage.history import HistoryRow, read_history, record_stage
from deltastage.protocol import ProbeReply
from deltastage.stage.report import PeerReport, StageReport
from deltastage.verify import PeerVerification, VerifyReport
from tests.helpers.site import write_config

ROOT = Path(__file__).resolve().parent.parent
LONG = "site-frankfurt-am-main-backup-host-0001.example.net"
NAMES = ["db1", LONG, "mail-relay-backup"]
DAILY = Path("/srv/backup/staging-area-on-the-big-array/nightly/2026/11/26")
ERRORS = {
    LONG: f"connect: ssh: could not connect to {LONG} port 22: connection timed out after "
    "30.0 s (3 attempts; the last: [Errno 113] No route to host)",
    "mail-relay-backup": "not ready: no cback.collect in /var/backups/collect/mail-relay "
    "(the collect action has not finished)",
}
DEEP = "var/lib/mysql/a-very-long-database-name/with-a-long-table-name.ibd"

# A console as a narrow terminal, a wide one, and a pipe (not a TTY: 80 columns unless
# COLUMNS says otherwise).
CONSOLES = {
    "60 columns": lambda: Console(file=StringIO(), width=60),
    "80 columns": lambda: Console(file=StringIO(), width=80),
    "no TTY": lambda: Console(file=StringIO()),
}


def stage_report() -> StageReport:
    peers = [
        PeerReport(name, "staged" if name == "db1" else "failed", 12, 734003200, 1187204, 41.2)
        for name in NAMES
    ]
    for peer in peers:
        peer.error = ERRORS.get(peer.name)
    peers[2].status, peers[2].ignored = "not-ready", True
    return StageReport(date(2026, 11, 26), DAILY, peers)


def verify_report() -> VerifyReport:
    return VerifyReport(
        DAILY,
        [
            PeerVerification("db1", 3, 100),
            PeerVerification(
                LONG, 9, 900, missing=[DEEP], corrupt=[f"{DEEP}.{n}" for n in range(7)]
            ),
            PeerVerification("mail-relay-backup", error=ERRORS["mail-relay-backup"]),
        ],
    )


def check_report() -> CheckReport:
    unusable = PeerCheck(LONG, "remote", error=ERRORS[LONG])
    refusing = PeerCheck(
        "mail-relay-backup",
        "remote",
        error=ERRORS["mail-relay-backup"],
        fix='command="deltastage agent --root /var/backups/collect --indicator cback.stage"',
    )
    ready = PeerCheck("db1", "local", usable=True, agent_version="0.1.0", collect_indicator=True)
    ready.hint = compression_hint(ProbeReply(3, 2, 0, (f"{LONG}/{DEEP}.tar.gz", "mbox.gz")))
    return CheckReport(
        f"/etc/deltastage/{LONG}.toml", str(DAILY), None, [ready, unusable, refusing]
    )


def history_rows() -> list[HistoryRow]:
    return [
        HistoryRow(
            run,
            "stage",
            0.0,
            f"2026-11-2{run}",
            p.name,
            p.status,
            p.files,
            p.bytes,
            p.wire_bytes,
            p.seconds,
            p.error,
        )
        for run in (5, 4)
        for p in stage_report().peers
    ]


def whole(output: str, *texts: str) -> None:
    """Each of ``texts`` appears in ``output`` on one line, uncut; nothing is cut anywhere."""
    assert "…" not in output, output
    for text in texts:
        assert text in output, f"{text!r} not whole in:\n{output}"


RENDERS: dict[str, tuple[Callable[[Console], None], list[str]]] = {
    "stage": (
        lambda console: render_stage_table(stage_report(), console),
        [*NAMES, *ERRORS.values(), str(DAILY)],
    ),
    "verify": (
        lambda console: render_verify_table(verify_report(), console),
        [*NAMES, ERRORS["mail-relay-backup"], f"{LONG}: missing {DEEP}", f"{DEEP}.4", str(DAILY)],
    ),
    "check": (
        lambda console: render_check(check_report(), console),
        [
            *NAMES,
            *ERRORS.values(),
            check_report().config,
            check_report().peers[2].fix or "",
            f"db1: {check_report().peers[0].hint}",
        ],
    ),
    "history": (
        lambda console: render_history_table(history_rows(), 10, DAILY.parent, console),
        [*NAMES, *ERRORS.values(), f"2026-11-24 run 4 {LONG}: {ERRORS[LONG]}", str(DAILY.parent)],
    ),
}


@pytest.mark.parametrize("console", CONSOLES.values(), ids=CONSOLES.keys())
@pytest.mark.parametrize("table", RENDERS, ids=RENDERS.keys())
def test_every_name_path_and_error_appears_whole(
    table: str, console: Callable[[], Console]
) -> None:
    render, texts = RENDERS[table]
    out = console()
    render(out)
    assert isinstance(out.file, StringIO)
    whole(out.file.getvalue(), *texts)


def test_wide_terminals_show_every_column_and_narrow_ones_say_what_is_left_out() -> None:
    wide = Console(file=StringIO(), width=200)
    render_stage_table(stage_report(), wide)
    text = wide.file.getvalue()  # type: ignore[attr-defined]
    assert "left out" not in text
    for header in ("peer", "status", "files", "bytes", "wire", "saved", "secs"):
        assert f" {header} " in text
    narrow = Console(file=StringIO(), width=80)
    render_stage_table(stage_report(), narrow)
    text = narrow.file.getvalue()  # type: ignore[attr-defined]
    assert "(left out at this width: " in text and "; --json has all)" in text
    assert " peer " in text and " status " in text


def test_too_narrow_for_any_table_each_row_is_one_line() -> None:
    console = Console(file=StringIO(), width=40)
    render_stage_table(stage_report(), console)
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    row = next(line for line in lines if line.startswith(f"peer: {LONG}, "))
    assert "status: failed, files: 12, bytes: 700.0 MiB, wire: 1.1 MiB" in row


def test_verify_lists_the_first_paths_of_each_kind_and_counts_the_rest() -> None:
    console = Console(file=StringIO(), width=80)
    render_verify_table(verify_report(), console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert f"{LONG}: corrupt {DEEP}.4" in text and f"{DEEP}.5" not in text
    assert f"{LONG}: and 2 more corrupt (--json lists all)" in text


def test_history_piped_from_a_real_process_keeps_names_and_errors_whole(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    record_stage(staging, stage_report())
    config = write_config(tmp_path, NAMES)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run(
        [sys.executable, "-m", "deltastage", "history", "--config", str(config)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert len(read_history(staging)) == 3
    whole(proc.stdout, *NAMES, *ERRORS.values(), str(staging))
