"""A listing checked as it arrives: the agent's files under a root, as the master accepts them.

Every listed path is a safe relative name (``protocol.paths``), named once; no name is also
the directory of another (it could not be staged); the entries are bounded in number and as
many as the agent's ``ListEnd`` says; a listed recipe (``transform.recipe``) decodes within
its bounds. An answer that breaks any of this is the agent's
violation of its own listing: ``ListingCheck`` raises it, and the session gives the
conversation up.
"""

from __future__ import annotations

from collections.abc import Sequence

from deltastage.errors import (
    DeltaFormatError,
    RemoteProtocolError,
    ResourceLimitError,
    UnsafePathError,
)
from deltastage.models import RemoteEntry, shared_mode
from deltastage.protocol import WireEntry
from deltastage.protocol.paths import split_relative
from deltastage.transform.recipe import decode_recipe

__all__ = ["ListingCheck"]


class ListingCheck:
    """The entries of one listing of ``root``, batch by batch, each checked on arrival."""

    def __init__(self, root: str, max_entries: int) -> None:
        self._root = root
        self._max_entries = max_entries
        self._entries: list[RemoteEntry] = []
        self._paths: set[str] = set()

    def add(self, batch: Sequence[WireEntry]) -> None:
        """Take one ``ListBatch``'s entries."""
        if not batch:
            # an honest agent never sends one; endless empty batches would never end
            raise RemoteProtocolError("agent sent an empty listing batch")
        if len(self._entries) + len(batch) > self._max_entries:
            raise ResourceLimitError(f"{self._root}: more than {self._max_entries} entries")
        for wire in batch:
            split_relative(wire.path)
            if wire.path in self._paths:
                raise RemoteProtocolError(f"listing names {wire.path!r} twice")
            self._paths.add(wire.path)
            if wire.recipe is not None:
                try:
                    decode_recipe(wire.recipe)
                except DeltaFormatError as exc:
                    raise RemoteProtocolError(f"{wire.path!r}: {exc}") from None
            self._entries.append(
                RemoteEntry(
                    wire.path,
                    wire.kind,
                    wire.size,
                    wire.mtime_ns,
                    shared_mode(wire.mode),
                    wire.xxh3_128,
                    wire.sketch,
                    wire.recipe,
                )
            )

    def finish(self, count: int) -> list[RemoteEntry]:
        """The whole listing, once the agent's ``ListEnd`` said it holds ``count`` entries."""
        if count != len(self._entries):
            raise RemoteProtocolError(
                f"listing count mismatch: agent said {count}, sent {len(self._entries)}"
            )
        self._check_tree()
        return self._entries

    def _check_tree(self) -> None:
        """No listed name may also be a directory of another (it could not be staged)."""
        for path in self._paths:
            parent, sep, _ = path.rpartition("/")
            while sep:
                if parent in self._paths:
                    raise UnsafePathError(f"listing has {parent!r} as both a file and a directory")
                parent, sep, _ = parent.rpartition("/")
