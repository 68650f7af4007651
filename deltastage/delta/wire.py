"""The delta stream's wire format, shared by the encoder (codec) and the patcher (patch).

Wire format (little-endian)::

    header   b"DDLT" | version u8 | 0 u8 | 0 u16 | block_size u32 | basis_size u64
             | basis xxh3-128 (16)          -- copied from the signature it answers
    ops      b"C" start u32 count u32       copy blocks [start, start+count) of the basis
             b"L" len u32 bytes             raw literal, 1..MAX_LITERAL bytes
             b"Z" len u32 zlen u32 bytes    zstd-compressed literal of len raw bytes
             b"H" len u64                   len zero bytes, 1..MAX_ZERO_RUN: a hole of a
                                            sparse file (the patcher may leave it a hole)
    trailer  b"E" new_size u64 | new xxh3-128 (16)

A delta against several bases (2..MAX_BASES, from a multi-basis signature) has its own
magic, so the single-basis format above stays exactly as it is::

    header   b"DDLM" | version u8 | n_bases u8 | 0 u16 | block_size u32
             | n_bases x (basis_size u64 | basis xxh3-128 (16))
    ops      b"C" basis u8 start u32 count u32   copy blocks of basis ``basis``
             b"L", b"Z" and b"H" as above
    trailer  as above

The encoder (``codec``) and the patcher (``patch``) both read their layout from here. A
delta without ``H`` ops is read by any patcher of this version; the encoder writes them only
when told of a hole (``DeltaEncoder.zeros``), which the agent of protocol 7 on does.
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
    "MAX_ZERO_RUN",
    "MAX_ZLEN",
    "MULTI_BASIS",
    "MULTI_COPY",
    "MULTI_DELTA_MAGIC",
    "MULTI_HEADER",
    "OP_COPY",
    "OP_END",
    "OP_LIT",
    "OP_ZERO",
    "OP_ZLIT",
    "VERSION",
    "ZERO",
    "ZLIT",
]

DELTA_MAGIC = b"DDLT"
VERSION = 1
HEADER = struct.Struct(f"<4sBBHIQ{HASH_SIZE}s")
COPY = struct.Struct("<II")
MULTI_DELTA_MAGIC = b"DDLM"
MULTI_HEADER = struct.Struct("<4sBBHI")
MULTI_BASIS = struct.Struct(f"<Q{HASH_SIZE}s")
MULTI_COPY = struct.Struct("<BII")
LIT = struct.Struct("<I")
ZLIT = struct.Struct("<II")
END = struct.Struct(f"<Q{HASH_SIZE}s")
ZERO = struct.Struct("<Q")
OP_COPY, OP_LIT, OP_ZLIT, OP_ZERO, OP_END = b"C"[0], b"L"[0], b"Z"[0], b"H"[0], b"E"[0]
# Longest zero run in one op (a longer hole takes several): 1 TiB, the largest basis an
# agent accepts. What a run may cost the master is its write budget's to bound.
MAX_ZERO_RUN = 1 << 40
# zstd never expands incompressible input by more than this (ZSTD_COMPRESSBOUND).
MAX_ZLEN = MAX_LITERAL + (MAX_LITERAL >> 8) + 64
