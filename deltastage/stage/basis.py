"""Finding basis candidates for each file: the data the master already has that may
resemble what the peer will send (``stage.choose`` picks among them).

The candidates of a file, in this order:
1. the same relative path in the most recent earlier daily dir of that peer, or a similar
   name there when the same path is missing or empty (same directory, same name once digit
   runs are ignored: ``db-2026-11-25.sql`` is a good basis for ``db-2026-11-26.sql``);
2. today's own copy from an earlier run of the same day (replaced atomically afterwards);
3. a partial output left by an interrupted transfer;
4. when asked for (``earlier=True``): the same path, or else a similar name, in each other
   earlier daily dir within ``basis_days`` (newest first), leaving out a copy whose content
   a newer day's candidate already has.

The most recent earlier day is walked (its files as they are on disk, the hashes its
manifest vouches for). The other days are read from their manifests (a day without a valid
one is walked), and only once a file asks for them: a daily run where yesterday's copies
will do reads nothing more.

``BasisOpener`` opens a chosen basis beneath its root without following links.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from os.path import commonpath
from pathlib import Path

from deltastage.errors import IntegrityError, UnsafePathError
from deltastage.manifest import (
    INTERNAL_PREFIX,
    MANIFEST_NAME,
    read_manifest_contents,
    scan_manifest,
)
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


@dataclass(frozen=True, slots=True)  # one per planned file: no per-instance dict
class Basis:
    root: Path  # a peer dir (or its partial dir) that ``path`` is relative to
    path: str
    kind: str  # "previous" (same path) | "similar" | "today" | "partial"
    size: int
    known_hash: bytes | None  # from a manifest, when one vouches for the file
    day: date | None = None  # the earlier daily dir it is in ("previous", "similar")
    sketch: bytes | None = None  # its content sketch, from that manifest (delta.sketch)
    # its decompressed size, when that manifest says it was staged through its content (a
    # gzip or bzip2 file): its content may then be the basis (its sketch is the content's)
    content_size: int | None = None


def daily_dir_for(staging_dir: Path, day: date) -> Path:
    return staging_dir / f"{day.year:04d}" / f"{day.month:02d}" / f"{day.day:02d}"


def earlier_peer_dirs(
    staging_dir: Path, peer: str, before: date, *, days: int | None = None
) -> list[tuple[date, Path]]:
    """Every ``YYYY/MM/DD/<peer>`` dir strictly before ``before``, newest first; with
    ``days``, only those of the ``days`` days before it, and the most recent one always."""
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
    if days is not None:
        oldest = before - timedelta(days=days)
        found = found[:1] + [each for each in found[1:] if each[0] >= oldest]
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


def _closest(names: list[str], path: str, size_of: dict[str, int], size: int) -> str:
    """Of ``names``, the one sharing the longest directory with ``path``, then the
    closest in size."""
    return max(names, key=lambda n: (_common_prefix(n, path), -abs(size_of[n] - size), n))


class _Tree:
    """The regular files of one staged peer dir, with the hashes its manifest vouches for."""

    def __init__(self, root: Path, *, skip_internal: bool = True, day: date | None = None) -> None:
        self.root = root
        self.day = day
        self.sizes: dict[str, int] = {}
        self.hashes: dict[str, bytes] = {}
        self.sketches: dict[str, bytes] = {}
        self.content_sizes: dict[str, int] = {}
        self.similar: dict[str, list[str]] = {}
        try:
            fd = open_dir(root)
        except OSError:
            return
        try:
            for rel, st in walk_files(fd):
                if not stat.S_ISREG(st.st_mode):
                    continue
                top = rel.split("/", 1)[0]
                if skip_internal and (top.startswith(INTERNAL_PREFIX) or rel == MANIFEST_NAME):
                    continue
                self.sizes[rel] = st.st_size
                self.similar.setdefault(similarity_key(rel), []).append(rel)
            self._read_manifest(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _read_manifest(self, fd: int) -> None:
        """The hashes (and sketches) the manifest vouches for, of the files walked with the
        size it records; none from a bad manifest."""
        sizes, hashes, sketches = self.sizes, self.hashes, self.sketches
        content_sizes = self.content_sizes

        def vouched(
            path: str, size: int, digest: str, sketch: bytes | None, content_size: int | None
        ) -> None:
            if sizes.get(path) == size:
                hashes[path] = bytes.fromhex(digest)
                if sketch is not None:
                    sketches[path] = sketch
                if content_size is not None:
                    content_sizes[path] = content_size

        try:
            scan_manifest(fd, vouched)
        except (IntegrityError, OSError, ValueError):
            hashes.clear()
            sketches.clear()
            content_sizes.clear()

    def exact(self, path: str, kind: str) -> Basis | None:
        if path not in self.sizes:
            return None
        return self._basis(path, kind)

    def most_similar(self, path: str, size: int) -> Basis | None:
        names = [n for n in self.similar.get(similarity_key(path), []) if n != path]
        if not names:
            return None
        return self._basis(_closest(names, path, self.sizes, size), "similar")

    def _basis(self, path: str, kind: str) -> Basis:
        return Basis(
            self.root,
            path,
            kind,
            self.sizes[path],
            self.hashes.get(path),
            self.day,
            self.sketches.get(path),
            self.content_sizes.get(path),
        )


# one earlier day's copy of a path: (the day's index, size, xxh3-128 in hex or None, its
# content sketch or None, its content size or None)
_Copy = tuple[int, int, str | None, bytes | None, int | None]


class _EarlierDays:
    """The copies in the earlier days other than the most recent one, from their manifests,
    read on first use; a copy with the content of a newer one (the most recent day's
    included) is left out."""

    def __init__(self, days: list[tuple[date, Path]], newest: _Tree | None) -> None:
        self._days = days
        self._newest = newest
        self._copies: dict[str, list[_Copy]] | None = None
        self._similar: dict[str, list[str]] | None = None

    def _load(self) -> dict[str, list[_Copy]]:
        if self._copies is not None:
            return self._copies
        copies: dict[str, list[_Copy]] = {}
        newest = {} if self._newest is None else self._newest.hashes
        newest_hex = {path: digest.hex() for path, digest in newest.items()}
        for index, (_, root) in enumerate(self._days):
            for path, (size, digest, sketch, content) in _day_contents(root).items():
                known = copies.get(path)
                if known is None:
                    if digest is None or newest_hex.get(path) != digest:
                        copies[path] = [(index, size, digest, sketch, content)]
                elif digest is None or known[-1][1:3] != (size, digest):
                    known.append((index, size, digest, sketch, content))
                # else: the content of a newer day's copy
        self._copies = copies
        return copies

    def candidates(self, path: str, size: int, *, similar: bool) -> list[Basis]:
        """Newest first: the copies of ``path``; with ``similar`` and none of them, the
        closest similar name of each day."""
        copies = self._load()
        if not copies:  # no older day (a new peer's first days): nothing to look for
            return []
        found = [self._basis(path, "previous", c) for c in copies.get(path, ()) if c[1] > 0]
        if found or not similar:
            return found
        if self._similar is None:
            self._similar = {}
            for name in copies:
                self._similar.setdefault(similarity_key(name), []).append(name)
        names = [n for n in self._similar.get(similarity_key(path), []) if n != path]
        by_day: dict[int, dict[str, _Copy]] = {}
        for name in names:
            for copy in copies[name]:
                by_day.setdefault(copy[0], {})[name] = copy
        for index in sorted(by_day):
            day = by_day[index]
            best = _closest(list(day), path, {n: c[1] for n, c in day.items()}, size)
            found.append(self._basis(best, "similar", day[best]))
        return [b for b in found if b.size > 0]

    def _basis(self, path: str, kind: str, copy: _Copy) -> Basis:
        index, size, digest, sketch, content_size = copy
        when, root = self._days[index]
        known = bytes.fromhex(digest) if digest is not None else None
        return Basis(root, path, kind, size, known, when, sketch, content_size)


def _day_contents(
    root: Path,
) -> Mapping[str, tuple[int, str | None, bytes | None, int | None]]:
    """The files of one earlier day: its manifest's, else (none, or a bad one) as walked."""
    try:
        fd = open_dir(root)
    except OSError:
        return {}
    try:
        contents = read_manifest_contents(fd)
        if contents is not None:
            return contents
    except (IntegrityError, OSError, ValueError):
        pass
    try:
        tree = _Tree(root)
    finally:
        os.close(fd)
    return {path: (size, None, None, None) for path, size in tree.sizes.items()}


class BasisFinder:
    """Basis candidates for one peer on one run; scans each tree once."""

    def __init__(
        self,
        staging_dir: Path,
        peer: str,
        run_date: date,
        today_dir: Path,
        *,
        basis_days: int | None = None,
    ) -> None:
        earlier = earlier_peer_dirs(staging_dir, peer, run_date, days=basis_days)
        self.previous = _Tree(earlier[0][1], day=earlier[0][0]) if earlier else None
        self.previous_day = earlier[0][0] if earlier else None
        self.earlier = _EarlierDays(earlier[1:], self.previous)
        self.today = _Tree(today_dir)
        self.partial = _Tree(today_dir / PARTIAL_DIR, skip_internal=False)

    def present(self, basis: Basis) -> bool:
        """Whether ``basis`` is (still) a regular file of its size: an older day's manifest
        may vouch for a file removed since."""
        try:
            st = os.stat(
                basis.root.joinpath(*check_relative_path(basis.path)), follow_symlinks=False
            )
        except (OSError, UnsafePathError):
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == basis.size

    def candidates(self, path: str, size: int, *, earlier: bool = True) -> list[Basis]:
        """The non-empty bases for a file of ``size`` bytes at ``path``, best first; the
        older days' only with ``earlier``."""
        found: list[Basis | None] = []
        # a similar name is searched for only when the same path is missing or empty: the
        # search is costly, and the same path is nearly always the better basis
        exact = None if self.previous is None else self.previous.exact(path, "previous")
        if self.previous is not None:
            found.append(exact)
            if exact is None or exact.size == 0:
                found.append(self.previous.most_similar(path, size))
        found.append(self.today.exact(path, "today"))
        found.append(self.partial.exact(path, "partial"))
        if earlier:
            missing = exact is None or exact.size == 0
            found.extend(self.earlier.candidates(path, size, similar=missing))
        return [b for b in found if b is not None and b.size > 0]


class BasisOpener:
    """Opens bases beneath their roots, never following a link; thread-safe (the committer
    thread copies and links from bases while fetches sign theirs). The roots and the
    directories beneath them share one bounded cache, however many days and directories
    the bases are found in."""

    def __init__(self) -> None:
        self._dirs = DirCache(None, create=False)

    @contextmanager
    def parent(self, basis: Basis) -> Iterator[tuple[int, str]]:
        """The basis's directory (an fd, opened without following links, open until the
        block ends) and its name."""
        parts = check_relative_path(basis.path)
        with self._dirs.lease((os.fspath(basis.root), *parts[:-1])) as parent_fd:
            yield parent_fd, parts[-1]

    def open(self, basis: Basis) -> int:
        with self.parent(basis) as (parent_fd, name):
            return os.open(name, FILE_READ, dir_fd=parent_fd)

    def close(self) -> None:
        self._dirs.close()
