"""The typer-free path for rdiff-like command lines agrees with the typer CLI, and is fast."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deltastage import rdiff
from deltastage.cli import app

ROOT = Path(__file__).resolve().parent.parent

ACCEPTED = [
    ["signature", "b", "s"],
    ["signature", "-", "-"],
    ["signature", "b", "s", "-b", "1024"],
    ["signature", "-b", "64", "b", "-S", "16", "s"],
    ["signature", "b", "s", "--block-size", "2048", "--strong-len=4"],
    ["signature", "b", "s", "--block-size=8", "-b", "9"],
    ["delta", "s", "n", "d"],
    ["delta", "s", "-", "-", "-l", "0"],
    ["delta", "--level", "22", "s", "n", "d"],
    ["delta", "s", "n", "d", "--level=7"],
    ["patch", "b", "d", "o"],
    ["patch", "b", "-", "-"],
]

LEFT_TO_TYPER = [
    [],
    ["stage"],
    ["--version"],
    ["signature", "--help"],
    ["signature", "b"],
    ["signature", "b", "s", "extra"],
    ["signature", "b", "s", "-b"],
    ["signature", "b", "s", "-b=5"],
    ["signature", "b", "s", "-b5"],
    ["signature", "b", "s", "-b", "x"],
    ["signature", "b", "s", "-b", "-5"],
    ["signature", "b", "s", "-b", "٣"],
    ["signature", "b", "s", "--bogus", "1"],
    ["signature", "--", "b", "s"],
    ["delta", "s", "n", "d", "-l", "23"],
    ["delta", "s", "n", "d", "-b", "5"],
    ["patch", "b", "d", "o", "-l", "3"],
]


def typer_call(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, Any]]:
    """What the typer CLI passes to the rdiff function for ``argv``, defaults filled in."""
    seen: list[tuple[str, dict[str, Any]]] = []
    for name in ("signature_file", "delta_file", "patch_file"):
        real = getattr(rdiff, name)

        def record(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> None:
            bound = inspect.signature(_real).bind(*args, **kwargs)
            bound.apply_defaults()
            seen.append((_name, dict(bound.arguments)))

        monkeypatch.setattr(rdiff, name, record)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("argv", ACCEPTED, ids=" ".join)
def test_fast_path_calls_what_typer_calls(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    call = rdiff.parse_argv(argv)
    assert call is not None
    function = getattr(rdiff, f"{call.command}_file")
    bound = inspect.signature(function).bind(*call.paths, **call.options)
    bound.apply_defaults()
    assert typer_call(argv, monkeypatch) == (function.__name__, dict(bound.arguments))


@pytest.mark.parametrize("argv", LEFT_TO_TYPER, ids=" ".join)
def test_anything_unusual_is_left_to_typer(argv: list[str]) -> None:
    assert rdiff.parse_argv(argv) is None
    assert rdiff.run_argv(argv) is None


def test_errors_match_the_typer_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "basis").write_bytes(os.urandom(5000))
    (tmp_path / "garbage").write_bytes(b"not a delta at all, not at all")
    cases = [
        ["signature", str(tmp_path / "missing"), str(tmp_path / "sig")],
        ["signature", str(tmp_path / "basis"), str(tmp_path / "sig"), "-b", "0"],
        ["delta", str(tmp_path / "garbage"), str(tmp_path / "basis"), str(tmp_path / "d")],
        ["patch", str(tmp_path / "basis"), str(tmp_path / "garbage"), str(tmp_path / "out")],
        ["patch", "-", str(tmp_path / "garbage"), str(tmp_path / "out")],
        ["signature", str(tmp_path / "basis"), str(tmp_path / "no-such-dir" / "sig")],
    ]
    for argv in cases:
        code = rdiff.run_argv(argv)
        fast = capsys.readouterr().err
        result = CliRunner().invoke(app, argv)
        assert code == result.exit_code != 0, argv
        assert fast == result.stderr, argv
        assert len(fast.splitlines()) == 1 and fast.startswith("deltastage: error: ")
    assert not (tmp_path / "out").exists() and not (tmp_path / "sig").exists()


def importtime(tmp_path: Path, *argv: str) -> tuple[set[str], bytes]:
    """Top-level packages ``python -m deltastage ARGV`` imports, and its stdout."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "deltastage", *argv],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    modules = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in proc.stderr.decode().splitlines()
        if line.startswith("import time:")
    }
    return modules, proc.stdout


def test_start_up_imports_no_cli_framework(tmp_path: Path) -> None:
    basis, new = os.urandom(20_000), os.urandom(100)
    (tmp_path / "basis").write_bytes(basis)
    (tmp_path / "new").write_bytes(basis[:9000] + new + basis[9000:])
    files = {n: str(tmp_path / n) for n in ("basis", "new", "sig", "delta", "out")}
    sig_mods, _ = importtime(tmp_path, "signature", files["basis"], files["sig"])
    delta_mods, _ = importtime(tmp_path, "delta", files["sig"], files["new"], files["delta"])
    patch_mods, out = importtime(tmp_path, "patch", files["basis"], files["delta"], "-")
    assert out == (tmp_path / "new").read_bytes()
    for modules in (sig_mods, delta_mods, patch_mods):
        assert "deltastage" in modules and not modules & {"typer", "pydantic", "rich"}


def test_patch_to_a_pipe_writes_nothing_for_a_wrong_basis(tmp_path: Path) -> None:
    basis = os.urandom(50_000)
    (tmp_path / "basis").write_bytes(basis)
    (tmp_path / "wrong").write_bytes(basis[:-1] + bytes([basis[-1] ^ 1]))
    (tmp_path / "new").write_bytes(basis[:100] + b"edit" + basis[100:])
    p = {n: str(tmp_path / n) for n in ("basis", "wrong", "new", "sig", "delta")}
    assert rdiff.run_argv(["signature", p["basis"], p["sig"], "-b", "512"]) == 0
    assert rdiff.run_argv(["delta", p["sig"], p["new"], p["delta"]]) == 0
    proc = subprocess.run(
        [sys.executable, "-m", "deltastage", "patch", p["wrong"], p["delta"], "-"],
        cwd=ROOT,
        capture_output=True,
    )
    assert proc.returncode != 0 and proc.stdout == b""
    assert b"different basis" in proc.stderr
