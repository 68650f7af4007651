"""The refined delta, called directly: whatever the edits, it patches back to the new file;
it asks only for the basis blocks beside its copies, and only when that pays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltastage.delta import refine as refine_module
from deltastage.delta.codec import apply_delta, make_delta
from deltastage.delta.refine import (
    ROUND_TRIP_BYTES,
    FineHashes,
    expected_saving,
    refined_delta,
    refinement_cost,
)
from deltastage.delta.signature import Signature, signature_of
from deltastage.protocol import RefineReply, RefineRequest
from deltastage.protocol.events import decode_event
from deltastage.protocol.frames import encode_frame

MAX_BLOCKS = 1 << 22
BASIS = np.random.default_rng(3).integers(0, 256, 70_001, dtype=np.uint8).tobytes()


def reader(data: bytes) -> refine_module.ReadAt:
    def read_at(offset: int, n: int) -> bytes:
        return data[offset : offset + n]

    return read_at


def answering(basis: bytes, asked: list[RefineRequest]) -> FineHashes:
    """The master's side: the asked blocks' hashes, read from one fine signature."""

    def fine_hashes(block_size: int, strong_len: int, ranges: tuple[tuple[int, int], ...]) -> bytes:
        request = RefineRequest(block_size, strong_len, ranges)
        assert decode_event(request.TYPE, request.encode_payload()) == request  # it can be sent
        asked.append(request)
        fine = signature_of(basis, block_size=block_size, strong_len=strong_len)
        blocks = [b for first, count in ranges for b in range(first, first + count)]
        weak = np.frombuffer(fine.weak, dtype="<u4")[blocks]
        strong = np.frombuffer(fine.strong, dtype=np.uint8).reshape(-1, strong_len)[blocks]
        return weak.tobytes() + strong.tobytes()

    return fine_hashes


def declining(asked: list[RefineRequest]) -> FineHashes:
    def fine_hashes(block_size: int, strong_len: int, ranges: tuple[tuple[int, int], ...]) -> bytes:
        asked.append(RefineRequest(block_size, strong_len, ranges))
        return b""

    return fine_hashes


def edited(basis: bytes, edits: list[tuple[int, int, bytes]], tail: bytes) -> bytes:
    new = bytearray(basis)
    for at, cut, insert in edits:
        new[at : at + cut] = insert
    return bytes(new + tail)


@settings(max_examples=40, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 70_000), st.integers(0, 300), st.binary(max_size=300)),
        max_size=6,
    ),
    tail=st.binary(max_size=3000),
    decline=st.booleans(),
    round_trip=st.sampled_from([0, ROUND_TRIP_BYTES, 1 << 30]),
)
def test_a_refined_delta_patches_back_to_the_new_file(
    edits: list[tuple[int, int, bytes]], tail: bytes, decline: bool, round_trip: int
) -> None:
    """Refined, declined, or not asked (a round trip too dear to pay): always exact."""
    new = edited(BASIS, edits, tail)
    coarse = signature_of(BASIS, block_size=2048)
    asked: list[RefineRequest] = []
    fine_hashes = declining(asked) if decline else answering(BASIS, asked)
    result = refined_delta(
        coarse, len(new), reader(new), fine_hashes, max_blocks=MAX_BLOCKS, round_trip=round_trip
    )
    assert result is not None
    delta, read = result
    assert read == len(new)
    assert apply_delta(BASIS, delta) == new
    assert len(asked) <= 1
    assert not asked or round_trip < 1 << 30
    for request in asked:
        assert request.block_size < coarse.block_size
        assert sum(count for _, count in request.ranges) <= -(-len(BASIS) // request.block_size)


def test_an_edit_costs_a_fine_block_not_a_coarse_one() -> None:
    new = edited(BASIS, [(30_000, 10, b"0123456789")], b"")
    coarse = signature_of(BASIS, block_size=4096)
    asked: list[RefineRequest] = []
    refined = refined_delta(
        coarse, len(new), reader(new), answering(BASIS, asked), max_blocks=MAX_BLOCKS, round_trip=0
    )
    assert refined is not None
    (request,) = asked
    assert request.block_size == 512 and request.n_blocks <= 2 * 4096 // 512
    plain = make_delta(coarse, new, level=0)
    assert apply_delta(BASIS, refined[0]) == new
    assert len(refined[0]) + 4096 - 2 * 512 < len(plain)


def test_an_unchanged_file_asks_for_nothing() -> None:
    coarse = signature_of(BASIS, block_size=2048)
    asked: list[RefineRequest] = []
    result = refined_delta(
        coarse, len(BASIS), reader(BASIS), answering(BASIS, asked), max_blocks=MAX_BLOCKS
    )
    assert result is not None and asked == []
    assert apply_delta(BASIS, result[0]) == BASIS


def test_only_the_first_size_bytes_are_read() -> None:
    new = edited(BASIS, [(100, 5, b"x")], b"")
    coarse = signature_of(BASIS, block_size=2048)
    result = refined_delta(
        coarse, 50_000, reader(new + b"grown since"), declining([]), max_blocks=MAX_BLOCKS
    )
    assert result is not None
    assert result[1] == 50_000 and apply_delta(BASIS, result[0]) == new[:50_000]


@pytest.mark.parametrize(
    ("basis", "block_size", "size", "max_blocks"),
    [
        (b"", 2048, 100, MAX_BLOCKS),  # no basis to refine against
        (BASIS, 1000, 100, MAX_BLOCKS),  # blocks too small to split
        (BASIS, 2048, 0, MAX_BLOCKS),  # an empty new file
        (BASIS, 2048, 100, 100),  # the fine signature would exceed its bound
    ],
)
def test_not_worth_refining(basis: bytes, block_size: int, size: int, max_blocks: int) -> None:
    coarse: Signature = signature_of(basis, block_size=block_size)
    asked: list[RefineRequest] = []
    result = refined_delta(
        coarse, size, reader(b"y" * size), answering(basis, asked), max_blocks=max_blocks
    )
    assert result is None and asked == []


def test_mostly_new_data_is_not_refined(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refine_module, "MAX_LITERAL_HELD", 10_000)
    new = np.random.default_rng(4).integers(0, 256, 70_000, dtype=np.uint8).tobytes()
    asked: list[RefineRequest] = []
    coarse = signature_of(BASIS, block_size=2048)
    assert (
        refined_delta(coarse, len(new), reader(new), answering(BASIS, asked), max_blocks=MAX_BLOCKS)
        is None
    )
    assert asked == []


BIG = np.random.default_rng(5).integers(0, 256, 2_000_000, dtype=np.uint8).tobytes()


def test_only_the_blocks_beside_the_copies_are_asked() -> None:
    """A small new file cut from a big basis, edited: the fine blocks asked for lie beside
    its copies, not all over the basis (which would cost more than the file)."""
    new = edited(BIG[1_000_000:1_040_000], [(20_000, 10, b"0123456789")], b"")
    coarse = signature_of(BIG, block_size=4096)
    asked: list[RefineRequest] = []
    refined = refined_delta(
        coarse, len(new), reader(new), answering(BIG, asked), max_blocks=MAX_BLOCKS, round_trip=0
    )
    assert refined is not None and apply_delta(BIG, refined[0]) == new
    (request,) = asked
    assert request.n_blocks <= 2 * (2 * 4096 + 512) // 512
    blocks = [b for first, count in request.ranges for b in range(first, first + count)]
    assert all(1_000_000 - 4096 <= b * 512 < 1_040_000 + 4096 for b in blocks)


def test_literal_with_no_copy_beside_it_asks_nothing() -> None:
    new = np.random.default_rng(6).integers(0, 256, 30_000, dtype=np.uint8).tobytes()
    coarse = signature_of(BIG, block_size=4096)
    asked: list[RefineRequest] = []
    refined = refined_delta(
        coarse, len(new), reader(new), answering(BIG, asked), max_blocks=MAX_BLOCKS, round_trip=0
    )
    assert refined is not None and asked == []
    assert apply_delta(BIG, refined[0]) == new


def test_a_refinement_that_costs_more_than_it_saves_is_skipped() -> None:
    new = edited(BASIS, [(30_000, 10, b"0123456789")], b"")
    coarse = signature_of(BASIS, block_size=4096)
    asked: list[RefineRequest] = []
    saving = 4096 - 512  # random bytes: they cross the link as they are
    refined = refined_delta(
        coarse,
        len(new),
        reader(new),
        answering(BASIS, asked),
        max_blocks=MAX_BLOCKS,
        round_trip=saving,
    )
    assert refined is not None and asked == []
    assert apply_delta(BASIS, refined[0]) == new
    assert len(refined[0]) >= 4096  # the whole edited coarse block went as literal


@pytest.mark.parametrize(("filler", "pays"), [(None, True), (b"x", False)])
def test_the_saving_is_weighed_compressed(filler: bytes | None, pays: bool) -> None:
    """A coarse block of literal that compresses to almost nothing is not worth a round
    trip's worth of fine hashes; the same block of random bytes is."""
    coarse = signature_of(BASIS[:20_480], block_size=4096)
    literal = BASIS[8192:12288] if filler is None else filler * 4096
    segments = [(0, 8192, 0), literal, (12_288, 8192, 12_288)]
    plan = refine_module.refinement(coarse, segments, 512, round_trip=1024)
    if not pays:
        assert plan is None
        return
    assert plan is not None
    assert plan[1] == ((16, 8),)  # fine blocks of basis bytes 8192..12288, none copied


def test_the_cost_rule() -> None:
    # request: 14 bytes and 12 a range; reply: 5 bytes and 4 + strong_len a block; round trip
    assert refinement_cost(100, 3, 3, 4096) == 14 + 36 + 5 + 700 + 4096
    request = RefineRequest(512, 3, ((0, 60), (70, 30), (200, 10)))
    reply = RefineReply(b"h" * 700)
    wire = sum(len(encode_frame(e.TYPE, e.encode_payload())) for e in (request, reply))
    assert refinement_cost(100, 3, 3, 0) == wire
    # every literal byte but a fine block a run, as it would cross the link
    assert expected_saving(10_000, 2, 512, 0.5) == (10_000 - 1024) // 2
    assert expected_saving(600, 2, 512, 1.0) == 0
