"""pyrsync2-compatible API: same values and shapes, plus the bugs it fixes."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltastage.compat.pyrsync2 import blockchecksums, patchstream, rsyncdelta, weakchecksum
from deltastage.errors import DeltaFormatError


def reference_weak(data: bytes) -> int:
    """pyrsync2 0.2's weakchecksum, written out byte by byte."""
    a = b = 0
    for i, x in enumerate(data):
        a += x
        b += (len(data) - i) * x
    return (b << 16) | a


def round_trip(basis: bytes, new: bytes, blocksize: int) -> tuple[bytes, list[int | bytes]]:
    sigs = list(blockchecksums(io.BytesIO(basis), blocksize))
    delta = list(rsyncdelta(io.BytesIO(new), sigs, blocksize))
    out = io.BytesIO()
    patchstream(io.BytesIO(basis), out, delta, blocksize)
    return out.getvalue(), delta


@given(st.binary(max_size=3000), st.integers(1, 300))
@settings(max_examples=60)
def test_blockchecksums_match_pyrsync2_values(data: bytes, blocksize: int) -> None:
    expected = [
        (reference_weak(data[i : i + blocksize]), hashlib.md5(data[i : i + blocksize]).digest())
        for i in range(0, len(data), blocksize)
    ]
    assert list(blockchecksums(io.BytesIO(data), blocksize)) == expected
    for i in range(0, len(data), blocksize):
        block = data[i : i + blocksize]
        assert weakchecksum(block)[0] == reference_weak(block)


@given(st.binary(max_size=2000), st.binary(max_size=200), st.integers(0, 2000), st.integers(1, 64))
@settings(max_examples=80)
def test_round_trip_with_insertions(basis: bytes, insert: bytes, at: int, blocksize: int) -> None:
    new = basis[:at] + insert + basis[at:]
    assert round_trip(basis, new, blocksize)[0] == new


def test_identical_file_is_all_block_indices_including_short_tail() -> None:
    basis = os.urandom(10 * 4096 + 100)
    out, delta = round_trip(basis, basis, 4096)
    assert out == basis
    assert delta == list(range(11))


def test_duplicate_weak_checksums_keep_every_block() -> None:
    # Same byte sum and same weighted sum: pyrsync2's {weak: (index, strong)} dict keeps only
    # the second block, so it sends the first one as a literal every time.
    first, second = bytes([1, 0, 0, 1]) * 2, bytes([0, 1, 1, 0]) * 2
    assert reference_weak(first) == reference_weak(second)
    basis = first + second
    out, delta = round_trip(basis, second + first + first, 8)
    assert out == second + first + first
    assert delta == [1, 0, 0]


def test_large_shifted_file_is_mostly_indices() -> None:
    basis = os.urandom(1 << 20)
    new = b"header" + basis[:500_000] + b"middle" + basis[500_000:]
    out, delta = round_trip(basis, new, 4096)
    assert out == new
    assert sum(len(x) for x in delta if isinstance(x, bytes)) <= 2 * 4096 + 12


def test_negative_index_is_refused() -> None:
    with pytest.raises(DeltaFormatError):
        patchstream(io.BytesIO(b"abc"), io.BytesIO(), [-1])
    with pytest.raises(DeltaFormatError):
        list(rsyncdelta(io.BytesIO(b"abc"), [], 0))
