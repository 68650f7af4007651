"""Recognise a gzip or bzip2 file by its content and prove a recipe that rebuilds it.

The file is read through ``read_at(offset, n)`` (fewer bytes only at its end), never whole.
Each member is proven in one streaming pass per candidate: decompress a chunk, recompress it
with the candidate (``rebuild.MemberWriter``, the code that rebuilds), compare what comes out
with the file's bytes at that place, and drop the candidate at the first chunk that differs.
A recipe is returned only when every member, trailer included, came out byte for byte and
the file ends right after the last one.

Bounds, so that neither a bomb nor an unlucky file costs more than this:

- decompressed bytes: at most ``Limits.bound`` (the smaller of a size and a ratio to the
  compressed size) for the whole file; one byte more and the answer is ``TOO_BIG``, found
  while at most ``inflate.OUT_CHUNK`` decompressed bytes are held at once.
- candidates: at most ``MAX_TRIES`` per member, likeliest first: the previous member's
  parameters, the level the gzip XFL byte hints at, then Python's defaults (9 for
  ``tarfile`` ``w:gz`` and ``gzip``, then 6, 1 and the rest); bzip2 has one, the block size
  its header names.
- work: rejected candidates may recompress ``REJECT_BUDGET`` content bytes in all; past it
  no further candidate starts (``TOO_COSTLY``). So one search recompresses at most twice
  the decompressed size plus ``REJECT_BUDGET``, and decompresses as much.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from deltastage.errors import DeltaFormatError
from deltastage.transform.gzipheader import (
    GZIP_MAGIC,
    MAX_HEADER_SIZE,
    gzip_header_length,
    level_hint,
)
from deltastage.transform.inflate import IN_CHUNK, Inflater
from deltastage.transform.rebuild import MemberWriter
from deltastage.transform.recipe import (
    MAX_MEMBERS,
    Bzip2Stream,
    DeflateParams,
    GzipMember,
    Kind,
    Member,
    Recipe,
)

__all__ = [
    "MAX_TRIES",
    "PROBE_SAMPLE",
    "REJECT_BUDGET",
    "SNIFF_SIZE",
    "Finding",
    "Limits",
    "ReadAt",
    "Verdict",
    "find_recipe",
    "probe",
    "sniff",
]

ReadAt = Callable[[int, int], bytes]

REJECT_BUDGET = 64 << 20
PROBE_SAMPLE = 4 << 20
# Python's own gzip and tarfile defaults first; memLevel 9 last (zlib's maximum).
_GZIP_CANDIDATES = (
    *(DeflateParams(level) for level in (9, 6, 1, 2, 3, 4, 5, 7, 8, 0)),
    DeflateParams(9, mem_level=9),
    DeflateParams(6, mem_level=9),
)
MAX_TRIES = len(_GZIP_CANDIDATES)
_GZIP_TRAILER = 8
_BZIP2_MAGIC = b"BZh"
_BZIP2_LEVELS = b"123456789"
# the first block's magic (pi) or, for an empty stream, the end-of-stream magic (sqrt pi)
_BZIP2_STARTS = (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")
SNIFF_SIZE = 10


class Verdict(enum.Enum):
    REBUILT = "rebuilt"  # a recipe, proven on the whole file
    PLAIN = "plain"  # neither gzip nor bzip2
    FOREIGN = "foreign"  # valid, but not what zlib or libbzip2 write (GNU gzip, pigz...)
    CORRUPT = "corrupt"  # bad CRC, truncated, undecodable, or bytes after the last member
    TOO_BIG = "too-big"  # decompresses past the bound
    TOO_COSTLY = "too-costly"  # the search budget or the member count ran out


@dataclass(frozen=True)
class Limits:
    max_size: int
    max_ratio: int

    def bound(self, compressed_size: int) -> int:
        return min(self.max_size, self.max_ratio * compressed_size)


@dataclass(frozen=True)
class Finding:
    verdict: Verdict
    kind: Kind | None = None
    recipe: Recipe | None = None


def sniff(prefix: bytes) -> Kind | None:
    """gzip or bzip2 by the first ``SNIFF_SIZE`` bytes of a file, whatever its name."""
    if len(prefix) >= SNIFF_SIZE and prefix[:3] == GZIP_MAGIC and not prefix[3] & 0xE0:
        return Kind.GZIP
    if (
        prefix[:3] == _BZIP2_MAGIC
        and prefix[3:4] != b""
        and prefix[3] in _BZIP2_LEVELS
        and prefix[4:SNIFF_SIZE] in _BZIP2_STARTS
    ):
        return Kind.BZIP2
    return None


def find_recipe(
    read_at: ReadAt,
    size: int,
    limits: Limits,
    on_content: Callable[[bytes], None] | None = None,
) -> Finding:
    """Whether the ``size``-byte file behind ``read_at`` can be rebuilt, and how.

    ``on_content`` is given the file's decompressed content once, in order, as the search
    first decompresses it (a rejected candidate and the next one decompress the same bytes:
    only what goes beyond it is passed on); meaningful only when the verdict is REBUILT."""
    kind = sniff(read_at(0, SNIFF_SIZE))
    if kind is None:
        return Finding(Verdict.PLAIN)
    search = _Search(read_at, size, limits.bound(size), kind, on_content)
    try:
        recipe = search.run()
    except _Stop as stop:
        return Finding(stop.verdict, kind)
    return Finding(Verdict.REBUILT, kind, recipe)


def probe(read_at: ReadAt, size: int, sample: int = PROBE_SAMPLE) -> Verdict:
    """A quick answer to "can this file be rebuilt": the search on at most ``sample``
    decompressed bytes. ``FOREIGN`` and ``CORRUPT`` are as certain as the full search's;
    ``REBUILT`` means that a candidate held over the whole sample (or file), not a proof:
    another deflate (GNU gzip's) can agree with zlib until it first ends a block elsewhere,
    which is usually, not always, within a few MiB."""
    verdict = find_recipe(read_at, size, Limits(sample, sample)).verdict
    return Verdict.REBUILT if verdict is Verdict.TOO_BIG else verdict


class _Stop(Exception):
    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.value)
        self.verdict = verdict


class _Search:
    def __init__(
        self,
        read_at: ReadAt,
        size: int,
        bound: int,
        kind: Kind,
        on_content: Callable[[bytes], None] | None,
    ) -> None:
        self._read_at = read_at
        self._size = size
        self._bound = bound
        self._kind = kind
        self._on_content = on_content
        self._content = 0  # decompressed bytes of the members proven so far
        self._rejected = 0  # content bytes recompressed by rejected candidates
        self._passed = 0  # content bytes of the current member given to on_content

    def run(self) -> Recipe:
        members: list[Member] = []
        offset = 0
        while offset < self._size or not members:
            if len(members) == MAX_MEMBERS:
                raise _Stop(Verdict.TOO_COSTLY)
            self._passed = 0
            for candidate in self._candidates(offset, members[-1] if members else None):
                if self._rejected > REJECT_BUDGET:
                    raise _Stop(Verdict.TOO_COSTLY)
                proven = self._prove(offset, candidate)
                if proven is not None:
                    member, offset = proven
                    members.append(member)
                    break
            else:
                raise _Stop(Verdict.FOREIGN)
        return Recipe(self._kind, tuple(members))

    def _candidates(self, offset: int, last: Member | None) -> Iterator[Member]:
        if self._kind == Kind.BZIP2:
            head = self._read_at(offset, SNIFF_SIZE)
            if sniff(head) != Kind.BZIP2:
                raise _Stop(Verdict.CORRUPT)
            yield Bzip2Stream(head[3] - _BZIP2_LEVELS[0] + 1, 0)
            return
        try:
            header = self._read_at(offset, MAX_HEADER_SIZE)
            header = header[: gzip_header_length(header)]
        except DeltaFormatError:
            raise _Stop(Verdict.CORRUPT) from None
        hint = level_hint(header)
        ordered = [last.params] if isinstance(last, GzipMember) else []
        ordered += [DeflateParams(hint)] if hint is not None else []
        for params in dict.fromkeys([*ordered, *_GZIP_CANDIDATES]):
            yield GzipMember(header, params, 0)

    def _prove(self, start: int, candidate: Member) -> tuple[Member, int] | None:
        """The member proven at ``start`` and the offset after it, or None at the first
        chunk the candidate gets wrong."""
        writer = MemberWriter(candidate)
        pos_in = pos_out = start + len(writer.start())
        inflater = Inflater(self._kind)
        content = 0
        while not inflater.eof:
            data = b""
            if inflater.needs_input:
                data = self._read_at(pos_in, IN_CHUNK)
                pos_in += len(data)
            try:
                out = inflater.decompress(data)
            except DeltaFormatError:
                raise _Stop(Verdict.CORRUPT) from None
            if not data and not out and inflater.needs_input and not inflater.eof:
                raise _Stop(Verdict.CORRUPT)  # the file ends inside the stream
            content += len(out)
            if self._content + content > self._bound:
                raise _Stop(Verdict.TOO_BIG)
            if self._on_content is not None and content > self._passed:
                self._on_content(out[len(out) - (content - self._passed) :])
                self._passed = content
            produced = writer.write(out)
            if produced:
                if self._read_at(pos_out, len(produced)) != produced:
                    self._rejected += content
                    return None
                pos_out += len(produced)
        end = pos_in - len(inflater.unused_data)
        final = writer.finish()
        body = len(final) - (_GZIP_TRAILER if self._kind == Kind.GZIP else 0)
        found = self._read_at(pos_out, len(final))
        if pos_out + body != end or found[:body] != final[:body]:
            self._rejected += content
            return None
        if found[body:] != final[body:]:
            raise _Stop(Verdict.CORRUPT)  # the stored CRC or length is wrong, or cut short
        self._content += content
        return replace(candidate, size=content), pos_out + len(final)
