"""Content sketches: bounded, decoded only when well formed, the same however the bytes are
split, and estimates that follow shared content (whole, none, shifted, edited)."""

from __future__ import annotations

import itertools
import random
import struct
import time

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from deltastage.delta import sketch as sk
from deltastage.delta.params import MAX_SKETCH_BYTES
from deltastage.delta.sketch import (
    SAMPLES,
    Sketch,
    Sketcher,
    choose,
    decode_sketch,
    estimate_overlap,
    sketch_of,
)
from deltastage.errors import DeltaFormatError


def noise(size: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def text(size: int, seed: int) -> bytes:
    """Words in lines: repetitive like source code or a dump, never periodic."""
    rng = np.random.default_rng(seed)
    letters = b"abcdefghijklmnopqrstuvwxyz_"
    words = [
        bytes(letters[i] for i in rng.integers(0, len(letters), rng.integers(2, 10)))
        for _ in range(3000)
    ]
    picked = rng.integers(0, len(words), size // 4 + 8)
    ends = rng.random(len(picked)) < 0.12
    out = b"".join(words[w] + (b"\n" if end else b" ") for w, end in zip(picked, ends, strict=True))
    assert len(out) >= size
    return out[:size]


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def sketches(draw: st.DrawFn) -> Sketch:
    complete = draw(st.booleans())
    count = draw(st.integers(1, SAMPLES)) if complete else SAMPLES
    values = draw(st.sets(st.integers(0, 2**32 - 1), min_size=count, max_size=count))
    return Sketch(tuple(sorted(values)), complete)


# --- the format ---------------------------------------------------------------------------


@given(sketches())
def test_encode_decode_round_trip(sketch: Sketch) -> None:
    encoded = sketch.encode()
    assert len(encoded) <= MAX_SKETCH_BYTES <= 256
    assert len(Sketch(tuple(range(SAMPLES)), False).encode()) == MAX_SKETCH_BYTES
    assert decode_sketch(encoded) == sketch


@given(st.binary(max_size=300))
def test_decoder_accepts_only_well_formed_sketches(data: bytes) -> None:
    try:
        sketch = decode_sketch(data)
    except DeltaFormatError as exc:
        assert str(exc)
    else:
        assert sketch.encode() == data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not 2 \\+ 4n"),
        (b"\x01\x01", "not 2 \\+ 4n"),
        (b"\x01\x01\x00\x00\x00", "not 2 \\+ 4n"),
        (b"\x02\x01" + bytes(4), "version 2"),
        (b"\x01\x02" + bytes(4), "flags 0x2"),
        (b"\x01\x01" + struct.pack("<2I", 5, 5), "not strictly ascending"),
        (b"\x01\x01" + struct.pack("<2I", 6, 5), "not strictly ascending"),
        (b"\x01\x00" + struct.pack("<2I", 5, 6), f"holds {SAMPLES} samples, not 2"),
        (b"\x01\x01" + struct.pack(f"<{SAMPLES + 1}I", *range(SAMPLES + 1)), "limit"),
    ],
)
def test_decoder_names_what_is_wrong(data: bytes, reason: str) -> None:
    with pytest.raises(DeltaFormatError, match=reason):
        decode_sketch(data)


# --- building -----------------------------------------------------------------------------


@settings(max_examples=15)
@given(
    st.sampled_from(["noise", "text", "zeros"]),
    st.integers(0, 300_000),
    st.lists(st.integers(0, 300_000), max_size=12),
)
def test_the_sketch_does_not_depend_on_how_the_bytes_are_split(
    kind: str, size: int, cuts: list[int]
) -> None:
    data = {"noise": noise, "text": text, "zeros": lambda n, _: bytes(n)}[kind](size, size)
    sketcher = Sketcher()
    for piece in pieces(data, cuts):
        sketcher.update(piece)
    whole = sketch_of(data)
    assert sketcher.finish() == whole
    assert len(whole.encode()) <= MAX_SKETCH_BYTES
    assert decode_sketch(whole.encode()) == whole


def test_tiny_pieces_give_the_same_sketch() -> None:
    data = text(40_000, 1)
    sketcher = Sketcher()
    for at in range(0, len(data), 3):
        sketcher.update(data[at : at + 3])
    assert sketcher.finish() == sketch_of(data)


def test_runs_of_one_byte_have_no_boundary() -> None:
    # holes, padding: one chunk whatever their length
    for value in range(256):
        assert len(sk._window_starts(bytes([value]) * 4096)) == 0
    holes = sketch_of(bytes(5 << 20))
    assert holes.complete and len(holes.samples) == 1


def _boundary_windows(zeros_at_end: bool) -> list[bytes]:
    """Boundary windows (8 bytes) that end (or start) with 1 to 6 zero bytes: where a hole
    meets data, the window across the two is searched as any other."""
    rng = np.random.default_rng(5)
    found = []
    for count in range(1, sk.WINDOW - 1):
        candidates = rng.integers(0, 256, (1 << 16, sk.WINDOW), dtype=np.uint8)
        if zeros_at_end:
            candidates[:, sk.WINDOW - count :] = 0
        else:
            candidates[:, :count] = 0
        words = candidates.view("<u4")
        mixed = words[:, 0] * sk._C1
        passing = (mixed >= sk._HI1) & ((mixed ^ words[:, 1]) * sk._C2 >= sk._HI2)
        found += [bytes(window) for window in candidates[passing][:2]]
    assert found and all(sk._window_starts(window).tolist() == [0] for window in found)
    return found


# the data part of each: what a file has before a hole, or after one
_BEFORE_HOLE = [window.rstrip(b"\0") for window in _boundary_windows(zeros_at_end=True)]
_AFTER_HOLE = [window.lstrip(b"\0") for window in _boundary_windows(zeros_at_end=False)]
_NOISE = noise(5000, 6)

# A file as pieces: data, or a hole of that many zero bytes.
_Piece = bytes | int
_pieces = st.lists(
    st.one_of(
        st.binary(max_size=200),
        st.integers(0, len(_NOISE)).map(lambda n: _NOISE[:n]),
        st.sampled_from(_BEFORE_HOLE + _AFTER_HOLE),
        st.integers(0, 3000),
        st.sampled_from([1, 2, 3, 4, 7, 8, 9, 70_000]),
    ),
    max_size=14,
)


@settings(max_examples=300, deadline=None)
@given(_pieces)
@example([_NOISE[:2000] + _BEFORE_HOLE[0], 10, _NOISE])
@example([_NOISE, 3000, _AFTER_HOLE[0] + _NOISE[:2000], 5])
@example([3, _AFTER_HOLE[-1], 1, _BEFORE_HOLE[-1], 2, _NOISE])
def test_a_hole_sketches_as_the_zeros_it_reads_as(pieces: list[_Piece]) -> None:
    holes, fed = Sketcher(), Sketcher()
    for piece in pieces:
        if isinstance(piece, int):
            holes.zeros(piece)
            fed.update(bytes(piece))
        else:
            holes.update(piece)
            fed.update(piece)
    whole = b"".join(bytes(p) if isinstance(p, int) else p for p in pieces)
    assert holes.finish() == fed.finish() == sketch_of(whole)


def test_a_hole_is_never_searched_for_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    searched: list[int] = []
    real = sk._window_starts

    def counting(data: bytes) -> npt.NDArray[np.int64]:
        searched.append(len(data))
        return real(data)

    monkeypatch.setattr(sk, "_window_starts", counting)
    sketcher = Sketcher()
    sketcher.update(_NOISE)
    sketcher.zeros(1 << 30)
    sketcher.update(_NOISE)
    sketcher.zeros(1 << 30)
    sketcher.finish()
    # the data, and the few bytes where each hole meets it
    assert sum(searched) <= 2 * len(_NOISE) + 4 * 2 * (sk.WINDOW - 1)


def test_chunks_average_a_few_kib() -> None:
    for data in (noise(4 << 20, 1), text(4 << 20, 2)):
        starts = sk._window_starts(data)
        assert 2000 < len(data) / len(starts) < 8000


def test_small_files_are_complete_and_big_ones_sampled() -> None:
    small = sketch_of(text(64 << 10, 3))
    assert small.complete and 2 <= len(small.samples) < SAMPLES
    big = sketch_of(text(4 << 20, 3))
    assert not big.complete and len(big.samples) == SAMPLES


# --- estimates ----------------------------------------------------------------------------


@settings(max_examples=15)
@given(st.sampled_from(["noise", "text"]), st.integers(16 << 10, 1 << 20))
def test_identical_content_overlaps_fully(kind: str, size: int) -> None:
    data = (noise if kind == "noise" else text)(size, size)
    sketch = sketch_of(data)
    assert estimate_overlap(sketch, size, sketch) == size


@settings(max_examples=15)
@given(st.integers(64 << 10, 2 << 20), st.integers(0, 1000))
def test_disjoint_content_overlaps_almost_nothing(size: int, seed: int) -> None:
    new, other = sketch_of(text(size, seed)), sketch_of(noise(size, seed))
    assert (estimate_overlap(new, size, other) or 0) <= size // 20


def test_a_shifted_file_overlaps_fully() -> None:
    data = text(2 << 20, 5)
    shifted = b"an insertion at the start" + data
    assert estimate_overlap(sketch_of(shifted), len(shifted), sketch_of(data)) == len(shifted)


@settings(max_examples=15)
@given(st.integers(0, 10_000))
def test_more_edits_never_look_much_closer(seed: int) -> None:
    rng = random.Random(seed)
    data = text(1 << 20, seed)
    base = sketch_of(data)
    edited = bytearray(data)
    estimates = []
    for _ in range(4):
        for _ in range(40):
            at = rng.randrange(len(edited))
            edited[at : at + rng.randint(0, 20)] = rng.randbytes(rng.randint(0, 20))
        estimate = estimate_overlap(sketch_of(bytes(edited)), len(edited), base)
        assert estimate is not None
        estimates.append(estimate / len(edited))
    assert estimates[0] > 0.5
    for before, after in itertools.pairwise(estimates):
        assert after <= before + 0.15


def test_the_estimate_follows_the_share_of_content() -> None:
    data = text(4 << 20, 7)
    new = sketch_of(data)
    for share in (0.25, 0.5, 0.75):
        part = data[: int(len(data) * share)]
        estimate = estimate_overlap(new, len(data), sketch_of(part))
        assert estimate is not None
        assert abs(estimate / len(data) - share) < 0.2


def test_a_small_file_is_judged_against_a_big_one_only_where_their_samples_meet() -> None:
    big = text(8 << 20, 1)
    small = big[: 40 << 10]
    # the big file's sample keeps only its smallest hashes: the small file's chunks are
    # known to be in it only when they are among those; otherwise nothing can be told
    assert estimate_overlap(sketch_of(small), len(small), sketch_of(big)) in (None, len(small))
    # the other way round the estimate is a share of the big file: tiny, often 0
    estimate = estimate_overlap(sketch_of(big), len(big), sketch_of(small))
    assert estimate is not None and estimate <= len(big) // 10


# --- the greedy choice --------------------------------------------------------------------


def test_choose_takes_last_weeks_full_and_this_weeks_changes() -> None:
    parts = [text(1 << 20, seed) for seed in range(8)]
    full_then = b"".join(parts)
    changed = [text(1 << 20, 100 + seed) for seed in range(3)]
    incr_1, incr_2 = changed[0], changed[1] + changed[2]
    full_now = b"".join([*changed, *parts[3:]])
    unrelated = noise(4 << 20, 9)
    new = sketch_of(full_now)
    candidates = [sketch_of(x) for x in (unrelated, incr_1, full_then, incr_2, incr_1)]
    picked = choose(new, len(full_now), candidates, [1000] * len(candidates), 8)
    assert picked[0] == 2  # the old full holds the most
    assert set(picked) == {2, 1, 3}  # the duplicate of incr_1 adds nothing; noise nothing


def test_choose_skips_what_costs_more_than_it_adds() -> None:
    data = text(2 << 20, 1)
    new = sketch_of(data)
    candidates = [sketch_of(data), sketch_of(data[: 1 << 20])]
    assert choose(new, len(data), candidates, [0, 0], 8) == [0]
    assert choose(new, len(data), candidates, [len(data) + 1, 0], 8) == [1]
    assert choose(new, len(data), candidates, [0, 0], 0) == []


def test_choose_never_takes_a_candidate_it_cannot_judge() -> None:
    big = text(8 << 20, 2)
    new = sketch_of(big)
    sample = Sketch(tuple(range(SAMPLES)), complete=False)  # below every sample of ``new``
    assert estimate_overlap(new, len(big), sample) is None
    assert choose(new, len(big), [sample], [0], 8) == []


def test_sketching_is_fast_enough() -> None:
    data = noise(64 << 20, 4)
    start = time.process_time()
    sketch_of(data)
    rate = len(data) / (time.process_time() - start)
    assert rate > 100e6  # bytes per CPU second; several times that on a quiet machine


def test_one_sample_in_common_is_not_enough_to_choose() -> None:
    new = Sketch(tuple(range(0, 10 * SAMPLES, 10)), complete=False)
    one = Sketch((0, 5, 15), complete=True)
    two = Sketch((0, 5, 10), complete=True)
    assert estimate_overlap(new, 63_000, one) == 1000
    assert choose(new, 63_000, [one], [0], 8) == []
    assert choose(new, 63_000, [one, two], [0, 0], 8) == [1]
