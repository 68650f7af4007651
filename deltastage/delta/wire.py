"""The delta stream's wire format, shared by the encoder (codec) and the patcher (patch).

Wire format (little-endian)::

    header   b"DDLT" | version u8 | 0 u8 | 0 u16 | block_size u32 | basis_size u64
             | basis xxh3-128 (16)          -- copied from the signature it answers
    ops      b"C" start u32 count u32       copy blocks [start, start+count) of the basis
             b"L" len u32 bytes             raw literal, 1..MAX_LITERAL bytes
             b"Z" len u32 zlen u32 bytes    zstd-compressed literal of len raw bytes
    trailer  b"E" new_size u64 | new xxh3-128 (16)

The encoder (``codec``) and the patcher (``patch``) both read their layout from here.
"""

from __future__ import annotations

import struct

from deltastage.delta.params import MAX_LITERAL
from deltastage.hashing import HASH_SIZE

__all__ = [
    "COPY",
    "DELTA_MAGIC",
    "END",
    "HEADER",
    "LIT",
    "MAX_ZLEN",
    "OP_COPY",
    "OP_END",
    "OP_LIT",
    "OP_ZLIT",
    "VERSION",
    "ZLIT",
]

DELTA_MAGIC = b"DDLT"
VERSION = 1
HEADER = struct.Struct(f"<4sBBHIQ{HASH_SIZE}s")
COPY = struct.Struct("<II")
LIT = struct.Struct("<I")
ZLIT = struct.Struct("<II")
END = struct.Struct(f"<Q{HASH_SIZE}s")
OP_COPY, OP_LIT, OP_ZLIT, OP_END = b"C"[0], b"L"[0], b"Z"[0], b"E"[0]
# zstd never expands incompressible input by more than this (ZSTD_COMPRESSBOUND).
MAX_ZLEN = MAX_LITERAL + (MAX_LITERAL >> 8) + 64
