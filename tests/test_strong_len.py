"""Adaptive strong-hash length (rsync's s2length) and the signatures that use it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from deltastage.delta.params import (
    MAX_STRONG_LEN,
    MIN_ADAPTIVE_STRONG_LEN,
    choose_block_size,
    choose_strong_len,
)
from deltastage.delta.signature import SignatureBuilder, signature_of


def rsync_s2length(size: int, block: int) -> int:
    """rsync 3.2 generator.c sum_sizes_sqroot(), transcribed loop for loop."""
    b = 10  # BLOCKSUM_BIAS
    n = size
    while n := n >> 1:
        b += 2
    c = block
    while (c := c >> 1) and b:
        b -= 1
    return (b + 1 - 32 + 7) // 8


@given(st.integers(0, 1 << 44), st.integers(1, 1 << 20))
def test_matches_rsync_within_our_clamp(size: int, block: int) -> None:
    want = max(MIN_ADAPTIVE_STRONG_LEN, min(MAX_STRONG_LEN, rsync_s2length(max(size, 1), block)))
    assert choose_strong_len(size, block) == want


def test_typical_sizes() -> None:
    tar = 125 << 20
    assert choose_strong_len(tar, choose_block_size(tar)) == 3
    assert choose_strong_len(24_000, 512) == 3
    assert choose_strong_len(1 << 40, choose_block_size(1 << 40)) == 6
    assert choose_strong_len(1 << 44, 512) == 8


def test_signatures_default_to_the_adaptive_length() -> None:
    basis = bytes(range(256)) * 400
    assert signature_of(basis).strong_len == choose_strong_len(
        len(basis), choose_block_size(len(basis))
    )
    assert SignatureBuilder(len(basis), strong_len=16).strong_len == 16
