"""The Typer app with every command registered, and the console script's entry point."""

from __future__ import annotations

from deltastage.cli import agent, check, config, history, rdiff, stage, verify
from deltastage.cli.app import app, main

__all__ = ["app", "main"]

# In the order --help lists them.
for command in (
    rdiff.signature,
    rdiff.delta,
    rdiff.patch,
    stage.stage,
    verify.verify,
    check.check,
    history.history,
    history.report,
):
    app.command()(command)
app.add_typer(config.config_app, name="config")
app.command()(agent.agent)
