"""A local peer: the real agent as a child process, over its stdin and stdout.

The agent runs as ``python -m deltastage agent`` with the same interpreter, serving the
collect dir, exactly as ``sshd`` would start it for a remote peer, so local peers get the
same path checks, the same verification and the same byte accounting as SSH peers. A child
process, not a thread: the agent reads, hashes and encodes while the master receives and
commits, each on its own core rather than taking turns with one interpreter lock.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from deltastage.protocol import DEFAULT_INDICATOR
from deltastage.transports.pipe import PipeTransport

__all__ = ["LocalTransport", "local_agent_argv"]


def local_agent_argv(roots: Sequence[str | Path], indicators: Sequence[str]) -> list[str]:
    """The command serving ``roots`` with this interpreter and this deltastage."""
    argv = [sys.executable, "-m", "deltastage", "agent"]
    for root in roots:
        argv += ["--root", str(root)]
    for name in indicators:
        argv += ["--indicator", name]
    return argv


class LocalTransport(PipeTransport):
    """The agent of a local peer, started as a child process."""

    def __init__(
        self,
        roots: Sequence[str | Path],
        *,
        indicators: Sequence[str] = (DEFAULT_INDICATOR,),
        idle_timeout: float = 300,
    ) -> None:
        super().__init__(local_agent_argv(roots, indicators), idle_timeout=idle_timeout)
