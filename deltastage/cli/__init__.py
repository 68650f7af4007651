"""The command line: a thin Typer shell that parses options, calls the library, maps errors.

Layout: ``main`` (the app with every command, the console script's entry), ``app`` (the
Typer app, --version, errors to exit codes), ``options`` (the typer declarations of the
options several commands share) and ``support`` (what they do), one module per command or
small group (``rdiff``, ``stage``, ``verify``, ``check``, ``history``, ``config``,
``agent``), ``stagerun`` (the stage command's work, also run without typer), ``render``
(every table and progress display) and ``logs`` (logging to stderr, a file, syslog).
Only this package imports typer; this file imports nothing, so ``stagerun``, ``render`` and
``logs`` load without it.
"""
