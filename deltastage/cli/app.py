"""The Typer app, its --version, how its help shows parameters, and the mapping of errors
to one line and an exit code.

Each command module under ``cli/`` declares its commands; ``cli/main``
imports them in the order ``--help`` lists them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from deltastage import __version__
from deltastage.errors import REPORTED, exit_status

__all__ = ["Command", "Group", "app", "json_command", "main", "run_guarded"]

# What the parser raises for a command line it refuses (an unknown option, a bad value):
# click's UsageError, the base of typer.BadParameter (typer may bundle its own click).
_UsageError: type[Exception] = next(
    cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError"
)


class _Option(TyperOption):
    """An option as Typer-built tools show it: a flag with no value placeholder, an option
    that takes a value with its metavar (each of ours declares one), never a Python type."""

    def display_type_rich(self, ctx: object) -> str | None:
        if self.is_flag:
            return None
        return self.metavar or (self.name or "").upper()


class _Argument(TyperArgument):
    """An argument as Typer-built tools show it: its name in capitals, bracketed in the usage
    line when optional, and no Python type beside it."""

    @property
    def display_name_raw(self) -> str:
        return self.metavar or (self.name or "").upper()

    def display_type_rich(self, ctx: object) -> str | None:
        return None

    def get_usage_pieces(self, ctx: object) -> list[str]:
        return [self.display_name_raw if self.required else f"[{self.display_name_raw}]"]


_SHOWN_AS: dict[type, type] = {TyperOption: _Option, TyperArgument: _Argument}


def _conventional(params: Sequence[object]) -> None:
    """Show ``params`` the conventional way (typer labels each with its Python type, flags
    too): the classes above only change how a parameter is displayed, not how it parses.
    Typer makes some of the parameters itself (--help, the completion options), so they
    are switched here rather than declared."""
    for param in params:
        shown_as = _SHOWN_AS.get(type(param))
        if shown_as is not None:
            param.__class__ = shown_as


class Command(TyperCommand):
    """A command whose help shows its parameters the conventional way (``_conventional``).

    A command with ``--json`` names its report for a run that could not start in
    ``json_report`` (see ``json_command``): a command line the parser itself rejects with
    ``--json`` on it then prints that report, as every other exit path does.
    """

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        _conventional(params)
        return params

    def json_report(self, error: str, code: int) -> object | None:
        """The JSON report of a run stopped by ``error`` before it began; None: no JSON."""
        return None

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: Any = None,
        **extra: Any,
    ) -> Any:
        wants_json = "--json" in _options_of(args)  # read before the parse consumes args
        try:
            return super().make_context(info_name, args, parent, **extra)
        except _UsageError as exc:
            message = getattr(exc, "format_message", exc.__str__)()
            code = getattr(exc, "exit_code", 2)
            report = self.json_report(message, code) if wants_json else None
            if report is not None:
                from deltastage.cli.support import print_json

                print_json(report)
            raise  # the usage message still goes to stderr, with its exit code


def json_command(failure: Callable[[str, int], object]) -> type[Command]:
    """A ``Command`` whose usage errors with ``--json`` print ``failure(error, exit_code)``."""

    class JsonCommand(Command):
        def json_report(self, error: str, code: int) -> object | None:
            return failure(error, code)

    return JsonCommand


def _options_of(args: Sequence[str]) -> Sequence[str]:
    """The words of a command line before a ``--`` (after it, every word is an argument)."""
    return args[: args.index("--")] if "--" in args else args


class Group(TyperGroup):
    """A group whose help shows its parameters the conventional way (``_conventional``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        _conventional(params)
        return params


app = typer.Typer(
    name="deltastage",
    help="Stage nightly backups from many peers with the rsync algorithm, verified end to end.",
    cls=Group,
    no_args_is_help=True,
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
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """deltastage: verified, delta-transfer backup staging."""


def main() -> None:
    """The Typer application, as the console script runs it."""
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("deltastage: interrupted\n")
        sys.exit(130)
