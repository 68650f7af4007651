"""The master's answers to an agent's refinement requests: finer block hashes of a fetch's
basis around the parts its delta could not copy (the agent's side is ``delta.refine``).

A fetch lets the agent refine it or not (``Fetch.refine``; never a signature of several
bases). The agent may then ask only of a signature in blocks of at least
``REFINE_MIN_BLOCK`` bytes, and only for blocks no larger than the signature's, inside the
basis, in increasing disjoint ranges, so the master reads each basis byte at most once, a few
MiB at a time. Anything else is the agent's violation (``RemoteProtocolError``: the session
gives the conversation up). A basis that cannot be read is declined with an empty reply:
the patch reads it too and reports the failure there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from deltastage.errors import RemoteProtocolError
from deltastage.protocol import REFINE_MIN_BLOCK, RefineRequest

__all__ = ["Refinement"]

_REFINE_READ = 4 << 20  # basis bytes read and hashed at a time for a refinement


class Refinement:
    """What one fetch lets the agent refine, and the answers to its requests.

    ``basis(offset, n)`` reads the basis of a signature of ``basis_sizes``; ``block_size``
    is the signature's, set once its header is sent.
    """

    def __init__(
        self,
        basis: Callable[[int, int], bytes] | None,
        basis_sizes: Sequence[int],
        allowed: bool,
    ) -> None:
        # refinement works on one basis (delta.refine)
        self.allowed = allowed and len(basis_sizes) == 1
        self._basis = basis
        self._basis_size = basis_sizes[0] if len(basis_sizes) == 1 else None
        self.block_size = 0

    def answer(self, request: RefineRequest) -> bytes:
        """The requested blocks' hashes, read from the basis; b"" declines."""
        if not self.allowed:
            raise RemoteProtocolError("agent asked to refine a fetch sent refine=0")
        if self.block_size < REFINE_MIN_BLOCK:
            raise RemoteProtocolError(
                f"agent asked to refine a signature of {self.block_size}"
                f"-byte blocks (under {REFINE_MIN_BLOCK})"
            )
        from deltastage.delta.signature import signature_of

        size, coarse, bs = self._basis_size, self.block_size, request.block_size
        basis = self._basis
        if basis is None or size is None:
            return b""
        n_blocks = -(-size // bs)
        previous_end = 0
        for first, count in request.ranges:
            if first < previous_end or first + count > n_blocks or bs > coarse:
                raise RemoteProtocolError(
                    f"agent asked for overlapping, oversized or out-of-basis blocks "
                    f"({first}+{count} of {n_blocks} blocks of {bs} bytes)"
                )
            previous_end = first + count
        weak: list[bytes] = []
        strong: list[bytes] = []
        step = max(1, _REFINE_READ // bs)
        try:
            for first, count in request.ranges:
                for at in range(first, first + count, step):
                    offset, stop = at * bs, min((min(at + step, first + count)) * bs, size)
                    data = bytearray()
                    while len(data) < stop - offset:
                        chunk = basis(offset + len(data), stop - offset - len(data))
                        if not chunk:
                            return b""  # the basis shrank: the patch will say so
                        data += chunk
                    sig = signature_of(bytes(data), block_size=bs, strong_len=request.strong_len)
                    weak.append(sig.weak)
                    strong.append(sig.strong)
        except OSError:
            return b""  # the patch reads the basis too and reports the failure there
        return b"".join(weak) + b"".join(strong)
