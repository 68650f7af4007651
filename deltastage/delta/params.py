"""Block-size choice and the bounds every decoder enforces."""

from __future__ import annotations

import math
from collections.abc import Sequence

from deltastage.errors import DeltaFormatError

__all__ = [
    "DEFAULT_MAX_BASIS_SIZE",
    "DEFAULT_MAX_BLOCKS",
    "DEFAULT_STRONG_LEN",
    "FIT_SHARE",
    "MAX_BASES",
    "MAX_BLOCK_SIZE",
    "MAX_CHAIN",
    "MAX_DEFAULT_BLOCK_SIZE",
    "MAX_LITERAL",
    "MAX_SKETCH_BYTES",
    "MAX_STRONG_LEN",
    "MIN_DEFAULT_BLOCK_SIZE",
    "check_basis_count",
    "check_block_size",
    "check_strong_len",
    "choose_bases_block_size",
    "choose_block_size",
    "choose_strong_len",
    "count_blocks",
    "fit_to_new_file",
]

# 8 bytes of xxh3 per block: a false block match needs a 2^-64 event on top of a 32-bit weak
# match, and the whole-file xxh3-128 check catches even that (the caller then retries at 16).
DEFAULT_STRONG_LEN = 8
MAX_STRONG_LEN = 16
# Floor of the adaptive length: the matcher tries the block after a match by its strong
# hash alone (no weak hash), so these bits are all that guard that path.
MIN_ADAPTIVE_STRONG_LEN = 3

MIN_DEFAULT_BLOCK_SIZE = 512
MAX_DEFAULT_BLOCK_SIZE = 128 * 1024
# An explicit block size may go beyond the default range (tests use tiny blocks), but never
# past this: one block must fit comfortably in memory on both ends.
MAX_BLOCK_SIZE = 1 << 20

# A signature pays only through the bytes its delta copies, at most the new file's (fewer
# once compressed): against bases much larger than the new file, blocks grow until the
# signature is at most 1/FIT_SHARE of the new file's size (``fit_to_new_file``).
FIT_SHARE = 8

# Largest literal op, raw: bounds what a patcher has to buffer before it can write.
MAX_LITERAL = 1 << 20

# Distinct blocks sharing one weak hash that are compared before giving up at an offset.
# Identical blocks are folded together first, so only crafted collisions reach this bound
# (rsync's unbounded chain walk was CVE-2022-29154-style quadratic work).
MAX_CHAIN = 64

# Basis files one delta may copy from: each costs the master an open file and a slot in
# every multi-basis header, and the wire carries the basis index in one byte.
MAX_BASES = 8

# A file's content sketch (delta.sketch), as the listing and the manifest carry it.
MAX_SKETCH_BYTES = 254

DEFAULT_MAX_BLOCKS = 1 << 25
DEFAULT_MAX_BASIS_SIZE = 1 << 42


def choose_block_size(size: int) -> int:
    """About sqrt(size), a multiple of 64, within [512, 128 KiB] (rsync uses 700..128K)."""
    if size < 0:
        raise ValueError("size must be >= 0")
    root = math.isqrt(size)
    rounded = (root + 32) // 64 * 64
    return max(MIN_DEFAULT_BLOCK_SIZE, min(MAX_DEFAULT_BLOCK_SIZE, rounded))


def choose_bases_block_size(basis_sizes: Sequence[int], new_size: int | None = None) -> int:
    """The block size of a signature of several bases, for a new file of ``new_size`` bytes
    (unknown: as big as the largest basis).

    Wire bytes are about ``(total / B) * (4 + strong)`` of signature plus ``k * B`` of
    literals, ``k`` being the places where the new file leaves a basis (an edit, or a switch
    to another basis): least at ``B = sqrt(total * (4 + strong) / k)``. One basis with a few
    edits (``k`` about ``4 + strong``) gives rsync's ``sqrt(size)``, kept as it is. Each
    further basis was offered because it holds part of the new file, which the delta enters
    and leaves, so ``k`` grows with the number of bases ``n``; and a new file much smaller
    than the bases can leave them only so often, so ``k`` shrinks with ``new / total``:
    ``k = (4 + strong) * n * min(1, new / total)``, ``B = sqrt(max(total, total^2 / new)
    / n)``, bounded as ``choose_block_size`` bounds it."""
    if not basis_sizes:
        raise ValueError("at least one basis size")
    if len(basis_sizes) == 1:
        return choose_block_size(basis_sizes[0])
    total = sum(basis_sizes)
    new = max(1, max(basis_sizes) if new_size is None else new_size)
    return choose_block_size(max(total, total * total // new) // len(basis_sizes))


def choose_strong_len(basis_size: int, block_size: int, new_size: int | None = None) -> int:
    """rsync's s2length: strong bytes per block so that, with the 32-bit weak hash, a false
    block match anywhere in this file is about 2^-10 likely; the whole-file xxh3-128 catches
    the rest (the stage then retries at ``MAX_STRONG_LEN``). Big files in big blocks need few
    bytes, where a fixed length would make every signature much larger.

    rsync counts the basis's size twice: once for its blocks, once for the new file's
    windows compared with them. Given a smaller ``new_size``, that counts its windows.
    """
    windows = basis_size if new_size is None else min(new_size, basis_size)
    bits = (
        9
        + max(basis_size, 1).bit_length()
        + max(windows, 1).bit_length()
        - max(block_size, 1).bit_length()
    )
    return max(MIN_ADAPTIVE_STRONG_LEN, min(MAX_STRONG_LEN, (bits + 1 - 32 + 7) // 8))


def fit_to_new_file(block_size: int, basis_size: int, new_size: int) -> int:
    """``block_size``, or larger (a multiple of 64, at most ``MAX_BLOCK_SIZE``) when the
    signature of ``basis_size`` bytes would be more than 1/``FIT_SHARE`` of the new
    file's ``new_size``: a small file against a big basis can use few of its blocks."""
    record = 4 + choose_strong_len(basis_size, block_size, new_size)
    budget = max(1, new_size // FIT_SHARE)
    if count_blocks(basis_size, block_size) * record <= budget:
        return block_size
    most = max(1, budget // record)  # the blocks the budget pays for (one at least)
    wanted = -(-basis_size // most)
    return max(block_size, min(MAX_BLOCK_SIZE, -(-wanted // 64) * 64))


def count_blocks(basis_size: int, block_size: int) -> int:
    return -(-basis_size // block_size)


def check_block_size(block_size: int) -> int:
    if not 1 <= block_size <= MAX_BLOCK_SIZE:
        raise DeltaFormatError(f"block size {block_size} outside 1..{MAX_BLOCK_SIZE}")
    return block_size


def check_basis_count(count: int) -> int:
    if not 1 <= count <= MAX_BASES:
        raise DeltaFormatError(f"{count} bases outside 1..{MAX_BASES}")
    return count


def check_strong_len(strong_len: int) -> int:
    if not 1 <= strong_len <= MAX_STRONG_LEN:
        raise DeltaFormatError(f"strong hash length {strong_len} outside 1..{MAX_STRONG_LEN}")
    return strong_len
