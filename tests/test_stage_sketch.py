"""Content sketches through the stage: recorded in each peer dir's manifest, and used to
choose each file's basis among the earlier files (real CLI, real directories, local peers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    big = random_bytes(2 * SKETCH_MIN_SIZE, 1)
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


DAY3 = "2026-11-25"


def edited(data: bytes) -> bytes:
    """``data`` with a few small edits, and an insertion that shifts what follows."""
    out = bytearray(data)
    for at in range(997, len(out), len(out) // 5):
        out[at : at + 8] = b"edited!!"
    return bytes(out[:1000] + b"inserted" + out[1000:])


def strip_sketches(peer_dir: Path) -> None:
    """Make ``peer_dir``'s manifest one written before manifests had sketches."""
    path = peer_dir / MANIFEST_NAME
    document = json.loads(path.read_text())
    for entry in document["files"]:
        entry.pop("sketch", None)
    path.write_text(json.dumps(document, indent=1))


def back_to_day_one(tmp: Path, names: tuple[str, str, str]) -> tuple[Path, bytes]:
    """Day 1 staged some content, day 2 other content of the same size (under ``names``),
    and day 3 brings back an edit of day 1's: the most recent day's copy shares nothing.

    A bigger log grows every day: it is the file the stage fetches on a guess, against the
    day before's copy, before the listing (see ``RequestGenerator.guess``)."""
    first, second = random_bytes(2 << 20, 1), random_bytes(2 << 20, 2)
    log = random_bytes(3 << 20, 3)
    collect = make_peer(tmp, "p", {names[0]: first, "z.log": log})
    config = write_config(tmp)
    assert stage_json(config, "--date", DAY1)[0] == 0
    for day, name, data in ((DAY2, names[1], second), (DAY3, names[2], edited(first))):
        for old in collect.glob("*.tar"):
            old.unlink()
        (collect / name).write_bytes(data)
        with (collect / "z.log").open("ab") as appended:
            appended.write(day.encode() * 100)
        (collect / "cback.collect").touch()
        if day == DAY2:
            assert stage_json(config, "--date", day)[0] == 0
    return config, first


@pytest.mark.parametrize(
    "names",
    [("a.tar", "a.tar", "a.tar"), ("x-1.tar", "x-2.tar", "x-3.tar")],
    ids=["reshuffled", "renamed"],
)
def test_the_basis_is_the_copy_closest_in_content(
    tmp_path: Path, names: tuple[str, str, str]
) -> None:
    config, first = back_to_day_one(tmp_path, names)
    code, report = stage_json(config, "--date", DAY3)
    peer = peer_json(report, "p")
    assert code == 0 and peer["status"] == "staged"
    assert peer["wire_bytes"] < len(first) // 10  # against day 1's copy, not day 2's


def test_without_sketches_in_the_manifests_the_copy_closest_in_size_is_the_basis(
    tmp_path: Path,
) -> None:
    config, first = back_to_day_one(tmp_path, ("a.tar", "a.tar", "a.tar"))
    strip_sketches(staged(tmp_path, DAY1, "p"))
    strip_sketches(staged(tmp_path, DAY2, "p"))
    code, report = stage_json(config, "--date", DAY3)
    peer = peer_json(report, "p")
    assert code == 0 and peer["status"] == "staged"
    assert peer["wire_bytes"] > len(first) // 2  # day 2's copy: nothing in common
