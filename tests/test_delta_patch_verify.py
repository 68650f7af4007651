"""Patcher(verify_basis=True): the basis is checked while patching, in one pass when it can be."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deltastage.delta.codec import make_delta
from deltastage.delta.patch import Patcher
from deltastage.delta.signature import signature_of
from deltastage.errors import IntegrityError
from deltastage.hashing import hash_bytes

BS = 256
BASIS = random.Random(7).randbytes(10 * BS + 100)  # 11 blocks, the last one short
SIG = signature_of(BASIS, block_size=BS)


class CountingBasis:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.read = 0

    def read_at(self, offset: int, n: int) -> bytes:
        self.read += n
        return self.data[offset : offset + n]


def run(basis: bytes, delta: bytes) -> tuple[bytes, int]:
    """(rebuilt bytes, basis bytes read) through a verifying patcher."""
    source = CountingBasis(basis)
    out: list[bytes] = []
    patcher = Patcher(source.read_at, out.append, basis_size=len(basis), verify_basis=True)
    patcher.feed(delta)
    patcher.finish()
    return b"".join(out), source.read


def hand_made(*copies: tuple[int, int], literal: bytes = b"") -> tuple[bytes, bytes]:
    """(delta, expected output) for the given (start, count) copies, then a literal."""
    ops, out = [], []
    for start, count in copies:
        ops.append(b"C" + struct.pack("<II", start, count))
        out.append(BASIS[start * BS : min((start + count) * BS, len(BASIS))])
    if literal:
        ops.append(b"L" + struct.pack("<I", len(literal)) + literal)
        out.append(literal)
    new = b"".join(out)
    header = make_delta(SIG, b"")[:36]  # magic, sizes and the basis hash
    trailer = b"E" + struct.pack("<Q", len(new)) + hash_bytes(new)
    return header + b"".join(ops) + trailer, new


def test_in_order_copies_read_the_basis_once() -> None:
    delta, new = hand_made((0, 4), (4, 7), literal=b"tail")
    out, read = run(BASIS, delta)
    assert out == new
    assert read == len(BASIS)


def test_copies_out_of_order_and_skipped_blocks_are_still_hashed() -> None:
    delta, new = hand_made((5, 2), (0, 1), (9, 2), (5, 1))
    out, read = run(BASIS, delta)
    assert out == new
    # Blocks 0..6 once for the first copy (gap included), then the re-read of block 0 and
    # 5, blocks 7..10 for the copy of 9..10 (gap included); nothing twice beyond that.
    assert read == len(BASIS) + 2 * BS


@pytest.mark.parametrize("flip_at", [0, 3 * BS, 7 * BS + 5, len(BASIS) - 1])
def test_a_basis_changed_anywhere_is_refused(flip_at: int) -> None:
    # Block 7 is never copied: only the final sweep can notice a change there.
    delta, _ = hand_made((0, 7), (8, 3))
    wrong = bytearray(BASIS)
    wrong[flip_at] ^= 1
    with pytest.raises(IntegrityError, match="different basis"):
        run(bytes(wrong), delta)


def test_a_delta_without_copies_still_checks_the_basis() -> None:
    delta, _ = hand_made(literal=b"all new")
    assert run(BASIS, delta) == (b"all new", len(BASIS))
    with pytest.raises(IntegrityError, match="different basis"):
        run(BASIS[:-1] + b"?", delta)


@given(st.binary(max_size=3000), st.integers(1, 400), st.data())
def test_verified_patch_rebuilds_any_edit(
    basis: bytes, block_size: int, data: st.DataObject
) -> None:
    start = data.draw(st.integers(0, len(basis)))
    stop = data.draw(st.integers(start, len(basis)))
    new = basis[stop:] + data.draw(st.binary(max_size=200)) + basis[:start]
    delta = make_delta(signature_of(basis, block_size=block_size), new)
    assert run(basis, delta)[0] == new
