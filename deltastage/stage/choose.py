"""Choosing the bases of one fetch among a file's candidates (``stage.basis`` finds them).

A delta may copy from up to ``MAX_BASES`` bases; each one's signature crosses the link
first (master to agent), so a basis is worth adding only where the others leave much of the
new file uncovered.

A candidate whose recorded hash is the file's own is the one basis (the master holds the
file: it is linked or copied, nothing is fetched). Otherwise the content sketches choose
first (``stage.overlap``: the new file's from the listing, the candidates' from the
manifests): the candidates that add the most estimated content, each more than its
signature costs. The others are then added, closest in size first, within the signature
budget below: those the sketches cannot judge (no sketch: a small file, a manifest written
before sketches, a partial), and those they did not choose, as a sketch cannot see a share
below about a sixtieth of the file (a small incremental archive holding the few members a
full one changed). When the sketches choose none, the rule by size alone decides:

- the best candidate comes first (the same path in the most recent earlier day, see
  ``BasisFinder``); when it is at least half the new file's size it is the only one: the
  file is most likely that copy with some edits (and a single basis may be refined);
- otherwise the other candidates are added, the closest in size to the new file first
  (a full archive on the week's first day finds last week's, an incremental one finds the
  full one), as long as the whole signature stays within ``1/SIGNATURE_SHARE`` of the new
  file's size (or the first basis' own signature, if that is bigger).
"""

from __future__ import annotations

from collections.abc import Sequence

from deltastage.delta.params import MAX_BASES
from deltastage.delta.signature import signature_size
from deltastage.models import RemoteEntry
from deltastage.stage.basis import Basis
from deltastage.stage.overlap import by_content, estimated_overlap

__all__ = ["SIGNATURE_SHARE", "choose_bases", "settled"]

# The signature of several bases may cost up to this fraction of the new file's size.
SIGNATURE_SHARE = 16


def choose_bases(entry: RemoteEntry, candidates: Sequence[Basis]) -> list[Basis]:
    """The bases to fetch ``entry`` against, best first (at most ``MAX_BASES``); one whose
    content is the file's when there is one; none when there is no candidate."""
    for basis in candidates:
        if basis.known_hash == entry.xxh3_128 and basis.size == entry.size:
            return [basis]
    if not candidates:
        return []
    chosen = by_content(entry, candidates)
    if chosen:
        return _fill(entry, chosen, [basis for basis in candidates if basis not in chosen])
    first = candidates[0]
    if 2 * first.size >= entry.size:
        return [first]
    return _fill(entry, [first], candidates[1:])


def _fill(entry: RemoteEntry, chosen: list[Basis], others: Sequence[Basis]) -> list[Basis]:
    """``chosen``, then ``others`` closest in size first while the signature stays within
    the budget."""
    chosen = chosen[:MAX_BASES]
    budget = max(signature_size([b.size for b in chosen]), entry.size // SIGNATURE_SHARE)
    for basis in sorted(others, key=lambda basis: abs(basis.size - entry.size)):
        if len(chosen) == MAX_BASES:
            break
        if basis.known_hash is not None and any(
            basis.known_hash == other.known_hash for other in chosen
        ):
            continue  # the same content twice gains nothing
        sizes = [b.size for b in chosen] + [basis.size]
        if signature_size(sizes, new_size=entry.size) <= budget:
            chosen.append(basis)
    return chosen


def settled(entry: RemoteEntry, chosen: Sequence[Basis]) -> bool:
    """Whether more candidates (the older days') could not change ``chosen``: the first one
    is the file's content, or holds at least half of it (by its sketch; by its size when the
    sketches cannot tell)."""
    if not chosen:
        return False
    first = chosen[0]
    if first.known_hash == entry.xxh3_128:
        return True
    estimate = estimated_overlap(entry, first)
    if estimate is None:
        return 2 * first.size >= entry.size
    return 2 * estimate >= entry.size
