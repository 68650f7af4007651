"""The TOML config: the documented schema, defaults, every validation rule, TOML output."""

from __future__ import annotations

import os
import re
from dataclasses import MISSING, fields
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deltastage.config import (
    DEFAULT_AGENT_COMMAND,
    IGNORE_FAILURE_MODES,
    WEEKDAYS,
    Config,
    Options,
    PeerConfig,
    config_to_toml,
    failure_ignored,
    load_config,
    parse_gateway,
    parse_mode,
)
from deltastage.config.checks import CEDAR_INDICATORS
from deltastage.config.schema import Context, keys_of
from deltastage.errors import ConfigError
from deltastage.models import Gateway

SCHEMA_EXAMPLE = """\
[options]
starting_day = "monday"     # first day of the weekly cycle (ignore_failures, --full)
backup_user = "backup"      # owner of staged files and dirs when run as root
backup_group = "backup"
# file_mode = "0640"        # optional; default: keep the source's permission bits
# collect_indicator = "cback.collect"   stage_indicator = "cback.stage"   (defaults)

[stage]
staging_dir = "/srv/backup/staging"

[[peers]]
name = "db1"
type = "local"                      # "local" | "remote"
collect_dir = "/srv/backup/collect"
ignore_failures = "none"            # none | all | daily | weekly (default none)
"""

STAGE = '[stage]\nstaging_dir = "/srv/staging"\n'
LOCAL = '[[peers]]\nname = "db1"\ntype = "local"\ncollect_dir = "/srv/db1"\n'


def write(tmp_path: Path, text: str, name: str = "deltastage.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, **kwargs: bool) -> Config:
    return load_config(write(tmp_path, text), **kwargs)


def problem_lines(message: str, source: Path) -> list[str]:
    """The problems a ConfigError message reports for ``source``, each checked to be one
    whole line naming the file: one problem alone on its line, several under a heading."""
    heading, *rest = message.split("\n")
    if not rest:
        assert heading.startswith(f"{source}: "), message
        return [heading]
    more = re.fullmatch(r"  and (\d+) more", rest[-1])
    problems = rest[:-1] if more else rest
    assert heading == f"{source}: {len(problems) + int(more[1] if more else 0)} problems"
    assert all(line.startswith(f"  {source}: ") for line in problems), message
    return [line.removeprefix("  ") for line in problems]


def error_of(tmp_path: Path, text: str, **kwargs: bool) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)
    message = str(info.value)
    problem_lines(message, path)
    return message


# --- the schema as documented ------------------------------------------------------------


def test_the_documented_schema_loads_as_written(tmp_path: Path) -> None:
    config = load_text(tmp_path, SCHEMA_EXAMPLE)
    assert config.source == tmp_path / "deltastage.toml"
    assert config.staging_dir == Path("/srv/backup/staging")
    assert config.options == Options(
        starting_day="monday", backup_user="backup", backup_group="backup"
    )
    assert config.peers == (
        PeerConfig(name="db1", type="local", collect_dir=Path("/srv/backup/collect")),
    )
    assert config.peer("db1") is config.peers[0]


def test_options_and_peers_have_documented_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, STAGE + LOCAL)
    assert config.options == Options()
    assert config.options.collect_indicator == "cback.collect"
    assert config.options.stage_indicator == "cback.stage"
    peer = config.peers[0]
    assert peer.ignore_failures == "none"
    assert (peer.connect_timeout, peer.idle_timeout) == (30.0, 300.0)
    assert not peer.remote


def test_every_option_extension_is_read(tmp_path: Path) -> None:
    text = (
        """
[options]
starting_day = "Friday"
file_mode = "0640"
dir_mode = "2750"
collect_indicator = "ready"
stage_indicator = "done"
jobs = 4
retries = 0
retry_backoff = 1
compress_level = 0
link_unchanged = false
max_files_per_peer = 10
max_bytes_per_peer = 1000
max_frame_size = 2097152
"""
        + STAGE
        + LOCAL
    )
    options = load_text(tmp_path, text).options
    assert options == Options(
        starting_day="friday",
        file_mode=0o640,
        dir_mode=0o2750,
        collect_indicator="ready",
        stage_indicator="done",
        jobs=4,
        retries=0,
        retry_backoff=1.0,
        compress_level=0,
        link_unchanged=False,
        max_files_per_peer=10,
        max_bytes_per_peer=1000,
        max_frame_size=2097152,
    )


def test_relative_paths_resolve_against_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc" / "deltastage"
    conf_dir.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # a different cwd must not matter
    path = conf_dir / "ds.toml"
    path.write_text(
        '[stage]\nstaging_dir = "../../staging"\n'
        '[[peers]]\nname = "db1"\ntype = "local"\ncollect_dir = "collect/./db1/"\n'
        '[[peers]]\nname = "web1"\ntype = "remote"\ncollect_dir = "/c"\n'
        'identity_file = "keys/id"\nknown_hosts = "/etc/ssh/known"\n',
        encoding="utf-8",
    )
    config = load_config(Path("etc/deltastage/ds.toml"))
    assert config.staging_dir == tmp_path / "staging"
    assert config.peers[0].collect_dir == conf_dir / "collect" / "db1"
    assert config.peers[1].identity_file == conf_dir / "keys" / "id"
    assert config.peers[1].known_hosts == Path("/etc/ssh/known")


def test_remote_peer_defaults_follow_cedar(tmp_path: Path) -> None:
    text = (
        '[options]\nbackup_user = "backup"\n'
        + STAGE
        + ('[[peers]]\nname = "web1.example.org"\ntype = "remote"\ncollect_dir = "/var/c/"\n')
    )
    peer = load_text(tmp_path, text).peers[0]
    assert peer.remote
    assert peer.host == "web1.example.org"  # Cedar uses the peer's name as its host
    assert peer.user == "backup"  # options.backup_user, as Cedar's remote user default
    assert peer.port == 22
    assert peer.agent_command == DEFAULT_AGENT_COMMAND
    assert peer.collect_dir == Path("/var/c")
    assert peer.gateway is None and peer.identity_file is None


def test_remote_peer_settings(tmp_path: Path) -> None:
    text = (
        STAGE
        + """
[[peers]]
name = "web1"
type = "remote"
collect_dir = "/var/c"
host = "10.0.0.5"
port = 2222
user = "pull"
agent_command = "/opt/ds/bin/deltastage agent --root '/var/c dir'"
gateway = "jump@bastion.example.org:2200"
connect_timeout = 5
idle_timeout = 60.5
ignore_failures = "weekly"

[[peers]]
name = "web2"
type = "remote"
collect_dir = "/var/c"
agent_command = ["sudo", "-u", "backup", "deltastage", "agent"]
"""
    )
    web1, web2 = load_text(tmp_path, text).peers
    assert (web1.host, web1.port, web1.user) == ("10.0.0.5", 2222, "pull")
    assert web1.agent_command == ("/opt/ds/bin/deltastage", "agent", "--root", "/var/c dir")
    assert web1.gateway == Gateway(host="bastion.example.org", port=2200, user="jump")
    assert (web1.connect_timeout, web1.idle_timeout) == (5.0, 60.5)
    assert web1.ignore_failures == "weekly"
    assert web2.agent_command == ("sudo", "-u", "backup", "deltastage", "agent")
    assert web2.user is None  # no backup_user to fall back on


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bastion", Gateway("bastion", 22, None)),
        ("bastion:2222", Gateway("bastion", 2222, None)),
        ("jump@bastion", Gateway("bastion", 22, "jump")),
        ("jump@bastion.example.org:2222", Gateway("bastion.example.org", 2222, "jump")),
        ("[2001:db8::1]:2022", Gateway("2001:db8::1", 2022, None)),
        ("u@[::1]", Gateway("::1", 22, "u")),
    ],
)
def test_gateway_forms(text: str, expected: Gateway) -> None:
    assert parse_gateway(text) == expected


@pytest.mark.parametrize(
    "text", ["", "@host", "host:", "host:port", "host:0", "host:70000", "[::1", "a b", "-oProxy"]
)
def test_bad_gateways(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_gateway(text)


@pytest.mark.parametrize(
    ("text", "mode"), [("0640", 0o640), ("640", 0o640), ("0o755", 0o755), ("2750", 0o2750)]
)
def test_mode_strings(text: str, mode: int) -> None:
    assert parse_mode(text) == mode


@pytest.mark.parametrize("text", ["", "64", "0648", "rw-r-----", "01234567", "0x1ff", "-640"])
def test_bad_mode_strings(text: str) -> None:
    with pytest.raises(ConfigError, match="octal"):
        parse_mode(text)


def test_every_setting_is_a_described_config_key() -> None:
    for model in (Options, PeerConfig):
        assert [name for name, _, _ in keys_of(model)] == [f.name for f in fields(model)]
    assert [name for name, _, _ in keys_of(Config)] == ["staging_dir"]


@pytest.mark.parametrize("model", [Options, PeerConfig])
def test_every_default_is_a_value_its_key_accepts(model: type) -> None:
    context = Context(Path("/etc/deltastage"), remote=True)
    for name, key, default in keys_of(model):
        if default is not MISSING and default is not None:
            assert key.kind.read(key.kind.write(default), context) == default, name


def test_unknown_peer_is_a_config_error(tmp_path: Path) -> None:
    config = load_text(tmp_path, STAGE + LOCAL)
    with pytest.raises(ConfigError, match="no peer named 'db2'"):
        config.peer("db2")


# --- validation: one message naming the file, the key and the reason ---------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[options\n" + STAGE + LOCAL, "TOML syntax error: "),
        ('[options]\nbackup_user = "a\n', "line 2"),
        (
            "[options]\nstarting_dy = 'monday'\n" + STAGE + LOCAL,
            "options.starting_dy: unknown key (did you mean 'starting_day'?)",
        ),
        ("colour = 1\n" + STAGE + LOCAL, "colour: unknown key"),
        ('"we ird" = 1\n' + STAGE + LOCAL, '"we ird": unknown key'),
        (STAGE + LOCAL + "retries = 3\n", "peers[0].retries: unknown key"),
        (
            "[options]\njobs = '4'\n" + STAGE + LOCAL,
            "options.jobs: must be an integer, got a string",
        ),
        ("[options]\njobs = 0\n" + STAGE + LOCAL, "options.jobs: must be from 1 to 256, got 0"),
        ("[options]\nretries = true\n" + STAGE + LOCAL, "options.retries: must be an integer"),
        ("[options]\nretry_backoff = nan\n" + STAGE + LOCAL, "options.retry_backoff: must be from"),
        ("[options]\ncompress_level = 23\n" + STAGE + LOCAL, "options.compress_level: must be"),
        ("[options]\nlink_unchanged = 1\n" + STAGE + LOCAL, "options.link_unchanged: must be true"),
        ("[options]\nbackup_user = 34\n" + STAGE + LOCAL, "options.backup_user: must be a string"),
        ("[options]\nbackup_user = ''\n" + STAGE + LOCAL, "options.backup_user: must not be empty"),
        (
            "[options]\nstarting_day = 'someday'\n" + STAGE + LOCAL,
            "options.starting_day: must be a weekday name",
        ),
        ("[options]\nfile_mode = 640\n" + STAGE + LOCAL, "options.file_mode: must be a string"),
        (
            "[options]\nfile_mode = '0999'\n" + STAGE + LOCAL,
            "options.file_mode: must be an octal permission string",
        ),
        ("[options]\ndir_mode = 'rwx'\n" + STAGE + LOCAL, "options.dir_mode: must be an octal"),
        (
            "[options]\ncollect_indicator = 'a/b'\n" + STAGE + LOCAL,
            "options.collect_indicator: must be a plain file name",
        ),
        (
            "[options]\nstage_indicator = '..'\n" + STAGE + LOCAL,
            "options.stage_indicator: must be a plain file name",
        ),
        (
            "[options]\nstage_indicator = 'cback.collect'\n" + STAGE + LOCAL,
            "options.stage_indicator: must differ from collect_indicator",
        ),
        ("options = 3\n" + STAGE + LOCAL, "options: must be a table, got an integer"),
        (LOCAL, "stage: missing table"),
        ("[stage]\n" + LOCAL, "stage.staging_dir: missing"),
        ("[stage]\nstaging_dir = ''\n" + LOCAL, "stage.staging_dir: must not be empty"),
        (
            '[stage]\nstaging_dir = "/a\\u0000b"\n' + LOCAL,
            "stage.staging_dir: must not contain a NUL",
        ),
        (STAGE, "peers: at least one [[peers]] entry is required"),
        ("peers = []\n" + STAGE, "peers: at least one"),
        ("peers = [1, 2]\n" + STAGE, "peers: must be an array of tables"),
        (STAGE + LOCAL + LOCAL, "peers[1].name: duplicate peer name 'db1' (also peers[0])"),
        (STAGE + '[[peers]]\ntype = "local"\ncollect_dir = "/c"\n', "peers[0].name: missing"),
        (STAGE + '[[peers]]\nname = "x"\ncollect_dir = "/c"\n', "peers[0].type: missing"),
        (
            STAGE + '[[peers]]\nname = "x"\ntype = "nfs"\ncollect_dir = "/c"\n',
            "peers[0].type: must be one of local, remote, got 'nfs'",
        ),
        (STAGE + '[[peers]]\nname = "x"\ntype = "local"\n', "peers[0].collect_dir: missing"),
        (
            STAGE + LOCAL + 'ignore_failures = "sometimes"\n',
            "peers[0].ignore_failures: must be one of none, all, daily, weekly, got 'sometimes'",
        ),
        (STAGE + LOCAL + 'host = "db1.example.org"\n', "peers[0].host: only valid for remote"),
        (STAGE + LOCAL + "connect_timeout = 0\n", "peers[0].connect_timeout: must be from"),
        (STAGE + LOCAL + "idle_timeout = 'long'\n", "peers[0].idle_timeout: must be a number"),
        (
            STAGE + '[[peers]]\nname = "w"\ntype = "remote"\ncollect_dir = "var/c"\n',
            "peers[0].collect_dir: must be an absolute path on the peer",
        ),
        (
            STAGE + '[[peers]]\nname = "w"\ntype = "remote"\ncollect_dir = "/c"\nport = 0\n',
            "peers[0].port: must be from 1 to 65535",
        ),
        (
            STAGE + '[[peers]]\nname = "w"\ntype = "remote"\ncollect_dir = "/c"\nhost = "a b"\n',
            "peers[0].host: not a host name",
        ),
        (
            STAGE + '[[peers]]\nname = "w x"\ntype = "remote"\ncollect_dir = "/c"\n',
            "peers[0].host: missing, and the peer's name is no host name",
        ),
        (
            STAGE + '[[peers]]\nname = "w"\ntype = "remote"\ncollect_dir = "/c"\ngateway = "h:x"\n',
            "peers[0].gateway: gateway port must be a number",
        ),
        (
            STAGE + '[[peers]]\nname = "w"\ntype = "remote"\ncollect_dir = "/c"\n'
            "agent_command = ''\n",
            "peers[0].agent_command: must name a program",
        ),
        (
            STAGE + '[[peers]]\nname = "w"\ntype = "remote"\ncollect_dir = "/c"\n'
            'agent_command = "deltastage \'agent"\n',
            "peers[0].agent_command: cannot split",
        ),
        (
            STAGE + '[[peers]]\nname = "w"\ntype = "remote"\ncollect_dir = "/c"\n'
            "agent_command = [1]\n",
            "peers[0].agent_command: must be a string or an array",
        ),
        (
            '[stage]\nstaging_dir = "/srv/db1/staging"\n' + LOCAL,
            "peers[0].collect_dir: the staging dir lies inside collect dir '/srv/db1'",
        ),
        (
            '[stage]\nstaging_dir = "/srv"\n' + LOCAL,
            "peers[0].collect_dir: collect dir '/srv/db1' lies inside the staging dir",
        ),
    ],
)
def test_validation_errors_name_key_and_reason(tmp_path: Path, text: str, fragment: str) -> None:
    assert fragment in error_of(tmp_path, text)


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "a/b",
        "../etc",
        "/abs",
        ".hidden",
        "a\\b",
        "nul\\u0000",
        "tab\\t",
        " padded",
        "x" * 256,
    ],
)
def test_peer_names_must_be_safe_directory_names(tmp_path: Path, name: str) -> None:
    text = STAGE + f'[[peers]]\nname = "{name}"\ntype = "local"\ncollect_dir = "/c"\n'
    assert "peers[0].name: " in error_of(tmp_path, text)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        "[options]\njobs = 0\nstarting_day = 'x'\n"
        + STAGE
        + '[[peers]]\nname = "a/b"\ntype = "local"\ncollect_dir = "/c"\nignore_failures = 1\n'
    )
    message = error_of(tmp_path, text)
    path = tmp_path / "deltastage.toml"
    keys = ["options.jobs", "options.starting_day", "peers[0].name", "peers[0].ignore_failures"]
    # a heading naming the file, then one line per problem: the file, the key, the reason
    assert message.split("\n")[0] == f"{path}: 4 problems"
    lines = problem_lines(message, path)
    assert sorted(line.split(": ")[1] for line in lines) == sorted(keys)


def test_an_unknown_key_line_suggests_the_likely_one(tmp_path: Path) -> None:
    text = STAGE + LOCAL + 'hots = "x"\nport = 0\n'
    lines = problem_lines(error_of(tmp_path, text), tmp_path / "deltastage.toml")
    assert f"{tmp_path / 'deltastage.toml'}: peers[0].hots: unknown key (did you mean 'host'?)" in (
        lines
    )


def test_a_long_list_of_problems_is_capped_with_a_count(tmp_path: Path) -> None:
    text = STAGE + LOCAL + "".join(f"unknown{n} = 1\n" for n in range(30))
    message = error_of(tmp_path, text)
    assert message.split("\n")[0].endswith(": 30 problems")
    assert message.split("\n")[-1] == "  and 10 more"
    assert len(problem_lines(message, tmp_path / "deltastage.toml")) == 20


def test_values_with_line_breaks_stay_on_their_problem_line(tmp_path: Path) -> None:
    text = STAGE + '[[peers]]\nname = "a\\nb/c"\ntype = "x\\r\\ny"\ncollect_dir = "/c"\n'
    lines = problem_lines(error_of(tmp_path, text), tmp_path / "deltastage.toml")
    assert len(lines) == 2 and all("\\n" in line for line in lines)


def test_accounts_are_checked_when_asked_or_when_root(tmp_path: Path) -> None:
    text = "[options]\nbackup_user = 'no-such-user-ds'\nbackup_group = 'no-such-group-ds'\n"
    text += STAGE + LOCAL
    message = error_of(tmp_path, text, check_accounts=True)
    assert "options.backup_user: no such user 'no-such-user-ds'" in message
    assert "options.backup_group: no such group 'no-such-group-ds'" in message
    assert load_text(tmp_path, text, check_accounts=False).options.backup_user
    if os.geteuid() == 0:
        error_of(tmp_path, text)
    else:
        assert load_text(tmp_path, text).options.backup_group == "no-such-group-ds"


def test_account_names_with_a_nul_are_no_accounts(tmp_path: Path) -> None:
    text = '[options]\nbackup_user = "a\\u0000b"\nbackup_group = "\\u0000"\n' + STAGE + LOCAL
    message = error_of(tmp_path, text, check_accounts=True)
    assert "options.backup_user: no such user 'a\\x00b'" in message
    assert "options.backup_group: no such group '\\x00'" in message


def test_existing_accounts_pass(tmp_path: Path) -> None:
    text = "[options]\nbackup_user = 'root'\nbackup_group = 'root'\n" + STAGE + LOCAL
    assert load_text(tmp_path, text, check_accounts=True).options.backup_user == "root"


def test_unreadable_and_non_toml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read TOML config"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[options]")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"#" * (5 << 20))
    with pytest.raises(ConfigError, match="larger than"):
        load_config(huge)


# --- failure_ignored: Cedar's rule -------------------------------------------------------

MONDAY = date(2024, 1, 1)


@pytest.mark.parametrize(
    ("mode", "day_offset", "full", "ignored"),
    [
        ("none", 0, False, False),
        ("none", 3, True, False),
        ("all", 0, False, True),
        ("all", 3, True, True),
        ("daily", 3, False, True),  # an ordinary day: a daily peer may be missing
        ("daily", 0, False, False),  # the weekly run: it must be there
        ("daily", 3, True, False),  # --full counts as the weekly run
        ("weekly", 3, False, False),
        ("weekly", 0, False, True),
        ("weekly", 3, True, True),
    ],
)
def test_failure_ignored_follows_cedar(
    mode: str, day_offset: int, full: bool, ignored: bool
) -> None:
    run_date = MONDAY + timedelta(days=day_offset)
    assert failure_ignored(mode, run_date, "monday", full) is ignored  # type: ignore[arg-type]


@given(st.dates(), st.sampled_from(WEEKDAYS), st.booleans())
def test_daily_and_weekly_are_complementary(run_date: date, starting_day: str, full: bool) -> None:
    daily = failure_ignored("daily", run_date, starting_day, full)
    weekly = failure_ignored("weekly", run_date, starting_day, full)
    assert daily != weekly
    starts_week = run_date.strftime("%A").lower() == starting_day
    assert weekly == (full or starts_week)


def test_failure_ignored_rejects_unknown_values() -> None:
    with pytest.raises(ConfigError):
        failure_ignored("sometimes", MONDAY, "monday", False)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        failure_ignored("daily", MONDAY, "Montag", False)


# --- config_to_toml ----------------------------------------------------------------------


def test_toml_output_of_the_schema_example_round_trips(tmp_path: Path) -> None:
    config = load_text(tmp_path, SCHEMA_EXAMPLE)
    again = load_config(write(tmp_path, config_to_toml(config), "again.toml"))
    assert again == config
    assert again.source == tmp_path / "again.toml"


names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12).filter(
    lambda n: (
        n.isprintable()
        and n == n.strip()
        and not n.startswith(".")
        and "/" not in n
        and "\\" not in n
        # an indicator's name is no peer name (a config error of its own, tested above)
        and n not in (*CEDAR_INDICATORS, "ready", "staged")
    )
)
hosts = st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True)
plain = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=12)
abs_paths = st.lists(
    plain.filter(lambda t: "/" not in t and t not in (".", "..")), min_size=1, max_size=3
).map(lambda parts: Path("/" + "/".join(parts)))
seconds = st.floats(min_value=0.1, max_value=3600, allow_nan=False)


@st.composite
def peers(draw: st.DrawFn, name: str, backup_user: str | None) -> PeerConfig:
    ignore = draw(st.sampled_from(IGNORE_FAILURE_MODES))
    connect_timeout, idle_timeout = draw(seconds), draw(seconds)
    if draw(st.booleans()):
        return PeerConfig(
            name=name,
            type="local",
            collect_dir=draw(abs_paths),
            ignore_failures=ignore,
            connect_timeout=connect_timeout,
            idle_timeout=idle_timeout,
        )
    return PeerConfig(
        name=name,
        type="remote",
        collect_dir=draw(abs_paths),
        ignore_failures=ignore,
        host=draw(hosts),
        port=draw(st.integers(1, 65535)),
        user=draw(st.one_of(st.just(backup_user), hosts)) if backup_user else draw(hosts),
        identity_file=draw(st.none() | abs_paths),
        known_hosts=draw(st.none() | abs_paths),
        agent_command=tuple(draw(st.lists(plain, min_size=1, max_size=4))),
        gateway=draw(
            st.none() | st.builds(Gateway, hosts, st.integers(1, 65535), st.none() | hosts)
        ),
        connect_timeout=connect_timeout,
        idle_timeout=idle_timeout,
    )


@st.composite
def configs(draw: st.DrawFn) -> Config:
    backup_user = draw(st.none() | hosts)
    options = Options(
        starting_day=draw(st.sampled_from(WEEKDAYS)),
        backup_user=backup_user,
        backup_group=draw(st.none() | hosts),
        file_mode=draw(st.none() | st.integers(0, 0o7777)),
        dir_mode=draw(st.none() | st.integers(0, 0o7777)),
        collect_indicator=draw(st.sampled_from(["cback.collect", "ready", ".ok"])),
        stage_indicator=draw(st.sampled_from(["cback.stage", "staged"])),
        jobs=draw(st.integers(1, 256)),
        retries=draw(st.integers(0, 100)),
        retry_backoff=draw(st.floats(0, 3600, allow_nan=False)),
        compress_level=draw(st.integers(0, 22)),
        link_unchanged=draw(st.booleans()),
        max_files_per_peer=draw(st.integers(1, 1 << 40)),
        max_bytes_per_peer=draw(st.integers(1, 1 << 62)),
        max_frame_size=draw(st.integers(1 << 20, 1 << 30)),
    )
    peer_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    staging = Path("/staging-" + draw(st.from_regex(r"[a-z]{1,8}", fullmatch=True)))
    return Config(
        source=Path("generated"),
        options=options,
        staging_dir=staging,
        peers=tuple(draw(peers(name, backup_user)) for name in peer_names),
    )


@given(configs())
def test_any_valid_config_round_trips_through_toml(config: Config) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "out.toml"
        path.write_text(config_to_toml(config), encoding="utf-8")
        assert load_config(path, check_accounts=False) == config
