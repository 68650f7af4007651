"""rdiff-like file commands over the delta core: signature, delta, patch ("-" = stdin/stdout).

Outputs go to a temporary file beside the target and are renamed into place only when the
whole operation succeeded, so a failed run never leaves a partial OUT behind. Unlike rdiff,
``patch_file`` checks the basis' xxh3-128 against the delta's header and refuses a delta made
against another basis: while patching into a file (one pass over the basis), or before the
first byte when the output is a pipe.

``run_argv`` runs these commands straight from ``sys.argv`` when the command line is plainly
well formed, so that ``python -m deltastage patch ...`` does not pay for typer and the
pydantic models it builds per parameter (~0.15 s, more than rdiff's whole patch of 256 MiB).
Anything else (help, odd option spellings, bad values) returns None and goes to the typer
CLI, which stays the one authority for usage and messages; the two are tested to agree.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, cast

from deltastage.errors import DeltastageError, UsageError, describe_os_error
from deltastage.hashing import READ_CHUNK, hash_fd

__all__ = ["Call", "delta_file", "parse_argv", "patch_file", "run_argv", "signature_file"]

STDIO = "-"
# Reads this large halve the syscalls of READ_CHUNK and still sit in L2/L3 while hashed.
_READ = 4 * READ_CHUNK


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


def _views(stream: BinaryIO) -> Iterator[memoryview]:
    """Chunks read into one reused buffer: only for consumers that copy what they keep."""
    _advise_sequential(stream)
    buf = bytearray(_READ)
    view = memoryview(buf)
    # Every stream here (open(), stdin's buffer, a spool) is a buffered one with readinto.
    readinto = cast("io.BufferedIOBase", stream).readinto
    while n := readinto(view):
        yield view[:n]


def _advise_sequential(stream: BinaryIO) -> None:
    # Doubles the kernel's read-ahead on a cold basis; a pipe or another OS just says no.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)


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
    from deltastage.delta.signature import SignatureBuilder

    with _open_input(basis) as raw:
        stream, size, owned = _spooled_size(raw)
        try:
            builder = SignatureBuilder(size, block_size=block_size, strong_len=strong_len)
            with _open_output(sig) as write:
                for chunk in _views(stream):
                    write(builder.update(chunk))
                write(builder.finish())
        finally:
            if owned:
                stream.close()


def delta_file(sig: str, new: str, delta_out: str, *, level: int = 3) -> None:
    if sig == STDIO and new == STDIO:
        raise UsageError("signature and new file cannot both be stdin")
    from deltastage.delta.codec import DeltaEncoder
    from deltastage.delta.signature import SignatureDecoder

    decoder = SignatureDecoder()
    with _open_input(sig) as stream:
        for chunk in _chunks(stream):
            decoder.feed(chunk)
    encoder = DeltaEncoder(decoder.result(), level=level)
    with _open_input(new) as stream, _open_output(delta_out) as write:
        for view in _views(stream):
            out = encoder.update(view)
            if out:
                write(out)
        write(encoder.finish())


def patch_file(basis: str, delta_in: str, out: str) -> None:
    if basis == STDIO:
        raise UsageError("the basis of a patch must be a real file, not stdin")
    from deltastage.delta.codec import Patcher

    with _open_input(basis) as base:
        fd = base.fileno()
        _advise_sequential(base)
        basis_size, basis_hash = os.fstat(fd).st_size, None
        if out == STDIO:
            # A pipe cannot take bytes back: check the basis before writing the first one.
            basis_size, basis_hash = hash_fd(fd)

        def read_at(offset: int, n: int) -> bytes:
            return os.pread(fd, n, offset)

        with _open_input(delta_in) as stream, _open_output(out) as write:
            patcher = Patcher(
                read_at,
                write,
                basis_size=basis_size,
                basis_hash=basis_hash,
                verify_basis=basis_hash is None,
            )
            for chunk in _chunks(stream):
                patcher.feed(chunk)
            patcher.finish()


# --- the command line without typer (see the module docstring) ---------------------------


@dataclass(frozen=True)
class Call:
    """One parsed rdiff-like command: the function's name, its paths and its int options."""

    command: str
    paths: tuple[str, ...]
    options: dict[str, int] = field(default_factory=dict)


# command -> (number of paths, option spelling -> keyword); must match cli.py's commands.
_GRAMMAR: dict[str, tuple[int, dict[str, str]]] = {
    "signature": (
        2,
        {
            "-b": "block_size",
            "--block-size": "block_size",
            "-S": "strong_len",
            "--strong-len": "strong_len",
        },
    ),
    "delta": (3, {"-l": "level", "--level": "level"}),
    "patch": (3, {}),
}
_LEVELS = range(23)


def parse_argv(argv: Sequence[str]) -> Call | None:
    """The call ``argv`` asks for, or None when only the typer CLI should judge it."""
    if not argv or argv[0] not in _GRAMMAR:
        return None
    n_paths, spellings = _GRAMMAR[argv[0]]
    paths: list[str] = []
    options: dict[str, int] = {}
    i = 1
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == STDIO or not arg.startswith("-"):
            paths.append(arg)
            continue
        # click reads "--opt=V" but not "-o=V" (that is the value "=V").
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name not in spellings:
            return None
        if not eq:
            if i == len(argv):
                return None
            value = argv[i]
            i += 1
        if not (value.isascii() and value.isdigit()):
            return None
        options[spellings[name]] = int(value)
    if len(paths) != n_paths or options.get("level", 0) not in _LEVELS:
        return None
    return Call(argv[0], tuple(paths), options)


def run_argv(argv: Sequence[str]) -> int | None:
    """Run a plainly well-formed rdiff-like command line; its exit code, or None."""
    call = parse_argv(argv)
    if call is None:
        return None
    try:
        _ACTIONS[call.command](*call.paths, **call.options)
    except DeltastageError as exc:
        return _fail(str(exc), exc.exit_code)
    except OSError as exc:
        return _fail(describe_os_error(exc), 1)
    except KeyboardInterrupt:
        sys.stderr.write("deltastage: interrupted\n")
        return 130
    return 0


_ACTIONS: dict[str, Callable[..., None]] = {
    "signature": signature_file,
    "delta": delta_file,
    "patch": patch_file,
}


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"deltastage: error: {message}\n")
    return code
