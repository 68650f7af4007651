"""The per-peer manifest: the list of staged files and their xxh3-128, written last.

Paths are the staged names exactly: a byte that is not UTF-8 is held as Python's
surrogateescape does, and written in the JSON as its ``\\udcXX`` escape.

A manifest exists only when every file it lists was written, fsynced, re-read and verified;
``verify`` re-hashes staged files against it. It is the truth; the history catalog is not.
For a peer whose agent is read-only it also records the stage indicator the peer's collect
dir did not get (``master_only_indicator``).

Each file of 64 KiB or more also has its content ``sketch`` (hex; see ``delta.sketch``), from
which later runs choose bases without reading earlier files. Manifests written before
sketches existed have none, and read as they did. A gzip or bzip2 file staged through its
content also has its ``transform`` ("gzip" or "bzip2"), its decompressed ``content_size`` and
the ``recipe`` (hex) that rebuilt it; its sketch is then its content's, and later runs use
its content as a basis.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from deltastage.delta.params import MAX_SKETCH_BYTES
from deltastage.errors import DeltaFormatError, IntegrityError
from deltastage.models import json_string, json_text
from deltastage.safefs import FILE_READ, check_relative_path, create_private, fsync_dir
from deltastage.transform.recipe import decode_recipe

__all__ = [
    "INTERNAL_PREFIX",
    "MANIFEST_NAME",
    "EachFile",
    "Manifest",
    "ManifestEntry",
    "read_manifest",
    "read_manifest_contents",
    "scan_manifest",
    "write_manifest",
]

MANIFEST_NAME = "deltastage.manifest.json"
#: Names in a peer's staging dir that belong to deltastage, not to the peer's data.
INTERNAL_PREFIX = ".deltastage-"
FORMAT = "deltastage-manifest"
VERSION = 1


@dataclass(frozen=True, slots=True)  # one per staged file: no per-instance dict
class ManifestEntry:
    path: str
    size: int
    xxh3_128: bytes
    mode: int
    mtime_ns: int
    sketch: bytes | None = None  # the content sketch the listing gave for these bytes
    # the recipe that rebuilds this compressed file from its content (transform.recipe)
    recipe: bytes | None = None


@dataclass(frozen=True)
class Manifest:
    peer: str
    date: str
    files: tuple[ManifestEntry, ...]
    # the stage indicator, recorded here and in the daily dir only: the agent is read-only
    master_only_indicator: str | None = None

    def by_path(self) -> dict[str, ManifestEntry]:
        return {entry.path: entry for entry in self.files}


def encode_manifest(manifest: Manifest) -> bytes:
    return "".join(manifest_text(manifest)).encode("utf-8")


def manifest_text(manifest: Manifest) -> Iterator[str]:
    """The manifest's JSON text in pieces, one file's entry at a time: a peer with many
    files is written without its whole text (or a dict per file) in memory at once.

    The document's own keys are indented; each file's entry is one line (encoded without
    indentation, which keeps ``json`` on its C encoder: a tree of many files costs
    milliseconds, not seconds), so a person reads or greps one file per line."""
    document: dict[str, object] = {
        "format": FORMAT,
        "version": VERSION,
        "peer": manifest.peer,
        "date": manifest.date,
    }
    if manifest.master_only_indicator is not None:
        document["master_only_indicator"] = manifest.master_only_indicator
    document["files"] = []  # the last key: its entries go where its "[]" is
    head = json_text(document, indent=1)
    if not manifest.files:
        yield head + "\n"
        return
    yield head.removesuffix("[]\n}") + "[\n"
    last = len(manifest.files) - 1
    for index, e in enumerate(manifest.files):
        yield "  " + _entry_line(e) + (",\n" if index < last else "\n")
    yield " ]\n}\n"


def _entry_line(e: ManifestEntry) -> str:
    """One file's entry as ``json_text(entry, indent=None)`` writes it, formatted directly:
    a manifest has one per staged file, and only the path needs JSON's escaping."""
    line = (
        f'{{"path": {json_string(e.path)}, "size": {e.size}, "xxh3_128": "{e.xxh3_128.hex()}", '
        f'"mode": "{e.mode:04o}", "mtime_ns": {e.mtime_ns}'
    )
    if e.sketch is not None:
        line += f', "sketch": "{e.sketch.hex()}"'
    if e.recipe is not None:
        recipe = decode_recipe(e.recipe)
        line += (
            f', "transform": "{recipe.kind.name.lower()}", '
            f'"content_size": {recipe.content_size}, "recipe": "{e.recipe.hex()}"'
        )
    return line + "}"


def _field(obj: dict[str, Any], key: str, kind: type) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise IntegrityError(f"manifest: {key!r} missing or not a {kind.__name__}")
    return value


def _hex(raw: dict[str, Any], key: str, path: str) -> bytes | None:
    """A file entry's optional field of bytes written in hex."""
    text = raw.get(key)
    if text is None:
        return None
    try:
        return bytes.fromhex(text)
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"manifest: bad {key} for {path!r}") from exc


def _sketch(raw: dict[str, Any], path: str) -> bytes | None:
    """A file entry's sketch: absent (older manifests, small files) or 1..254 bytes in hex."""
    sketch = _hex(raw, "sketch", path)
    if sketch is not None and not 0 < len(sketch) <= MAX_SKETCH_BYTES:
        raise IntegrityError(f"manifest: sketch of {len(sketch)} bytes for {path!r}")
    return sketch


def _recipe(raw: dict[str, Any], path: str) -> bytes | None:
    """A file entry's recipe: absent (a file staged as its bytes) or a valid one in hex."""
    recipe = _hex(raw, "recipe", path)
    if recipe is not None:
        try:
            decode_recipe(recipe)
        except DeltaFormatError as exc:
            raise IntegrityError(f"manifest: bad recipe for {path!r}") from exc
    return recipe


def _content_size(raw: dict[str, Any], path: str) -> int | None:
    """A file entry's decompressed size: absent (a file staged as its bytes) or an int."""
    size = raw.get("content_size")
    if size is not None and (type(size) is not int or size < 0):
        raise IntegrityError(f"manifest: bad content size for {path!r}")
    return size


def decode_manifest(data: bytes) -> Manifest:
    try:
        document = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # also deep nesting and overlong integers
        raise IntegrityError(f"manifest is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise IntegrityError("not a deltastage manifest")
    files = []
    for raw in _field(document, "files", list):
        if not isinstance(raw, dict):
            raise IntegrityError("manifest: file entry is not an object")
        path = _field(raw, "path", str)
        check_relative_path(path)
        digest_hex = _field(raw, "xxh3_128", str)
        try:
            digest = bytes.fromhex(digest_hex)
            mode = int(raw.get("mode", "0644"), 8)
        except (ValueError, TypeError) as exc:
            raise IntegrityError(f"manifest: bad hash or mode for {path!r}") from exc
        if len(digest) != 16:
            raise IntegrityError(f"manifest: bad hash length for {path!r}")
        size = _field(raw, "size", int)
        mtime_ns = raw.get("mtime_ns", 0)
        if size < 0 or not isinstance(mtime_ns, int):
            raise IntegrityError(f"manifest: bad size or mtime for {path!r}")
        files.append(
            ManifestEntry(
                path, size, digest, mode, mtime_ns, _sketch(raw, path), _recipe(raw, path)
            )
        )
    indicator = document.get("master_only_indicator")
    if indicator is not None and not isinstance(indicator, str):
        raise IntegrityError("manifest: 'master_only_indicator' is not a string")
    return Manifest(
        peer=str(document.get("peer", "")),
        date=str(document.get("date", "")),
        files=tuple(files),
        master_only_indicator=indicator,
    )


def read_manifest(peer_dir_fd: int) -> Manifest | None:
    """The manifest in an open peer dir, None if there is none; IntegrityError if it is bad."""
    try:
        fd = os.open(MANIFEST_NAME, FILE_READ, dir_fd=peer_dir_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as stream:
        return decode_manifest(stream.read(256 << 20))


# what the bases' reading takes of a manifest's file entry: its path, size, xxh3-128 (hex),
# sketch and content size (of a file staged through its content), the last two if any
EachFile = Callable[[str, int, str, bytes | None, int | None], None]


def read_manifest_contents(
    peer_dir_fd: int,
) -> dict[str, tuple[int, str, bytes | None, int | None]] | None:
    """Each file's size, xxh3-128 (hex), sketch and content size (of a file staged through
    its content; if any) from the manifest in an open peer dir: None if there is none,
    IntegrityError if it is bad (see ``scan_manifest``)."""
    contents: dict[str, tuple[int, str, bytes | None, int | None]] = {}

    def add(path: str, size: int, digest: str, sketch: bytes | None, content: int | None) -> None:
        contents[path] = (size, digest, sketch, content)

    return contents if scan_manifest(peer_dir_fd, add) else None


def scan_manifest(peer_dir_fd: int, each_file: EachFile) -> bool:
    """Hand each file's path, size, xxh3-128 (hex), sketch and content size (if any) from
    the manifest in an open peer dir to ``each_file``: False if there is none,
    IntegrityError if it is bad (``each_file`` may have had some of its files by then: the
    caller drops them).

    Lighter than ``read_manifest`` (a day with many files is read in a fraction of the
    time, and its file entries are decoded one at a time, never all held as JSON objects
    at once), for finding bases: a path is not checked here, but by whoever opens it
    beneath the peer dir."""
    try:
        fd = os.open(MANIFEST_NAME, FILE_READ, dir_fd=peer_dir_fd)
    except FileNotFoundError:
        return False
    with os.fdopen(fd, "rb") as stream:
        data = stream.read(256 << 20)

    def add(raw: Any) -> None:
        try:
            path, size, digest = raw["path"], raw["size"], raw["xxh3_128"]
        except (KeyError, TypeError) as exc:
            raise IntegrityError(f"manifest: file entry lacks {exc}") from None
        if (
            not isinstance(path, str)
            or type(size) is not int
            or size < 0
            or not isinstance(digest, str)
            or len(digest) != 32
        ):
            raise IntegrityError(f"manifest: bad entry for {str(path)[:200]!r}")
        each_file(path, size, digest, _sketch(raw, path), _content_size(raw, path))

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    else:
        data = b""  # the text is what is read from here on
    document: Any = None
    try:
        if text is None:
            raise _Irregular
        document = _scan_document(text, add)
    except (_Irregular, ValueError, RecursionError):
        # not laid out as written here (or not JSON at all): decoded whole, as json
        # decodes it, with its errors
        try:
            document = json.loads(data if text is None else text)
        except (ValueError, RecursionError) as exc:
            raise IntegrityError(f"manifest is not valid JSON: {exc}") from exc
        if isinstance(document, dict) and document.get("format") == FORMAT:
            for raw in _field(document, "files", list):
                add(raw)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise IntegrityError("not a deltastage manifest")
    _field(document, "files", list)
    return True


class _Irregular(Exception):
    """A manifest ``_scan_document`` does not stream (not an object, say)."""


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, pos: int = 0) -> int:
    """The position of the first character at or after ``pos`` that is not JSON whitespace."""
    match = _SPACE.match(text, pos)
    assert match is not None  # the pattern matches the empty string too
    return match.end()


def _scan_document(text: str, each_file: Callable[[Any], None]) -> dict[str, Any]:
    """The JSON object ``text`` as ``json.loads`` decodes it, but each element of its
    top-level ``"files"`` array is decoded on its own and handed to ``each_file`` (in
    order), not kept: the result's ``"files"`` is an empty list. ``_Irregular`` or
    ``ValueError`` where it cannot tell (the caller then decodes the whole text, which is
    not valid JSON once any file was handed out)."""
    decode, space = _DECODER.raw_decode, _skip_space
    document: dict[str, Any] = {}
    files_seen = False
    pos = space(text)
    if text[pos : pos + 1] != "{":
        raise _Irregular
    pos = space(text, pos + 1)
    if text[pos : pos + 1] == "}":
        pos += 1
    else:
        while True:
            key, pos = decode(text, pos)
            pos = space(text, pos)
            if not isinstance(key, str) or text[pos : pos + 1] != ":":
                raise _Irregular
            pos = space(text, pos + 1)
            if key == "files" and text[pos : pos + 1] == "[":
                if files_seen:  # json would keep the last, and the first were handed out
                    raise IntegrityError("manifest: 'files' twice")
                files_seen = True
                pos = _scan_array(text, pos + 1, each_file)
                document[key] = []
            else:
                document[key], pos = decode(text, pos)
            pos = space(text, pos)
            mark = text[pos : pos + 1]
            pos = space(text, pos + 1)
            if mark == "}":
                break
            if mark != ",":
                raise _Irregular
    if space(text, pos) != len(text):
        raise _Irregular
    return document


def _scan_array(text: str, pos: int, each: Callable[[Any], None]) -> int:
    """Hand each element of the array whose ``[`` ends before ``pos`` to ``each``; the
    position after its ``]``."""
    decode, space = _DECODER.raw_decode, _skip_space
    pos = space(text, pos)
    if text[pos : pos + 1] == "]":
        return pos + 1
    while True:
        value, pos = decode(text, pos)
        each(value)
        pos = space(text, pos)
        mark = text[pos : pos + 1]
        if mark == "]":
            return pos + 1
        if mark != ",":
            raise _Irregular
        pos = space(text, pos + 1)


def write_manifest(
    peer_dir_fd: int, manifest: Manifest, *, mode: int = 0o644, owner: tuple[int, int] | None = None
) -> None:
    """Atomically write the manifest (temp, fsync, rename, fsync dir)."""
    tmp = f"{INTERNAL_PREFIX}tmp-{secrets.token_hex(8)}"
    fd = create_private(peer_dir_fd, tmp)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as stream:
            stream.writelines(manifest_text(manifest))
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(tmp, MANIFEST_NAME, src_dir_fd=peer_dir_fd, dst_dir_fd=peer_dir_fd)
        fsync_dir(peer_dir_fd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=peer_dir_fd)
        raise


def remove_manifest(peer_dir_fd: int) -> None:
    try:
        os.unlink(MANIFEST_NAME, dir_fd=peer_dir_fd)
    except FileNotFoundError:
        return
    fsync_dir(peer_dir_fd)
