"""rdiff-like file commands over the delta core: signature, delta, patch ("-" = stdin/stdout).

Outputs go to a temporary file beside the target and are renamed into place only when the
whole operation succeeded, so a failed run never leaves a partial OUT behind. Unlike rdiff,
``patch_file`` checks the basis' xxh3-128 against the delta's header and refuses a delta made
against another basis: while patching into a file (one pass over the basis), or before the
first byte when the output is a pipe.

A file output is written by a second thread: ``os.write`` releases the GIL, so the kernel's
copy into the page cache (the largest cost of a patch) runs on another core while this
thread reads the basis and hashes. Patch reads the basis into a small ring of reused
buffers that go back into use only once the writer is done with them; memory stays bounded
by the ring and the writer's queue, whatever the file size.

``signature_file`` and ``patch_file`` take 1 to ``MAX_BASES`` bases: a delta made from a
signature of several bases copies from all of them, and patch reads them in the same order.

The typer commands and the typer-free start (``fastargv``) both call these functions.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
import tempfile
import threading
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import BinaryIO

from deltastage.delta.codec import DeltaEncoder
from deltastage.delta.params import MAX_BASES
from deltastage.delta.patch import MAX_READ, Patcher
from deltastage.delta.signature import MultiSignatureBuilder, SignatureDecoder
from deltastage.errors import UsageError
from deltastage.hashing import READ_CHUNK, hash_fd

__all__ = ["delta_file", "patch_file", "signature_file"]

STDIO = "-"
# Reads this large halve the syscalls of READ_CHUNK and still sit in L2/L3 while hashed.
_READ = 4 * READ_CHUNK
# Bytes handed to the writer thread and not yet written: a few reads ahead keep both cores
# busy; more only costs memory.
_QUEUE_LIMIT = 8 << 20
# Basis buffers patch reads copies into (each as big as the patcher's largest read).
_RING_SLOTS = 6
# The kernel copies into a buffer 16 bytes past a 32-byte boundary (where malloc leaves a
# bytearray's) markedly slower than into a 64-byte aligned one.
_ALIGN = 64


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


class _Writer:
    """Writes handed-over buffers to ``fd``, in order, on a thread of its own.

    ``write`` returns a job number and ``wait_for(job)`` returns once that job's bytes are
    written, so the buffer's owner may refill it. At most ``limit`` bytes wait at any time
    (one bigger buffer still goes through alone). The writer's first error is kept and
    raised, with the output's name, by the producer's next call: neither side ever waits
    for the other once it has failed.
    """

    def __init__(self, fd: int, name: str, *, limit: int = _QUEUE_LIMIT) -> None:
        self._fd = fd
        self._name = name
        self._limit = limit
        self._jobs: deque[bytes | memoryview] = deque()
        self._queued = 0
        self._submitted = 0
        self._written = 0
        self._stopping = False
        self._error: BaseException | None = None
        self._cond = threading.Condition(threading.Lock())
        # A daemon, so that even a bug here cannot keep the process alive after main ends.
        self._thread = threading.Thread(target=self._run, name="deltastage-writer", daemon=True)
        self._thread.start()

    def write(self, data: bytes | memoryview) -> int:
        size = len(data)
        with self._cond:
            while self._queued and self._queued + size > self._limit and self._error is None:
                self._cond.wait()
            self._raise_error()
            self._jobs.append(data)
            self._queued += size
            self._submitted += 1
            self._cond.notify_all()
            return self._submitted

    def wait_for(self, job: int) -> None:
        if job <= self._written and self._error is None:
            return
        with self._cond:
            while self._written < job and self._error is None:
                self._cond.wait()
            self._raise_error()

    def close(self) -> None:
        """Return once everything handed over is written; raise the writer's error if any."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
        self._raise_error()

    def abort(self) -> None:
        """Drop whatever still waits and stop the thread: the output is being discarded."""
        with self._cond:
            self._jobs.clear()
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()

    def _raise_error(self) -> None:
        error = self._error
        if error is None:
            return
        if isinstance(error, OSError):
            raise OSError(error.errno, error.strerror, self._name) from error
        raise error

    def _run(self) -> None:
        cond, jobs, fd = self._cond, self._jobs, self._fd
        try:
            while True:
                with cond:
                    while not jobs and not self._stopping:
                        cond.wait()
                    if not jobs:
                        return
                    data = jobs.popleft()
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                with cond:
                    self._queued -= len(data)
                    self._written += 1
                    cond.notify_all()
        except BaseException as exc:  # handed to the producer, who raises it
            with cond:
                self._error = exc
                jobs.clear()
                cond.notify_all()


class _FileOutput:
    """OUT through a temporary file beside it, renamed into place when all went well."""

    def __init__(self, path: str) -> None:
        target = os.path.abspath(path)
        if os.path.isdir(target):
            raise UsageError(f"cannot write {path}: is a directory")
        self._target = target
        self._fd, self._tmp = _create_beside(target, path)
        try:
            self._writer = _Writer(self._fd, path)
        except BaseException:
            self._close_and_unlink()
            raise
        self.write = self._writer.write
        self.wait_for = self._writer.wait_for

    def __enter__(self) -> _FileOutput:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            try:
                self._writer.close()
                fd, self._fd = self._fd, -1
                os.close(fd)
                # No fsync (rdiff does not either): callers that stage files fsync and re-verify.
                os.replace(self._tmp, self._target)
                return
            except BaseException:
                self._discard()
                raise
        self._discard()

    def _discard(self) -> None:
        self._writer.abort()
        self._close_and_unlink()

    def _close_and_unlink(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


def _create_beside(target: str, path: str) -> tuple[int, str]:
    """A new file ``.NAME.RANDOM.part`` in OUT's directory, with the mode open() gives."""
    directory, name = os.path.split(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{os.urandom(6).hex()}.part")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    raise UsageError(f"cannot write {path}: no unused temporary name beside it")


class _StdoutOutput:
    """stdout, written in place: a pipe cannot take bytes back, so callers check first."""

    def __init__(self) -> None:
        self._out = sys.stdout.buffer

    def write(self, data: bytes | memoryview) -> int:
        self._out.write(data)
        return 0

    def wait_for(self, job: int) -> None:
        """Nothing to wait for: ``write`` returns once the buffer is no longer needed."""

    def __enter__(self) -> _StdoutOutput:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._out.flush()


def _open_output(path: str) -> _FileOutput | _StdoutOutput:
    """Use with ``with``: on success the output appears at ``path`` atomically."""
    return _StdoutOutput() if path == STDIO else _FileOutput(path)


class _BasisRing:
    """Basis reads into a ring of reused buffers, written out through ``output``.

    A buffer handed to the output is refilled only once the output has written it, so the
    reads run ahead of the writer by at most the ring, and no read allocates (fresh buffers
    would cost a page fault per page). Every basis reads through the one ring
    (``reader(fd)``), so several bases cost no more memory than one.
    """

    def __init__(self, output: _FileOutput | _StdoutOutput, size: int) -> None:
        self._output = output
        self._size = size
        self._slots = [_aligned_buffer(size) for _ in range(_RING_SLOTS)]
        self._slot_of = {id(view.obj): i for i, view in enumerate(self._slots)}
        self._busy = [0] * _RING_SLOTS
        self._next = 0

    def reader(self, fd: int) -> Callable[[int, int], memoryview]:
        def read_at(offset: int, n: int) -> memoryview:
            if n > self._size:
                return memoryview(os.pread(fd, n, offset))
            i = self._next
            self._next = (i + 1) % _RING_SLOTS
            self._output.wait_for(self._busy[i])
            view = self._slots[i]
            return view[: os.preadv(fd, [view[:n]], offset)]

        return read_at

    def write(self, data: bytes | memoryview) -> None:
        job = self._output.write(data)
        # Any view of a slot (a slice, too) keeps that slot busy until its job is written.
        if isinstance(data, memoryview):
            slot = self._slot_of.get(id(data.obj))
            if slot is not None:
                self._busy[slot] = job


def _aligned_buffer(size: int) -> memoryview:
    # array, unlike bytearray, tells where its bytes are.
    arena = array("B", bytes(size + _ALIGN))
    skew = -arena.buffer_info()[0] % _ALIGN
    return memoryview(arena)[skew : skew + size]


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(READ_CHUNK):
        yield chunk


def _views(stream: BinaryIO) -> Iterator[memoryview]:
    """Chunks read into one reused buffer: only for consumers that copy what they keep."""
    _advise_sequential(stream)
    if not isinstance(stream, io.BufferedIOBase):
        for chunk in _chunks(stream):
            yield memoryview(chunk)
        return
    buf = bytearray(_READ)
    view = memoryview(buf)
    while n := stream.readinto(view):
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


def _bases(basis: str | Sequence[str]) -> list[str]:
    bases = [basis] if isinstance(basis, str) else list(basis)
    if not 1 <= len(bases) <= MAX_BASES:
        raise UsageError(f"{len(bases)} bases given, at most {MAX_BASES} are allowed")
    if bases.count(STDIO) > 1:
        raise UsageError("only one basis can be stdin")
    return bases


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
        for path in _bases(basis):
            stream, size, owned = _spooled_size(stack.enter_context(_open_input(path)))
            if owned:
                stack.callback(stream.close)
            streams.append(stream)
            sizes.append(size)
        builder = MultiSignatureBuilder(sizes, block_size=block_size, strong_len=strong_len)
        with _open_output(sig) as out:
            for stream in streams:
                for chunk in _views(stream):
                    out.write(builder.update(chunk))
                out.write(builder.end_basis())
            out.write(builder.finish())


def delta_file(sig: str, new: str, delta_out: str, *, level: int = 3) -> None:
    if sig == STDIO and new == STDIO:
        raise UsageError("signature and new file cannot both be stdin")
    decoder = SignatureDecoder(multi=True)
    with _open_input(sig) as stream:
        for chunk in _chunks(stream):
            decoder.feed(chunk)
    encoder = DeltaEncoder(decoder.results(), level=level)
    with _open_input(new) as stream, _open_output(delta_out) as out:
        for view in _views(stream):
            data = encoder.update(view)
            if data:
                out.write(data)
        out.write(encoder.finish())


def patch_file(basis: str | Sequence[str], delta_in: str, out: str) -> None:
    """Rebuild OUT from the bases (in the order their signature had) and the delta."""
    bases = _bases(basis)
    if STDIO in bases:
        raise UsageError("the basis of a patch must be a real file, not stdin")
    with contextlib.ExitStack() as stack:
        fds: list[int] = []
        sizes: list[int] = []
        hashes: list[bytes | None] = []
        for path in bases:
            base = stack.enter_context(_open_input(path))
            fd = base.fileno()
            _advise_sequential(base)
            basis_size, basis_hash = os.fstat(fd).st_size, None
            if out == STDIO:
                # A pipe cannot take bytes back: check the basis before writing the first one.
                basis_size, basis_hash = hash_fd(fd)
            fds.append(fd)
            sizes.append(basis_size)
            hashes.append(basis_hash)
        with _open_input(delta_in) as stream, _open_output(out) as output:
            ring = _BasisRing(output, MAX_READ)
            patcher = Patcher(
                [ring.reader(fd) for fd in fds],
                ring.write,
                basis_size=sizes,
                basis_hash=hashes,
                verify_basis=out != STDIO,
            )
            for chunk in _chunks(stream):
                patcher.feed(chunk)
            patcher.finish()
