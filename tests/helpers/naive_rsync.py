"""A deliberately naive textbook rsync, used as an oracle for the delta core.

No hashes at all: blocks are compared by content, at every offset, in order. A full-size
block matches anywhere; the basis' short final block only as the new file's tail (rsync's
rule). The result is the greedy parse whose literal byte count the fast core must not exceed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class NaiveDelta:
    ops: list[int | bytes]
    literal_bytes: int


def naive_delta(basis: bytes, new: bytes, block_size: int) -> NaiveDelta:
    blocks = [basis[i : i + block_size] for i in range(0, len(basis), block_size)]
    full: dict[bytes, int] = {}
    for index, block in enumerate(blocks):
        if len(block) == block_size:
            full.setdefault(block, index)
    short = blocks[-1] if blocks and len(blocks[-1]) < block_size else None
    ops: list[int | bytes] = []
    literal = bytearray()
    literal_bytes = 0
    k = 0
    while k < len(new):
        match = full.get(new[k : k + block_size]) if len(new) - k >= block_size else None
        if match is None and short is not None and new[k:] == short:
            match = len(blocks) - 1
        if match is None:
            literal.append(new[k])
            literal_bytes += 1
            k += 1
            continue
        if literal:
            ops.append(bytes(literal))
            literal.clear()
        ops.append(match)
        k += len(blocks[match])
    if literal:
        ops.append(bytes(literal))
    return NaiveDelta(ops, literal_bytes)


def naive_patch(basis: bytes, ops: list[int | bytes], block_size: int) -> bytes:
    out = bytearray()
    for op in ops:
        if isinstance(op, int):
            out += basis[op * block_size : (op + 1) * block_size]
        else:
            out += op
    return bytes(out)
