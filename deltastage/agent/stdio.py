"""The agent as a process: ``deltastage agent --root DIR ...`` served over stdin/stdout.

The agent starts once per SSH connection (typically an ``authorized_keys`` forced command),
so a plain command line is parsed here, without the CLI framework; anything else goes to
the CLI, which parses it and, where it must, refuses it with its usual messages.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from deltastage.agent.server import serve

__all__ = ["run_argv", "run_stdio"]


def run_argv(argv: Sequence[str]) -> int | None:
    """Serve ``agent --root DIR ...``; None for any other command line."""
    if not argv or argv[0] != "agent":
        return None
    roots: list[str] = []
    rest = list(argv[1:])
    while rest:
        arg = rest.pop(0)
        if arg == "--root" and rest and rest[0] and not rest[0].startswith("-"):
            roots.append(rest.pop(0))
        elif arg.startswith("--root=") and len(arg) > len("--root="):
            roots.append(arg[len("--root=") :])
        else:
            return None
    return run_stdio(roots) if roots else None


def run_stdio(roots: Sequence[str | Path]) -> int:
    """Serve over stdin/stdout, as ``deltastage agent`` (an authorized_keys forced command)."""
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
        serve(roots, read, write)
    finally:
        os.close(out_fd)
    return 0
