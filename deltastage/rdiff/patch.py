"""``patch`` on files: the bases and the delta in, OUT written beside its target."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

from deltastage.delta.patch import MAX_READ, Patcher
from deltastage.errors import UsageError
from deltastage.hashing import hash_fd
from deltastage.rdiff.files import (
    STDIO,
    BasisRing,
    advise_sequential,
    bases_of,
    chunks,
    open_input,
    open_output,
)

__all__ = ["patch_file"]


def patch_file(basis: str | Sequence[str], delta_in: str, out: str) -> None:
    """Rebuild OUT from the bases (in the order their signature had) and the delta."""
    bases = bases_of(basis)
    if STDIO in bases:
        raise UsageError("the basis of a patch must be a real file, not stdin")
    with contextlib.ExitStack() as stack:
        fds: list[int] = []
        sizes: list[int] = []
        hashes: list[bytes | None] = []
        for path in bases:
            base = stack.enter_context(open_input(path))
            fd = base.fileno()
            advise_sequential(base)
            basis_size, basis_hash = os.fstat(fd).st_size, None
            if out == STDIO:
                # A pipe cannot take bytes back: check the basis before writing the first one.
                basis_size, basis_hash = hash_fd(fd)
            fds.append(fd)
            sizes.append(basis_size)
            hashes.append(basis_hash)
        with open_input(delta_in) as stream, open_output(out) as output:
            ring = BasisRing(output, MAX_READ)
            patcher = Patcher(
                [ring.reader(fd) for fd in fds],
                ring.write,
                basis_size=sizes,
                basis_hash=hashes,
                verify_basis=out != STDIO,
            )
            for chunk in chunks(stream):
                patcher.feed(chunk)
            patcher.finish()
