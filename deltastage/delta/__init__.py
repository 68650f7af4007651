"""The delta core: pure rsync-style signature, delta and patch (bytes in, bytes out, no I/O).

Layout: ``params`` (block size, bounds), ``rolling`` (vectorised weak hash), ``signature``
(build, encode, decode), ``matcher`` (the search, as COPY/LITERAL ops), ``ops`` (the two op
types), ``wire`` (the delta stream's format), ``patch`` (the patcher), ``codec`` (the
encoder; re-exports the patcher).

Names are loaded on first use (PEP 562): numpy costs ~0.1 s of start-up, and patching, the
master's hottest path, never needs it; ``patch`` imports neither numpy nor zstandard (until a
compressed literal arrives) nor dataclasses.
"""

from __future__ import annotations

import importlib

# mypy reads this name as true; at run time it spares importing typing (~2 ms of a patch).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from deltastage.delta.codec import DeltaEncoder, DeltaStats, apply_delta, make_delta
    from deltastage.delta.matcher import BlockIndex, Matcher, PolyIndex, iter_ops
    from deltastage.delta.ops import Copy, Literal
    from deltastage.delta.params import (
        DEFAULT_STRONG_LEN,
        MAX_BLOCK_SIZE,
        MAX_LITERAL,
        MAX_STRONG_LEN,
        choose_block_size,
    )
    from deltastage.delta.patch import Patcher, PatchResult
    from deltastage.delta.signature import (
        Signature,
        SignatureBuilder,
        SignatureDecoder,
        decode_signature,
        encode_signature,
        signature_of,
    )

__all__ = [
    "DEFAULT_STRONG_LEN",
    "MAX_BLOCK_SIZE",
    "MAX_LITERAL",
    "MAX_STRONG_LEN",
    "BlockIndex",
    "Copy",
    "DeltaEncoder",
    "DeltaStats",
    "Literal",
    "Matcher",
    "PatchResult",
    "Patcher",
    "PolyIndex",
    "Signature",
    "SignatureBuilder",
    "SignatureDecoder",
    "apply_delta",
    "choose_block_size",
    "decode_signature",
    "encode_signature",
    "iter_ops",
    "make_delta",
    "signature_of",
]

_HOME = {
    **dict.fromkeys(
        ("DeltaEncoder", "DeltaStats", "apply_delta", "make_delta"),
        "codec",
    ),
    **dict.fromkeys(("Patcher", "PatchResult"), "patch"),
    **dict.fromkeys(("BlockIndex", "Matcher", "PolyIndex", "iter_ops"), "matcher"),
    **dict.fromkeys(("Copy", "Literal"), "ops"),
    **dict.fromkeys(
        ("DEFAULT_STRONG_LEN", "MAX_BLOCK_SIZE", "MAX_LITERAL", "MAX_STRONG_LEN"), "params"
    ),
    "choose_block_size": "params",
    **dict.fromkeys(
        (
            "Signature",
            "SignatureBuilder",
            "SignatureDecoder",
            "decode_signature",
            "encode_signature",
            "signature_of",
        ),
        "signature",
    ),
}


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
