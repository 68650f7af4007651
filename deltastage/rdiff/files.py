"""The files the rdiff-like commands read and write: inputs, outputs renamed into place
only when whole, the writer thread, the ring of basis buffers."""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import stat
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import BinaryIO

from deltastage.delta.params import MAX_BASES
from deltastage.errors import UsageError
from deltastage.hashing import READ_CHUNK

__all__ = [
    "STDIO",
    "BasisRing",
    "advise_sequential",
    "bases_of",
    "chunks",
    "open_input",
    "open_output",
    "views",
]


STDIO = "-"
# Reads this large halve the syscalls of READ_CHUNK and still sit in L2/L3 while hashed.
_READ = 4 * READ_CHUNK
# Bytes handed to the writer thread and not yet written: a few reads ahead keep both cores
# busy; more only costs memory.
_QUEUE_LIMIT = 8 << 20
# Basis buffers patch reads copies into (each as big as the patcher's largest read).
_RING_SLOTS = 6


@contextlib.contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
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


def open_output(path: str) -> _FileOutput | _StdoutOutput:
    """Use with ``with``: on success the output appears at ``path`` atomically."""
    return _StdoutOutput() if path == STDIO else _FileOutput(path)


class BasisRing:
    """Basis reads into a ring of reused buffers, written out through ``output``.

    A buffer handed to the output is refilled only once the output has written it, so the
    reads run ahead of the writer by at most the ring, and no read allocates (fresh buffers
    would cost a page fault per page). Every basis reads through the one ring
    (``reader(fd)``), so several bases cost no more memory than one.
    """

    def __init__(self, output: _FileOutput | _StdoutOutput, size: int) -> None:
        self._output = output
        self._size = size
        self._slots = [_page_buffer(size) for _ in range(_RING_SLOTS)]
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


def _page_buffer(size: int) -> memoryview:
    # Anonymous memory: page-aligned (the kernel copies into an unaligned buffer markedly
    # slower), and its pages are only mapped when first read into, so a small patch does not
    # pay for the whole ring.
    return memoryview(mmap.mmap(-1, size))


def chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(READ_CHUNK):
        yield chunk


def views(stream: BinaryIO) -> Iterator[memoryview]:
    """Chunks read into one reused buffer: only for consumers that copy what they keep."""
    advise_sequential(stream)
    if not isinstance(stream, io.BufferedIOBase):
        for chunk in chunks(stream):
            yield memoryview(chunk)
        return
    buf = bytearray(_READ)
    view = memoryview(buf)
    while n := stream.readinto(view):
        yield view[:n]


def advise_sequential(stream: BinaryIO) -> None:
    # Doubles the kernel's read-ahead on a cold basis; a pipe or another OS just says no.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)


def bases_of(basis: str | Sequence[str]) -> list[str]:
    bases = [basis] if isinstance(basis, str) else list(basis)
    if not 1 <= len(bases) <= MAX_BASES:
        raise UsageError(f"{len(bases)} bases given, at most {MAX_BASES} are allowed")
    if bases.count(STDIO) > 1:
        raise UsageError("only one basis can be stdin")
    return bases
