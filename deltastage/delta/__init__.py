"""The delta core: pure rsync-style signature, delta and patch (bytes in, bytes out, no I/O).

Layout: ``params`` (block size, bounds), ``rolling`` (vectorised weak hash), ``signature``
(build, encode, decode), ``matcher`` (the search, as COPY/LITERAL ops), ``ops`` (the two op
types), ``wire`` (the delta stream's format), ``patch`` (the patcher), ``codec`` (the
encoder; re-exports the patcher), ``refine`` (a delta refined around its edits).
"""

from __future__ import annotations

from deltastage.delta.codec import DeltaEncoder, DeltaStats, apply_delta, make_delta
from deltastage.delta.matcher import BlockIndex, Matcher, PolyIndex, iter_ops
from deltastage.delta.ops import Copy, Literal
from deltastage.delta.params import (
    DEFAULT_STRONG_LEN,
    MAX_BASES,
    MAX_BLOCK_SIZE,
    MAX_LITERAL,
    MAX_STRONG_LEN,
    choose_block_size,
)
from deltastage.delta.patch import Patcher, PatchResult
from deltastage.delta.signature import (
    MultiSignatureBuilder,
    Signature,
    SignatureBuilder,
    SignatureDecoder,
    decode_signature,
    decode_signatures,
    encode_signature,
    encode_signatures,
    signature_of,
)

__all__ = [
    "DEFAULT_STRONG_LEN",
    "MAX_BASES",
    "MAX_BLOCK_SIZE",
    "MAX_LITERAL",
    "MAX_STRONG_LEN",
    "BlockIndex",
    "Copy",
    "DeltaEncoder",
    "DeltaStats",
    "Literal",
    "Matcher",
    "MultiSignatureBuilder",
    "PatchResult",
    "Patcher",
    "PolyIndex",
    "Signature",
    "SignatureBuilder",
    "SignatureDecoder",
    "apply_delta",
    "choose_block_size",
    "decode_signature",
    "decode_signatures",
    "encode_signature",
    "encode_signatures",
    "iter_ops",
    "make_delta",
    "signature_of",
]
