"""Deltas against several bases: exact rebuilds, bounded basis indexes, the single-basis
formats unchanged."""

from __future__ import annotations

import random
import struct

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltastage.delta.codec import DeltaEncoder, apply_delta, make_delta
from deltastage.delta.ops import Copy
from deltastage.delta.params import MAX_BASES, choose_bases_block_size, choose_block_size
from deltastage.delta.signature import (
    MultiSignatureBuilder,
    decode_signature,
    decode_signatures,
    encode_signature,
    encode_signatures,
    signature_of,
)
from deltastage.delta.wire import MULTI_COPY, OP_COPY
from deltastage.errors import DeltaFormatError, IntegrityError

BS = 16


def multi_signature(bases: list[bytes], block_size: int = BS) -> bytes:
    builder = MultiSignatureBuilder([len(b) for b in bases], block_size=block_size)
    out = []
    for basis in bases:
        for at in range(0, len(basis), 7):
            out.append(builder.update(basis[at : at + 7]))
        out.append(builder.end_basis())
    out.append(builder.finish())
    encoded = b"".join(out)
    assert encoded == encode_signatures(builder.signatures)
    return encoded


@st.composite
def bases_and_new(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """1..MAX_BASES bases (empty, shorter than a block, equal to or overlapping another),
    and a new file spliced from their pieces and fresh bytes."""
    pool = draw(st.binary(min_size=0, max_size=400))
    bases: list[bytes] = []
    for _ in range(draw(st.integers(1, MAX_BASES))):
        kind = draw(st.sampled_from(["slice", "short", "empty", "copy", "fresh"]))
        if kind == "slice":
            a = draw(st.integers(0, len(pool)))
            bases.append(pool[a : draw(st.integers(a, len(pool)))])
        elif kind == "short":
            bases.append(draw(st.binary(min_size=1, max_size=BS - 1)))
        elif kind == "empty":
            bases.append(b"")
        elif kind == "copy" and bases:
            bases.append(draw(st.sampled_from(bases)))
        else:
            bases.append(draw(st.binary(max_size=200)))
    pieces = []
    for _ in range(draw(st.integers(0, 12))):
        source = draw(st.sampled_from([*bases, pool]))
        a = draw(st.integers(0, len(source)))
        pieces.append(source[a : draw(st.integers(a, len(source)))])
        pieces.append(draw(st.binary(max_size=20)))
    return bases, b"".join(pieces)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=bases_and_new(), level=st.sampled_from([0, 3]))
def test_any_bases_rebuild_the_new_file_exactly(
    case: tuple[list[bytes], bytes], level: int
) -> None:
    bases, new = case
    sigs = decode_signatures(multi_signature(bases))
    assert [s.basis_size for s in sigs] == [len(b) for b in bases]
    encoder = DeltaEncoder(sigs, level=level)
    delta = b"".join(encoder.update(new[at : at + 50]) for at in range(0, len(new), 50))
    delta += encoder.finish()
    assert apply_delta(bases, delta) == new
    assert encoder.stats.copied_bytes + encoder.stats.literal_bytes == len(new)


@settings(max_examples=100, deadline=None)
@given(case=bases_and_new())
def test_copies_name_only_given_bases_and_their_blocks(case: tuple[list[bytes], bytes]) -> None:
    bases, new = case
    sigs = decode_signatures(multi_signature(bases))
    from deltastage.delta.matcher import iter_ops

    for op in iter_ops(sigs, [new]):
        if isinstance(op, Copy):
            assert 0 <= op.basis < len(bases)
            assert op.count >= 1 and op.start + op.count <= sigs[op.basis].n_blocks


def test_copies_come_from_every_basis_they_match() -> None:
    rng = random.Random(3)
    bases = [rng.randbytes(4096) for _ in range(3)]
    new = bases[2][:1024] + bases[0] + b"edit" + bases[1][2048:]
    sigs = decode_signatures(multi_signature(bases, block_size=256))
    from deltastage.delta.matcher import iter_ops

    used = {op.basis for op in iter_ops(sigs, [new]) if isinstance(op, Copy)}
    assert used == {0, 1, 2}
    delta = make_delta(sigs, new)
    assert len(delta) < 600
    assert apply_delta(bases, delta) == new


def crafted_delta(bases: list[bytes], copies: list[tuple[int, int, int]]) -> bytes:
    """A valid 2-basis delta with its copy ops replaced by ``copies``."""
    sigs = decode_signatures(multi_signature(bases))
    encoder = DeltaEncoder(sigs, level=0)
    head = encoder.update(b"")
    ops = b"".join(bytes((OP_COPY,)) + MULTI_COPY.pack(*c) for c in copies)
    trailer = encoder.finish()
    return head + ops + trailer


@pytest.mark.parametrize(
    "copy",
    [(9, 0, 1), (2, 0, 1), (255, 0, 1), (0, 4, 1), (1, 0, 4), (1, 3, 1), (0, 0, 0)],
    ids=["basis-9", "basis-2", "basis-255", "past-end", "count-past-end", "start-past", "zero"],
)
def test_a_copy_outside_the_given_bases_is_refused(copy: tuple[int, int, int]) -> None:
    bases = [bytes(range(64)), bytes(range(40))]  # 4 blocks, then 3 (the last short)
    with pytest.raises(DeltaFormatError):
        apply_delta(bases, crafted_delta(bases, [copy]))


def test_a_delta_for_other_bases_is_refused() -> None:
    bases = [bytes(range(64)), bytes(range(40))]
    delta = crafted_delta(bases, [(1, 0, 1)])
    with pytest.raises(IntegrityError):
        apply_delta(bases[:1], delta)
    with pytest.raises(IntegrityError):
        apply_delta([bases[1], bases[0]], delta)
    with pytest.raises(IntegrityError):
        apply_delta([*bases, b""], delta)


def test_multi_signature_bounds() -> None:
    sig = multi_signature([b"a" * 100, b"b" * 50])
    with pytest.raises(DeltaFormatError):
        decode_signature(sig)  # a single-basis decoder refuses the multi format
    with pytest.raises(DeltaFormatError):
        decode_signatures(sig[:-1])
    with pytest.raises(DeltaFormatError):
        decode_signatures(sig[:-1] + bytes([sig[-1] ^ 1]))
    for n_bases in (0, MAX_BASES + 1, 0xFFFF):
        bad = sig[:6] + struct.pack("<H", n_bases) + sig[8:]
        with pytest.raises(DeltaFormatError):
            decode_signatures(bad)
    with pytest.raises(DeltaFormatError):
        MultiSignatureBuilder([1] * (MAX_BASES + 1))
    with pytest.raises(DeltaFormatError):
        encode_signatures([])


# Digests of (signature, delta) made by the encoder before several bases existed, from
# the inputs ``single_cases`` draws: one basis must still give exactly these bytes.
SINGLE_VECTOR = [
    ("1f1fe526934d717b9cf39ebb15c466ba", "e02e85d21cc56e0af65720fbbf2312e8"),
    ("ce807d47b96a443ae0ca6a529c3433c6", "36fc4b77ea982f64eebd2fbc836fe1b0"),
    ("585bddef251296b944507019179ad856", "641b9b2a97d464272d1731a90db781da"),
    ("a04d1c7d91a4634fc348d2149488098c", "08857fd9f343a3d6e8a8d86fc0d5dc20"),
    ("de9f86bd1dfdef583a43c76c6e4e1525", "fc3f63d841ed25de17b1fb7858d3598a"),
    ("ccc1d46d004d83a7b0924df1efb541be", "78ecde04e823c74e56806d4bdbe1aae6"),
]


def single_cases() -> list[tuple[bytes, bytes, int | None]]:
    rng = random.Random(12)
    cases = []
    for _ in SINGLE_VECTOR:
        basis = rng.randbytes(rng.randrange(0, 40_000))
        cut = rng.randrange(0, len(basis) + 1)
        fresh = rng.randbytes(rng.randrange(0, 3000))
        new = basis[:cut] + fresh + basis[cut + rng.randrange(0, 500) :] + basis[:1000]
        cases.append((basis, new, rng.choice([None, 64, 700, 4096])))
    return cases


def test_one_basis_keeps_the_single_basis_formats_byte_for_byte() -> None:
    for (basis, new, bs), expected in zip(single_cases(), SINGLE_VECTOR, strict=True):
        sig = signature_of(basis, block_size=bs)
        builder = MultiSignatureBuilder([len(basis)], block_size=bs)
        streamed = builder.update(basis) + builder.end_basis() + builder.finish()
        assert streamed == encode_signature(sig) == encode_signatures([sig])
        assert xxhash.xxh3_128_hexdigest(streamed) == expected[0]
        delta = make_delta(sig, new)
        assert make_delta([sig], new) == delta
        assert xxhash.xxh3_128_hexdigest(delta) == expected[1]
        assert decode_signatures(streamed) == (sig,)
        assert apply_delta([basis], delta) == apply_delta(basis, delta) == new


@given(st.integers(0, 1 << 40), st.integers(0, 1 << 40))
def test_one_basis_keeps_rsyncs_block_size(size: int, new_size: int) -> None:
    assert choose_bases_block_size([size], new_size) == choose_block_size(size)


def test_several_bases_block_size_follows_the_bases_and_the_new_file() -> None:
    # A full archive against last week's and six small incrementals: smaller blocks than
    # the largest basis alone would get, since the delta switches bases often.
    week = [31_774_720, 307_200, 901_120, 358_400, 235_520, 174_080, 163_840]
    assert choose_bases_block_size(week, 32_358_400) < choose_block_size(max(week)) // 2
    # A small incremental against the full archive and three small ones: few places to
    # leave a basis, so the signature of the big one is what to save on.
    small = [235_520, 174_080, 163_840, 31_774_720]
    assert choose_bases_block_size(small, 901_120) > choose_block_size(max(small))
    # Unknown new size: as big as the largest basis.
    assert choose_bases_block_size(week) == choose_bases_block_size(week, max(week))
    for sizes in (week, small, [0, 0], [1 << 44] * MAX_BASES):
        assert choose_block_size(0) <= choose_bases_block_size(sizes, 1) <= 128 * 1024
