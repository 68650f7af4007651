"""The layering rules of ARCHITECTURE.md, enforced: imports point downwards only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "deltastage"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def python_files(sub: str = "") -> list[Path]:
    return sorted((PACKAGE / sub).rglob("*.py"))


@pytest.mark.parametrize("layer", ["delta", "protocol", "transform"])
def test_pure_layers_do_no_io_and_import_nothing_above(layer: str) -> None:
    allowed_internal = {"deltastage.errors", "deltastage.hashing", f"deltastage.{layer}"}
    if layer == "protocol":
        allowed_internal.add("deltastage.delta")
    forbidden_stdlib = {"socket", "subprocess", "paramiko", "sshtunnel", "typer", "threading"}
    forbidden_stdlib |= {"os", "io", "pathlib", "shutil", "tempfile"}
    if layer == "transform":
        # the rebuild runs where a patch does, which loads no numpy
        forbidden_stdlib.add("numpy")
    for path in python_files(layer):
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top not in forbidden_stdlib, f"{path.name} imports {name}"
            if top == "deltastage":
                assert any(
                    name == allowed or name.startswith(allowed + ".")
                    for allowed in allowed_internal
                ), f"{path.relative_to(PACKAGE)} imports {name}"


def test_only_ssh_transport_imports_paramiko_and_sshtunnel() -> None:
    for path in python_files():
        if path.relative_to(PACKAGE).as_posix() == "transports/ssh.py":
            continue
        mods = {name.split(".")[0] for name in imports_of(path)}
        assert not mods & {"paramiko", "sshtunnel"}, path


def test_only_cli_imports_typer() -> None:
    for path in python_files():
        if path.relative_to(PACKAGE).parts[0] == "cli":
            continue
        assert "typer" not in {n.split(".")[0] for n in imports_of(path)}, path


def test_the_master_end_knows_nothing_of_the_stage() -> None:
    for path in python_files("master"):
        for name in imports_of(path):
            assert not name.startswith("deltastage.stage"), f"{path.name} imports {name}"


@pytest.mark.parametrize(
    "module",
    [
        "basis",
        "batchcommit",
        "committer",
        "commitworker",
        "localcopy",
        "ownership",
        "peerdir",
        "plan",
        "presign",
        "readback",
        "receiver",
        "report",
    ],
)
def test_stage_roles_off_the_network_import_no_session(module: str) -> None:
    """Only the attempt (and the peer and run around it) and the generator (a request's
    shape) know the master's end: the committer never fetches, the receiver never sends."""
    for name in imports_of(PACKAGE / "stage" / f"{module}.py"):
        assert not name.startswith(("deltastage.master", "deltastage.transports")), name
