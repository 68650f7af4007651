"""``deltastage agent``: the peer's end, served on stdin/stdout.

A plain command line for it runs without typer (``fastargv``); this command is the same
for everything else: help, unusual spellings, refusals.
"""

from __future__ import annotations

from typing import Annotated

import typer

from deltastage.cli.app import run_guarded

__all__ = ["agent"]


def agent(
    roots: Annotated[
        list[str],
        typer.Option(
            "--root",
            metavar="DIR",
            help="A directory to serve (repeatable); nothing outside is.",
        ),
    ],
    indicators: Annotated[
        list[str] | None,
        typer.Option(
            "--indicator",
            metavar="NAME",
            show_default="cback.stage",
            help="A file name the master may create, empty, directly in a root "
            "(repeatable). Nothing else is ever written.",
        ),
    ] = None,
    read_only: Annotated[
        bool,
        typer.Option(
            "--read-only",
            help="Write nothing: the master records the stage indicator on its side only.",
        ),
    ] = False,
) -> None:
    """Serve the deltastage protocol on stdin/stdout (an authorized_keys forced command)."""
    from deltastage.agent import run_stdio

    raise typer.Exit(run_guarded(lambda: run_stdio(roots, indicators or (), read_only)))
