"""The two delta operations, kept apart from the matcher so that patching needs no numpy."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Copy", "Literal", "Op"]


@dataclass(frozen=True, slots=True)
class Copy:
    """Copy ``count`` consecutive blocks of basis ``basis`` starting at its block ``start``."""

    start: int
    count: int
    basis: int = 0


@dataclass(frozen=True, slots=True)
class Literal:
    data: bytes


Op = Copy | Literal
