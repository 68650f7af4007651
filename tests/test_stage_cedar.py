"""A run from a Cedar Backup XML config stages the same tree as its TOML translation, and the
tree stays what Cedar's later actions (store, purge) look for."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from deltastage.cli.main import app
from deltastage.manifest import MANIFEST_NAME

runner = CliRunner()

CEDAR = """<?xml version="1.0"?>
<cb_config>
   <options>
      <starting_day>monday</starting_day>
      <working_dir>{tmp}/work</working_dir>
      <backup_user>{user}</backup_user>
      <backup_group>{group}</backup_group>
      <rcp_command>/usr/bin/scp -B</rcp_command>
   </options>
   <peers>
      <peer>
         <name>alpha</name>
         <type>local</type>
         <collect_dir>{tmp}/collect/alpha</collect_dir>
      </peer>
      <peer>
         <name>beta</name>
         <type>local</type>
         <collect_dir>{tmp}/collect/beta</collect_dir>
         <ignore_failures>all</ignore_failures>
      </peer>
   </peers>
   <stage>
      <staging_dir>{staging}</staging_dir>
   </stage>
</cb_config>
"""


def accounts() -> tuple[str, str]:
    import grp
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name


def make_site(tmp: Path) -> None:
    alpha = tmp / "collect/alpha"
    (alpha / "sub").mkdir(parents=True)
    (alpha / "a.tar").write_bytes(os.urandom(300_000))
    (alpha / "sub/notes.txt").write_text("hello\n")
    (alpha / "cback.collect").touch()
    beta = tmp / "collect/beta"
    beta.mkdir(parents=True)
    (beta / "b.txt").write_text("not collected yet\n")


def snapshot(daily: Path) -> dict[str, bytes]:
    return {
        p.relative_to(daily).as_posix(): p.read_bytes()
        for p in sorted(daily.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


def test_cedar_config_and_its_toml_stage_the_same_tree(tmp_path: Path) -> None:
    make_site(tmp_path)
    user, group = accounts()
    cedar = tmp_path / "cback3.conf"
    cedar.write_text(
        CEDAR.format(tmp=tmp_path, staging=tmp_path / "staging-cedar", user=user, group=group)
    )
    converted = runner.invoke(app, ["config", "import-cedar", str(cedar)])
    assert converted.exit_code == 0, converted.output
    toml_text = converted.stdout.replace(
        str(tmp_path / "staging-cedar"), str(tmp_path / "staging-toml")
    )
    toml = tmp_path / "deltastage.toml"
    toml.write_text(toml_text)

    from_cedar = runner.invoke(
        app, ["stage", "--cedar-config", str(cedar), "--date", "2026-11-24", "--json"]
    )
    (tmp_path / "collect/alpha/cback.stage").unlink()
    from_toml = runner.invoke(
        app, ["stage", "--config", str(toml), "--date", "2026-11-24", "--json"]
    )
    assert from_cedar.exit_code == from_toml.exit_code == 0, from_cedar.output + from_toml.output
    cedar_report, toml_report = json.loads(from_cedar.stdout), json.loads(from_toml.stdout)
    assert [(p["name"], p["status"], p["files"], p["bytes"]) for p in cedar_report["peers"]] == [
        (p["name"], p["status"], p["files"], p["bytes"]) for p in toml_report["peers"]
    ]

    cedar_daily = tmp_path / "staging-cedar/2026/11/24"
    toml_daily = tmp_path / "staging-toml/2026/11/24"
    assert snapshot(cedar_daily) == snapshot(toml_daily)
    # What Cedar's store and purge actions rely on: YYYY/MM/DD/<peer>/files and the daily
    # indicator, a dir for every peer, nothing else at the daily level but hidden files.
    assert (cedar_daily / "cback.stage").exists()
    assert sorted(p.name for p in cedar_daily.iterdir()) == ["alpha", "beta", "cback.stage"]
    assert (cedar_daily / "alpha/a.tar").read_bytes() == (
        tmp_path / "collect/alpha/a.tar"
    ).read_bytes()
    assert list((cedar_daily / "beta").iterdir()) == []
    manifests = {
        a: json.loads((d / "alpha" / MANIFEST_NAME).read_text())["files"]
        for a, d in (("cedar", cedar_daily), ("toml", toml_daily))
    }
    assert manifests["cedar"] == manifests["toml"]


def test_cedar_config_errors_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "cback3.conf"
    bad.write_text("<cb_config><options><starting_day>someday</starting_day></options></cb_config>")
    result = runner.invoke(app, ["stage", "--cedar-config", str(bad)])
    assert result.exit_code == 2
    assert "cback3.conf" in result.output
    result = runner.invoke(app, ["verify", "--cedar-config", str(bad)])
    assert result.exit_code == 2
