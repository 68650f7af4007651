"""The declarative description of each config key: the kind of value it takes and its help.

Each key is a field of the model's dataclasses whose metadata holds a ``Key`` (made by
``key()``): the field gives the name and the default, the ``Key`` the kind of value, the help
text and how the writer treats it. The TOML reader validates with it, the TOML writer (and so
``import-cedar``) writes with it, and the README's table of keys is rendered from it.

A kind reads a value as TOML gives it (``read``: the value, or ``Invalid`` with the reason),
turns a value back into what TOML holds (``write``) and describes itself for the README.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

from deltastage.config import values
from deltastage.config.values import Invalid
from deltastage.models import Gateway

T = TypeVar("T")

_METADATA_KEY = "deltastage.config"


@dataclass(frozen=True)
class Context:
    """What reading a value may depend on: the config file's directory (relative local paths
    resolve against it) and whether the peer being read is remote."""

    base: Path
    remote: bool = False


class Kind(ABC, Generic[T]):
    """The kind of value a key takes."""

    @abstractmethod
    def read(self, raw: object, context: Context) -> T:
        """The value TOML gave as ``raw``; ``Invalid`` with the reason if it is not one."""

    def write(self, value: T) -> object:
        """``value`` as TOML holds it (a string, number, boolean or array)."""
        return value

    @abstractmethod
    def describe(self) -> str:
        """What values the key takes, for the README (markdown)."""


def toml_type(value: object) -> str:
    """What a TOML value is, as a reason names it ("got an integer")."""
    names = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


class _Text(Kind[T]):
    """A non-empty string, then parsed."""

    def read(self, raw: object, context: Context) -> T:
        if not isinstance(raw, str):
            raise Invalid(f"must be a string, got {toml_type(raw)}")
        if not raw:
            raise Invalid("must not be empty")
        return self.parse(raw, context)

    @abstractmethod
    def parse(self, text: str, context: Context) -> T: ...


class Text(_Text[str]):
    def __init__(self, description: str = "string") -> None:
        self.description = description

    def parse(self, text: str, context: Context) -> str:
        return text

    def describe(self) -> str:
        return self.description


class Choice(_Text[str]):
    """One of a few words; ``what`` names them in the reason when there are many."""

    def __init__(
        self, choices: tuple[str, ...], *, ignore_case: bool = False, what: str | None = None
    ) -> None:
        self.choices = choices
        self.ignore_case = ignore_case
        self.what = what

    def parse(self, text: str, context: Context) -> str:
        word = text.lower() if self.ignore_case else text
        if word not in self.choices:
            what = self.what or f"one of {', '.join(self.choices)}"
            raise Invalid(f"must be {what}, got {text!r}")
        return word

    def describe(self) -> str:
        return self.what or ", ".join(f"`{choice}`" for choice in self.choices)


class FileName(_Text[str]):
    """A plain file name, as the indicator files' names are."""

    def parse(self, text: str, context: Context) -> str:
        problem = values.name_problem(text)
        if problem:
            raise Invalid(f"must be a plain file name: {problem}")
        return text

    def describe(self) -> str:
        return "file name"


class PeerName(_Text[str]):
    def parse(self, text: str, context: Context) -> str:
        problem = values.peer_name_problem(text)
        if problem:
            raise Invalid(problem)
        return text

    def describe(self) -> str:
        return "name: no `/`, no leading `.`"


class Mode(_Text[int]):
    def parse(self, text: str, context: Context) -> int:
        return values.octal_mode(text)

    def write(self, value: int) -> object:
        return f"{value:04o}"

    def describe(self) -> str:
        return 'octal string: `"0640"`'


class Host(_Text[str]):
    def parse(self, text: str, context: Context) -> str:
        return values.host_name(text)

    def describe(self) -> str:
        return "host name or address"


class GatewayAddress(_Text[Gateway]):
    def parse(self, text: str, context: Context) -> Gateway:
        return values.gateway(text)

    def write(self, value: Gateway) -> object:
        return values.gateway_text(value)

    def describe(self) -> str:
        return '`"[user@]host[:port]"`'


class LocalPath(_Text[Path]):
    def parse(self, text: str, context: Context) -> Path:
        return values.local_path(text, context.base)

    def write(self, value: Path) -> object:
        return str(value)

    def describe(self) -> str:
        return "path (relative: to the config file's dir)"


class CollectDir(LocalPath):
    """A path on this machine for a local peer, an absolute path on the peer for a remote one."""

    def parse(self, text: str, context: Context) -> Path:
        if context.remote:
            return values.remote_path(text)
        return super().parse(text, context)

    def describe(self) -> str:
        return "path (remote peer: absolute, on the peer)"


class Command(Kind[tuple[str, ...]]):
    def read(self, raw: object, context: Context) -> tuple[str, ...]:
        return values.agent_command(raw)

    def write(self, value: tuple[str, ...]) -> object:
        return list(value)

    def describe(self) -> str:
        return "string (split as a shell would) or array of strings"


class Boolean(Kind[bool]):
    def read(self, raw: object, context: Context) -> bool:
        if not isinstance(raw, bool):
            raise Invalid(f"must be true or false, got {toml_type(raw)}")
        return raw

    def describe(self) -> str:
        return "`true` or `false`"


def _bound(number: float) -> str:
    """A range's end for the README; big powers of two read better as such."""
    if isinstance(number, int) and number > 1 << 16 and number & (number - 1) == 0:
        return f"2^{number.bit_length() - 1}"
    return f"{number:g}"


class Integer(Kind[int]):
    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high

    def read(self, raw: object, context: Context) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise Invalid(f"must be an integer, got {toml_type(raw)}")
        if not self.low <= raw <= self.high:
            raise Invalid(f"must be from {self.low} to {self.high}, got {raw}")
        return raw

    def describe(self) -> str:
        return f"integer, {_bound(self.low)} to {_bound(self.high)}"


class Number(Kind[float]):
    def __init__(self, low: float, high: float) -> None:
        self.low = low
        self.high = high

    def read(self, raw: object, context: Context) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise Invalid(f"must be a number, got {toml_type(raw)}")
        number = float(raw)
        if math.isnan(number) or not self.low <= number <= self.high:
            raise Invalid(f"must be from {self.low:g} to {self.high:g}, got {raw!r}")
        return number

    def describe(self) -> str:
        return f"number, {_bound(self.low)} to {_bound(self.high)}"


@dataclass(frozen=True)
class Key:
    """How one field of the model is read, written and documented as a config key.

    ``default_help`` says what an unset key means when the default is no plain value (None,
    or one taken from elsewhere). ``always_written``: the writer writes the key even at its
    default, for the keys an administrator should see. ``remote_only``: only remote peers
    may set it.
    """

    kind: Kind[Any]
    help: str
    default_help: str | None = None
    always_written: bool = False
    remote_only: bool = False


def key(
    kind: Kind[Any],
    help: str,
    *,
    default_help: str | None = None,
    always_written: bool = False,
    remote_only: bool = False,
) -> dict[str, Key]:
    """A dataclass field's metadata that makes the field a config key."""
    return {_METADATA_KEY: Key(kind, help, default_help, always_written, remote_only)}


def keys_of(model: type[Any]) -> Iterator[tuple[str, Key, object]]:
    """The config keys among ``model``'s fields, in their order: name, Key and default
    (``dataclasses.MISSING`` for a required key)."""
    for spec in fields(model):
        if _METADATA_KEY in spec.metadata:
            yield spec.name, spec.metadata[_METADATA_KEY], spec.default
