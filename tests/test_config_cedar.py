"""Cedar Backup 3 XML import: mapping, Cedar's validation rules, warnings, the CLI command."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from deltastage.cli.main import app
from deltastage.config import (
    Config,
    Options,
    PeerConfig,
    config_to_toml,
    load_config,
)
from deltastage.config.cedar import load_cedar_config
from deltastage.errors import ConfigError
from deltastage.models import Gateway
from tests.test_config import problem_lines

DATA = Path(__file__).resolve().parent / "data" / "cedar"
VALID = sorted(p.name for p in DATA.glob("*.conf") if not p.name.startswith("invalid-"))
INVALID = sorted(p.name for p in DATA.glob("invalid-*.conf"))


def cedar(name: str) -> tuple[Config, list[str]]:
    return load_cedar_config(DATA / name, check_accounts=False)


def test_there_are_samples_of_both_kinds() -> None:
    assert len(VALID) >= 3
    assert len(INVALID) >= 10


def test_master_with_local_and_remote_peers() -> None:
    config, warnings = cedar("master-local-remote.conf")
    assert config.source == DATA / "master-local-remote.conf"
    assert config.staging_dir == Path("/var/backups/cback3/staging")
    assert config.options == Options(
        starting_day="sunday", backup_user="backup", backup_group="backup"
    )
    assert config.peers == (
        PeerConfig(name="master", type="local", collect_dir=Path("/var/backups/cback3/collect")),
        PeerConfig(
            name="files.example.org",
            type="remote",
            collect_dir=Path("/srv/cback3/collect"),
            ignore_failures="daily",
            host="files.example.org",
            user="backup",  # options.backup_user, Cedar's default remote user
        ),
        PeerConfig(
            name="laptop7",
            type="remote",
            collect_dir=Path("/home/backup/collect"),
            ignore_failures="all",
            host="laptop7",
            user="kjp",  # the peer's own <backup_user>
        ),
    )
    assert len(warnings) == 1
    assert warnings[0].startswith("options/rcp_command: '/usr/bin/scp -B' not used")


def test_stage_peers_replace_the_peers_section_and_ssh_settings_are_mapped() -> None:
    config, warnings = cedar("stage-override.conf")
    assert [p.name for p in config.peers] == ["db1", "web1.example.org", "mail"]
    db1, web1, mail = config.peers
    assert db1 == PeerConfig(
        name="db1", type="local", collect_dir=Path("/srv/db1/collect"), ignore_failures="weekly"
    )
    # the peer's own rcp_command wins over options; -oPort= and -J are understood
    assert (web1.port, web1.user, web1.identity_file) == (2022, "webbackup", None)
    assert web1.gateway == Gateway("bastion.example.org", 22, "gw")
    # options' rcp_command: -P port and -i key
    assert (mail.port, mail.user) == (2222, "backup")
    assert mail.identity_file == Path("/etc/cback3/id_backup")
    text = "\n".join(warnings)
    assert "stage/peer: the peers listed in <stage> replace the <peers> section" in text
    assert "stage/peer[2] (web1.example.org): managed=Y not carried over" in text
    assert "options/pre_action_hook[1]: the stage hook '/usr/local/bin/wake-peers'" in text
    assert "options/cback_command, managed_actions: not used" in text
    assert "stage/peer[2]: rcp_command options with no deltastage equivalent: -l 8192" in text
    assert "stage/peer[2]: rcp_command and rsh_command disagree on port" in text


def test_cedar_2_style_stage_only_config() -> None:
    config, _ = cedar("stage-only.conf")
    assert config.options.starting_day == "friday"
    assert config.staging_dir == Path("/backup/staging")
    assert [(p.name, p.type) for p in config.peers] == [("alpha", "remote"), ("beta", "local")]


@pytest.mark.parametrize("name", VALID)
def test_imported_config_round_trips_through_toml(tmp_path: Path, name: str) -> None:
    config, _ = cedar(name)
    path = tmp_path / "deltastage.toml"
    path.write_text(config_to_toml(config), encoding="utf-8")
    assert load_config(path, check_accounts=False) == config


EXPECTED_ERRORS = {
    "invalid-duplicate-name.conf": "peers/peer[2]/name: duplicate peer name 'db1' "
    "(also peers/peer[1])",
    "invalid-entities.conf": "DTDs and entity declarations are not accepted",
    "invalid-ignore-failures.conf": "peers/peer[1]/ignore_failures: must be one of none, all, "
    "daily, weekly, got 'sometimes'",
    "invalid-managed-flag.conf": "peers/peer[1]/managed: must be Y or N, got 'yes'",
    "invalid-managed-incomplete.conf": "peers/peer[1]/rsh_command: a managed peer needs an "
    "rsh_command",
    "invalid-missing-backup-user.conf": "options/backup_user: missing",
    "invalid-no-options.conf": "options: missing",
    "invalid-no-peers.conf": "peers: at least one <peer> is required",
    "invalid-no-stage.conf": "stage: missing",
    "invalid-peer-name.conf": "stage/peer[1]/name: must not contain a path separator: '../etc'",
    "invalid-peer-type.conf": "stage/peer[1]/type: must be local or remote, got 'nfs'",
    "invalid-relative-collect-dir.conf": "stage/peer[1]/collect_dir: must be an absolute path",
    "invalid-relative-staging-dir.conf": "stage/staging_dir: must be an absolute path",
    "invalid-root.conf": "not a Cedar Backup config (root element is <config>",
    "invalid-starting-day.conf": "options/starting_day: must be a weekday name",
    "invalid-syntax.conf": "XML syntax error: mismatched tag (line 5, column 5)",
}


def test_every_invalid_sample_has_an_expectation() -> None:
    assert sorted(EXPECTED_ERRORS) == INVALID


@pytest.mark.parametrize("name", INVALID)
def test_invalid_samples_name_file_element_and_reason(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        cedar(name)
    message = str(info.value)
    assert any(EXPECTED_ERRORS[name] in line for line in problem_lines(message, DATA / name))


OPTIONS = """<options><starting_day>monday</starting_day><working_dir>/tmp</working_dir>
<backup_user>backup</backup_user><backup_group>backup</backup_group>
<rcp_command>{rcp}</rcp_command>{extra}</options>"""


def import_text(tmp_path: Path, body: str, rcp: str = "scp -B", extra: str = "") -> Config:
    path = tmp_path / "cback3.conf"
    options = OPTIONS.format(rcp=rcp, extra=extra)
    path.write_text(f"<cb_config>{options}{body}</cb_config>", encoding="utf-8")
    return load_cedar_config(path, check_accounts=False)[0]


REMOTE = (
    "<stage><staging_dir>/s</staging_dir><peer><name>web1</name><type>remote</type>"
    "<collect_dir>/c</collect_dir></peer></stage>"
)


@pytest.mark.parametrize(
    ("rcp", "extra", "port", "identity"),
    [
        ("scp -B", "", 22, None),
        ("/usr/bin/scp -P2200", "", 2200, None),
        ("scp -BqP 2201", "", 2201, None),
        ("scp -B", "<rsh_command>ssh -p 2202</rsh_command>", 2202, None),
        ("scp -o Port=2203 -o IdentityFile=keys/id", "", 2203, "keys/id"),
        ("scp -ikeys/other", "", 22, "keys/other"),
        ("scp -i ~/.ssh/id_rsa", "", 22, "~/.ssh/id_rsa"),
        ("rsync -e ssh", "", 22, None),
    ],
)
def test_ssh_settings_come_from_rcp_and_rsh_commands(
    tmp_path: Path, rcp: str, extra: str, port: int, identity: str | None
) -> None:
    peer = import_text(tmp_path, REMOTE, rcp=rcp, extra=extra).peers[0]
    assert peer.port == port
    if identity is None:
        assert peer.identity_file is None
    elif identity.startswith("~"):
        assert peer.identity_file == Path(identity).expanduser()
    else:
        assert peer.identity_file == tmp_path / identity


def test_unsplittable_rcp_command_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stage/peer\[1\]/rcp_command: cannot split"):
        import_text(tmp_path, REMOTE, rcp="scp 'unterminated")


def test_unknown_elements_and_duplicates_warn(tmp_path: Path) -> None:
    path = tmp_path / "cback3.conf"
    options = OPTIONS.format(rcp="scp", extra="<colour>blue</colour>")
    path.write_text(
        f"<cb_config>{options}<stage><staging_dir>/s</staging_dir><staging_dir>/t</staging_dir>"
        "<peer><name>db1</name><type>local</type><collect_dir>/c</collect_dir>"
        "<ignore_failure>all</ignore_failure><backup_user>x</backup_user></peer></stage>"
        "<wibble/></cb_config>",
        encoding="utf-8",
    )
    config, warnings = load_cedar_config(path, check_accounts=False)
    assert config.staging_dir == Path("/s")
    text = "\n".join(warnings)
    assert "options/colour: unknown element" in text
    assert "cb_config/wibble: unknown element" in text
    assert "stage/peer[1]/ignore_failure: unknown element" in text
    assert "stage/staging_dir: appears 2 times; the first is used" in text
    assert "stage/peer[1]/backup_user: ignored for a local peer" in text


def test_cedar_accounts_are_checked_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "cback3.conf"
    path.write_text(
        (DATA / "stage-only.conf")
        .read_text()
        .replace("<backup_user>backup", "<backup_user>nobody-ds"),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="options/backup_user: no such user 'nobody-ds'"):
        load_cedar_config(path, check_accounts=True)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe<\x00",
        b'<?xml version="1.0" encoding="no-such-codec"?><cb_config/>',
        b"<cb_config>&undefined;</cb_config>",
        b"<!doctype cb_config><cb_config/>",
        b'<?xml version="1.0"?>\n<!DOCTYPE x SYSTEM "file:///etc/passwd"><cb_config/>',
    ],
)
def test_malformed_documents_are_config_errors(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "cback3.conf"
    path.write_bytes(data)
    with pytest.raises(ConfigError):
        load_cedar_config(path)


# --- the CLI -----------------------------------------------------------------------------

runner = CliRunner()


@pytest.mark.parametrize("name", VALID)
def test_cli_import_cedar_prints_toml_that_loads_back_equal(tmp_path: Path, name: str) -> None:
    result = runner.invoke(app, ["config", "import-cedar", str(DATA / name)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "deltastage.toml"
    out.write_text(result.stdout, encoding="utf-8")
    assert load_config(out, check_accounts=False) == cedar(name)[0]
    warnings = result.stderr.splitlines()
    assert warnings
    assert all(line.startswith("# warning: ") for line in warnings)


@pytest.mark.parametrize("name", [*INVALID, "no-such-file.conf"])
def test_cli_import_cedar_fails_with_one_line_per_problem_and_exit_2(name: str) -> None:
    result = runner.invoke(app, ["config", "import-cedar", str(DATA / name)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("deltastage: error: ") and result.stderr.endswith("\n")
    problem_lines(result.stderr.removeprefix("deltastage: error: ")[:-1], DATA / name)


def test_several_problems_are_listed_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "cback3.conf"
    path.write_text(
        "<cb_config><options><starting_day>someday</starting_day></options>"
        "<stage><staging_dir>relative</staging_dir></stage></cb_config>",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["config", "import-cedar", str(path)])
    assert result.exit_code == 2
    heading, *lines = result.stderr.splitlines()
    assert heading == f"deltastage: error: {path}: {len(lines)} problems" and len(lines) > 2
    assert all(line.startswith(f"  {path}: ") for line in lines)
    assert f"  {path}: options/starting_day: must be a weekday name" in "\n".join(lines)


def test_only_stage_hooks_warn_and_are_numbered_per_kind(tmp_path: Path) -> None:
    hooks = (
        "<pre_action_hook><action>collect</action><command>/bin/a</command></pre_action_hook>"
        "<post_action_hook><action>purge</action><command>/bin/b</command></post_action_hook>"
        "<post_action_hook><action>stage</action><command>/bin/c</command></post_action_hook>"
    )
    path = tmp_path / "cback3.conf"
    options = OPTIONS.format(rcp="scp", extra=hooks)
    path.write_text(f"<cb_config>{options}{REMOTE}</cb_config>", encoding="utf-8")
    _, warnings = load_cedar_config(path, check_accounts=False)
    hook_warnings = [w for w in warnings if "hook" in w]
    assert hook_warnings == [
        "options/post_action_hook[2]: the stage hook '/bin/c' is not run by deltastage; "
        "run it from the job that calls `deltastage stage`"
    ]
