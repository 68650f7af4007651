"""Choosing the bases of one fetch among a file's candidates (``stage.basis`` finds them).

A delta may copy from up to ``MAX_BASES`` bases; each one's signature crosses the link
first (master to agent), so a basis is worth adding only where the others leave much of the
new file uncovered. The rule, without knowing the candidates' content:

- a candidate whose recorded hash is the file's own is the one basis (the master holds the
  file: it is linked or copied, nothing is fetched);
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
    first = candidates[0]
    chosen = [first]
    if 2 * first.size >= entry.size:
        return chosen
    budget = max(signature_size([first.size]), entry.size // SIGNATURE_SHARE)
    rest = sorted(candidates[1:], key=lambda basis: abs(basis.size - entry.size))
    for basis in rest:
        if len(chosen) == MAX_BASES:
            break
        if basis.known_hash is not None and any(
            basis.known_hash == other.known_hash for other in chosen
        ):
            continue  # the same content twice gains nothing
        if signature_size([b.size for b in chosen] + [basis.size]) <= budget:
            chosen.append(basis)
    return chosen


def settled(entry: RemoteEntry, chosen: Sequence[Basis]) -> bool:
    """Whether more candidates (the older days') could not change ``chosen``."""
    return bool(chosen) and (
        chosen[0].known_hash == entry.xxh3_128 or 2 * chosen[0].size >= entry.size
    )
