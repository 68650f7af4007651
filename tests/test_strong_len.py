"""Adaptive strong-hash length (rsync's s2length), the signatures that use it, and both
fitted to a new file much smaller than its basis."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from deltastage.delta.codec import apply_delta, make_delta
from deltastage.delta.params import (
    FIT_SHARE,
    MAX_BLOCK_SIZE,
    MAX_STRONG_LEN,
    MIN_ADAPTIVE_STRONG_LEN,
    choose_block_size,
    choose_strong_len,
    count_blocks,
    fit_to_new_file,
)
from deltastage.delta.signature import MultiSignatureBuilder, SignatureBuilder, signature_of


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


@given(st.integers(0, 1 << 44), st.integers(1, 1 << 20), st.integers(0, 1 << 44))
def test_a_smaller_new_file_never_needs_longer_hashes(size: int, block: int, new: int) -> None:
    alone = choose_strong_len(size, block)
    assert choose_strong_len(size, block, new) <= alone
    if new >= size:
        assert choose_strong_len(size, block, new) == alone


@given(st.integers(0, 1 << 44), st.integers(0, 1 << 44))
def test_a_signature_is_fitted_to_a_small_new_file(basis: int, new: int) -> None:
    default = choose_block_size(basis)
    block = fit_to_new_file(default, basis, new)
    assert block % 64 == 0 and default <= block <= max(default, MAX_BLOCK_SIZE)
    signature = count_blocks(basis, block) * (4 + choose_strong_len(basis, block, new))
    fits = signature <= max(1, new // FIT_SHARE)
    assert fits or block in (default, MAX_BLOCK_SIZE) or count_blocks(basis, block) == 1
    if new >= basis:
        assert block == default  # a file as big as its basis gets rsync's choice


def test_the_issue_example_gets_bigger_blocks() -> None:
    """A 170 KiB incremental archive against a 30 MiB full one: a signature of a fraction of
    the archive, not a quarter of it."""
    builder = MultiSignatureBuilder([31_774_720], new_size=174_080)
    assert builder.block_size == 10_240 and builder.strong_len == 3
    assert builder.encoded_size - 44 <= 174_080 // FIT_SHARE  # its blocks' part
    assert MultiSignatureBuilder([31_774_720]).encoded_size > 174_080 // 5


@given(st.lists(st.binary(max_size=6000), min_size=1, max_size=3), st.binary(max_size=600))
def test_a_signature_fitted_to_the_new_file_rebuilds_it(bases: list[bytes], new: bytes) -> None:
    builder = MultiSignatureBuilder([len(b) for b in bases], new_size=len(new))
    for basis in bases:
        builder.update(basis)
        builder.end_basis()
    builder.finish()
    assert apply_delta(bases, make_delta(builder.signatures, new)) == new
