"""Developer sessions: `nox` runs the tests; lint, typecheck, bench and fuzz on demand."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    session.install(".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "deltastage", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "deltastage", "tests", "benchmarks", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install(".[test]", "mypy")
    session.run("mypy")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks against rdiff and rsync (needs both installed): the delta core,
    then a week of the real Cedar Backup's collect (cedar-week), then a tree of many small
    files (many-files); or what the arguments name."""
    session.install(".[test,bench]")
    runs = [session.posargs] if session.posargs else [["core"], ["cedar-week"], ["many-files"]]
    for args in runs:
        session.run("python", "-m", "benchmarks", *args)


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """A longer hypothesis campaign over every decoder and the config loader."""
    session.install(".[test]")
    session.run(
        "pytest",
        "-m",
        "slow",
        "--hypothesis-profile=fuzz",
        "--hypothesis-show-statistics",
        "tests",
        *session.posargs,
        env={"DELTASTAGE_FUZZ": "1"},
    )
    # the config loaders' fuzz tests carry no slow marker: run them under the long profile too
    session.run(
        "pytest",
        "--hypothesis-profile=fuzz",
        "--hypothesis-show-statistics",
        "tests/test_config_fuzz.py",
        *session.posargs,
    )
