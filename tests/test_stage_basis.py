"""stage.basis directly: where the staged days are, which basis each file gets, and how a
basis is opened."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from deltastage.errors import UnsafePathError
from deltastage.hashing import hash_bytes
from deltastage.manifest import Manifest, ManifestEntry, write_manifest
from deltastage.models import RemoteEntry
from deltastage.stage.basis import (
    PARTIAL_DIR,
    Basis,
    BasisFinder,
    BasisOpener,
    daily_dir_for,
    earlier_peer_dirs,
)
from deltastage.stage.plan import plan_bases

TODAY = date(2026, 11, 24)


def put(root: Path, files: dict[str, bytes], *, vouched: tuple[str, ...] = ()) -> Path:
    """A staged peer dir holding ``files``; its manifest vouches for the ``vouched`` ones."""
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    if vouched:
        entries = tuple(
            ManifestEntry(rel, len(files[rel]), hash_bytes(files[rel]), 0o644, 0) for rel in vouched
        )
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            write_manifest(fd, Manifest("p", "2026-11-23", entries))
        finally:
            os.close(fd)
    return root


def day_dir(staging: Path, day: date, peer: str = "p") -> Path:
    path = daily_dir_for(staging, day) / peer
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_the_daily_dir_is_year_month_day(tmp_path: Path) -> None:
    assert daily_dir_for(tmp_path, date(2026, 3, 7)) == tmp_path / "2026" / "03" / "07"


def test_earlier_days_newest_first_and_nothing_else(tmp_path: Path) -> None:
    for day in (date(2026, 11, 20), date(2026, 10, 31), date(2025, 12, 31), TODAY):
        day_dir(tmp_path, day)
    day_dir(tmp_path, date(2026, 11, 21), peer="other")
    (tmp_path / "2026" / "11" / "99" / "p").mkdir(parents=True)  # no such date
    (tmp_path / "2026" / "notes").mkdir()
    (tmp_path / "2026" / "11" / "22").mkdir()
    (tmp_path / "2026" / "11" / "22" / "p").symlink_to(tmp_path / "2026" / "11" / "20" / "p")
    found = earlier_peer_dirs(tmp_path, "p", TODAY)
    assert [when for when, _ in found] == [
        date(2026, 11, 20),
        date(2026, 10, 31),
        date(2025, 12, 31),
    ]
    assert found[0][1] == daily_dir_for(tmp_path, date(2026, 11, 20)) / "p"
    assert earlier_peer_dirs(tmp_path / "none", "p", TODAY) == []


def test_candidates_in_order_previous_day_today_partial_older_days(tmp_path: Path) -> None:
    older = put(day_dir(tmp_path, date(2026, 11, 22)), {"a.txt": b"oldest", "c.txt": b"c"})
    previous = put(
        day_dir(tmp_path, date(2026, 11, 23)),
        {"a.txt": b"day 23", "b.txt": b"only here"},
        vouched=("a.txt",),
    )
    today = put(day_dir(tmp_path, TODAY), {"a.txt": b"earlier run", f"{PARTIAL_DIR}/a.txt": b"ha"})
    finder = BasisFinder(tmp_path, "p", TODAY, today)
    day23, day22 = date(2026, 11, 23), date(2026, 11, 22)
    near = [
        Basis(previous, "a.txt", "previous", 6, hash_bytes(b"day 23"), day23),
        Basis(today, "a.txt", "today", 11, None),
        Basis(today / PARTIAL_DIR, "a.txt", "partial", 2, None),
    ]
    assert finder.candidates("a.txt", 6, earlier=False) == near
    assert finder.candidates("a.txt", 6) == [
        *near,
        Basis(older, "a.txt", "previous", 6, None, day22),
    ]
    assert finder.candidates("b.txt", 9) == [Basis(previous, "b.txt", "previous", 9, None, day23)]
    assert finder.candidates("c.txt", 1) == [Basis(older, "c.txt", "previous", 1, None, day22)]
    assert finder.candidates("d.txt", 1) == []
    assert finder.previous_day == day23


def test_older_days_come_from_their_manifests_within_basis_days(tmp_path: Path) -> None:
    """A day's manifest is read, not its files; a copy whose content a newer day has is
    left out; days beyond basis_days are not searched, the most recent one always is."""
    days = [date(2026, 11, d) for d in (23, 20, 17, 9)]
    roots = [day_dir(tmp_path, day) for day in days]
    put(roots[0], {"x": b"week 2"}, vouched=("x",))
    put(roots[1], {"x": b"week 1", "y": b"y"}, vouched=("x", "y"))
    put(roots[2], {"x": b"week 1", "y": b"y"}, vouched=("x", "y"))
    (roots[2] / "x").unlink()  # the manifest vouches for it: it is not walked
    put(roots[3], {"x": b"older than basis_days"})
    finder = BasisFinder(tmp_path, "p", TODAY, day_dir(tmp_path, TODAY), basis_days=14)
    assert [(b.day, b.known_hash) for b in finder.candidates("x", 6)] == [
        (days[0], hash_bytes(b"week 2")),
        (days[1], hash_bytes(b"week 1")),
    ]
    assert [b.day for b in finder.candidates("y", 1)] == [days[1]]
    far = BasisFinder(tmp_path, "p", date(2026, 12, 30), day_dir(tmp_path, TODAY), basis_days=3)
    assert far.previous_day == TODAY, "the most recent day, however old"
    assert far.candidates("x", 6) == [], "and no other beyond basis_days"


def test_a_similar_name_in_an_older_day(tmp_path: Path) -> None:
    older = put(day_dir(tmp_path, date(2026, 11, 20)), {"db/dump-2026-11-20.sql": b"d" * 40})
    put(day_dir(tmp_path, date(2026, 11, 23)), {"other": b"o"})
    finder = BasisFinder(tmp_path, "p", TODAY, day_dir(tmp_path, TODAY))
    (stand_in,) = finder.candidates("db/dump-2026-11-24.sql", 41)
    assert (stand_in.root, stand_in.path, stand_in.kind) == (
        older,
        "db/dump-2026-11-20.sql",
        "similar",
    )


def test_a_similar_name_stands_in_for_a_missing_or_empty_file(tmp_path: Path) -> None:
    previous = put(
        day_dir(tmp_path, date(2026, 11, 23)),
        {
            "db/dump-2026-11-23.sql": b"x" * 100,
            "db/dump-2026-11-22.sql": b"x" * 10,
            "db/other-2026-11-23.sql": b"x" * 100,
            "logs/dump-2026-11-23.sql": b"x" * 100,
            "db/empty-1.sql": b"",
            "db/empty-2.sql": b"e" * 50,
        },
        vouched=("db/dump-2026-11-23.sql",),
    )
    finder = BasisFinder(tmp_path, "p", TODAY, day_dir(tmp_path, TODAY))
    (best,) = finder.candidates("db/dump-2026-11-24.sql", 99)
    assert best == Basis(
        previous,
        "db/dump-2026-11-23.sql",
        "similar",
        100,
        hash_bytes(b"x" * 100),
        date(2026, 11, 23),
    ), "same directory, digits aside, the closest size"
    (stand_in,) = finder.candidates("db/empty-1.sql", 50)
    assert (stand_in.path, stand_in.kind) == ("db/empty-2.sql", "similar")


def test_the_manifest_vouches_only_for_what_it_matches(tmp_path: Path) -> None:
    previous = day_dir(tmp_path, date(2026, 11, 23))
    put(previous, {"a": b"12345", "b": b"xyz"}, vouched=("a", "b"))
    (previous / "b").write_bytes(b"changed since")  # the manifest's size no longer matches
    finder = BasisFinder(tmp_path, "p", TODAY, day_dir(tmp_path, TODAY))
    assert finder.candidates("a", 5)[0].known_hash == hash_bytes(b"12345")
    assert finder.candidates("b", 5)[0].known_hash is None
    (previous / "deltastage.manifest.json").write_bytes(b"{broken")
    unvouched = BasisFinder(tmp_path, "p", TODAY, day_dir(tmp_path, TODAY))
    assert unvouched.candidates("a", 5)[0].known_hash is None, "a bad manifest vouches for none"


def test_internal_names_are_no_basis_except_in_the_partial_dir(tmp_path: Path) -> None:
    today = put(
        day_dir(tmp_path, TODAY),
        {".deltastage-tmp-1234": b"half", f"{PARTIAL_DIR}/.deltastage-x": b"kept"},
    )
    finder = BasisFinder(tmp_path, "p", TODAY, today)
    assert finder.candidates(".deltastage-tmp-1234", 4) == []
    assert [b.kind for b in finder.candidates(".deltastage-x", 4)] == ["partial"]


def test_a_basis_is_opened_beneath_its_root_and_never_through_a_link(tmp_path: Path) -> None:
    root = put(tmp_path / "root", {"dir/f": b"data"})
    (tmp_path / "outside").write_bytes(b"secret")
    (root / "link").symlink_to(tmp_path / "outside")
    (root / "dirlink").symlink_to(root / "dir")
    opener = BasisOpener()
    try:
        fd = opener.open(Basis(root, "dir/f", "previous", 4, None))
        assert os.read(fd, 10) == b"data"
        os.close(fd)
        for path in ("link", "dirlink/f"):
            with pytest.raises((OSError, UnsafePathError)):
                opener.open(Basis(root, path, "previous", 6, None))
        with pytest.raises(UnsafePathError):
            opener.open(Basis(root, "../outside", "previous", 6, None))
    finally:
        opener.close()


def test_an_older_copy_its_manifest_vouches_for_is_held_only_while_it_is_there(
    tmp_path: Path,
) -> None:
    older = put(
        day_dir(tmp_path, date(2026, 11, 17)), {"mail.mbox": b"weekly"}, vouched=("mail.mbox",)
    )
    put(day_dir(tmp_path, date(2026, 11, 23)), {"other": b"o"})
    entry = RemoteEntry("mail.mbox", "file", 6, 0, 0o644, hash_bytes(b"weekly"))

    def finder() -> BasisFinder:
        return BasisFinder(tmp_path, "p", TODAY, day_dir(tmp_path, TODAY))

    (held,) = plan_bases(entry, finder())
    assert (held.root, held.day, held.known_hash) == (older, date(2026, 11, 17), entry.xxh3_128)
    (older / "mail.mbox").unlink()
    assert plan_bases(entry, finder()) == [], "gone: nothing to link, nothing to sign"
