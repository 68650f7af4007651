"""stage.overlap directly, and through stage.choose: the candidates the sketches choose,
greedily by the content each adds; the rule by size where they cannot tell."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from deltastage.delta.sketch import sketch_of
from deltastage.errors import RemoteProtocolError
from deltastage.hashing import hash_bytes
from deltastage.models import RemoteEntry
from deltastage.stage.basis import Basis
from deltastage.stage.choose import choose_bases, settled
from deltastage.stage.overlap import by_content, estimated_overlap


def noise(size: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def listed(data: bytes, *, sketch: bytes | None = None) -> RemoteEntry:
    made = sketch_of(data).encode() if sketch is None else sketch
    return RemoteEntry("f.tar", "file", len(data), 0, 0o644, hash_bytes(data), made)


def basis(name: str, data: bytes, *, sketched: bool = True, vouched: bool = False) -> Basis:
    return Basis(
        Path("/staging") / name,
        "f.tar",
        "previous",
        len(data),
        hash_bytes(data) if vouched else None,
        date(2026, 11, 23),
        sketch_of(data).encode() if sketched else None,
    )


OLD = [noise(1 << 20, seed) for seed in range(4)]
NEW = b"".join(OLD[:3]) + noise(1 << 20, 10)  # three quarters of it in OLD


def test_the_candidate_sharing_most_is_chosen_and_what_adds_nothing_is_not() -> None:
    unrelated = basis("unrelated", noise(3 << 20, 20))
    most = basis("most", b"".join(OLD[:3]))
    part = basis("part", OLD[0])
    # part adds nothing most does not hold, unrelated nothing at all
    assert by_content(listed(NEW), [unrelated, part, most]) == [most]


def test_candidates_that_each_add_content_are_all_chosen() -> None:
    parts = [basis(f"day{i}", OLD[i]) for i in range(3)]
    assert by_content(listed(NEW), parts) == parts


def test_what_the_sketches_cannot_judge_is_not_chosen_by_them() -> None:
    old_manifest = basis("old-manifest", OLD[0], sketched=False)
    garbled = Basis(Path("/g"), "f.tar", "previous", 10, None, None, b"\x09junk")
    assert by_content(listed(NEW), [old_manifest, garbled]) == []
    assert estimated_overlap(listed(NEW), old_manifest) is None
    entry = RemoteEntry("f.tar", "file", len(NEW), 0, 0o644, hash_bytes(NEW), None)
    assert by_content(entry, [basis("a", OLD[0])]) == []


def test_an_agents_malformed_sketch_is_a_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError, match=r"sketch of 'f\.tar'"):
        by_content(listed(NEW, sketch=b"\x01\x05junk"), [basis("a", OLD[0])])


def test_choose_bases_puts_content_before_size() -> None:
    # the most recent copy is the new file's size but shares nothing: by size alone it
    # would be the one basis; by content the older one comes first
    recent = basis("recent", noise(len(NEW), 30))
    older = basis("older", b"".join(OLD[:3]))
    entry = listed(NEW)
    assert choose_bases(entry, [recent]) == [recent]
    assert not settled(entry, [recent])  # so the older days are searched
    assert choose_bases(entry, [recent, older])[0] == older
    assert settled(entry, [older])
    # without sketches, the size rule decides as before
    bare = [
        basis("recent", noise(len(NEW), 30), sketched=False),
        basis("older", b"".join(OLD[:3]), sketched=False),
    ]
    assert choose_bases(entry, bare) == bare[:1]


def test_the_held_copy_is_the_one_basis() -> None:
    held = basis("held", NEW, sketched=False, vouched=True)
    assert choose_bases(listed(NEW), [basis("most", b"".join(OLD[:3])), held]) == [held]
