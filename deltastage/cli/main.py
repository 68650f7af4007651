"""The Typer app with every command registered, and the console script's entry point."""

from __future__ import annotations

from deltastage.cli import agent, check, config, history, rdiff, stage, stagerun, verify
from deltastage.cli.app import Command, app, json_command, main

__all__ = ["app", "main"]

# In the order --help lists them, with the exit codes of those a cron job or a monitor runs;
# those whose --json prints one report object, whatever ends them, with their own kind.
for command, epilog, cls in (
    (rdiff.signature, None, Command),
    (rdiff.delta, None, Command),
    (rdiff.patch, None, Command),
    (stage.stage, stage.EXIT_CODES, json_command(stagerun.failure_report)),
    (verify.verify, verify.EXIT_CODES, json_command(verify.failure_report)),
    (check.check, check.EXIT_CODES, json_command(check.failure_report)),
    (history.history, None, Command),
    (history.report, None, Command),
):
    app.command(cls=cls, epilog=epilog)(command)
app.add_typer(config.config_app, name="config")
app.command(cls=Command)(agent.agent)
