"""The command line: a thin Typer shell that parses options, calls the library, maps errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from deltastage import __version__
from deltastage.errors import DeltastageError

__all__ = ["app", "main"]

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
    except DeltastageError as exc:
        raise fail(str(exc), exc.exit_code) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise fail(f"{where}{exc.strerror or exc}", 1) from None


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


# --- rdiff-like commands: the delta core on plain files ("-" = stdin/stdout) -------------

PathArg = Annotated[str, typer.Argument(help="A file path, or - for stdin/stdout.")]


@app.command()
def signature(
    basis: PathArg,
    sig: PathArg,
    block_size: Annotated[
        int | None, typer.Option("--block-size", "-b", help="Block size (default ~sqrt(size)).")
    ] = None,
    strong_len: Annotated[
        int | None, typer.Option("--strong-len", "-S", help="Strong hash bytes per block.")
    ] = None,
) -> None:
    """Write the signature of BASIS to SIG (like rdiff signature)."""
    from deltastage import rdiff

    run_guarded(lambda: rdiff.signature_file(basis, sig, block_size=block_size, strong_len=strong_len))


@app.command()
def delta(
    sig: PathArg,
    new: PathArg,
    delta_out: Annotated[str, typer.Argument(metavar="DELTA", help="Output delta, or -.")],
    level: Annotated[
        int, typer.Option("--level", "-l", min=0, max=22, help="zstd level for literals, 0 = off.")
    ] = 3,
) -> None:
    """Write the delta that turns SIG's basis into NEW (like rdiff delta)."""
    from deltastage import rdiff

    run_guarded(lambda: rdiff.delta_file(sig, new, delta_out, level=level))


@app.command()
def patch(
    basis: PathArg,
    delta_in: Annotated[str, typer.Argument(metavar="DELTA", help="Delta file, or -.")],
    out: PathArg,
) -> None:
    """Apply DELTA to BASIS and write OUT, verified (like rdiff patch, but checked)."""
    from deltastage import rdiff

    run_guarded(lambda: rdiff.patch_file(basis, delta_in, out))


# --- configuration files -------------------------------------------------------------------

config_app = typer.Typer(help="Convert configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("import-cedar")
def import_cedar(
    cedar_conf: Annotated[
        Path, typer.Argument(metavar="CBACK.CONF", help="A Cedar Backup 3 XML config.")
    ],
) -> None:
    """Print the deltastage TOML equivalent of a Cedar Backup config; warnings go to stderr."""
    from deltastage.config import config_to_toml, load_cedar_config

    # Accounts are checked when the TOML is used: converting on another machine is fine.
    loaded, warnings = run_guarded(lambda: load_cedar_config(cedar_conf, check_accounts=False))
    for warning in warnings:
        typer.echo(f"# warning: {warning}", err=True)
    typer.echo(config_to_toml(loaded), nl=False)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("deltastage: interrupted\n")
        sys.exit(130)


