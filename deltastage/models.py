"""Plain value types shared across layers (no behaviour, no I/O), and the JSON form of the
reports the commands print."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from json.encoder import encode_basestring
from pathlib import PurePath

__all__ = [
    "AgentInfo",
    "Gateway",
    "RemoteEntry",
    "json_fields",
    "json_string",
    "json_text",
    "shared_mode",
]


@dataclass(frozen=True)
class Gateway:
    """A bastion host reached first; the peer's SSH port is forwarded through it."""

    host: str
    port: int = 22
    user: str | None = None

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port}"


# Every permission-bits value, made once: a mode kept per file (a listing's, a manifest's)
# is one of these, not an int object of its own.
_MODES = tuple(range(0o10000))


def shared_mode(mode: int) -> int:
    """``mode`` (permission bits, 0 to 0o7777) as the one shared int of its value."""
    return _MODES[mode]


@dataclass(frozen=True, slots=True)  # one per listed file: no per-instance dict
class RemoteEntry:
    """One name under an agent root, as the agent reported it (validated by the session)."""

    path: str  # relative, "/"-separated, no "." / ".." / empty components, no NUL
    kind: str  # "file" | "symlink" | "special"  (directories are recursed, never listed)
    size: int
    mtime_ns: int
    mode: int  # permission bits (st_mode & 0o7777)
    xxh3_128: bytes | None  # 16 bytes for regular files, None otherwise
    sketch: bytes | None = None  # the file's content sketch (delta.sketch), if it has one
    # the encoded recipe (transform.recipe) that rebuilds this gzip or bzip2 file from its
    # decompressed content, checked by the session; its sketch is then the content's
    recipe: bytes | None = None


@dataclass(frozen=True)
class AgentInfo:
    """What the agent said about itself in the handshake."""

    version: str
    protocol: int
    roots: tuple[str, ...]
    capabilities: frozenset[str]
    indicators: tuple[str, ...]  # the only names it writes; none: it is read-only

    @property
    def read_only(self) -> bool:
        return not self.indicators


def json_fields(report: object, *names: str) -> dict[str, object]:
    """The named attributes of ``report`` (properties too) as JSON values, in that order.

    ``"key=attribute"`` puts an attribute under another key. A path becomes its text, a date
    its ISO form, a float is rounded to the millisecond, and a nested report (or a list of
    them) gives its own ``as_json``.
    """
    document: dict[str, object] = {}
    for name in names:
        key, _, attribute = name.partition("=")
        document[key] = _json_value(getattr(report, attribute or key))
    return document


# A file name that is not UTF-8 holds one lone surrogate per undecodable byte (Python's
# surrogateescape); no UTF-8 text can, so each one is unambiguous.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def json_string(text: str) -> str:
    """``text`` as a JSON string literal, written as ``json_text`` writes one."""
    return _escape_lone_surrogates(encode_basestring(text))


def json_text(document: object, indent: int | None = 2) -> str:
    """``document`` as JSON text that encodes as UTF-8 whatever names it holds: a lone
    surrogate (a name's undecodable byte) is written as its ``\\udcXX`` escape, which
    ``json.loads`` reads back to the same name; other text stays as it is."""
    return _escape_lone_surrogates(json.dumps(document, indent=indent, ensure_ascii=False))


def _escape_lone_surrogates(text: str) -> str:
    if _LONE_SURROGATE.search(text) is None:
        return text
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _json_value(value: object) -> object:
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    as_json = getattr(value, "as_json", None)
    return as_json() if callable(as_json) else value
