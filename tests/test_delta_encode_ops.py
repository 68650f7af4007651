"""encode_ops: a delta from ops found elsewhere, checked like any other by the patcher."""

from __future__ import annotations

import pytest
import xxhash

from deltastage.delta.codec import apply_delta, encode_ops
from deltastage.delta.ops import Copy, Literal
from deltastage.delta.params import MAX_LITERAL
from deltastage.delta.signature import signature_of
from deltastage.errors import DeltaFormatError, IntegrityError

BASIS = bytes(range(256)) * 40  # 10240 bytes, 10 blocks of 1024


def test_ops_round_trip_through_the_patcher() -> None:
    sig = signature_of(BASIS, block_size=1024)
    new = BASIS[2048:5120] + b"new bytes" + BASIS[:1024]
    ops: list[Copy | Literal] = [Copy(2, 3), Literal(b"new bytes"), Copy(0, 1)]
    delta = encode_ops(sig, ops, new_size=len(new), new_hash=xxhash.xxh3_128_digest(new))
    assert apply_delta(BASIS, delta) == new


def test_wrong_ops_fail_on_the_trailer_hash() -> None:
    sig = signature_of(BASIS, block_size=1024)
    new = b"A" * 1024
    delta = encode_ops(sig, [Copy(1, 1)], new_size=1024, new_hash=xxhash.xxh3_128_digest(new))
    with pytest.raises(IntegrityError):
        apply_delta(BASIS, delta)


@pytest.mark.parametrize(
    "op", [Copy(9, 2), Copy(0, 0), Literal(b""), Literal(b"x" * (MAX_LITERAL + 1))]
)
def test_ops_a_patcher_would_refuse_are_not_encoded(op: Copy | Literal) -> None:
    with pytest.raises(DeltaFormatError):
        encode_ops(signature_of(BASIS, block_size=1024), [op], new_size=0, new_hash=b"\0" * 16)
