"""``deltastage agent``: the peer's end, served on stdin/stdout.

A plain command line for it runs without typer (``fastargv``); this command is the same
for everything else: help, unusual spellings, refusals.
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["agent"]


def agent(
    roots: Annotated[
        list[str],
        typer.Option("--root", help="A directory to serve (repeatable); nothing outside is."),
    ],
) -> None:
    """Serve the deltastage protocol on stdin/stdout (an authorized_keys forced command)."""
    from deltastage.agent import run_stdio

    raise typer.Exit(run_stdio(roots))
