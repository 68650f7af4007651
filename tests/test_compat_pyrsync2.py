"""pyrsync2 compatibility to the letter: the values, shapes and sequences pyrsync2 0.2.6 gives.

pyrsync2 cannot be installed here, so its own unit tests' cases are ported (first part) and
the vectorised ``rsyncdelta`` is compared with a byte-by-byte model of pyrsync2's algorithm
(``model_rsyncdelta``) on small random inputs.
"""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltastage.compat import pyrsync2
from deltastage.compat.pyrsync2 import (
    blockchecksums,
    patchstream,
    patchstream_block,
    rollingchecksum,
    rsyncdelta,
    weakchecksum,
)
from deltastage.errors import DeltaFormatError

Delta = list[int | bytes]
Signatures = list[tuple[int, bytes]]


def reference_weak(data: bytes) -> int:
    """pyrsync2 0.2's weakchecksum, written out byte by byte."""
    a = b = 0
    for i, x in enumerate(data):
        a += x
        b += (len(data) - i) * x
    return (b << 16) | a


def reference_signatures(basis: bytes, blocksize: int) -> Signatures:
    return [
        (reference_weak(basis[i : i + blocksize]), hashlib.md5(basis[i : i + blocksize]).digest())
        for i in range(0, len(basis), blocksize)
    ]


def model_rsyncdelta(
    new: bytes, sigs: Signatures, bs: int, max_buffer: int = 4096, tailsize: int | None = None
) -> Delta:
    """pyrsync2 0.2.6's rsyncdelta, one byte at a time: the reference for the vectorised one.

    The window is ``new[lo:hi]`` with checksum parts ``a``, ``b``. After a match (or at the
    start) it is refilled with up to ``bs`` bytes; otherwise its first byte becomes literal and
    the next byte, or a zero once the stream is exhausted, rolls in, the update using ``bs``
    whatever the window's length. At the end the last ``tailsize`` bytes (pyrsync2:
    ``tell() % blocksize``) come out as a chunk of their own. Where pyrsync2 raises after
    matching a shrunken window at the end, the sequence ends; an empty refilled window is never
    matched (pyrsync2 would loop forever).
    """
    table = {weak: (index, strong) for index, (weak, strong) in enumerate(sigs)}
    tail = len(new) % bs if tailsize is None else tailsize
    out: Delta = []
    run = bytearray()

    def flush() -> None:
        if run:
            out.append(bytes(run))
            run.clear()

    lo = hi = a = b = 0
    refill = True
    while True:
        if refill:
            hi = min(lo + bs, len(new))
            a = sum(new[lo:hi])
            b = sum((hi - i) * new[i] for i in range(lo, hi))
        entry = table.get((b << 16) | a)
        if (
            entry is not None
            and (hi > lo or not refill)
            and entry[1] == hashlib.md5(new[lo:hi]).digest()
        ):
            flush()
            out.append(entry[0])
            if hi - lo < bs:
                return out
            lo, refill = hi, True
            continue
        refill = False
        if hi == len(new) and hi - lo <= tail:
            flush()
            if hi > lo:
                out.append(new[lo:hi])
            return out
        incoming = new[hi] if hi < len(new) else 0
        hi = min(hi + 1, len(new))
        a = a - new[lo] + incoming
        b = b - new[lo] * bs + a
        if len(run) >= max_buffer:
            out.append(bytes(run))
            run.clear()
        run.append(new[lo])
        lo += 1


def delta_of(basis: bytes, new: bytes, blocksize: int, **kwargs: int) -> Delta:
    sigs = blockchecksums(io.BytesIO(basis), blocksize=blocksize)
    return list(rsyncdelta(io.BytesIO(new), sigs, blocksize=blocksize, **kwargs))


def patched(basis: bytes, delta: Delta, blocksize: int) -> bytes:
    out = io.BytesIO()
    patchstream(io.BytesIO(basis), out, delta, blocksize=blocksize)
    return out.getvalue()


def round_trip(basis: bytes, new: bytes, blocksize: int) -> tuple[bytes, Delta]:
    delta = delta_of(basis, new, blocksize)
    return patched(basis, delta, blocksize), delta


# pyrsync2 0.2.6's own unit tests (pyrsync2_tests.py), case for case.

TEST_BLOCK_SIZE = 4
TEST_FILE = b"one really small file here"
PYRSYNC2_CASES = [
    (b"one really smaller file here :)", [0, 1, 2, 3, b"er", 4, 5, b"re", b" :)"]),
    (b"one really s file here", [0, 1, 2, 4, 5, 6]),
    (b"realone mallly s file here", [1, 0, 3, 2, 4, 5, 6]),
]


def test_pyrsync2_blockchecksums() -> None:
    hashes = list(blockchecksums(io.BytesIO(TEST_FILE), blocksize=TEST_BLOCK_SIZE))
    assert len(hashes) == 7
    for block, block_hash in enumerate(hashes):
        data = TEST_FILE[block * TEST_BLOCK_SIZE : (block + 1) * TEST_BLOCK_SIZE]
        assert block_hash == (weakchecksum(data)[0], hashlib.md5(data).digest())


def test_pyrsync2_rsyncdelta_same_file() -> None:
    assert delta_of(TEST_FILE, TEST_FILE, TEST_BLOCK_SIZE) == list(range(7))


def test_pyrsync2_rsyncdelta_with_changes() -> None:
    changes_in_blocks = [(0, 0), (3, 2), (4, 0), (5, TEST_BLOCK_SIZE - 1), (6, 0)]
    changed = bytearray(TEST_FILE)
    for block, position in changes_in_blocks:
        changed[block * TEST_BLOCK_SIZE + position] += 1
    delta = delta_of(TEST_FILE, bytes(changed), TEST_BLOCK_SIZE, max_buffer=TEST_BLOCK_SIZE)
    assert delta == [b"pne ", 1, 2, b"maml", b"!fil", b"e hf", b"se"]
    changed_blocks = [block for block, _ in changes_in_blocks]
    for block, data in enumerate(delta):
        if block in changed_blocks:
            assert data == changed[block * TEST_BLOCK_SIZE : (block + 1) * TEST_BLOCK_SIZE]
        else:
            assert data == block


@pytest.mark.parametrize(("new", "expected"), PYRSYNC2_CASES)
def test_pyrsync2_rsyncdelta_and_patchstream(new: bytes, expected: Delta) -> None:
    delta = delta_of(TEST_FILE, new, TEST_BLOCK_SIZE)
    assert delta == expected
    assert all(type(element) in (int, bytes) for element in delta)
    assert patched(TEST_FILE, delta, TEST_BLOCK_SIZE) == new
    assert model_rsyncdelta(new, reference_signatures(TEST_FILE, 4), 4) == expected


# The rest of pyrsync2's behaviour, case by case.


def test_exports_and_defaults_are_pyrsync2s() -> None:
    assert sorted(pyrsync2.__all__) == sorted(
        [
            "rollingchecksum",
            "weakchecksum",
            "patchstream",
            "patchstream_block",
            "rsyncdelta",
            "blockchecksums",
        ]
    )
    data = os.urandom(3 * 4096 + 5)
    assert list(blockchecksums(io.BytesIO(data))) == reference_signatures(data, 4096)
    new = data[:5000] + b"edit" + data[5000:]
    sigs = reference_signatures(data, 4096)
    delta = list(rsyncdelta(io.BytesIO(new), sigs))
    assert delta == model_rsyncdelta(new, sigs, 4096)
    out = io.BytesIO()
    patchstream(io.BytesIO(data), out, delta)
    assert out.getvalue() == new


def test_rollingchecksum_rolls_weakchecksum() -> None:
    data = os.urandom(64)
    _, a, b = weakchecksum(data[:16])
    for i in range(16, 64):
        weak, a, b = rollingchecksum(data[i - 16], data[i], a, b, 16)
        assert (weak, a, b) == weakchecksum(data[i - 15 : i + 1])
    assert rollingchecksum(3, 0, 10, 100) == ((-12181 << 16) | 7, 7, -12181)


def test_patchstream_block_writes_one_element() -> None:
    out = io.BytesIO()
    patchstream_block(io.BytesIO(b"abcdefgh"), out, 1, blocksize=4)
    patchstream_block(io.BytesIO(b"abcdefgh"), out, b"xy", blocksize=4)
    assert out.getvalue() == b"efghxy"


def test_duplicate_weak_checksums_only_the_last_block_matches() -> None:
    # Same byte sum and same weighted sum: pyrsync2's {weak: (index, strong)} table keeps only
    # the second block, so the first one never matches.
    first, second = bytes([1, 0, 0, 1]) * 2, bytes([0, 1, 1, 0]) * 2
    assert reference_weak(first) == reference_weak(second)
    basis = first + second
    out, delta = round_trip(basis, second + first + first, 8)
    assert out == second + first + first
    assert delta == [1, b"\x01\x00", 1, b"\x00\x01\x01\x00\x00\x01"]


def test_identical_blocks_match_the_last_one_listed() -> None:
    assert delta_of(b"AAAA" * 3, b"AAAA" * 3, 4) == [2, 2, 2]


def test_short_block_shadows_full_blocks_with_its_weak_checksum() -> None:
    # Leading zeros weigh nothing: b"\0\0xy" and b"xy" share a weak checksum.
    assert delta_of(b"\0\0xyxy", b"\0\0xyxy", 4) == [b"\0\0xy", b"xy"]


def test_shrinking_window_matches_the_short_block_and_ends_the_sequence() -> None:
    # pyrsync2 yields the same elements and then raises AttributeError.
    delta = delta_of(b"ABCD\x01\x02", b"ZABCD\x03\x01\x02", 4)
    assert delta == [b"Z", 0, b"\x03", 1]
    assert patched(b"ABCD\x01\x02", delta, 4) == b"ZABCD\x03\x01\x02"


@pytest.mark.parametrize(
    ("max_buffer", "expected"),
    [
        (4096, [b"xx", 0, 1, b"yyyyyyzzzz", b"zz"]),
        (3, [b"xx", 0, 1, b"yyy", b"yyy", b"zzz", b"z", b"zz"]),
        (0, [b"", b"x", b"x", 0, 1, b"", *[b"y"] * 6, *[b"z"] * 4, b"zz"]),
    ],
)
def test_literal_chunks_follow_max_buffer(max_buffer: int, expected: Delta) -> None:
    delta = delta_of(b"abcdefgh", b"xxabcdefghyyyyyyzzzzzz", 4, max_buffer=max_buffer)
    assert delta == expected


def test_final_chunk_size_comes_from_the_stream_position() -> None:
    stream = io.BytesIO(b"...one really smaller file here :)")
    stream.seek(3)
    sigs = blockchecksums(io.BytesIO(TEST_FILE), 4)
    delta = list(rsyncdelta(stream, sigs, 4))
    assert delta == [0, 1, 2, 3, b"er", 4, 5, b"re ", b":)"]


@st.composite
def pyrsync2_inputs(draw: st.DrawFn) -> tuple[bytes, Signatures, int, int, int]:
    """A new file, signatures, block size, max_buffer and the stream's start offset.

    Small alphabets make weak collisions, repeats and all-zero tails common; the signatures
    are the basis' and sometimes also blocks taken from the new file (any length up to the
    block size), shuffled or repeated, as a caller might pass them.
    """
    alphabet = draw(st.sampled_from([b"\x00", b"\x00\x01", b"ab\x00", bytes(range(4)), b"\xff\0"]))
    byte = st.sampled_from(list(alphabet))
    bs = draw(st.integers(1, 8))
    basis = bytes(draw(st.lists(byte, max_size=48)))
    new = bytearray(basis)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(new)))
        piece = bytes(draw(st.lists(byte, min_size=1, max_size=bs + 2)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        if kind == "insert":
            new[at:at] = piece
        elif kind == "delete":
            del new[at : at + len(piece)]
        else:
            new[at : at + len(piece)] = piece
    sigs = reference_signatures(basis, bs)
    if draw(st.booleans()):
        for start, size in draw(st.lists(st.tuples(st.integers(0, 48), st.integers(1, bs)))):
            if piece := bytes(new[start : start + size]):
                sigs.append((reference_weak(piece), hashlib.md5(piece).digest()))
        sigs = draw(st.permutations(sigs)) + sigs[: draw(st.integers(0, 2))]
    max_buffer = draw(st.sampled_from([4096, 5, 3, 2, 1, 0, -1]))
    return bytes(new), sigs, bs, max_buffer, draw(st.integers(0, 3))


@given(pyrsync2_inputs())
@settings(max_examples=400, deadline=None)
def test_rsyncdelta_is_pyrsync2s_sequence(case: tuple[bytes, Signatures, int, int, int]) -> None:
    new, sigs, bs, max_buffer, start = case
    stream = io.BytesIO(bytes(start) + new)
    stream.seek(start)
    delta = list(rsyncdelta(stream, iter(sigs), bs, max_buffer))
    assert delta == model_rsyncdelta(new, sigs, bs, max_buffer, (start + len(new)) % bs)
    assert all(type(element) in (int, bytes) for element in delta)


@given(
    st.binary(max_size=600),
    st.lists(st.tuples(st.integers(0, 600), st.integers(0, 40), st.binary(max_size=40))),
    st.integers(1, 64),
    st.sampled_from([4096, 7, 1, 0]),
)
@settings(max_examples=150, deadline=None)
def test_patchstream_rebuilds_the_new_file(
    basis: bytes, edits: list[tuple[int, int, bytes]], blocksize: int, max_buffer: int
) -> None:
    new = basis
    for at, cut, insert in edits:
        new = new[:at] + insert + new[at + cut :]
    delta = delta_of(basis, new, blocksize, max_buffer=max_buffer)
    assert patched(basis, delta, blocksize) == new


@given(st.binary(max_size=3000), st.integers(1, 300))
@settings(max_examples=60)
def test_blockchecksums_match_pyrsync2_values(data: bytes, blocksize: int) -> None:
    assert list(blockchecksums(io.BytesIO(data), blocksize)) == reference_signatures(
        data, blocksize
    )
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


def test_large_shifted_file_is_mostly_indices() -> None:
    basis = os.urandom(1 << 20)
    new = b"header" + basis[:500_000] + b"middle" + basis[500_000:]
    out, delta = round_trip(basis, new, 4096)
    assert out == new
    assert sum(len(x) for x in delta if isinstance(x, bytes)) <= 2 * 4096 + 12


def test_blocks_over_a_mebibyte_keep_exact_checksums() -> None:
    # Past 2^20 bytes a block's weak checksum no longer fits in 64 bits.
    bs = (1 << 20) + 1
    basis = os.urandom(2 * bs + 1000)
    sigs = list(blockchecksums(io.BytesIO(basis), bs))
    assert [weak for weak, _ in sigs] == [
        weakchecksum(basis[i : i + bs])[0] for i in range(0, len(basis), bs)
    ]
    assert sigs[0][0] == reference_weak(basis[:bs])
    new = basis[:bs] + b"x" + basis[bs:]
    delta = list(rsyncdelta(io.BytesIO(new), sigs, bs))
    assert delta == [0, b"x", 1, 2]


def test_bad_block_sizes_and_indices_are_refused() -> None:
    with pytest.raises(DeltaFormatError):
        patchstream(io.BytesIO(b"abc"), io.BytesIO(), [-1])
    with pytest.raises(DeltaFormatError):
        list(rsyncdelta(io.BytesIO(b"abc"), [], 0))
    with pytest.raises(DeltaFormatError):
        list(blockchecksums(io.BytesIO(b"abc"), 0))
