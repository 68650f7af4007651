"""The agent as a process: ``deltastage agent --root DIR ...`` served over stdin/stdout.

The agent starts once per SSH connection (typically an ``authorized_keys`` forced command),
so its start-up is kept short: a plain command line reaches ``run_stdio`` without the CLI
framework (see ``fastargv``), and numpy and the delta core, which only a fetch needs, load on a
thread while the handshake and the listing are answered.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from deltastage.agent.server import serve
from deltastage.errors import UnsafePathError, UsageError
from deltastage.protocol import DEFAULT_INDICATOR
from deltastage.protocol.events import MAX_INDICATORS
from deltastage.protocol.paths import check_name

__all__ = ["agent_indicators", "run_stdio"]


def agent_indicators(indicators: Sequence[str], read_only: bool) -> tuple[str, ...]:
    """The indicator names an agent started with these options writes (none: read-only);
    ``UsageError`` for options it cannot honour."""
    if read_only:
        if indicators:
            raise UsageError("--read-only writes nothing: it takes no --indicator")
        return ()
    names = tuple(dict.fromkeys(indicators)) or (DEFAULT_INDICATOR,)
    if len(names) > MAX_INDICATORS:
        raise UsageError(f"at most {MAX_INDICATORS} --indicator names, not {len(names)}")
    for name in names:
        try:
            check_name(name)
        except UnsafePathError as exc:
            raise UsageError(f"--indicator: {exc}: an indicator is one file name") from None
    return names


def _load_delta_core() -> None:
    # a failure here resurfaces at the first fetch, which imports the same and is answered
    with contextlib.suppress(Exception):
        importlib.import_module("deltastage.agent.sender")


def run_stdio(
    roots: Sequence[str | Path], indicators: Sequence[str] = (), read_only: bool = False
) -> int:
    """Serve over stdin/stdout, as ``deltastage agent`` (an authorized_keys forced command).

    The agent writes only ``indicators`` (by default Cedar's stage indicator), or nothing
    with ``read_only``; ``UsageError`` before anything is served for what it cannot honour.
    Refusals are logged on stderr.
    """
    writes = agent_indicators(indicators, read_only)
    threading.Thread(target=_load_delta_core, name="load-delta", daemon=True).start()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"deltastage agent[{os.getpid()}]: %(message)s"))
    agent_log = logging.getLogger("deltastage.agent")
    agent_log.addHandler(handler)
    agent_log.setLevel(logging.INFO)
    in_fd = sys.stdin.fileno()
    out_fd = os.dup(sys.stdout.fileno())
    # Anything printed by accident must not corrupt the protocol stream: fd 1 becomes stderr.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def read(n: int) -> bytes:
        return os.read(in_fd, n)

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(out_fd, view) :]

    try:
        serve(roots, read, write, indicators=writes)
    finally:
        os.close(out_fd)
        agent_log.removeHandler(handler)
    return 0
