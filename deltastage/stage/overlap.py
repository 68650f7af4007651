"""The content a file's basis candidates share with it, as their sketches estimate it
(``delta.sketch``): the listing gives the new file's sketch, the earlier days' manifests give
the candidates', so no earlier file is read to choose.

``by_content`` picks among the candidates the sketches can judge, greedily
(``delta.sketch.choose``): each next one adds the most estimated bytes not already covered,
net of its signature's wire cost, up to ``MAX_BASES``. The sketches cannot judge a candidate
without one (a small file, a manifest written before sketches, a partial), nor one whose
samples and the file's do not meet.
"""

from __future__ import annotations

from collections.abc import Sequence

from deltastage.delta.params import MAX_BASES
from deltastage.delta.signature import signature_size
from deltastage.delta.sketch import Sketch, choose, decode_sketch, estimate_overlap
from deltastage.errors import DeltaFormatError, RemoteProtocolError
from deltastage.models import RemoteEntry
from deltastage.stage.basis import Basis

__all__ = ["by_content", "estimated_overlap"]


def _entry_sketch(entry: RemoteEntry) -> Sketch | None:
    if entry.sketch is None:
        return None
    try:
        return decode_sketch(entry.sketch)
    except DeltaFormatError as exc:
        raise RemoteProtocolError(f"agent's sketch of {entry.path!r}: {exc}") from None


def _basis_sketch(basis: Basis) -> Sketch | None:
    if basis.sketch is None:
        return None
    try:
        return decode_sketch(basis.sketch)
    except DeltaFormatError:
        return None  # a manifest of another version's sketches: judged by size instead


def estimated_overlap(entry: RemoteEntry, basis: Basis) -> int | None:
    """Estimated bytes of ``entry`` that ``basis`` holds; None when the sketches cannot tell."""
    new, old = _entry_sketch(entry), _basis_sketch(basis)
    if new is None or old is None:
        return None
    return estimate_overlap(new, entry.size, old)


def by_content(entry: RemoteEntry, candidates: Sequence[Basis]) -> list[Basis]:
    """The candidates the sketches choose, best first; none when they can judge none, or
    none adds more than its signature costs."""
    new = _entry_sketch(entry)
    if new is None:
        return []
    judged: list[tuple[Basis, Sketch]] = []
    for basis in candidates:
        sketch = _basis_sketch(basis)
        if sketch is not None and estimate_overlap(new, entry.size, sketch) is not None:
            judged.append((basis, sketch))
    picked = choose(
        new,
        entry.size,
        [sketch for _, sketch in judged],
        [signature_size([basis.size]) for basis, _ in judged],
        MAX_BASES,
    )
    return [judged[index][0] for index in picked]
