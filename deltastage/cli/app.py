"""The Typer app, its --version, and the mapping of errors to one line and an exit code.

Each command module under ``cli/`` declares its commands; ``cli/main``
imports them in the order ``--help`` lists them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from deltastage import __version__
from deltastage.errors import REPORTED, exit_status

__all__ = ["app", "main", "run_guarded"]

app = typer.Typer(
    name="deltastage",
    help="Stage nightly backups from many peers with the rsync algorithm, verified end to end.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)

T = TypeVar("T")


def fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"deltastage: error: {message}", err=True)
    return typer.Exit(code)


def run_guarded(action: Callable[[], T]) -> T:
    """Run ``action``; turn deltastage and OS errors into a one-line message and exit code."""
    try:
        return action()
    except REPORTED as exc:
        raise fail(*exit_status(exc)) from None


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"deltastage {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=version_callback, is_eager=True, help="Show version."),
    ] = False,
) -> None:
    """deltastage: verified, delta-transfer backup staging."""


def main() -> None:
    """The Typer application, as the console script runs it."""
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("deltastage: interrupted\n")
        sys.exit(130)
