"""Content sketches through the stage: recorded in each peer dir's manifest, and used to
choose each file's basis among the earlier files (real CLI, real directories, local peers)."""

from __future__ import annotations

import json
from pathlib import Path

from deltastage.agent.rootfs import SKETCH_MIN_SIZE
from deltastage.delta.sketch import sketch_of
from deltastage.manifest import MANIFEST_NAME
from tests.helpers.site import make_peer, peer_json, random_bytes, stage_json, staged, write_config

DAY1 = "2026-11-23"
DAY2 = "2026-11-24"


def manifest_files(tmp: Path, day: str, peer: str = "p") -> dict[str, dict[str, object]]:
    document = json.loads((staged(tmp, day, peer) / MANIFEST_NAME).read_text())
    return {entry["path"]: entry for entry in document["files"]}


def test_the_manifest_records_each_big_files_sketch(tmp_path: Path) -> None:
    big = random_bytes(1 << 20, 1)
    small = random_bytes(SKETCH_MIN_SIZE - 1, 2)
    collect = make_peer(tmp_path, "p", {"big.tar": big, "small": small})
    config = write_config(tmp_path)
    assert stage_json(config, "--date", DAY1)[0] == 0
    files = manifest_files(tmp_path, DAY1)
    assert files["big.tar"]["sketch"] == sketch_of(big).encode().hex()
    assert "sketch" not in files["small"]
    # unchanged (linked from the day before) or fetched, the sketch follows the content
    (collect / "cback.collect").touch()
    (collect / "other.tar").write_bytes(big[1000:] + b"tail")
    code, report = stage_json(config, "--date", DAY2)
    assert code == 0 and peer_json(report, "p")["status"] == "staged"
    files = manifest_files(tmp_path, DAY2)
    assert files["big.tar"]["sketch"] == sketch_of(big).encode().hex()
    assert files["other.tar"]["sketch"] == sketch_of(big[1000:] + b"tail").encode().hex()
