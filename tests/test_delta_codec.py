"""Signature and delta codecs: exact round trips, and every corruption is a clean error."""

from __future__ import annotations

import contextlib
import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltastage.delta.codec import apply_delta, make_delta
from deltastage.delta.params import MAX_LITERAL
from deltastage.delta.patch import Patcher
from deltastage.delta.signature import (
    SignatureBuilder,
    SignatureDecoder,
    decode_signature,
    encode_signature,
    signature_of,
)
from deltastage.errors import DeltaFormatError, IntegrityError
from deltastage.hashing import hash_bytes

BASIS = random.Random(3).randbytes(3000) + b"tail-of-basis"
NEW = BASIS[:1000] + b"an inserted sentence, compressible compressible compressible" + BASIS[1100:]
SIG = signature_of(BASIS, block_size=128)
DELTA = make_delta(SIG, NEW)


def patch(basis: bytes, delta: bytes, *, split: int = 0, basis_hash: bool = True) -> bytes:
    out: list[bytes] = []
    patcher = Patcher(
        lambda offset, n: basis[offset : offset + n],
        out.append,
        basis_size=len(basis),
        basis_hash=hash_bytes(basis) if basis_hash else None,
    )
    step = split or max(1, len(delta))
    for i in range(0, len(delta), step):
        patcher.feed(delta[i : i + step])
    result = patcher.finish()
    data = b"".join(out)
    assert result.size == len(data) and result.xxh3_128 == hash_bytes(data)
    return data


@given(st.binary(max_size=4000), st.integers(1, 500), st.integers(1, 16))
def test_signature_encode_decode_round_trip(basis: bytes, block_size: int, strong_len: int) -> None:
    sig = signature_of(basis, block_size=block_size, strong_len=strong_len)
    encoded = encode_signature(sig)
    assert decode_signature(encoded) == sig
    builder = SignatureBuilder(len(basis), block_size=block_size, strong_len=strong_len)
    assert builder.encoded_size == len(encoded)  # known before any byte is read
    assert builder.update(basis) + builder.finish() == encoded


def test_decoders_accept_one_byte_splits() -> None:
    encoded = encode_signature(SIG)
    decoder = SignatureDecoder()
    for i in range(len(encoded)):
        assert not decoder.done
        decoder.feed(encoded[i : i + 1])
    assert decoder.done and decoder.result() == SIG
    assert patch(BASIS, DELTA, split=1) == NEW


def test_delta_literals_are_compressed_and_level_zero_is_raw() -> None:
    raw = make_delta(SIG, NEW, level=0)
    assert NEW[1000:1060] in raw
    assert NEW[1000:1060] not in DELTA
    assert patch(BASIS, raw) == patch(BASIS, DELTA) == NEW


def test_every_signature_truncation_and_bit_flip_is_rejected() -> None:
    encoded = encode_signature(signature_of(BASIS[:900], block_size=100, strong_len=4))
    for cut in range(len(encoded)):
        with pytest.raises(DeltaFormatError):
            decode_signature(encoded[:cut])
    for bit in range(len(encoded) * 8):
        flipped = bytearray(encoded)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(DeltaFormatError):
            decode_signature(bytes(flipped))
    with pytest.raises(DeltaFormatError):
        decode_signature(encoded + b"\x00")


def test_every_delta_truncation_and_bit_flip_is_rejected() -> None:
    for cut in range(len(DELTA)):
        with pytest.raises((DeltaFormatError, IntegrityError)):
            patch(BASIS, DELTA[:cut])
    harmless = 0
    for bit in range(len(DELTA) * 8):
        flipped = bytearray(DELTA)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            out = patch(BASIS, bytes(flipped))
        except (DeltaFormatError, IntegrityError):
            continue
        # Only a flip zstd ignores (an unused frame-header bit) may pass, and then the
        # verified output is exactly the right file.
        assert out == NEW
        harmless += 1
    assert harmless <= 2
    with pytest.raises(DeltaFormatError, match="after the end"):
        patch(BASIS, DELTA + b"E")


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_garbage_after_a_valid_header_never_crashes(tail: bytes) -> None:
    header = DELTA[:36]
    with contextlib.suppress(DeltaFormatError, IntegrityError):
        patch(BASIS, header + tail)


def ops(*parts: bytes) -> bytes:
    return DELTA[:36] + b"".join(parts)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"C" + struct.pack("<II", SIG.n_blocks, 1), "past the basis"),
        (b"C" + struct.pack("<II", 0, SIG.n_blocks + 1), "past the basis"),
        (b"C" + struct.pack("<II", 0, 0), "zero blocks"),
        (b"L" + struct.pack("<I", 0), "literal length"),
        (b"L" + struct.pack("<I", MAX_LITERAL + 1), "literal length"),
        (b"Z" + struct.pack("<II", 10, 0), "compressed literal length"),
        (b"Z" + struct.pack("<II", 10, 1 << 30), "compressed literal length"),
        (b"Z" + struct.pack("<II", 5, 3) + b"abc", "corrupt compressed literal"),
        (b"Q", "unknown delta op"),
        (b"C" + struct.pack("<II", 0, 1), "truncated"),
    ],
)
def test_malformed_ops_are_format_errors(body: bytes, message: str) -> None:
    with pytest.raises(DeltaFormatError, match=message):
        patch(BASIS, ops(body))


def test_wrong_basis_or_wrong_output_is_an_integrity_error() -> None:
    other = BASIS[:-1] + b"!"
    with pytest.raises(IntegrityError, match="different basis"):
        patch(other, DELTA)
    with pytest.raises(IntegrityError, match="xxh3-128"):  # no basis hash: the output's catches it
        patch(other, DELTA, basis_hash=False)
    with pytest.raises(IntegrityError, match="-byte basis"):
        patch(BASIS + b"x", DELTA, basis_hash=False)
    forged_end = DELTA[:-16] + bytes(16)
    with pytest.raises(IntegrityError, match="xxh3-128"):
        patch(BASIS, forged_end)


def test_short_reads_from_the_basis_are_integrity_errors() -> None:
    patcher = Patcher(lambda offset, n: b"", lambda data: None, basis_size=len(BASIS))
    with pytest.raises(IntegrityError, match="basis ended early"):
        patcher.feed(DELTA)


def test_builder_refuses_a_basis_of_the_wrong_size() -> None:
    builder = SignatureBuilder(10, block_size=4)
    builder.update(b"123456789")
    with pytest.raises(DeltaFormatError, match="declared"):
        builder.finish()
    with pytest.raises(DeltaFormatError, match="longer"):
        SignatureBuilder(3).update(b"1234")


def test_signature_decoder_bounds_blocks_and_size() -> None:
    encoded = encode_signature(signature_of(os.urandom(5000), block_size=10))
    with pytest.raises(DeltaFormatError, match="exceed the limit"):
        SignatureDecoder(max_blocks=100).feed(encoded)
    with pytest.raises(DeltaFormatError, match="exceeds the limit"):
        SignatureDecoder(max_basis_size=4999).feed(encoded)
    bad_block = bytearray(encoded)
    struct.pack_into("<I", bad_block, 8, 0)
    with pytest.raises(DeltaFormatError, match="block size"):
        decode_signature(bytes(bad_block))


def test_apply_delta_on_a_plain_transfer() -> None:
    new = os.urandom(3 * MAX_LITERAL + 5)
    assert apply_delta(b"", make_delta(signature_of(b""), new)) == new
