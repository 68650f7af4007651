"""Every problem found in one config file, reported at once as one ``ConfigError`` line."""

from __future__ import annotations

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

    def check(self) -> None:
        if not self.items:
            return
        shown = self.items[:MAX_PROBLEMS_SHOWN]
        hidden = len(self.items) - len(shown)
        text = "; ".join(shown) + (f"; and {hidden} more" if hidden else "")
        # one line, whatever the file's values contained
        text = text.replace("\r", "\\r").replace("\n", "\\n")
        raise ConfigError(f"{self.source}: {text}")
