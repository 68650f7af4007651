"""The Typer app with every command registered, and the console script's entry point."""

from __future__ import annotations

from deltastage.cli import agent, check, config, history, rdiff, stage, verify
from deltastage.cli.app import Command, app, main

__all__ = ["app", "main"]

# In the order --help lists them, with the exit codes of those a cron job or a monitor runs.
for command, epilog in (
    (rdiff.signature, None),
    (rdiff.delta, None),
    (rdiff.patch, None),
    (stage.stage, stage.EXIT_CODES),
    (verify.verify, verify.EXIT_CODES),
    (check.check, check.EXIT_CODES),
    (history.history, None),
    (history.report, None),
):
    app.command(cls=Command, epilog=epilog)(command)
app.add_typer(config.config_app, name="config")
app.command(cls=Command)(agent.agent)
