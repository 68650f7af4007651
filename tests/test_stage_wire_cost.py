"""A fetch's wire cost through the stage, held to what the rdiff-like signature and delta of
the same inputs cost (the real CLI on real directories, a local peer): a refinement must pay
for itself, and a signature must not outweigh the small file it is for."""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import pytest

from deltastage.delta.codec import make_delta
from deltastage.delta.signature import (
    MultiSignatureBuilder,
    SignatureBuilder,
    encode_signature,
    signature_of,
)
from tests.helpers.site import make_peer, peer_json, stage_json, staged, tree, write_config

DAY0 = "2026-11-23"
DAY1 = "2026-11-24"
# Over what the signature and the delta cost: the listing, the handshake, a refinement.
MARGIN = 1.05

_WORDS = ["".join(random.Random(n).choices("abcdefghijklmnopqrstuvwxyz_", k=3 + n % 8))
          for n in range(3000)]  # fmt: skip


def text(rng: random.Random, size: int) -> bytes:
    """Source-like lines of words, about ``size`` bytes."""
    lines, length = [], 0
    while length < size:
        line = " " * rng.choice((0, 4, 8)) + " ".join(rng.choices(_WORDS, k=rng.randint(3, 12)))
        lines.append(line)
        length += len(line) + 1
    return ("\n".join(lines) + "\n").encode()


def edit(rng: random.Random, data: bytes) -> bytes:
    """A few lines replaced somewhere in the middle."""
    lines = data.split(b"\n")
    at = rng.randrange(len(lines))
    lines[at : at + rng.randint(1, 3)] = [text(rng, 80).rstrip(b"\n")]
    return b"\n".join(lines)


def tar_of(files: dict[str, bytes], mtime: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def the_week(seed: int) -> tuple[bytes, bytes]:
    """A full archive of a source tree (day 0) and the next day's incremental one: the
    files edited since, and two new ones (Cedar's ``incr`` mode, same archive name)."""
    rng = random.Random(seed)
    tree_files = {
        f"lib/m{n:03}.py": text(rng, int(rng.lognormvariate(8.5, 1.0))) for n in range(400)
    }
    edited = {name: edit(rng, tree_files[name]) for name in rng.sample(sorted(tree_files), 12)}
    added = {f"lib/new{n}.py": text(rng, 6000) for n in range(2)}
    return tar_of(tree_files, 1_700_000_000), tar_of(edited | added, 1_700_086_400)


def rdiff_cost(basis: bytes, new: bytes, block_size: int) -> int:
    """``deltastage signature`` + ``delta`` of ``new`` against ``basis``, in bytes."""
    signature = signature_of(basis, block_size=block_size)
    return len(encode_signature(signature)) + len(make_delta(signature, new, level=3))


def staged_wire_bytes(tmp: Path, day0: dict[str, bytes], day1: dict[str, bytes]) -> int:
    """Stage ``day0``'s files, then ``day1``'s under the same names: day 1's wire bytes
    (everything: handshake, listing, signatures, refinements, deltas)."""
    make_peer(tmp, "p", day0)
    config = write_config(tmp)
    assert stage_json(config, "--date", DAY0)[0] == 0
    make_peer(tmp, "p", day1)
    code, report = stage_json(config, "--date", DAY1)
    peer = peer_json(report, "p")
    assert code == 0 and peer["status"] == "staged"
    assert tree(staged(tmp, DAY1, "p")) == day1
    wire: int = peer["wire_bytes"]
    return wire


@pytest.mark.parametrize("seed", [1, 2])
def test_a_small_incremental_archive_against_the_full_one(tmp_path: Path, seed: int) -> None:
    """Refining against all of a big basis would ask for fine hashes of every block the
    small file does not copy: many times what it saves. Its signature is sized for it too
    (the dump beside it is bigger, so it is the fetch guessed before the listing, signed
    for its basis alone)."""
    full, incremental = the_week(seed)
    assert len(full) > 20 * len(incremental)
    rng = random.Random(seed)
    dump = text(rng, len(full) + (1 << 20))
    edited_dump = edit(rng, dump)
    wire = staged_wire_bytes(
        tmp_path,
        {"lib.tar": full, "app.sql": dump},
        {"lib.tar": incremental, "app.sql": edited_dump},
    )
    fitted = MultiSignatureBuilder([len(full)], new_size=len(incremental)).block_size
    assert fitted >= SignatureBuilder(len(full)).block_size
    guessed = SignatureBuilder(len(dump)).block_size
    expected = rdiff_cost(full, incremental, fitted) + rdiff_cost(dump, edited_dump, guessed)
    assert wire <= MARGIN * expected


def test_a_dump_with_scattered_edits_is_refined(tmp_path: Path) -> None:
    """Where the refinement pays, it is made: well under the coarse signature and delta."""
    rng = random.Random(3)
    dump = text(rng, 2 << 20)
    edited = dump
    for _ in range(40):
        edited = edit(rng, edited)
    wire = staged_wire_bytes(tmp_path, {"app.sql": dump}, {"app.sql": edited})
    block_size = SignatureBuilder(len(dump)).block_size
    assert wire <= 0.7 * rdiff_cost(dump, edited, block_size)
