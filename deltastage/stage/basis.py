"""Choosing the best basis for each file: the data the master already has that most
resembles what the peer will send.

Order of preference, per file:
1. the same relative path in the most recent earlier daily dir of that peer;
2. a similar name there (same directory, same name once digit runs are ignored:
   ``db-2026-11-25.sql`` is a good basis for ``db-2026-11-26.sql``);
3. today's own copy from an earlier run of the same day (replaced atomically afterwards);
4. a partial output left by an interrupted transfer;
5. nothing: a plain (all-literal, compressed) transfer.

``BasisOpener`` opens a chosen basis beneath its root without following links.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from dataclasses import dataclass
from datetime import date
from os.path import commonpath
from pathlib import Path

from deltastage.errors import IntegrityError
from deltastage.manifest import INTERNAL_PREFIX, MANIFEST_NAME, Manifest, read_manifest
from deltastage.safefs import FILE_READ, DirCache, check_relative_path, open_dir, walk_files

__all__ = [
    "PARTIAL_DIR",
    "Basis",
    "BasisFinder",
    "BasisOpener",
    "daily_dir_for",
    "earlier_peer_dirs",
]

PARTIAL_DIR = f"{INTERNAL_PREFIX}partial"
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class Basis:
    root: Path  # a peer dir (or its partial dir) that ``path`` is relative to
    path: str
    kind: str  # "previous" | "similar" | "today" | "partial"
    size: int
    known_hash: bytes | None  # from a manifest, when one vouches for the file


def daily_dir_for(staging_dir: Path, day: date) -> Path:
    return staging_dir / f"{day.year:04d}" / f"{day.month:02d}" / f"{day.day:02d}"


def earlier_peer_dirs(staging_dir: Path, peer: str, before: date) -> list[tuple[date, Path]]:
    """Every ``YYYY/MM/DD/<peer>`` dir strictly before ``before``, newest first."""
    found: list[tuple[date, Path]] = []
    for year in _numeric_children(staging_dir, 4):
        for month in _numeric_children(staging_dir / year, 2):
            for day in _numeric_children(staging_dir / year / month, 2):
                try:
                    when = date(int(year), int(month), int(day))
                except ValueError:
                    continue
                peer_dir = staging_dir / year / month / day / peer
                if when < before and peer_dir.is_dir() and not peer_dir.is_symlink():
                    found.append((when, peer_dir))
    found.sort(reverse=True)
    return found


def _numeric_children(directory: Path, width: int) -> list[str]:
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [n for n in names if len(n) == width and n.isdigit()]


def similarity_key(path: str) -> str:
    head, _, name = path.rpartition("/")
    return f"{head}/{_DIGITS.sub('#', name)}"


def _common_prefix(a: str, b: str) -> int:
    return len(commonpath([a, b]))


class _Tree:
    """The regular files of one staged peer dir, with the hashes its manifest vouches for."""

    def __init__(self, root: Path, *, skip_internal: bool = True) -> None:
        self.root = root
        self.sizes: dict[str, int] = {}
        self.hashes: dict[str, bytes] = {}
        self.similar: dict[str, list[str]] = {}
        try:
            fd = open_dir(root)
        except OSError:
            return
        try:
            manifest: Manifest | None = None
            try:
                manifest = read_manifest(fd)
            except (IntegrityError, OSError):
                manifest = None
            for rel, st in walk_files(fd):
                if not stat.S_ISREG(st.st_mode):
                    continue
                top = rel.split("/", 1)[0]
                if skip_internal and (top.startswith(INTERNAL_PREFIX) or rel == MANIFEST_NAME):
                    continue
                self.sizes[rel] = st.st_size
                self.similar.setdefault(similarity_key(rel), []).append(rel)
            if manifest is not None:
                for entry in manifest.files:
                    if self.sizes.get(entry.path) == entry.size:
                        self.hashes[entry.path] = entry.xxh3_128
        except OSError:
            pass
        finally:
            os.close(fd)

    def exact(self, path: str, kind: str) -> Basis | None:
        if path not in self.sizes:
            return None
        return Basis(self.root, path, kind, self.sizes[path], self.hashes.get(path))

    def most_similar(self, path: str, size: int) -> Basis | None:
        names = [n for n in self.similar.get(similarity_key(path), []) if n != path]
        if not names:
            return None
        best = max(names, key=lambda n: (_common_prefix(n, path), -abs(self.sizes[n] - size), n))
        return Basis(self.root, best, "similar", self.sizes[best], self.hashes.get(best))


class BasisFinder:
    """Basis candidates for one peer on one run; scans each tree once."""

    def __init__(self, staging_dir: Path, peer: str, run_date: date, today_dir: Path) -> None:
        earlier = earlier_peer_dirs(staging_dir, peer, run_date)
        self.previous = _Tree(earlier[0][1]) if earlier else None
        self.today = _Tree(today_dir)
        self.partial = _Tree(today_dir / PARTIAL_DIR, skip_internal=False)

    def candidates(self, path: str, size: int) -> list[Basis]:
        """The non-empty bases for a file of ``size`` bytes at ``path``, best first."""
        found: list[Basis | None] = []
        if self.previous is not None:
            exact = self.previous.exact(path, "previous")
            found.append(exact)
            # a similar name is searched for only when the same path is missing or empty:
            # the search is costly, and only the best candidate is used
            if exact is None or exact.size == 0:
                found.append(self.previous.most_similar(path, size))
        found.append(self.today.exact(path, "today"))
        found.append(self.partial.exact(path, "partial"))
        return [b for b in found if b is not None and b.size > 0]


class BasisOpener:
    """Opens bases beneath their roots, never following a link; thread-safe (the committer
    thread copies and links from bases while fetches sign theirs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._roots: dict[Path, DirCache] = {}

    def parent(self, basis: Basis) -> tuple[int, str]:
        """The basis's directory (an fd, opened without following links) and its name."""
        with self._lock:
            cache = self._roots.get(basis.root)
            if cache is None:
                cache = DirCache(open_dir(basis.root), create=False)
                self._roots[basis.root] = cache
        parts = check_relative_path(basis.path)
        return cache.parent_of(parts), parts[-1]

    def open(self, basis: Basis) -> int:
        parent_fd, name = self.parent(basis)
        return os.open(name, FILE_READ, dir_fd=parent_fd)

    def close(self) -> None:
        with self._lock:
            caches, self._roots = list(self._roots.values()), {}
        for cache in caches:
            cache.close()
            os.close(cache.root_fd)
