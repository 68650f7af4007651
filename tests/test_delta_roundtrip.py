"""Round trips, streaming splits and the differential test against a naive rsync."""

from __future__ import annotations

import os
import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltastage.delta.codec import DeltaEncoder, apply_delta, make_delta
from deltastage.delta.matcher import PolyIndex, iter_ops
from deltastage.delta.ops import Copy, Literal
from deltastage.delta.params import MAX_CHAIN, MAX_STRONG_LEN, choose_block_size
from deltastage.delta.patch import Patcher
from deltastage.delta.rolling import block_weaks
from deltastage.delta.signature import (
    MultiSignatureBuilder,
    Signature,
    SignatureBuilder,
    signature_of,
)
from deltastage.errors import DeltaFormatError
from tests.helpers.naive_rsync import naive_delta, naive_patch


def literal_bytes(sig: Signature, new: bytes) -> int:
    return sum(len(op.data) for op in iter_ops(sig, [new]) if isinstance(op, Literal))


@st.composite
def edited_pair(draw: st.DrawFn) -> tuple[bytes, bytes, int]:
    """A basis, a new file made from it by random edits, and a block size."""
    alphabet = draw(st.sampled_from([b"ab", b"abc\x00", bytes(range(256))]))
    size = draw(st.integers(0, 600))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    basis = bytes(rnd.choice(alphabet) for _ in range(size))
    new = bytearray(basis)
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "move", "repeat"]))
        at = draw(st.integers(0, len(new)))
        n = draw(st.integers(0, 40))
        if kind == "insert":
            new[at:at] = bytes(rnd.choice(alphabet) for _ in range(n))
        elif kind == "delete":
            del new[at : at + n]
        elif kind == "replace":
            new[at : at + n] = bytes(rnd.choice(alphabet) for _ in range(n))
        elif kind == "move":
            piece = bytes(new[at : at + n])
            del new[at : at + n]
            dest = draw(st.integers(0, len(new)))
            new[dest:dest] = piece
        else:
            new[at:at] = bytes(new[at : at + n]) * 3
    block_size = draw(st.integers(1, 80))
    return basis, bytes(new), block_size


@given(edited_pair())
def test_round_trip_and_never_more_literal_than_naive_rsync(case: tuple[bytes, bytes, int]) -> None:
    basis, new, block_size = case
    sig = signature_of(basis, block_size=block_size)
    delta = make_delta(sig, new)
    assert apply_delta(basis, delta) == new
    oracle = naive_delta(basis, new, block_size)
    assert naive_patch(basis, oracle.ops, block_size) == new
    assert literal_bytes(sig, new) <= oracle.literal_bytes


@given(st.binary(max_size=3000), st.binary(max_size=3000), st.integers(1, 700), st.integers(0, 5))
def test_round_trip_unrelated_bytes(basis: bytes, new: bytes, block_size: int, level: int) -> None:
    sig = signature_of(basis, block_size=block_size)
    assert apply_delta(basis, make_delta(sig, new, level=level)) == new


@given(st.binary(max_size=2000), st.data())
@settings(max_examples=40)
def test_streaming_splits_give_the_same_bytes(basis: bytes, data: st.DataObject) -> None:
    block_size = data.draw(st.integers(1, 300))
    new = data.draw(st.sampled_from([basis, basis[::-1], basis[7:] + basis[:7]]))
    sig = signature_of(basis, block_size=block_size)
    whole = make_delta(sig, new)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(new)), max_size=8)))
    encoder = DeltaEncoder(sig)
    pieces = [encoder.update(new[a:b]) for a, b in zip([0, *cuts], [*cuts, len(new)], strict=True)]
    assert b"".join(pieces) + encoder.finish() == whole
    builder = SignatureBuilder(len(basis), block_size=block_size)
    sig_pieces = [builder.update(basis[i : i + 13]) for i in range(0, len(basis), 13)]
    sig_pieces.append(builder.finish())
    assert builder.signature == sig


def test_identical_files_are_one_copy_and_short_final_block_matches() -> None:
    basis = os.urandom(10_000)
    sig = signature_of(basis, block_size=512)
    assert sig.last_block_size == 10_000 % 512
    assert list(iter_ops(sig, [basis])) == [Copy(0, sig.n_blocks)]
    shifted = b"xyz" + basis
    assert list(iter_ops(sig, [shifted])) == [Literal(b"xyz"), Copy(0, sig.n_blocks)]


def test_empty_basis_is_a_plain_transfer() -> None:
    sig = signature_of(b"")
    assert sig.n_blocks == 0
    new = os.urandom(5000)
    assert apply_delta(b"", make_delta(sig, new)) == new
    assert apply_delta(b"", make_delta(sig, b"")) == b""


def test_repeated_blocks_and_runs_are_coalesced() -> None:
    block = os.urandom(64)
    basis = block * 20 + os.urandom(64)
    sig = signature_of(basis, block_size=64)
    new = block * 50
    ops = list(iter_ops(sig, [new]))
    assert all(isinstance(op, Copy) for op in ops)
    assert apply_delta(basis, make_delta(sig, new)) == new
    moved = basis[640:] + basis[:640]
    assert len(list(iter_ops(sig, [moved]))) <= 3


def weak_collision(block_size: int = 16) -> tuple[bytes, bytes]:
    """Two different blocks with the same 32-bit weak hash (birthday search, fixed seed)."""
    rng = np.random.default_rng(1234)
    count = 1 << 18
    data = rng.integers(0, 256, count * block_size, dtype=np.uint8)
    weaks = block_weaks(data, block_size)
    order = np.argsort(weaks, kind="stable")
    same = np.flatnonzero(weaks[order][1:] == weaks[order][:-1])
    i, j = int(order[same[0]]), int(order[same[0] + 1])
    raw = data.tobytes()
    return raw[i * block_size : (i + 1) * block_size], raw[j * block_size : (j + 1) * block_size]


def test_crafted_weak_collision_keeps_every_block() -> None:
    a, b = weak_collision()
    assert a != b
    sig = signature_of(a + b, block_size=16)
    assert sig.weak[:4] == sig.weak[4:8]
    assert list(iter_ops(sig, [b + a])) == [Copy(1, 1), Copy(0, 1)]
    assert list(iter_ops(sig, [b"!" + b + b + a])) == [
        Literal(b"!"),
        Copy(1, 1),
        Copy(1, 1),
        Copy(0, 1),
    ]


def test_candidate_chain_is_bounded() -> None:
    blocks = [os.urandom(32) for _ in range(MAX_CHAIN + 10)]
    real = signature_of(b"".join(blocks), block_size=32)
    forged = Signature(
        block_size=32,
        strong_len=real.strong_len,
        basis_size=real.basis_size,
        basis_hash=real.basis_hash,
        weak=real.weak[:4] * real.n_blocks,
        strong=real.strong,
    )
    index = PolyIndex(forged)
    # All blocks share one weak hash: the chain is sorted by strong hash, and only its
    # first MAX_CHAIN entries are ever compared.
    found = [index.lookup(0, memoryview(block)) for block in blocks]
    assert sum(f >= 0 for f in found) == MAX_CHAIN
    assert all(f == i for i, f in enumerate(found) if f >= 0)


def test_zeros_do_not_go_quadratic() -> None:
    basis = bytes(1 << 20)
    sig = signature_of(basis, block_size=64)
    new = bytes(3) + basis + b"\x01" + basis
    ops = list(iter_ops(sig, [new]))
    assert sum(len(op.data) for op in ops if isinstance(op, Literal)) <= 4 + 64
    assert apply_delta(basis, make_delta(sig, new)) == new


@pytest.mark.parametrize(
    ("size", "expected"),
    [(0, 512), (1000, 512), (256 << 20, 16384), (1 << 40, 128 * 1024), (2 << 30, 46336)],
)
def test_choose_block_size(size: int, expected: int) -> None:
    assert choose_block_size(size) == expected
    assert choose_block_size(size) % 64 == 0


@pytest.mark.parametrize("strong_len", [1, 4, MAX_STRONG_LEN])
def test_strong_len_is_a_parameter(strong_len: int) -> None:
    basis = os.urandom(5000)
    sig = signature_of(basis, strong_len=strong_len, block_size=100)
    assert len(sig.strong) == strong_len * sig.n_blocks
    new = basis[:2000] + b"edit" + basis[2100:]
    assert apply_delta(basis, make_delta(sig, new)) == new


@pytest.mark.slow
def test_large_random_edits_match_naive_literal_count() -> None:
    rnd = random.Random(7)
    basis = os.urandom(400_000)
    new = bytearray(basis)
    for _ in range(60):
        at = rnd.randrange(len(new))
        new[at : at + rnd.randrange(50)] = os.urandom(rnd.randrange(50))
    sig = signature_of(basis, block_size=700)
    assert literal_bytes(sig, bytes(new)) == naive_delta(basis, bytes(new), 700).literal_bytes
    assert apply_delta(basis, make_delta(sig, bytes(new))) == new


# --- zero runs: a sparse file's holes, told to the encoder without being read -------------

pieces_and_holes = st.lists(
    st.one_of(st.binary(max_size=400), st.integers(1, 5000)), min_size=1, max_size=8
)


def spelled_out(pieces: list[bytes | int]) -> bytes:
    return b"".join(bytes(p) if isinstance(p, int) else p for p in pieces)


@given(st.binary(max_size=3000), pieces_and_holes, st.integers(1, 300), st.integers(0, 3))
def test_zero_runs_round_trip_exactly(
    basis: bytes, pieces: list[bytes | int], block_size: int, level: int
) -> None:
    """Each hole the encoder is told of reaches the patcher as one zero run, at its offset;
    the rest rebuilds the file around it, byte for byte."""
    sig = signature_of(basis, block_size=block_size)
    encoder = DeltaEncoder(sig, level=level)
    delta = b"".join(encoder.zeros(p) if isinstance(p, int) else encoder.update(p) for p in pieces)
    delta += encoder.finish()
    new = spelled_out(pieces)
    assert apply_delta(basis, delta) == new

    at = 0
    runs: list[tuple[int, int]] = []
    out = bytearray(len(new))

    def write(data: bytes) -> None:
        nonlocal at
        out[at : at + len(data)] = data
        at += len(data)

    def zeros(count: int) -> None:
        nonlocal at
        runs.append((at, count))
        at += count  # left as it is: zeros already

    patcher = Patcher(
        lambda offset, n: basis[offset : offset + n], write, basis_size=len(basis), zeros=zeros
    )
    patcher.feed(delta)
    result = patcher.finish()
    assert bytes(out) == new and result.size == len(new)
    offsets = [sum(len(spelled_out([q])) for q in pieces[:i]) for i in range(len(pieces))]
    assert runs == [(o, p) for o, p in zip(offsets, pieces, strict=True) if isinstance(p, int)]
    assert encoder.stats.zero_bytes == sum(p for p in pieces if isinstance(p, int))


@given(pieces_and_holes, st.integers(1, 700))
def test_a_hole_signs_as_the_zeros_it_reads_as(pieces: list[bytes | int], block_size: int) -> None:
    whole = spelled_out(pieces)
    told = SignatureBuilder(len(whole), block_size=block_size)
    out = b"".join(told.zeros(p) if isinstance(p, int) else told.update(p) for p in pieces)
    out += told.finish()
    read = SignatureBuilder(len(whole), block_size=block_size)
    assert out == read.update(whole) + read.finish()
    assert told.signature == read.signature
    # the same basis twice in a multi-basis signature: holes told, or read
    multi_told = MultiSignatureBuilder([len(whole)] * 2, block_size=block_size)
    multi_read = MultiSignatureBuilder([len(whole)] * 2, block_size=block_size)
    told_out = read_out = b""
    for _ in range(2):
        for p in pieces:
            told_out += multi_told.zeros(p) if isinstance(p, int) else multi_told.update(p)
        told_out += multi_told.end_basis()
        read_out += multi_read.update(whole) + multi_read.end_basis()
    assert told_out + multi_told.finish() == read_out + multi_read.finish()


def test_zero_runs_longer_than_one_op_and_out_of_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    from deltastage.delta import codec
    from deltastage.delta.wire import MAX_ZERO_RUN

    monkeypatch.setattr(codec, "MAX_ZERO_RUN", 1000)  # not a terabyte of zeros to hash
    encoder = DeltaEncoder(signature_of(b""))
    delta = encoder.zeros(2500) + encoder.finish()
    assert encoder.stats.zero_ops == 3
    seen: list[int] = []
    patcher = Patcher(lambda o, n: b"", lambda d: None, basis_size=0, zeros=seen.append)
    patcher.feed(delta)
    assert seen == [1000, 1000, 500] and patcher.finish().size == 2500
    header = delta[: delta.index(b"H")]
    for bad in (0, MAX_ZERO_RUN + 1):  # refused before anything is hashed or written
        patcher = Patcher(lambda o, n: b"", lambda d: None, basis_size=0, zeros=seen.append)
        with pytest.raises(DeltaFormatError, match="zero run"):
            patcher.feed(header + b"H" + struct.pack("<Q", bad))
