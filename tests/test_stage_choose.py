"""stage.choose directly: which of a file's candidates its fetch is made against."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from deltastage.delta.params import MAX_BASES
from deltastage.delta.signature import signature_size
from deltastage.hashing import hash_bytes
from deltastage.models import RemoteEntry
from deltastage.stage.basis import Basis
from deltastage.stage.choose import SIGNATURE_SHARE, choose_bases, settled

DAY = date(2026, 11, 23)
MiB = 1 << 20


def entry(size: int, content: bytes = b"new") -> RemoteEntry:
    return RemoteEntry("lib.tar", "file", size, 0, 0o644, hash_bytes(content))


def basis(size: int, days_back: int = 1, content: bytes | None = None) -> Basis:
    day = DAY - timedelta(days=days_back)
    known = None if content is None else hash_bytes(content)
    return Basis(Path(f"/staging/{day}"), "lib.tar", "previous", size, known, day)


def test_no_candidate_no_basis() -> None:
    assert choose_bases(entry(100), []) == []
    assert not settled(entry(100), [])


def test_a_copy_of_the_very_content_is_the_one_basis() -> None:
    held = basis(3, days_back=7, content=b"new")
    chosen = choose_bases(entry(3), [basis(50 * MiB), held])
    assert chosen == [held]
    assert settled(entry(3), chosen)


def test_a_previous_copy_of_about_the_size_is_the_only_basis() -> None:
    previous = basis(10 * MiB)
    chosen = choose_bases(entry(12 * MiB), [previous, basis(9 * MiB, 2), basis(30 * MiB, 7)])
    assert chosen == [previous], "an edited copy: one basis (which may be refined)"
    assert settled(entry(12 * MiB), chosen)


def test_a_full_day_finds_last_weeks_full_copy_and_the_incrementals() -> None:
    incrementals = [basis(300_000 + 1000 * n, days_back=n) for n in range(1, 7)]
    last_full = basis(31 * MiB, days_back=7)
    new = entry(32 * MiB)
    assert not settled(new, incrementals[:1])
    chosen = choose_bases(new, [*incrementals, last_full])
    assert chosen[0] == incrementals[0], "the most recent day's copy first"
    assert chosen[1] == last_full, "then the closest in size"
    assert sorted(chosen[2:], key=lambda b: b.size) == incrementals[1:]


def test_at_most_max_bases_and_within_the_signature_budget() -> None:
    many = [basis(100_000, days_back=n) for n in range(1, 14)]
    chosen = choose_bases(entry(64 * MiB), many)
    assert len(chosen) == MAX_BASES
    small = entry(400_000)
    chosen = choose_bases(small, [basis(100_000), basis(2 << 30, days_back=7)])
    assert len(chosen) == 1, "a 2 GiB basis' signature would cost more than it may save"
    chosen = choose_bases(small, [basis(100_000), basis(150_000, days_back=2)])
    assert len(chosen) == 2
    assert signature_size([b.size for b in chosen]) <= small.size // SIGNATURE_SHARE


def test_the_same_content_twice_is_signed_once() -> None:
    twin = [basis(1 * MiB, n, content=b"old full") for n in (7, 8)]
    chosen = choose_bases(entry(4 * MiB), [basis(10_000), *twin])
    assert chosen == [basis(10_000), twin[0]]
