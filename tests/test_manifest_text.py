"""The manifest written in pieces is the whole document: the same JSON, one line per file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deltastage.delta.params import MAX_SKETCH_BYTES
from deltastage.errors import IntegrityError
from deltastage.manifest import (
    Manifest,
    ManifestEntry,
    decode_manifest,
    encode_manifest,
    read_manifest,
    read_manifest_contents,
    write_manifest,
)
from deltastage.models import json_text

names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1
) | st.just("caf\udce9/x")  # a name's undecodable byte
entries = st.builds(
    ManifestEntry,
    names,
    st.integers(0, 1 << 40),
    st.binary(min_size=16, max_size=16),
    st.integers(0, 0o7777),
    st.integers(0, 1 << 62),
    st.none() | st.binary(min_size=1, max_size=MAX_SKETCH_BYTES),
)


def whole(manifest: Manifest) -> object:
    """The manifest's JSON as one document (what the pieces must add up to)."""
    document: dict[str, object] = {
        "format": "deltastage-manifest",
        "version": 1,
        "peer": manifest.peer,
        "date": manifest.date,
    }
    if manifest.master_only_indicator is not None:
        document["master_only_indicator"] = manifest.master_only_indicator
    document["files"] = [
        {
            "path": e.path,
            "size": e.size,
            "xxh3_128": e.xxh3_128.hex(),
            "mode": f"{e.mode:04o}",
            "mtime_ns": e.mtime_ns,
        }
        | ({} if e.sketch is None else {"sketch": e.sketch.hex()})
        for e in manifest.files
    ]
    return json.loads(json_text(document))


def file_lines(data: bytes) -> list[str]:
    """The text's lines that hold a file entry."""
    # split on newlines only: a name may hold any other line break (U+0085, U+2028...)
    return [line for line in data.decode("utf-8").split("\n") if line.startswith("  {")]


@given(
    st.lists(entries, max_size=5).map(tuple),
    st.none() | st.just("cback.stage"),
)
def test_pieces_make_the_whole_document(files: tuple[ManifestEntry, ...], only: str | None) -> None:
    manifest = Manifest("p", "2026-11-23", files, master_only_indicator=only)
    data = encode_manifest(manifest)
    assert json.loads(data) == whole(manifest)
    lines = file_lines(data)
    assert len(lines) == len(files)
    for line, entry in zip(lines, whole(manifest)["files"], strict=True):  # type: ignore[index]
        assert line.strip().removesuffix(",") == json_text(entry, indent=None), "as json writes it"


def test_written_in_pieces_and_read_back(tmp_path: Path) -> None:
    files = tuple(
        ManifestEntry(
            f"d{i % 7}/f{i}", i, bytes([i % 256]) * 16, 0o644, i, bytes([1, 1, i % 256, 0, 0, 0])
        )
        for i in range(3000)
    )
    manifest = Manifest("p", "2026-11-23", files)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        write_manifest(fd, manifest)
        assert read_manifest(fd) == manifest
    finally:
        os.close(fd)
    data = (tmp_path / "deltastage.manifest.json").read_bytes()
    assert json.loads(data) == whole(manifest)
    assert len(file_lines(data)) == len(files)


def test_a_manifest_without_sketches_still_reads() -> None:
    # as written before files had sketches
    old = (
        b'{"format": "deltastage-manifest", "version": 1, "peer": "p", "date": "2026-11-23",'
        b' "files": [{"path": "a", "size": 3, "xxh3_128": "' + b"01" * 16 + b'",'
        b' "mode": "0644", "mtime_ns": 5}]}'
    )
    (entry,) = decode_manifest(old).files
    assert entry == ManifestEntry("a", 3, b"\1" * 16, 0o644, 5, None)


@pytest.mark.parametrize(
    ("sketch", "reason"),
    [("zz", "bad sketch"), (7, "bad sketch"), ("", "sketch of 0 bytes"), ("00" * 255, "of 255")],
)
def test_a_bad_sketch_makes_the_manifest_bad(sketch: object, reason: str) -> None:
    entry = {"path": "a", "size": 3, "xxh3_128": "01" * 16, "sketch": sketch}
    document = {"format": "deltastage-manifest", "files": [entry]}
    with pytest.raises(IntegrityError, match=reason):
        decode_manifest(json.dumps(document).encode())


Contents = dict[str, tuple[int, str, bytes | None, int | None]]


def contents_of(tmp_path: Path, data: bytes) -> Contents | None:
    (tmp_path / "deltastage.manifest.json").write_bytes(data)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return read_manifest_contents(fd)
    finally:
        os.close(fd)


def as_contents(document: object) -> Contents:
    """What read_manifest_contents gives for ``document``, from json's own decoding."""
    assert isinstance(document, dict)
    return {
        e["path"]: (
            e["size"],
            e["xxh3_128"],
            bytes.fromhex(e["sketch"]) if "sketch" in e else None,
            e.get("content_size"),
        )
        for e in document["files"]
    }


@given(st.lists(entries, max_size=5).map(tuple), st.sampled_from([None, 0, 1, 3]))
def test_contents_read_one_entry_at_a_time_match_json(
    tmp_path_factory: pytest.TempPathFactory, files: tuple[ManifestEntry, ...], indent: int | None
) -> None:
    # as written here (one line per file), and in any other layout json allows
    manifest = Manifest("p", "2026-11-23", files)
    data = encode_manifest(manifest)
    tmp_path = tmp_path_factory.mktemp("m")
    assert contents_of(tmp_path, data) == as_contents(json.loads(data))
    if indent is not None:
        other = json.dumps(json.loads(data), indent=indent).encode()
        assert contents_of(tmp_path, other) == as_contents(json.loads(data))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"format": "deltastage-manifest", "files": [], "files": []}', "'files' twice"),
        (
            '{"format": "deltastage-manifest", "files": [{"path": "a", "size": 1, '
            f'"xxh3_128": "{"0" * 32}"}}] ',
            "not valid JSON",
        ),
        ('{"format": "deltastage-manifest", "files": []} []', "not valid JSON"),
        ('{"files": [], "format": "other"}', "not a deltastage manifest"),
        ('{"format": "deltastage-manifest", "files": {}}', "'files' missing or not a list"),
        ('{"format": "deltastage-manifest", "files": [{"path": "a"}]}', "lacks"),
        ("[]", "not a deltastage manifest"),
    ],
)
def test_contents_of_a_bad_manifest(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(IntegrityError, match=reason):
        contents_of(tmp_path, text.encode())


def test_contents_keep_a_content_size(tmp_path: Path) -> None:
    entry = {"path": "a.gz", "size": 3, "xxh3_128": "01" * 16, "content_size": 70}
    for indent in (None, 2):
        text = json.dumps({"format": "deltastage-manifest", "files": [entry]}, indent=indent)
        assert contents_of(tmp_path, text.encode()) == {"a.gz": (3, "01" * 16, None, 70)}
