"""``deltastage check``: validate the config and reach every peer."""

from __future__ import annotations

import typer

from deltastage.cli.app import run_guarded
from deltastage.cli.options import CedarOpt, ConfigOpt, JsonOpt
from deltastage.cli.support import load, print_json

__all__ = ["check"]


def check(
    config: ConfigOpt = None,
    cedar_config: CedarOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate the config and reach every peer (agent version, indicator state)."""

    def action() -> int:
        from rich.console import Console

        from deltastage.check import check_config
        from deltastage.cli.render import render_check

        report = check_config(load(config, cedar_config))
        if as_json:
            print_json(report.as_json())
        else:
            render_check(report, Console())
        return report.exit_code

    raise typer.Exit(run_guarded(action))
