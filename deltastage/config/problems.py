"""Every problem found in one config file, reported at once as one ``ConfigError`` line:
the file, then each key and why (with the likeliest meant key for an unknown one)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

from deltastage.errors import ConfigError

MAX_PROBLEMS_SHOWN = 8


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
        shown = self.items[:MAX_PROBLEMS_SHOWN]
        hidden = len(self.items) - len(shown)
        text = "; ".join(shown) + (f"; and {hidden} more" if hidden else "")
        # one line, whatever the file's values contained
        text = text.replace("\r", "\\r").replace("\n", "\\n")
        raise ConfigError(f"{self.source}: {text}")
