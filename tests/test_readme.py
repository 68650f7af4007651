"""README.md's test command is the one CI runs: keep them from drifting apart."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_command(label: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- {label} -->\s*```(?:sh|bash)?\n(.+?)\n```", text, re.S)
    assert match, f"README.md has no block marked <!-- {label} -->"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert readme_command("test-command") in ci.splitlines()


def test_readme_main_command_uses_the_bundled_example() -> None:
    command = readme_command("main-command")
    for path in re.findall(r"examples/\S+", command):
        assert (ROOT / path).exists(), path
