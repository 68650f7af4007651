"""``deltastage check``: validate the config and reach every peer."""

from __future__ import annotations

from pathlib import Path

import typer

from deltastage.cli.app import run_guarded
from deltastage.cli.options import CedarOpt, ConfigOpt, JsonOpt
from deltastage.cli.support import json_on_failure, load, print_json

__all__ = ["EXIT_CODES", "check"]

EXIT_CODES = (
    "Exit status: 0 the config is valid, the staging dir writable and every peer usable; "
    "1 a peer is unusable (unreachable, or its agent would refuse the stage indicator) or the "
    "staging dir cannot be written; 2 a usage or configuration error; 130 interrupted."
)


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

    def failed(error: str, code: int) -> dict[str, object]:
        return failure_report(error, code, config or cedar_config)

    raise typer.Exit(json_on_failure(action, failed) if as_json else run_guarded(action))


def failure_report(error: str, code: int, source: Path | None = None) -> dict[str, object]:
    """The JSON of a check that ``error`` stopped (a config that does not load, a command
    line the parser refused): the report's keys, no peers."""
    return {
        "config": None if source is None else str(source),
        "staging_dir": None,
        "staging_problem": None,
        "exit_code": code,
        "error": error,
        "peers": [],
    }
