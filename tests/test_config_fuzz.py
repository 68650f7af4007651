"""Fuzzing both loaders: whatever the file holds, only ConfigError comes out.

A file that does load must also survive config_to_toml -> load_config unchanged, so the
fuzzer checks the writer as well as the rejecters. HYPOTHESIS_PROFILE=fuzz runs it long.
"""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from deltastage.config import Config, config_to_toml, load_config
from deltastage.config.cedar import load_cedar_config
from deltastage.errors import ConfigError
from tests.test_config import problem_lines

DATA = Path(__file__).resolve().parent / "data" / "cedar"
CEDAR_SAMPLES = [p.read_bytes() for p in sorted(DATA.glob("*.conf"))]

TOML_SAMPLE = b"""\
[options]
starting_day = "monday"
backup_user = "backup"
backup_group = "backup"
file_mode = "0640"
jobs = 2

[stage]
staging_dir = "staging"

[[peers]]
name = "db1"
type = "local"
collect_dir = "/srv/backup/collect"
ignore_failures = "daily"

[[peers]]
name = "web1"
type = "remote"
collect_dir = "/var/backup/collect"
port = 2222
gateway = "jump@bastion:22"
agent_command = ["deltastage", "agent"]
identity_file = "keys/id"
"""

TOML_LITERALS = [
    "1",
    "-1",
    "0",
    "65536",
    "99999999999999999999",
    "1.5",
    "nan",
    "inf",
    "-inf",
    "true",
    '""',
    '"x"',
    '"/"',
    '"../x"',
    '".."',
    '"a b"',
    '"0640"',
    '"monday"',
    '"remote"',
    '"local"',
    '"\\u0000"',
    "[]",
    "[1]",
    '["a", 1]',
    "{}",
    "{ a = 1 }",
    "1979-05-27",
    '"user@:x"',
]
TOML_KEYS = [
    "name",
    "type",
    "collect_dir",
    "ignore_failures",
    "host",
    "port",
    "user",
    "gateway",
    "agent_command",
    "identity_file",
    "known_hosts",
    "connect_timeout",
    "idle_timeout",
    "starting_day",
    "file_mode",
    "dir_mode",
    "jobs",
    "staging_dir",
    "collect_indicator",
    "stage_indicator",
    "retry_backoff",
    "peers",
    "options",
    "stage",
    "bogus",
]


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


def only_config_errors(loader: Callable[[Path], Config], path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        config = loader(path)
    except ConfigError as exc:
        problem_lines(str(exc), path)
        event("rejected")
        return
    event("loaded")
    again = path.with_suffix(".again.toml")
    again.write_text(config_to_toml(config), encoding="utf-8")
    assert load_config(again, check_accounts=False) == config


def load_toml(path: Path) -> Config:
    return load_config(path, check_accounts=False)


def load_cedar(path: Path) -> Config:
    return load_cedar_config(path, check_accounts=False)[0]


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    for position, length, insert in edits:
        at = position % (len(data) + 1)
        data = data[:at] + insert + data[at + length :]
    return data


edits = st.lists(
    st.tuples(st.integers(0, 1 << 16), st.integers(0, 8), st.binary(max_size=8)),
    min_size=1,
    max_size=6,
)


@given(st.binary(max_size=400))
def test_random_bytes(scratch: Path, data: bytes) -> None:
    only_config_errors(load_toml, scratch / "random.toml", data)
    only_config_errors(load_cedar, scratch / "random.conf", data)


@given(edits)
def test_mutated_toml(scratch: Path, changes: list[tuple[int, int, bytes]]) -> None:
    only_config_errors(load_toml, scratch / "mutated.toml", mutate(TOML_SAMPLE, changes))


@given(st.sampled_from(CEDAR_SAMPLES), edits)
def test_mutated_cedar_xml(
    scratch: Path, sample: bytes, changes: list[tuple[int, int, bytes]]
) -> None:
    only_config_errors(load_cedar, scratch / "mutated.conf", mutate(sample, changes))


@given(
    st.lists(
        st.tuples(st.integers(0, 100), st.sampled_from(TOML_KEYS), st.sampled_from(TOML_LITERALS)),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
def test_toml_values_of_every_type(
    scratch: Path, changes: list[tuple[int, str, str]], replace: bool
) -> None:
    """Swap values (or add keys) line by line so every key meets every TOML type."""
    lines = TOML_SAMPLE.decode().splitlines()
    for line_no, key, literal in changes:
        at = line_no % len(lines)
        if replace and "=" in lines[at]:
            lines[at] = lines[at].split("=", 1)[0] + "= " + literal
        else:
            lines.insert(at + 1, f"{key} = {literal}")
    only_config_errors(load_toml, scratch / "typed.toml", "\n".join(lines).encode())


CEDAR_TAGS = [
    "options",
    "peers",
    "stage",
    "peer",
    "name",
    "type",
    "collect_dir",
    "staging_dir",
    "ignore_failures",
    "backup_user",
    "backup_group",
    "starting_day",
    "working_dir",
    "rcp_command",
    "rsh_command",
    "cback_command",
    "managed",
    "managed_actions",
    "pre_action_hook",
    "action",
    "command",
]
CEDAR_TEXT = st.sampled_from(
    [
        "",
        "local",
        "remote",
        "monday",
        "Y",
        "N",
        "yes",
        "daily",
        "weekly",
        "all",
        "none",
        "/srv/c",
        "/srv",
        "rel/path",
        "..",
        "db1",
        "db1",
        "a/b",
        "scp -P 2222",
        "ssh -p x",
        "scp 'open",
        "ssh -J u@h:1 -i k",
        "collect,purge",
        "stage",
    ]
) | st.text(max_size=12)


def elements(depth: int) -> st.SearchStrategy[ET.Element]:
    def build(tag: str, text: str, children: list[ET.Element]) -> ET.Element:
        element = ET.Element(tag)
        element.text = text
        element.extend(children)
        return element

    children = st.lists(elements(depth - 1), max_size=4) if depth else st.just([])
    return st.builds(build, st.sampled_from(CEDAR_TAGS), CEDAR_TEXT, children)


@given(st.lists(elements(3), max_size=5))
def test_generated_cedar_documents(scratch: Path, sections: list[ET.Element]) -> None:
    root = ET.Element("cb_config")
    root.extend(sections)
    try:
        data = ET.tostring(root, encoding="utf-8")
    except ValueError:
        return  # text the serializer itself refuses (lone surrogates)
    only_config_errors(load_cedar, scratch / "generated.conf", data)
