"""The weak hash: a polynomial over the bytes of a window, mod 2^64, computed for every
offset of a chunk at once with prefix sums instead of a per-byte rolling loop.

For a window ``y[0..L)`` the hash is ``M * sum(y[j] * B^(L-1-j))`` mod 2^64, and its top
32 bits are the weak hash that travels in signatures. Over a chunk ``x`` with
``Q[k] = sum(x[t] * B^-t for t < k)`` (B odd, hence invertible mod 2^64), the window at ``k``
hashes to ``M * B^(k+L-1) * (Q[k+L] - Q[k])``: one multiply, one cumsum, one subtract and
one multiply per byte, all vectorised. M (odd) mixes the value so that even 1- or 2-byte
windows spread over the top bits the weak hash keeps.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["WEAK_SHIFT", "Tables", "block_weaks", "tables", "window_hashes"]

U8 = npt.NDArray[np.uint8]
U64 = npt.NDArray[np.uint64]

_BASE = 0x9E3779B97F4A7C15
_MIX = 0xD6E8FEB86659FD93
_MOD = 1 << 64
WEAK_SHIFT = 32


def _powers(base: int, count: int, scale: int) -> U64:
    steps = np.full(count, base, dtype=np.uint64)
    steps[0] = scale
    return np.cumprod(steps, dtype=np.uint64)


class Tables:
    """``pow_mix[i] = M * B^i`` and ``inv[i] = B^-i`` mod 2^64, grown on demand."""

    def __init__(self) -> None:
        self.pow_mix: U64 = np.empty(0, dtype=np.uint64)
        self.inv: U64 = np.empty(0, dtype=np.uint64)

    def ensure(self, count: int) -> None:
        if len(self.inv) >= count:
            return
        size = max(count, 2 * len(self.inv), 1 << 16)
        self.pow_mix = _powers(_BASE, size, _MIX)
        self.inv = _powers(pow(_BASE, -1, _MOD), size, 1)


_TABLES = Tables()


def tables(count: int) -> Tables:
    _TABLES.ensure(count)
    return _TABLES


def block_weaks(data: U8, block_size: int) -> npt.NDArray[np.uint32]:
    """Weak hashes of consecutive blocks of ``data``; the last one may be short."""
    n_full, tail = divmod(len(data), block_size)
    t = tables(block_size + 1)
    # Row i of the matrix dotted with M*B^(L-1-j) is exactly the window hash of block i.
    # einsum casts the bytes in cache-sized pieces; matmul widens the whole matrix to u64
    # first, which is slower.
    coeffs = t.pow_mix[:block_size][::-1]
    full: U64 = np.einsum(
        "ij,j->i", data[: n_full * block_size].reshape(n_full, block_size), coeffs
    )
    out = np.empty(n_full + (1 if tail else 0), dtype=np.uint32)
    out[:n_full] = full >> np.uint64(WEAK_SHIFT)
    if tail:
        last = data[n_full * block_size :]
        value = last @ t.pow_mix[:tail][::-1]
        out[n_full] = np.uint32(int(value) >> WEAK_SHIFT)
    return out


class WindowHasher:
    """Reusable scratch buffers for :func:`window_hashes` (no allocation per call)."""

    def __init__(self) -> None:
        self._tmp: U64 = np.empty(0, dtype=np.uint64)
        self._q: U64 = np.empty(0, dtype=np.uint64)

    def prefix(self, data: U8) -> U64:
        """``Q`` for ``data``: ``Q[0] = 0``, ``Q[k+1] = Q[k] + data[k] * B^-k``."""
        m = len(data)
        if len(self._q) < m + 1:
            self._tmp = np.empty(m, dtype=np.uint64)
            self._q = np.empty(m + 1, dtype=np.uint64)
        t = tables(m + 1)
        tmp = self._tmp[:m]
        np.multiply(data, t.inv[:m], out=tmp)
        q = self._q[: m + 1]
        q[0] = 0
        np.cumsum(tmp, out=q[1:])
        return q


def window_hashes(q: U64, length: int, count: int, out: U64 | None = None) -> U64:
    """Full 64-bit hashes of the ``count`` windows of ``length`` bytes starting at 0..count-1."""
    t = tables(length + count)
    out = np.subtract(q[length : length + count], q[:count], out=out)
    np.multiply(out, t.pow_mix[length - 1 : length - 1 + count], out=out)
    return out
