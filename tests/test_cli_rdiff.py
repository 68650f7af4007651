"""The rdiff-like commands through the real CLI: round trips and one-line refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deltastage.cli.main import app

runner = CliRunner()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    basis = os.urandom(300_000)
    new = basis[:1000] + b"inserted" + basis[1000:200_000] + basis[201_000:] + b"end"
    (tmp_path / "basis").write_bytes(basis)
    (tmp_path / "new").write_bytes(new)
    return {name: tmp_path / name for name in ("basis", "new", "sig", "delta", "out")}


def invoke(*args: str | Path, stdin: bytes | None = None) -> tuple[int, str, bytes]:
    result = runner.invoke(app, [str(a) for a in args], input=stdin)
    return result.exit_code, result.stderr, result.stdout_bytes


def one_line_error(code: int, stderr: str) -> None:
    assert code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deltastage: error: "), stderr
    assert "Traceback" not in stderr


def test_signature_delta_patch_round_trip(files: dict[str, Path]) -> None:
    assert invoke("signature", files["basis"], files["sig"], "-b", "1024")[0] == 0
    assert invoke("delta", files["sig"], files["new"], files["delta"])[0] == 0
    assert files["delta"].stat().st_size < 5000
    assert invoke("patch", files["basis"], files["delta"], files["out"])[0] == 0
    assert files["out"].read_bytes() == files["new"].read_bytes()
    assert not [p for p in files["out"].parent.iterdir() if p.name.startswith(".")]


def test_stdin_and_stdout(files: dict[str, Path]) -> None:
    code, _, sig = invoke("signature", "-", "-", stdin=files["basis"].read_bytes())
    assert code == 0
    files["sig"].write_bytes(sig)
    code, _, delta = invoke("delta", files["sig"], "-", "-", stdin=files["new"].read_bytes())
    assert code == 0
    code, _, out = invoke("patch", files["basis"], "-", "-", stdin=delta)
    assert code == 0 and out == files["new"].read_bytes()


def test_patch_refuses_a_wrong_basis_and_leaves_no_output(files: dict[str, Path]) -> None:
    invoke("signature", files["basis"], files["sig"])
    invoke("delta", files["sig"], files["new"], files["delta"])
    code, stderr, _ = invoke("patch", files["new"], files["delta"], files["out"])
    one_line_error(code, stderr)
    assert "basis" in stderr
    assert not files["out"].exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_delta_is_refused_and_out_is_absent(files: dict[str, Path], damage: str) -> None:
    invoke("signature", files["basis"], files["sig"])
    invoke("delta", files["sig"], files["new"], files["delta"])
    data = bytearray(files["delta"].read_bytes())
    if damage == "truncate":
        data = data[:-5]
    elif damage == "flip":
        data[len(data) // 2] ^= 0x40
    else:
        data = bytearray(b"not a delta at all" * 3)
    files["delta"].write_bytes(bytes(data))
    code, stderr, _ = invoke("patch", files["basis"], files["delta"], files["out"])
    one_line_error(code, stderr)
    assert not files["out"].exists()
    assert not [p for p in files["out"].parent.iterdir() if p.name.startswith(".out")]


def test_missing_and_unusable_inputs(files: dict[str, Path], tmp_path: Path) -> None:
    code, stderr, _ = invoke("signature", tmp_path / "nope", files["sig"])
    one_line_error(code, stderr)
    assert "nope" in stderr and not files["sig"].exists()
    code, stderr, _ = invoke("patch", "-", files["delta"], files["out"])
    one_line_error(code, stderr)
    assert code == 2
    code, stderr, _ = invoke("delta", files["basis"], files["new"], files["delta"])
    one_line_error(code, stderr)
    assert "signature" in stderr and not files["delta"].exists()
    code, stderr, _ = invoke("signature", tmp_path, files["sig"])
    one_line_error(code, stderr)


def test_three_bases_round_trip(tmp_path: Path) -> None:
    from deltastage import fastargv

    parts = [os.urandom(70_000) for _ in range(3)]
    bases = [tmp_path / f"basis{k}" for k in range(3)]
    for path, data in zip(bases, parts, strict=True):
        path.write_bytes(data)
    new = parts[2][:30_000] + b"fresh" + parts[0] + parts[1][10_000:] + parts[2][:5000]
    (tmp_path / "new").write_bytes(new)
    sig, delta, out = tmp_path / "sig", tmp_path / "delta", tmp_path / "out"
    assert invoke("signature", *bases, sig, "-b", "1024")[0] == 0
    assert invoke("delta", sig, tmp_path / "new", delta)[0] == 0
    assert delta.stat().st_size < 3000
    assert invoke("patch", *bases, delta, out)[0] == 0
    assert out.read_bytes() == new
    # The typer-free start reads the same command lines alike.
    names = [str(p) for p in bases]
    assert fastargv.run(["signature", *names, str(sig), "-b", "1024"]) == 0
    assert fastargv.run(["delta", str(sig), str(tmp_path / "new"), str(delta)]) == 0
    out.unlink()
    assert fastargv.run(["patch", *names, str(delta), str(out)]) == 0
    assert out.read_bytes() == new
    code, _, piped = invoke("patch", *bases, delta, "-")
    assert code == 0 and piped == new
    # Bases in another order, or one missing, are another set of bases: refused.
    code, stderr, _ = invoke("patch", bases[1], bases[0], bases[2], delta, out)
    one_line_error(code, stderr)
    code, stderr, _ = invoke("patch", *bases[:2], delta, out)
    one_line_error(code, stderr)
    assert out.read_bytes() == new


def test_more_than_eight_bases_are_refused(files: dict[str, Path]) -> None:
    code, stderr, _ = invoke("signature", *[files["basis"]] * 9, files["sig"])
    one_line_error(code, stderr)
    assert "at most 8" in stderr and not files["sig"].exists()
