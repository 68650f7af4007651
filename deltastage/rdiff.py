"""rdiff-like file commands over the delta core: signature, delta, patch ("-" = stdin/stdout).

Outputs go to a temporary file beside the target and are renamed into place only when the
whole operation succeeded, so a failed run never leaves a partial OUT behind. Unlike rdiff,
``patch_file`` hashes the basis first and refuses a delta made against another basis.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

from deltastage.delta import DeltaEncoder, Patcher, SignatureBuilder, SignatureDecoder
from deltastage.errors import UsageError
from deltastage.hashing import READ_CHUNK, hash_fd

__all__ = ["delta_file", "patch_file", "signature_file"]

STDIO = "-"


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[BinaryIO]:
    if path == STDIO:
        yield sys.stdin.buffer
        return
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise UsageError(f"cannot open {path}: {exc.strerror or exc}") from exc
    with stream:
        if stat.S_ISDIR(os.fstat(stream.fileno()).st_mode):
            raise UsageError(f"cannot read {path}: is a directory")
        yield stream


@contextlib.contextmanager
def _open_output(path: str) -> Iterator[Callable[[bytes], None]]:
    """Yield a write function; on success the output appears at ``path`` atomically."""
    if path == STDIO:
        out = sys.stdout.buffer

        def write_stdout(data: bytes) -> None:
            out.write(data)

        yield write_stdout
        out.flush()
        return
    target = os.path.abspath(path)
    directory, name = os.path.split(target)
    if os.path.isdir(target):
        raise UsageError(f"cannot write {path}: is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        # mkstemp makes 0600 files; give OUT the mode a plain open() would have given it.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as stream:

            def write_file(data: bytes) -> None:
                stream.write(data)

            yield write_file
        # No fsync here (rdiff does not either): callers that stage files fsync and re-verify.
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(READ_CHUNK):
        yield chunk


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
    for chunk in _chunks(stream):
        spool.write(chunk)
        size += len(chunk)
    spool.seek(0)
    return spool, size, True


def signature_file(
    basis: str, sig: str, *, block_size: int | None = None, strong_len: int | None = None
) -> None:
    with _open_input(basis) as raw:
        stream, size, owned = _spooled_size(raw)
        try:
            builder = SignatureBuilder(size, block_size=block_size, strong_len=strong_len)
            with _open_output(sig) as write:
                for chunk in _chunks(stream):
                    write(builder.update(chunk))
                write(builder.finish())
        finally:
            if owned:
                stream.close()


def delta_file(sig: str, new: str, delta_out: str, *, level: int = 3) -> None:
    if sig == STDIO and new == STDIO:
        raise UsageError("signature and new file cannot both be stdin")
    decoder = SignatureDecoder()
    with _open_input(sig) as stream:
        for chunk in _chunks(stream):
            decoder.feed(chunk)
    encoder = DeltaEncoder(decoder.result(), level=level)
    with _open_input(new) as stream, _open_output(delta_out) as write:
        for chunk in _chunks(stream):
            out = encoder.update(chunk)
            if out:
                write(out)
        write(encoder.finish())


def patch_file(basis: str, delta_in: str, out: str) -> None:
    if basis == STDIO:
        raise UsageError("the basis of a patch must be a real file, not stdin")
    with _open_input(basis) as base:
        fd = base.fileno()
        basis_size, basis_hash = hash_fd(fd)

        def read_at(offset: int, n: int) -> bytes:
            return os.pread(fd, n, offset)

        with _open_input(delta_in) as stream, _open_output(out) as write:
            patcher = Patcher(read_at, write, basis_size=basis_size, basis_hash=basis_hash)
            for chunk in _chunks(stream):
                patcher.feed(chunk)
            patcher.finish()
