"""README.md against the code: the test command CI runs, the config keys, the example config."""

from __future__ import annotations

import re
from pathlib import Path

from deltastage.config import load_config
from deltastage.config.toml import markdown_table

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


def readme_config_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Configuration (TOML)\n")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_lists_every_config_key_as_the_code_describes_it() -> None:
    match = re.search(
        r"<!-- config-keys -->\n(.*?)<!-- /config-keys -->", readme_config_section(), re.S
    )
    assert match, "README.md's configuration section has no <!-- config-keys --> table"
    # to refresh it, paste the output of
    # python -c "from deltastage.config.toml import markdown_table as t; print(t(), end='')"
    assert match.group(1) == markdown_table()


def test_readme_config_example_loads(tmp_path: Path) -> None:
    match = re.search(r"```toml\n(.+?)```", readme_config_section(), re.S)
    assert match, "README.md's configuration section has no TOML example"
    path = tmp_path / "deltastage.toml"
    path.write_text(match.group(1), encoding="utf-8")
    config = load_config(path, check_accounts=False)
    assert [peer.type for peer in config.peers] == ["local", "remote"]
