"""Logging for unattended runs: grep-able per-peer lines in --log-file, --syslog, --log-level."""

from __future__ import annotations

import logging
import logging.handlers
import re
import shlex
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import deltastage.cli.logs
from deltastage.cli.main import app
from tests.helpers.site import make_peer, write_config

runner = CliRunner()
DAY = "2026-11-23"
OUTCOME = re.compile(r"deltastage\[\d+\] (INFO|ERROR) peer=(\S+) status=(\S+)")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The CLI configures the process-wide 'deltastage' logger; close what it opened."""
    yield
    root = logging.getLogger("deltastage")
    for handler in root.handlers:
        handler.close()
    root.handlers.clear()
    root.propagate = True


@pytest.fixture
def site(tmp_path: Path) -> Path:
    peers = {"alpha": True, "beta": False, "gamma": True}
    for name, ready in peers.items():
        make_peer(tmp_path, name, {"data.bin": name.encode() * 1000}, ready=ready)
    return write_config(tmp_path, list(peers))


def outcomes(log_file: Path) -> list[tuple[str, str, str]]:
    found = [OUTCOME.search(line) for line in log_file.read_text().splitlines()]
    return [(m.group(2), m.group(3), m.group(1)) for m in found if m]


def test_log_file_has_one_outcome_line_per_peer(site: Path, tmp_path: Path) -> None:
    log_file = tmp_path / "deltastage.log"
    args = ["stage", "--config", str(site), "--date", DAY, "--log-file", str(log_file)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output  # beta is not ready and not ignored
    assert sorted(outcomes(log_file)) == [
        ("alpha", "staged", "INFO"),
        ("beta", "not-ready", "ERROR"),
        ("gamma", "staged", "INFO"),
    ]
    beta = next(line for line in log_file.read_text().splitlines() if "peer=beta status=" in line)
    assert "error=no cback.collect in " in beta, "the reason is on the same line"
    alpha = next(line for line in log_file.read_text().splitlines() if "peer=alpha status=" in line)
    assert re.search(r" files=1 bytes=5000 wire_bytes=\d+ seconds=[\d.]+$", alpha)


def test_log_file_appends_across_runs(site: Path, tmp_path: Path) -> None:
    log_file = tmp_path / "deltastage.log"
    for _ in range(2):
        args = ["stage", "--config", str(site), "--date", DAY, "--log-file", str(log_file)]
        runner.invoke(app, args)
    assert [name for name, _, _ in outcomes(log_file)].count("alpha") == 2


def test_debug_level_logs_each_file_and_error_level_hides_successes(
    site: Path, tmp_path: Path
) -> None:
    debug_log, error_log = tmp_path / "debug.log", tmp_path / "error.log"
    base = ["stage", "--config", str(site), "--date", DAY]
    runner.invoke(app, [*base, "--log-level", "DEBUG", "--log-file", str(debug_log)])
    assert "DEBUG" in debug_log.read_text()
    runner.invoke(app, [*base, "--log-level", "error", "--log-file", str(error_log)])
    assert outcomes(error_log) == [("beta", "not-ready", "ERROR")]


@pytest.mark.parametrize("level", ["loud", "", "critical", "10"])
def test_log_level_is_validated(site: Path, tmp_path: Path, level: str) -> None:
    log_file = tmp_path / "never.log"
    result = runner.invoke(
        app, ["stage", "--config", str(site), "--log-level", level, "--log-file", str(log_file)]
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f"deltastage: error: --log-level {level!r}: expected debug, info, warning or error\n"
    )
    assert not (tmp_path / "staging").exists(), "nothing staged with a bad option"
    assert not log_file.exists()


def test_syslog_without_dev_log_does_not_crash(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Containers and chroots often have no /dev/log: the run must go on (UDP, unanswered)."""

    class NoDevLog(type(Path())):  # type: ignore[misc]
        def exists(self) -> bool:
            return False if str(self) == "/dev/log" else bool(super().exists())

    monkeypatch.setattr(deltastage.cli.logs, "Path", NoDevLog)
    log_file = tmp_path / "deltastage.log"
    args = ["stage", "--config", str(site), "--date", DAY, "--syslog", "--log-file", str(log_file)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert len(outcomes(log_file)) == 3
    handlers = logging.getLogger("deltastage").handlers
    syslog = [h for h in handlers if isinstance(h, logging.handlers.SysLogHandler)]
    assert len(syslog) == 1 and syslog[0].address == ("localhost", 514)


def test_syslog_gets_the_outcome_lines(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same per-peer lines reach syslog as daemon.*, tagged deltastage[pid]:."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "log.sock")
    listener.bind(address)
    original = logging.handlers.SysLogHandler.__init__

    def to_listener(self: logging.handlers.SysLogHandler, *args: Any, **kw: Any) -> None:
        # Whatever cli/logs.py chose (/dev/log or UDP 514), talk to our stand-in instead.
        kw.pop("address", None)
        original(self, address, *args[1:], **kw)

    monkeypatch.setattr(logging.handlers.SysLogHandler, "__init__", to_listener)
    messages = []
    try:
        result = runner.invoke(app, ["stage", "--config", str(site), "--date", DAY, "--syslog"])
        assert result.exit_code == 1, result.output
        listener.settimeout(0.5)
        while True:
            try:
                messages.append(listener.recv(65536).decode())
            except TimeoutError:
                break
    finally:
        listener.close()
    lines = [m for m in messages if "status=" in m]
    assert len(lines) == 3, messages
    assert all(re.match(r"<\d+>deltastage\[\d+\]: peer=\w+ status=", m) for m in lines), lines
    assert sum(m.startswith("<27>") for m in lines) == 1, "daemon.err (3*8+3): beta only"


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example_commands() -> list[list[str]]:
    """The deltastage command lines of the cron and systemd examples, as argv lists."""
    commands = []
    for line in (EXAMPLES / "cron/deltastage").read_text().splitlines():
        if re.match(r"^[0-9*]", line):
            shell = line.split(" root ", 1)[1].split(">", 1)[0]
            commands.append(shlex.split(shell))
    service = (EXAMPLES / "systemd/deltastage-stage.service").read_text()
    for match in re.finditer(r"^Exec\w+=-?(.+)$", service, re.MULTILINE):
        commands.append(shlex.split(match.group(1)))
    return commands


def test_examples_are_oneshot_persistent_and_document_lock_and_exit_codes() -> None:
    service = (EXAMPLES / "systemd/deltastage-stage.service").read_text()
    timer = (EXAMPLES / "systemd/deltastage-stage.timer").read_text()
    cron = (EXAMPLES / "cron/deltastage").read_text()
    assert re.search(r"^Type=oneshot$", service, re.MULTILINE)
    assert re.search(r"^Persistent=true$", timer, re.MULTILINE)
    assert re.search(r"^OnCalendar=", timer, re.MULTILINE)
    for text in (service, cron):
        assert "another deltastage run (pid N) holds" in text
        for code in ("0  every peer staged", "1  some peer failed", "2  configuration"):
            assert code in text
    assert [argv[:2] for argv in example_commands()] == [
        ["deltastage", "stage"],
        ["deltastage", "report"],
        ["/usr/local/bin/deltastage", "stage"],
        ["/usr/local/bin/deltastage", "report"],
    ]


def test_example_command_lines_run(site: Path, tmp_path: Path) -> None:
    """Every option the examples use exists and works (paths swapped for the test site)."""
    swap = {
        "/etc/cback3.conf": str(site),
        "/var/log/deltastage.log": str(tmp_path / "deltastage.log"),
        "/var/www/html/deltastage.html": str(tmp_path / "deltastage.html"),
    }
    for argv in example_commands():
        args = [swap.get(arg, arg) for arg in argv[1:]]
        args = ["--config" if arg == "--cedar-config" else arg for arg in args]
        result = runner.invoke(app, args)
        assert result.exit_code == (1 if args[0] == "stage" else 0), (argv, result.output)
    assert len(outcomes(tmp_path / "deltastage.log")) == 6, "two stage runs of three peers"
    assert (tmp_path / "deltastage.html").read_text().count('<svg class="peer-chart"') == 3
