"""The agent as a process: ``deltastage agent --root DIR ...`` served over stdin/stdout.

The agent starts once per SSH connection (typically an ``authorized_keys`` forced command),
so a plain command line reaches ``run_stdio`` without the CLI framework (see ``fastargv``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from deltastage.agent.server import serve

__all__ = ["run_stdio"]


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
