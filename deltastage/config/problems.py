"""Every problem found in one config file, reported at once as one ``ConfigError``: a
single problem on one line (the file, the key, why, with the likeliest meant key for an
unknown one); several under a heading naming the file, one per line, each line complete."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

from deltastage.errors import ConfigError

MAX_PROBLEMS_SHOWN = 20


class Problems:
    """Every problem found in one file, so a user fixes them all in one round."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, key: str, reason: str) -> None:
        self.items.append(f"{key}: {reason}")

    def unknown(self, key: str, name: str, known: Iterable[str]) -> None:
        """``name`` (at ``key``) is none of the ``known`` names: say which one was likely meant."""
        close = difflib.get_close_matches(name, sorted(known), n=1)
        self.add(key, "unknown key" + (f" (did you mean {close[0]!r}?)" if close else ""))

    def check(self) -> None:
        if not self.items:
            return
        lines = [_one_line(f"{self.source}: {item}") for item in self.items[:MAX_PROBLEMS_SHOWN]]
        if len(self.items) == 1:
            raise ConfigError(lines[0])
        hidden = len(self.items) - len(lines)
        if hidden:
            lines.append(f"and {hidden} more")
        heading = _one_line(f"{self.source}: {len(self.items)} problems")
        raise ConfigError("\n  ".join([heading, *lines]))


def _one_line(text: str) -> str:
    """``text`` on one line, whatever the file's name or values contained."""
    return text.replace("\r", "\\r").replace("\n", "\\n")
