"""--metrics-file and --quiet on stage and verify: the file read back with the Prometheus
client's own parser, the last success across failed runs, the file replaced whole; --quiet
silent on success and showing only the failures otherwise, in-process and as a real process."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner, Result

from deltastage import metrics
from deltastage.cli.main import app
from deltastage.history import last_successes
from tests.helpers.site import make_peer, staged, write_config

ROOT = Path(__file__).resolve().parent.parent
DAY = "2026-11-26"
# a name the exposition format must quote and escape, and one beyond ASCII
ODD = 'dé"pôt'
STAGE_STATUSES = {"staged", "not-ready", "failed", "would-stage"}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """web1 and ODD ready, mail1 not (and not excused): the config file."""
    make_peer(tmp_path, "web1", {"index.html": b"<h1>hi</h1>\n" * 500, "a/b.txt": b"b" * 3000})
    make_peer(tmp_path, ODD, {"dump.sql": os.urandom(20_000)})
    make_peer(tmp_path, "mail1", {"spool": b"mail"}, ready=False)
    return write_config(tmp_path, ["web1", ODD, "mail1"])


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def families(path: Path) -> dict[str, Any]:
    """The metric families of a metrics file, as Prometheus's client parses them."""
    return {f.name: f for f in text_string_to_metric_families(path.read_text(encoding="utf-8"))}


def by_peer(family: Any) -> dict[str, float]:
    return {sample.labels["peer"]: sample.value for sample in family.samples}


def statuses(family: Any) -> dict[str, str]:
    """Each peer's status: the one sample of the peer that is 1 (the others are 0)."""
    found: dict[str, list[str]] = {}
    for sample in family.samples:
        found.setdefault(sample.labels["peer"], [])
        assert sample.value in (0, 1)
        if sample.value == 1:
            found[sample.labels["peer"]].append(sample.labels["status"])
    assert all(len(ones) == 1 for ones in found.values()), found
    return {peer: ones[0] for peer, ones in found.items()}


def test_stage_metrics_are_the_report_in_prometheus_format(site: Path) -> None:
    prom = site.parent / "deltastage_stage.prom"
    before = time.time()
    result = invoke("stage", "-c", str(site), "--date", DAY, "--json", "--metrics-file", str(prom))
    after = time.time()
    assert result.exit_code == 1, result.output  # mail1 is not ready, and not excused
    report = {p["name"]: p for p in json.loads(result.stdout)["peers"]}
    found = families(prom)
    assert all(f.type == "gauge" and f.documentation for f in found.values())
    status = found["deltastage_stage_peer_status"]
    assert statuses(status) == {name: p["status"] for name, p in report.items()}
    assert {s.labels["status"] for s in status.samples} == STAGE_STATUSES
    for family, key in (("files", "files"), ("bytes", "bytes"), ("wire_bytes", "wire_bytes")):
        values = by_peer(found[f"deltastage_stage_peer_{family}"])
        assert values == {name: p[key] for name, p in report.items()}, family
    seconds = by_peer(found["deltastage_stage_peer_seconds"])
    assert seconds == {name: pytest.approx(p["seconds"], abs=0.01) for name, p in report.items()}
    last = by_peer(found["deltastage_stage_peer_last_success_timestamp_seconds"])
    assert before <= last["web1"] == last[ODD] <= after
    assert last["mail1"] == 0, "never staged"
    assert found["deltastage_stage_exit_code"].samples[0].value == 1
    assert before <= found["deltastage_stage_last_run_timestamp_seconds"].samples[0].value <= after
    assert prom.stat().st_mode & 0o777 == 0o644, "node_exporter reads it as another user"


def test_the_last_success_survives_failed_runs(site: Path) -> None:
    prom = site.parent / "stage.prom"
    assert invoke("stage", "-c", str(site), "--date", DAY, "--metrics-file", str(prom)).exit_code
    staged_at = by_peer(families(prom)["deltastage_stage_peer_last_success_timestamp_seconds"])
    (site.parent / "collect" / "web1" / "cback.collect").unlink()  # web1 fails from now on
    for run, day in enumerate(("2026-11-27", "2026-11-28")):
        if run:  # the file is gone: the history catalog still knows
            prom.unlink()
        result = invoke("stage", "-c", str(site), "--date", day, "--metrics-file", str(prom))
        assert result.exit_code == 1
        found = families(prom)
        assert statuses(found["deltastage_stage_peer_status"])["web1"] == "not-ready"
        last = by_peer(found["deltastage_stage_peer_last_success_timestamp_seconds"])
        assert last[ODD] > staged_at[ODD], "staged again"
        catalog = last_successes(site.parent / "staging", "stage", "staged")["web1"]
        assert last["web1"] == (catalog if run else staged_at["web1"])
        assert staged_at["web1"] - 5 < last["web1"] <= staged_at["web1"]


def test_a_run_for_one_peer_keeps_what_the_file_said_of_the_others(site: Path) -> None:
    prom = site.parent / "stage.prom"
    invoke("stage", "-c", str(site), "--date", DAY, "--metrics-file", str(prom))
    first = families(prom)
    assert (
        invoke("stage", "-c", str(site), "-p", "web1", "--metrics-file", str(prom)).exit_code == 0
    )
    again = families(prom)
    assert statuses(again["deltastage_stage_peer_status"]) == {
        "web1": "staged",
        ODD: "staged",
        "mail1": "not-ready",
    }
    for name in ("files", "bytes", "seconds"):
        family = f"deltastage_stage_peer_{name}"
        assert by_peer(again[family])[ODD] == by_peer(first[family])[ODD]
    success = "deltastage_stage_peer_last_success_timestamp_seconds"
    assert by_peer(again[success])["mail1"] == 0
    assert by_peer(again[success])["web1"] > by_peer(first[success])["web1"]
    # a peer taken out of the config is dropped
    write_config(site.parent, ["web1", ODD])
    invoke("stage", "-c", str(site), "-p", "web1", "--metrics-file", str(prom))
    assert set(by_peer(families(prom)[success])) == {"web1", ODD}
    assert set(statuses(families(prom)["deltastage_stage_peer_status"])) == {"web1", ODD}


def test_verify_metrics_count_what_is_wrong_and_keep_the_last_success(site: Path) -> None:
    invoke("stage", "-c", str(site), "--date", DAY)
    prom = site.parent / "deltastage_verify.prom"
    args = ("verify", "-c", str(site), "--date", DAY, "--metrics-file", str(prom))
    assert invoke(*args).exit_code == 0
    good = families(prom)
    assert statuses(good["deltastage_verify_peer_status"]) == {
        "web1": "ok",
        ODD: "ok",
        "mail1": "not-staged",
    }
    (staged(site.parent, DAY, "web1") / "a" / "b.txt").write_bytes(b"rot")
    (staged(site.parent, DAY, "web1") / "index.html").unlink()
    assert invoke(*args).exit_code == 1
    bad = families(prom)
    assert statuses(bad["deltastage_verify_peer_status"])["web1"] == "damaged"
    for name, count in (("missing", 1), ("corrupt", 1), ("extra", 0), ("stray", 0)):
        assert by_peer(bad[f"deltastage_verify_peer_{name}_files"])["web1"] == count, name
    assert by_peer(bad["deltastage_verify_peer_files"])["web1"] == 0
    success = "deltastage_verify_peer_last_success_timestamp_seconds"
    assert by_peer(bad[success])["web1"] == by_peer(good[success])["web1"] > 0
    assert by_peer(bad[success])[ODD] > by_peer(good[success])[ODD]
    assert bad["deltastage_verify_exit_code"].samples[0].value == 1


# --- the file is replaced whole -------------------------------------------------------------


def during_the_write(monkeypatch: pytest.MonkeyPatch, name: str, stand_in: Any) -> None:
    """``os.NAME`` is ``stand_in`` while the metrics file is written, and only then."""
    real = metrics.replace_file

    def replace_file(*args: Any, **kwargs: Any) -> None:
        with monkeypatch.context() as patch:
            patch.setattr(os, name, stand_in)
            real(*args, **kwargs)

    monkeypatch.setattr(metrics, "replace_file", replace_file)


def test_the_file_appears_whole_by_a_rename_of_a_complete_temp_file(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prom = site.parent / "textfile" / "deltastage.prom"
    prom.parent.mkdir()
    prom.write_text("# the previous run's\n", encoding="utf-8")
    renames: list[tuple[str, str, str]] = []
    real_replace = os.replace

    def replace(source: str, target: Path) -> None:
        # at the rename: the whole new text is in a temp file beside the target, which a
        # collector reading *.prom does not take, and the target still holds the old text
        renames.append((source, Path(source).read_text(), Path(target).read_text()))
        real_replace(source, target)

    during_the_write(monkeypatch, "replace", replace)
    assert invoke("stage", "-c", str(site), "-q", "--metrics-file", str(prom)).exit_code == 1
    [(source, new, old)] = renames
    assert Path(source).parent == prom.parent and not source.endswith(".prom")
    assert old == "# the previous run's\n" and new == prom.read_text()
    assert "deltastage_stage_exit_code" in {f.name for f in text_string_to_metric_families(new)}
    assert os.listdir(prom.parent) == ["deltastage.prom"]


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temp(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prom = site.parent / "textfile" / "deltastage.prom"
    prom.parent.mkdir()
    assert invoke("stage", "-c", str(site), "--metrics-file", str(prom)).exit_code == 1
    previous = prom.read_text()

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    during_the_write(monkeypatch, "fsync", full_disk)
    result = invoke("stage", "-c", str(site), "--metrics-file", str(prom))
    assert result.exit_code == 1
    assert result.stderr.endswith(
        f"\ndeltastage: error: metrics file {prom} not written: No space left on device\n"
    )
    assert "web1" in result.stdout, "the run's table still comes first"
    assert prom.read_text() == previous and os.listdir(prom.parent) == ["deltastage.prom"]
    missing = site.parent / "no-such-dir" / "deltastage.prom"
    result = invoke("stage", "-c", str(site), "-q", "--metrics-file", str(missing))
    assert result.exit_code == 1 and f"metrics file {missing} not written" in result.stderr


def test_a_reader_never_sees_part_of_a_file(site: Path) -> None:
    prom = site.parent / "deltastage.prom"
    invoke("stage", "-c", str(site), "--metrics-file", str(prom))
    whole = {f.name for f in families(prom).values()}
    stop, seen = threading.Event(), [0]

    def read() -> None:
        while not stop.is_set():
            assert {f.name for f in families(prom).values()} == whole
            seen[0] += 1

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(10):
            invoke("stage", "-c", str(site), "-q", "--metrics-file", str(prom))
    finally:
        stop.set()
        reader.join(timeout=30)
    assert seen[0] > 0


# --- --quiet --------------------------------------------------------------------------------


def test_quiet_prints_nothing_on_success_and_only_the_failures_otherwise(site: Path) -> None:
    log = site.parent / "deltastage.log"
    ok = invoke("stage", "-c", str(site), "-q", "-p", "web1", "--log-file", str(log))
    assert (ok.exit_code, ok.stdout, ok.stderr) == (0, "", "")
    assert "peer=web1 status=staged" in log.read_text(), "the log file still gets it all"
    failed = invoke("stage", "-c", str(site), "--quiet")
    assert failed.exit_code == 1 and failed.stderr == ""
    assert failed.stdout.splitlines() == [
        f"mail1: not-ready: no cback.collect in {site.parent / 'collect' / 'mail1'}"
    ]


def test_quiet_verify_lists_only_the_damage(site: Path) -> None:
    invoke("stage", "-c", str(site), "--date", DAY)
    ok = invoke("verify", "-c", str(site), "--date", DAY, "-q")
    assert (ok.exit_code, ok.stdout, ok.stderr) == (0, "", "")
    (staged(site.parent, DAY, ODD) / "dump.sql").write_bytes(b"rot")
    damaged = invoke("verify", "-c", str(site), "--date", DAY, "--quiet")
    assert damaged.exit_code == 1 and damaged.stderr == ""
    assert damaged.stdout.splitlines() == [f"{ODD}: damaged", f"{ODD}: corrupt dump.sql"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m deltastage ARGS`` as cron runs it: no TTY, output captured."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "deltastage", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
    )


def test_quiet_as_cron_runs_it(site: Path) -> None:
    prom = site.parent / "stage.prom"
    ok = run("stage", "-c", str(site), "-p", "web1", "-q", "--metrics-file", str(prom))
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")
    assert statuses(families(prom)["deltastage_stage_peer_status"]) == {"web1": "staged"}
    failed = run("stage", "-c", str(site), "-q", "--metrics-file", str(prom))
    assert failed.returncode == 1 and failed.stderr == ""
    assert failed.stdout.splitlines() == [
        f"mail1: not-ready: no cback.collect in {site.parent / 'collect' / 'mail1'}"
    ]
    assert families(prom)["deltastage_stage_exit_code"].samples[0].value == 1
