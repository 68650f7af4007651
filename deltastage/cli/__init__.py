"""The command line: a thin Typer shell that parses options, calls the library, maps errors.

Layout: ``app`` (the Typer app, --version, errors to exit codes), ``options`` (the options
several commands share: config, logging, JSON), one module per command or small group
(``rdiff``, ``stage``, ``verify``, ``check``, ``history``, ``config``, ``agent``), ``render``
(every table and progress display) and ``logs`` (logging to stderr, a file, syslog).
Only this package imports typer.
"""

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
