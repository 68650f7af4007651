"""Planning one peer's stage: which listed files to stage, which the master holds already,
in which order the rest are fetched, and the ways to try each fetch (``Job``).

A file listed with a recipe (a gzip or bzip2 file the agent can have rebuilt) is planned by
its content: its bases are chosen among the candidates' contents (a candidate staged through
its content is decompressed, any other is its bytes), and its first try fetches the delta of
its content against them. Its recipe is dropped, and it moves as its bytes, when transforms
are off or its declared content is beyond ``transform_max_ratio`` or the temp space.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from deltastage.config import Options
from deltastage.delta.params import MAX_STRONG_LEN
from deltastage.errors import ResourceLimitError, UnsafePathError
from deltastage.manifest import INTERNAL_PREFIX, MANIFEST_NAME
from deltastage.models import RemoteEntry
from deltastage.safefs import check_relative_path
from deltastage.stage.basis import Basis, BasisFinder
from deltastage.stage.choose import choose_bases, settled
from deltastage.transform.recipe import decode_recipe

__all__ = [
    "Held",
    "Job",
    "Planned",
    "content_size",
    "order_by_work",
    "plan_bases",
    "select_entries",
]

Planned = tuple[RemoteEntry, list[Basis]]  # a file and its chosen bases, best first
Held = tuple[RemoteEntry, Basis]  # a file and the master's copy of its content


def select_entries(
    entries: Sequence[RemoteEntry], options: Options
) -> tuple[list[RemoteEntry], list[str]]:
    """Regular files to stage, and the names skipped (links, specials); the indicators in
    the collect dir itself left out."""
    indicators = {options.collect_indicator, options.stage_indicator}
    files: list[RemoteEntry] = []
    skipped: list[str] = []
    for entry in entries:
        if entry.path in indicators:
            continue
        if entry.kind != "file" or entry.xxh3_128 is None:
            skipped.append(f"{entry.path} ({entry.kind})")
            continue
        if entry.path == MANIFEST_NAME or any(
            part.startswith(INTERNAL_PREFIX) for part in entry.path.split("/")
        ):
            # staged, it would be overwritten by the manifest, swept as a temp file or
            # removed with the partial dir, and the manifest would vouch for a lost file
            raise UnsafePathError(f"peer lists {entry.path[:200]!r}, a name deltastage reserves")
        if entry.recipe is not None and not _may_transform(entry, options):
            entry = dataclasses.replace(entry, recipe=None, sketch=None)
        files.append(entry)
    if len(files) > options.max_files_per_peer:
        raise ResourceLimitError(
            f"peer lists {len(files)} files, "
            f"more than max_files_per_peer={options.max_files_per_peer}"
        )
    total = sum(e.size for e in files)
    if total > options.max_bytes_per_peer:
        raise ResourceLimitError(
            f"peer lists {total} bytes, more than max_bytes_per_peer={options.max_bytes_per_peer}"
        )
    return files, skipped


def _may_transform(entry: RemoteEntry, options: Options) -> bool:
    assert entry.recipe is not None
    content_size = decode_recipe(entry.recipe).content_size
    return options.transform_compressed and (
        content_size <= options.transform_max_ratio * entry.size
        and content_size <= options.transform_temp_bytes
    )


def content_size(entry: RemoteEntry) -> int | None:
    """The decompressed size of a file planned by its content; None for any other."""
    return None if entry.recipe is None else decode_recipe(entry.recipe).content_size


def order_by_work(
    files: list[RemoteEntry], finder: BasisFinder
) -> tuple[list[Held], list[Planned]]:
    """Files the master already holds (copied or linked locally), then those to fetch,
    biggest first.

    The committer thread settles the local ones while the network carries the rest, and a
    big fetch done early has its sync and re-read overlap the smaller ones after it.
    """
    local: list[Held] = []
    remote: list[Planned] = []
    for entry in files:
        bases = plan_bases(entry, finder)
        if len(bases) == 1 and (bases[0].known_hash, bases[0].size) == (
            entry.xxh3_128,
            entry.size,
        ):
            local.append((entry, bases[0]))
        else:
            remote.append((entry, bases))
    remote.sort(key=lambda pair: -pair[0].size)
    return local, remote


def plan_bases(entry: RemoteEntry, finder: BasisFinder) -> list[Basis]:
    """The bases chosen for ``entry``; the older days are searched only when the most
    recent ones leave the choice open."""
    bases = _choose(entry, finder.candidates(entry.path, entry.size, earlier=False))
    if _settled(entry, bases):
        return bases
    candidates = finder.candidates(entry.path, entry.size)
    bases = _choose(entry, candidates)
    if bases and bases[0].known_hash == entry.xxh3_128 and not finder.present(bases[0]):
        # an older day's copy its manifest vouches for, gone since: no copy to link
        bases = _choose(entry, [b for b in candidates if b != bases[0]])
    return bases


def _choose(entry: RemoteEntry, candidates: list[Basis]) -> list[Basis]:
    """``choose_bases``; for a file planned by its content, among the candidates' contents
    (unless one of them is the file itself)."""
    size = content_size(entry)
    if size is None:
        return choose_bases(entry, candidates)
    for basis in candidates:
        if basis.known_hash == entry.xxh3_128 and basis.size == entry.size:
            return [basis]
    views = {_content_view(basis): basis for basis in candidates}
    chosen = choose_bases(dataclasses.replace(entry, size=size), list(views))
    return [views[view] for view in chosen]


def _settled(entry: RemoteEntry, bases: list[Basis]) -> bool:
    size = content_size(entry)
    if size is None or (bases and bases[0].known_hash == entry.xxh3_128):
        return settled(entry, bases)
    return settled(dataclasses.replace(entry, size=size), [_content_view(basis) for basis in bases])


def _content_view(basis: Basis) -> Basis:
    """A candidate as the content it holds: decompressed when it was staged so."""
    if basis.content_size is None:
        return basis
    return dataclasses.replace(basis, size=basis.content_size)


class Job:
    """One file to fetch, and the ways to try: with its bases, then without any."""

    # every file to fetch has one from the plan on: no per-instance dict
    __slots__ = (
        "_parts",
        "bases",
        "changed_retry",
        "entry",
        "fresh",
        "index",
        "refetch",
        "speculative",
    )

    def __init__(self, entry: RemoteEntry, bases: list[Basis]) -> None:
        self.entry = entry
        self._parts: list[str] | None = None
        # the plans: 0, with its bases; 1, the retry: no basis, full-length block hashes
        # (kept as the bases and an index: every queued file has a job)
        self.bases = tuple(bases)
        self.index = 0
        self.changed_retry = True  # one more try for a file that changed while read
        self.fresh = True  # not yet checked against an earlier run of today
        self.refetch = False  # a staged copy that did not verify, fetched again
        self.speculative = False  # requested before the listing, on a guess

    @classmethod
    def refetch_of(cls, entry: RemoteEntry) -> Job:
        """A staged copy that did not verify: fetched again without a basis."""
        job = cls(entry, [])
        job.index, job.fresh, job.refetch = 1, False, True
        return job

    @classmethod
    def guess(cls, basis: Basis) -> Job:
        """The fetch of ``basis.path`` against ``basis``, before the listing says it changed."""
        job = cls(RemoteEntry(basis.path, "file", basis.size, 0, 0o600, None), [basis])
        job.fresh, job.speculative = False, True
        return job

    @property
    def parts(self) -> list[str]:
        """The path's checked parts, made when the job is first prepared (not for every
        queued job at once)."""
        if self._parts is None:
            self._parts = check_relative_path(self.entry.path)
        return self._parts

    @property
    def content(self) -> bool:
        """Whether this try fetches the delta of the file's content (its first, with bases)."""
        return self.index == 0 and self.entry.recipe is not None and bool(self.bases)

    @property
    def plan(self) -> tuple[tuple[Basis, ...], int | None]:
        """The bases to try (none: a plain transfer) and the strong hash length (None: the
        default)."""
        return (self.bases, None) if self.index == 0 else ((), MAX_STRONG_LEN)

    def next_plan(self) -> bool:
        """Move on to the next way to try; False when none is left."""
        self.index += 1
        return self.index < 2
