"""Logging for the commands: rich on a terminal, plain lines under cron, a file, syslog."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from deltastage.text import shown

__all__ = ["LOG_FORMAT", "setup_logging"]

LOG_FORMAT = "%(asctime)s deltastage[%(process)d] %(levelname)s %(message)s"


class _Formatter(logging.Formatter):
    """The plain line format; a file name's undecodable bytes shown as ``\\xNN``, so a
    line naming one is never lost to an encoding error (a log file, syslog)."""

    def format(self, record: logging.LogRecord) -> str:
        return shown(super().format(record))


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now, so a replaced stderr never gets stale."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup_logging(
    *,
    level: str = "info",
    log_file: Path | None = None,
    syslog: bool = False,
    rich: bool = False,
    quiet: bool = False,
) -> None:
    """Log at ``level`` to stderr (rich on a terminal; nothing there when ``quiet``), and
    to ``log_file`` and syslog when asked."""
    root = logging.getLogger("deltastage")
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    root.handlers.clear()
    root.propagate = False
    if quiet:
        # a handler that drops it all: with none, logging's last resort prints warnings
        root.addHandler(logging.NullHandler())
    elif rich:
        # rich is loaded only for a terminal: under cron a stage reaches its first connect
        # without it
        from rich.console import Console
        from rich.logging import RichHandler

        rich_handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
        rich_handler.setFormatter(_Formatter("%(message)s"))
        root.addHandler(rich_handler)
    else:
        handler = _CurrentStderrHandler()
        handler.setFormatter(_Formatter(LOG_FORMAT))
        root.addHandler(handler)
    if log_file is not None:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(_Formatter(LOG_FORMAT))
        root.addHandler(file_handler)
    if syslog:
        address = "/dev/log" if Path("/dev/log").exists() else ("localhost", 514)
        sys_handler = logging.handlers.SysLogHandler(
            address=address, facility=logging.handlers.SysLogHandler.LOG_DAEMON
        )
        sys_handler.setFormatter(_Formatter("deltastage[%(process)d]: %(message)s"))
        root.addHandler(sys_handler)
