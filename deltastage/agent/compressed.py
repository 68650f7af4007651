"""What the agent does for a gzip or bzip2 file: prove its recipe when listing it, and read
its content when the master asks for the delta of that.

A listed file of ``TRANSFORM_MIN_SIZE`` bytes or more whose first bytes say gzip or bzip2
is searched for a recipe (``transform.search``: bounded, proven on the whole file). With one,
its entry carries the encoded recipe and, for content of ``SKETCH_MIN_SIZE`` bytes or more,
the content's sketch in place of the compressed bytes' (those share nothing from one day to
the next), made from the content the proof decompresses (no pass of its own). Content is
decompressed within ``LIMITS`` only, so a bomb is answered as a plain file after at most a
bounded amount of work.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from deltastage.agent.conversation import Refusal
from deltastage.errors import DeltaFormatError
from deltastage.protocol import ErrorCode
from deltastage.protocol.events import MAX_LISTED_RECIPE
from deltastage.transform.inflate import inflate
from deltastage.transform.recipe import encode_recipe
from deltastage.transform.search import SNIFF_SIZE, Limits, Verdict, find_recipe, sniff

__all__ = ["LIMITS", "TRANSFORM_MIN_SIZE", "content_pieces", "listed_recipe"]

# A smaller compressed file travels as its bytes: the recipe and the content's signature
# would cost about what a delta of its content could save.
TRANSFORM_MIN_SIZE = 64 << 10
# Content the agent decompresses for one file, at most: past this, the file is plain.
LIMITS = Limits(max_size=1 << 40, max_ratio=256)


def listed_recipe(
    fd: int, size: int, prefix: bytes, on_content: Callable[[bytes], None] | None = None
) -> tuple[bytes, int] | None:
    """The encoded recipe of the open ``size``-byte file starting with ``prefix`` and its
    content size; None when it is not compressed, or not in a way a recipe rebuilds.
    ``on_content`` is given the content as the proof decompresses it (see ``find_recipe``)."""
    if size < TRANSFORM_MIN_SIZE or sniff(prefix[:SNIFF_SIZE]) is None:
        return None
    finding = find_recipe(lambda offset, n: os.pread(fd, n, offset), size, LIMITS, on_content)
    if finding.verdict is not Verdict.REBUILT or finding.recipe is None:
        return None
    try:
        encoded = encode_recipe(finding.recipe)
    except DeltaFormatError:
        return None
    if len(encoded) > MAX_LISTED_RECIPE:
        return None
    return encoded, finding.recipe.content_size


def content_pieces(fd: int, size: int, path: str) -> Iterator[bytes]:
    """The decompressed content of the open file, which its listing proved a recipe for; a
    file that is no longer so compressed has changed since."""
    kind = sniff(os.pread(fd, SNIFF_SIZE, 0))
    if kind is None:
        raise Refusal(ErrorCode.CHANGED, f"{path}: no longer gzip or bzip2")
    try:
        yield from inflate(
            lambda offset, n: os.pread(fd, n, offset), size, kind, LIMITS.bound(size)
        )
    except DeltaFormatError as exc:
        raise Refusal(ErrorCode.CHANGED, f"{path}: changed since listed ({exc})") from None
