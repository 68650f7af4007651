"""A site on disk for the stage tests: the config file, the peers' collect dirs, and what the
stage left in the staging dir."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import tomli_w
from typer.testing import CliRunner

from deltastage.cli.main import app
from deltastage.manifest import INTERNAL_PREFIX, MANIFEST_NAME

__all__ = [
    "interruptible_stage",
    "make_peer",
    "peer_json",
    "random_bytes",
    "source_tree",
    "sparse_file",
    "stage_json",
    "staged",
    "tree",
    "write_config",
]


def write_config(
    tmp: Path,
    peers: Mapping[str, Mapping[str, Any]] | Iterable[str] = ("p",),
    *,
    options: Mapping[str, Any] | None = None,
    staging: str | Path = "staging",
) -> Path:
    """``tmp/deltastage.toml``: ``options`` (no wait between retries unless they say), the
    staging dir, and each peer, local and collecting from ``collect/NAME`` unless its own
    settings say otherwise. Relative paths are the config file's, so under ``tmp``."""
    settings = peers if isinstance(peers, Mapping) else {name: {} for name in peers}
    document = {
        "options": {"retry_backoff": 0, **(options or {})},
        "stage": {"staging_dir": str(staging)},
        "peers": [
            {"name": name, "type": "local", "collect_dir": f"collect/{name}", **extra}
            for name, extra in settings.items()
        ],
    }
    path = tmp / "deltastage.toml"
    path.write_text(tomli_w.dumps(document), encoding="utf-8")
    return path


def make_peer(tmp: Path, name: str, files: Mapping[str, bytes], ready: bool = True) -> Path:
    """``tmp/collect/NAME`` holding ``files``, with a collect indicator when ``ready``."""
    collect = tmp / "collect" / name
    collect.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        target = collect / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    if ready:
        (collect / "cback.collect").touch()
    return collect


def sparse_file(path: Path, size: int, blocks: Mapping[int, bytes]) -> None:
    """A file of ``size`` bytes, all hole but ``blocks`` (offset: data) written into it."""
    with open(path, "wb") as stream:
        stream.truncate(size)
        for offset, data in blocks.items():
            stream.seek(offset)
            stream.write(data)


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def staged(tmp: Path, day: date | str, peer: str) -> Path:
    """A peer's dir for ``day`` (a date or YYYY-MM-DD) in ``write_config``'s staging dir."""
    when = day if isinstance(day, date) else date.fromisoformat(day)
    return tmp / "staging" / f"{when:%Y/%m/%d}" / peer


def tree(root: Path) -> dict[str, bytes]:
    """The regular files beneath ``root`` by relative path, without what deltastage keeps
    beside them (the manifest, its internal files)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file()
        and not p.is_symlink()
        and not p.relative_to(root).parts[0].startswith(INTERNAL_PREFIX)
        and p.name != MANIFEST_NAME
    }


def source_tree(collect: Path) -> dict[str, bytes]:
    """What a peer's stage should copy: its collect dir's files without the indicators."""
    return {rel: data for rel, data in tree(collect).items() if not rel.startswith("cback.")}


def peer_json(report: Mapping[str, Any], name: str) -> dict[str, Any]:
    """One peer's entry in a stage report."""
    found: dict[str, Any] = next(p for p in report["peers"] if p["name"] == name)
    return found


def stage_json(config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """``deltastage stage --config CONFIG --json ARGS``: the exit code and the report."""
    result = CliRunner().invoke(app, ["stage", "--config", str(config), "--json", *args])
    assert result.stdout.strip(), result.output
    return result.exit_code, json.loads(result.stdout)


def interruptible_stage(config: Path, *args: str) -> subprocess.Popen[str]:
    """``python -m deltastage stage --config CONFIG ARGS`` as a child process that SIGINT
    reaches (a shell's background job, a CI step say, ignores SIGINT, and so would the
    child), its output piped as text."""
    command = [sys.executable, "-m", "deltastage", "stage", "--config", str(config), *args]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
