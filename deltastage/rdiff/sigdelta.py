"""``signature`` and ``delta`` on files (the delta core's signature builder and matcher)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Sequence
from typing import BinaryIO

from deltastage.delta.codec import DeltaEncoder
from deltastage.delta.signature import MultiSignatureBuilder, SignatureDecoder
from deltastage.errors import UsageError
from deltastage.rdiff.files import (
    STDIO,
    bases_of,
    chunks,
    open_input,
    open_output,
    views,
)

__all__ = ["delta_file", "signature_file"]


def signature_file(
    basis: str | Sequence[str],
    sig: str,
    *,
    block_size: int | None = None,
    strong_len: int | None = None,
) -> None:
    """The signature of one basis, or of several in one (``delta`` then copies from all)."""
    with contextlib.ExitStack() as stack:
        streams: list[BinaryIO] = []
        sizes: list[int] = []
        for path in bases_of(basis):
            stream, size, owned = _spooled_size(stack.enter_context(open_input(path)))
            if owned:
                stack.callback(stream.close)
            streams.append(stream)
            sizes.append(size)
        builder = MultiSignatureBuilder(sizes, block_size=block_size, strong_len=strong_len)
        with open_output(sig) as out:
            for stream in streams:
                for chunk in views(stream):
                    out.write(builder.update(chunk))
                out.write(builder.end_basis())
            out.write(builder.finish())


def _spooled_size(stream: BinaryIO) -> tuple[BinaryIO, int, bool]:
    """(stream to read, its size, whether we own it): pipes are spooled to a temp file."""
    try:
        st = os.fstat(stream.fileno())
        if stat.S_ISREG(st.st_mode):
            return stream, st.st_size - stream.tell(), False
    except (OSError, ValueError):
        pass
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned to the caller, who closes it
    size = 0
    for chunk in chunks(stream):
        spool.write(chunk)
        size += len(chunk)
    spool.seek(0)
    return spool, size, True


def delta_file(sig: str, new: str, delta_out: str, *, level: int = 3) -> None:
    if sig == STDIO and new == STDIO:
        raise UsageError("signature and new file cannot both be stdin")
    decoder = SignatureDecoder(multi=True)
    with open_input(sig) as stream:
        for chunk in chunks(stream):
            decoder.feed(chunk)
    encoder = DeltaEncoder(decoder.results(), level=level)
    with open_input(new) as stream, open_output(delta_out) as out:
        for view in views(stream):
            data = encoder.update(view)
            if data:
                out.write(data)
        out.write(encoder.finish())
