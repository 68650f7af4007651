"""The command line: a thin Typer shell that parses options, calls the library, maps errors."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from deltastage import __version__
from deltastage.errors import REPORTED, UsageError, exit_status

if TYPE_CHECKING:
    from deltastage.config import Config

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

    run_guarded(
        lambda: rdiff.signature_file(basis, sig, block_size=block_size, strong_len=strong_len)
    )


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


# --- the stage action and its companions ----------------------------------------------

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="deltastage TOML configuration file.")
]
CedarOpt = Annotated[
    Path | None,
    typer.Option("--cedar-config", help="Read a Cedar Backup XML config (/etc/cback3.conf)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")]
LogLevelOpt = Annotated[str, typer.Option("--log-level", help="debug | info | warning | error.")]
LogFileOpt = Annotated[Path | None, typer.Option("--log-file", help="Also log to this file.")]
SyslogOpt = Annotated[bool, typer.Option("--syslog", help="Also log to syslog (daemon).")]


def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--date {value!r}: expected YYYY-MM-DD") from None


def _load(config: Path | None, cedar_config: Path | None) -> Config:
    from deltastage.config import load_cedar_config, load_config

    if (config is None) == (cedar_config is None):
        raise UsageError("give exactly one of --config FILE or --cedar-config FILE")
    if config is not None:
        return load_config(config)
    assert cedar_config is not None
    loaded, warnings = load_cedar_config(cedar_config)
    for warning in warnings:
        logging.getLogger("deltastage.config").warning("%s", warning)
    return loaded


def _setup_logging(level: str, log_file: Path | None, syslog: bool) -> None:
    from deltastage.console import setup_logging

    if level.lower() not in ("debug", "info", "warning", "error"):
        raise UsageError(f"--log-level {level!r}: expected debug, info, warning or error")
    setup_logging(level=level, log_file=log_file, syslog=syslog, rich=sys.stderr.isatty())


def _print_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


@app.command()
def stage(
    config: ConfigOpt = None,
    cedar_config: CedarOpt = None,
    run_date: Annotated[
        str | None, typer.Option("--date", help="Stage into this day's dir (YYYY-MM-DD).")
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="A full run: daily/weekly ignore rules as Cedar.")
    ] = False,
    peer: Annotated[
        list[str] | None, typer.Option("--peer", "-p", help="Stage only this peer (repeatable).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Report what would be staged; touch nothing.")
    ] = False,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", min=1, max=64, help="Peers staged at once.")
    ] = None,
    as_json: JsonOpt = False,
    log_level: LogLevelOpt = "info",
    log_file: LogFileOpt = None,
    syslog: SyslogOpt = False,
) -> None:
    """Stage every ready peer into STAGING/YYYY/MM/DD/<peer>/, verified."""

    def action() -> int:
        _setup_logging(log_level, log_file, syslog)
        cfg = _load(config, cedar_config)
        day = _parse_date(run_date)
        from rich.console import Console

        from deltastage.console import LogObserver, RichObserver, render_stage_table
        from deltastage.history import record_stage
        from deltastage.stage import run_stage

        console = Console(stderr=as_json)
        bars = RichObserver(console) if console.is_terminal and not as_json else None
        with bars or contextlib.nullcontext():
            report = run_stage(
                cfg,
                run_date=day,
                full=full,
                only_peers=tuple(peer or ()),
                dry_run=dry_run,
                jobs=jobs,
                observer=bars or LogObserver(),
            )
        if not dry_run:
            record_stage(cfg.staging_dir, report)
        if as_json:
            _print_json(report.as_json())
        else:
            render_stage_table(report, console)
        return report.exit_code

    raise typer.Exit(run_guarded(action))


@app.command()
def verify(
    directory: Annotated[
        Path | None, typer.Argument(help="A daily dir (or one peer's dir) to verify.")
    ] = None,
    config: ConfigOpt = None,
    cedar_config: CedarOpt = None,
    run_date: Annotated[
        str | None, typer.Option("--date", help="Verify this day's dir (default: today).")
    ] = None,
    as_json: JsonOpt = False,
    log_level: LogLevelOpt = "info",
    log_file: LogFileOpt = None,
    syslog: SyslogOpt = False,
) -> None:
    """Re-hash staged files against their manifests; report missing, extra, corrupt files."""

    def action() -> int:
        from rich.console import Console

        from deltastage.basis import daily_dir_for
        from deltastage.console import render_verify_table
        from deltastage.history import record_verify
        from deltastage.verify import verify_daily_dir

        _setup_logging(log_level, log_file, syslog)
        staging_dir = None
        if directory is not None:
            if config or cedar_config:
                raise UsageError("give either DIR or --config, not both")
            target = directory
        else:
            cfg = _load(config, cedar_config)
            staging_dir = cfg.staging_dir
            target = daily_dir_for(cfg.staging_dir, _parse_date(run_date) or date.today())
        report = verify_daily_dir(target)
        log = logging.getLogger("deltastage.verify")
        for peer_result in report.peers:
            log.log(
                logging.INFO if peer_result.ok else logging.ERROR,
                "verify peer=%s status=%s files=%d missing=%d corrupt=%d extra=%d",
                peer_result.name,
                peer_result.status,
                peer_result.files,
                len(peer_result.missing),
                len(peer_result.corrupt),
                len(peer_result.extra),
            )
        if staging_dir is not None:
            record_verify(staging_dir, report)
        if as_json:
            _print_json(report.as_json())
        else:
            render_verify_table(report, Console())
        return report.exit_code

    raise typer.Exit(run_guarded(action))


@app.command()
def check(
    config: ConfigOpt = None,
    cedar_config: CedarOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate the config and reach every peer (agent version, indicator state)."""

    def action() -> int:
        from rich.console import Console
        from rich.table import Table

        from deltastage.check import check_config

        cfg = _load(config, cedar_config)
        report = check_config(cfg)
        if as_json:
            _print_json(report.as_json())
            return report.exit_code
        console = Console()
        console.print(f"config {report.config}: ok")
        if report.staging_problem:
            console.print(f"[red]staging dir: {report.staging_problem}[/]")
        table = Table(title="peers")
        for column in ("peer", "type", "state", "agent", "error"):
            table.add_column(column)
        for result in report.peers:
            table.add_row(
                result.name,
                result.type,
                result.state,
                result.agent_version or "",
                result.error or "",
            )
        console.print(table)
        return report.exit_code

    raise typer.Exit(run_guarded(action))


@app.command()
def history(
    config: ConfigOpt = None,
    cedar_config: CedarOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show the last N runs.")] = 10,
    peer: Annotated[str | None, typer.Option("--peer", "-p", help="Only this peer.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of rows.")] = False,
) -> None:
    """The last N stage runs from the staging dir's catalog, one row per peer."""

    def action() -> int:
        from rich.console import Console
        from rich.table import Table

        from deltastage.history import read_history
        from deltastage.report import human_bytes

        cfg = _load(config, cedar_config)
        rows = read_history(cfg.staging_dir, limit=limit, peer=peer)
        if as_json:
            _print_json([row.as_json() for row in rows])
            return 0
        table = Table(title=f"deltastage history: last {limit} runs", caption=str(cfg.staging_dir))
        for column in ("date", "run", "peer", "status", "files", "bytes", "wire", "secs"):
            table.add_column(
                column,
                justify="left" if column in ("date", "peer", "status") else "right",
                # A folded date or size is unreadable; names, statuses and errors may fold.
                no_wrap=column not in ("peer", "status"),
                min_width=9 if column == "status" else None,  # "not-ready" whole
            )
        table.add_column("error", overflow="fold")
        for row in rows:
            table.add_row(
                row.run_date,
                str(row.run_id),
                row.peer,
                row.status,
                str(row.files),
                human_bytes(row.bytes),
                human_bytes(row.wire_bytes),
                f"{row.seconds:.1f}",
                row.error or "",
            )
        Console().print(table if rows else "no stage runs recorded yet")
        return 0

    raise typer.Exit(run_guarded(action))


@app.command()
def report(
    html_out: Annotated[
        Path, typer.Option("--html", metavar="OUT.html", help="Write the HTML report here.")
    ],
    config: ConfigOpt = None,
    cedar_config: CedarOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Chart the last N runs.")] = 30,
) -> None:
    """Write a self-contained HTML page: per-peer charts of bytes staged vs transferred."""

    def action() -> int:
        from deltastage.report import write_report

        cfg = _load(config, cedar_config)
        summaries = write_report(cfg.staging_dir, html_out, limit=limit)
        failing = [s.name for s in summaries if s.last_status == "failed"]
        typer.echo(
            f"wrote {html_out}: {len(summaries)} peers"
            + (f"; last run failed: {', '.join(failing)}" if failing else "")
        )
        return 0

    raise typer.Exit(run_guarded(action))


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


# --- the peer side ---------------------------------------------------------------------------


@app.command()
def agent(
    roots: Annotated[
        list[str],
        typer.Option("--root", help="A directory to serve (repeatable); nothing outside is."),
    ],
) -> None:
    """Serve the deltastage protocol on stdin/stdout (an authorized_keys forced command)."""
    from deltastage.agent import run_stdio

    raise typer.Exit(run_stdio(roots))


def main() -> None:
    """The Typer application, as the console script runs it."""
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("deltastage: interrupted\n")
        sys.exit(130)
