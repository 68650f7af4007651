"""``deltastage config``: convert configuration files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deltastage.cli.app import Command, Group, run_guarded

__all__ = ["config_app"]

config_app = typer.Typer(help="Convert configuration files.", cls=Group, no_args_is_help=True)


@config_app.command("import-cedar", cls=Command)
def import_cedar(
    cedar_conf: Annotated[
        Path, typer.Argument(metavar="CBACK.CONF", help="A Cedar Backup 3 XML config.")
    ],
) -> None:
    """Print the deltastage TOML equivalent of a Cedar Backup config; warnings go to stderr."""
    from deltastage.config import config_to_toml
    from deltastage.config.cedar import load_cedar_config

    # Accounts are checked when the TOML is used: converting on another machine is fine.
    loaded, warnings = run_guarded(lambda: load_cedar_config(cedar_conf, check_accounts=False))
    for warning in warnings:
        typer.echo(f"# warning: {warning}", err=True)
    typer.echo(config_to_toml(loaded), nl=False)
