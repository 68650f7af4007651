"""The agent: the peer's end of the conversation, serving only the roots it was started with.

It answers the master's requests one at a time: list a root, query or write an indicator
file, or send a file as a delta against the master's signature. Every name it opens is
resolved with an openat-style walk (``O_NOFOLLOW`` at every step), so neither a '..' nor a
symlink planted inside a root can lead it outside. Bad requests get an ``Error`` message;
a protocol violation gets a last ``Error`` and the end of the conversation. The agent never
lets an exception escape ``serve``: it is run as an SSH forced command and must not die
with a traceback on input it did not expect.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import secrets
import stat
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltastage import __version__
from deltastage.errors import (
    DeltaFormatError,
    DeltastageError,
    LocalProtocolError,
    RemoteProtocolError,
    ResourceLimitError,
    UnsafePathError,
)
from deltastage.hashing import READ_CHUNK, Hasher
from deltastage.protocol import (
    CAPABILITIES,
    PROTOCOL_VERSION,
    Bye,
    Cancel,
    Connection,
    DeltaData,
    DeltaEnd,
    Error,
    ErrorCode,
    Event,
    Fetch,
    Hello,
    HelloReply,
    IndicatorQuery,
    IndicatorState,
    IndicatorWrite,
    ListBatch,
    ListEnd,
    ListRequest,
    Ok,
    RefineReply,
    RefineRequest,
    Role,
    SigData,
    SigEnd,
    WireEntry,
)
from deltastage.protocol import REFINE_MIN_BLOCK as REFINE_MIN_SIGNATURE_BLOCK
from deltastage.protocol.channel import Channel
from deltastage.protocol.events import MAX_BATCH_ENTRIES, MAX_REASON, MAX_REFINE_BLOCKS
from deltastage.protocol.paths import check_name, split_relative

if TYPE_CHECKING:
    from deltastage.delta import Signature

_LAZY = ("DeltaEncoder", "SignatureDecoder")


def __getattr__(name: str) -> Any:
    """The delta classes, imported on first use (see ``_preload_delta``)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import deltastage.delta

    value = getattr(deltastage.delta, name)
    globals()[name] = value
    return value


def _lazy(name: str) -> Any:
    # through the module, so a name set on it (a test's stand-in) is the one used
    return getattr(sys.modules[__name__], name)


__all__ = ["run_argv", "run_stdio", "serve"]

FILE_CHUNK = READ_CHUNK  # bytes of the source file per DeltaEncoder.update
DATA_FRAME = 256 << 10  # bytes of delta per DeltaData frame, well under the frame limit
# A coarse block is refined into blocks of 1/REFINE_SPLIT its size (at least
# REFINE_MIN_BLOCK): 1/16 of a 120 MB tar's 11 KiB blocks cut its day-2 literal by half.
REFINE_SPLIT = 16
REFINE_MIN_BLOCK = 512
REFINE_MAX_LITERAL = 32 << 20  # literal bytes held for a refinement before giving up on it
MAX_SET_ASIDE_BYTES = 16 << 20  # signature bytes of requests read ahead (a master sends 1 MiB)
BATCH_RAW = 256 << 10  # rough raw bytes of entries per ListBatch
MAX_DEPTH = 256  # directory nesting the listing will follow
HASH_ATTEMPTS = 3  # re-hash a file that changed while listed, then give up on it
# Bounds on the master's signature: 2^40 bytes of basis in at most 2^22 blocks.
MAX_BASIS_SIZE = 1 << 40
MAX_SIGNATURE_BLOCKS = 1 << 22

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK so that opening a FIFO put where a file was never blocks the agent
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class _Refusal(Exception):
    """A request that is answered with an Error message; the conversation goes on."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _MasterGone(Exception):
    """The byte pipe to the master failed; nothing more can be said."""


def _reason(text: str) -> str:
    """Clip a reason to what an Error message may carry, on a character boundary."""
    data = text.encode("utf-8", "surrogateescape")
    if len(data) <= MAX_REASON:
        return text
    return data[: MAX_REASON - 3].decode("utf-8", "ignore") + "..."


def _refuse_os_error(exc: OSError, what: str) -> _Refusal:
    if exc.errno == errno.ENOENT:
        return _Refusal(ErrorCode.NOT_FOUND, f"{what}: no such file or directory")
    if exc.errno == errno.ELOOP:
        return _Refusal(ErrorCode.UNSAFE_PATH, f"{what}: is a symlink, not followed")
    return _Refusal(ErrorCode.IO, f"{what}: {exc.strerror or exc}")


def _open_at(name: str, flags: int, dir_fd: int, what: str) -> int:
    """openat(2), with the failure classified (a symlink is refused, never followed)."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                raise _refuse_os_error(exc, what) from None
            if stat.S_ISLNK(st.st_mode):
                raise _Refusal(
                    ErrorCode.UNSAFE_PATH, f"{what}: {name!r} is a symlink, not followed"
                ) from None
            raise _Refusal(ErrorCode.NOT_FOUND, f"{what}: {name!r} is not a directory") from None
        raise _refuse_os_error(exc, what) from None


def _same_content_stat(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)


class _Agent:
    def __init__(
        self,
        roots: Sequence[str | Path],
        read: Callable[[int], bytes],
        write: Callable[[bytes], None],
    ) -> None:
        self.roots = tuple(os.fspath(root) for root in roots)

        def read_master(n: int) -> bytes:
            try:
                return read(n)
            except OSError as exc:
                raise _MasterGone(str(exc)) from None

        def write_master(data: bytes) -> None:
            try:
                write(data)
            except OSError as exc:
                raise _MasterGone(str(exc)) from None

        self.conn = Connection(Role.AGENT)
        self.channel = Channel(self.conn, read_master, write_master)
        # requests the master sent ahead, read while waiting for a RefineReply
        self._set_aside: deque[Event] = deque()
        self._set_aside_bytes = 0

    # --- the byte pipe --------------------------------------------------------------------

    def send(self, event: Event) -> None:
        self.channel.send(event)

    def flush(self) -> None:
        self.channel.flush()

    def next_event(self) -> Event | None:
        """The master's next message, or None when it closed the stream."""
        if self._set_aside:
            event = self._set_aside.popleft()
            if not self._set_aside:
                self._set_aside_bytes = 0
            return event
        return self.channel.receive()

    def refine_reply(self) -> Event | None:
        """The master's RefineReply, or None when it closed the stream. The requests it
        sent ahead before the reply are read and set aside for ``next_event``."""
        while True:
            event = self.channel.receive()
            if event is None or isinstance(event, RefineReply):
                return event
            self._set_aside.append(event)
            self._set_aside_bytes += len(event.data) if isinstance(event, SigData) else 1
            if self._set_aside_bytes > MAX_SET_ASIDE_BYTES:
                raise RemoteProtocolError(
                    f"master sent more than {MAX_SET_ASIDE_BYTES} bytes of requests ahead"
                )

    def last_word(self, reason: str) -> None:
        with contextlib.suppress(_MasterGone, LocalProtocolError):
            self.send(Error(ErrorCode.PROTOCOL, _reason(reason)))
        with contextlib.suppress(_MasterGone):
            self.flush()

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        hello = self.next_event()
        if hello is None:
            return
        assert isinstance(hello, Hello)  # the state table admits nothing else first
        if not self.handshake(hello):
            return
        while True:
            event = self.next_event()
            if event is None or isinstance(event, Bye):
                return
            try:
                self.dispatch(event)
            except _Refusal as refusal:
                self.send(Error(refusal.code, _reason(refusal.reason)))

    def handshake(self, hello: Hello) -> bool:
        if hello.protocol != PROTOCOL_VERSION:
            self.last_word(
                f"protocol version mismatch: master speaks {hello.protocol}, "
                f"agent {__version__} speaks {PROTOCOL_VERSION}"
            )
            return False
        missing = sorted(CAPABILITIES - hello.capabilities)
        if missing:
            self.last_word(f"master {hello.version} lacks capabilities: {', '.join(missing)}")
            return False
        self.send(HelloReply(PROTOCOL_VERSION, __version__, self.roots, CAPABILITIES))
        return True

    def dispatch(self, event: Event) -> None:
        if isinstance(event, ListRequest):
            self.list_root(event.root)
        elif isinstance(event, IndicatorQuery):
            self.send(IndicatorState(self.indicator_exists(event.root, event.name)))
        elif isinstance(event, IndicatorWrite):
            self.write_indicator(event.root, event.name)
            self.send(Ok())
        elif isinstance(event, Fetch):
            self.fetch(event)
        else:  # the state table admits only requests in the idle state
            raise RemoteProtocolError(f"unexpected {type(event).__name__}")

    # --- roots and names ------------------------------------------------------------------

    def open_root(self, root: str) -> int:
        if root not in self.roots:
            raise _Refusal(ErrorCode.NOT_A_ROOT, f"{root!r} is not one of this agent's roots")
        try:
            return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise _Refusal(ErrorCode.NOT_FOUND, f"root {root}: does not exist") from None
        except OSError as exc:
            raise _Refusal(ErrorCode.IO, f"root {root}: {exc.strerror or exc}") from None

    def open_file(self, root_fd: int, path: str) -> int:
        """Open ``path`` under the root with no symlink followed; regular files only."""
        try:
            parts = split_relative(path)
        except UnsafePathError as exc:
            raise _Refusal(ErrorCode.UNSAFE_PATH, str(exc)) from None
        opened: list[int] = []
        try:
            dir_fd = root_fd
            for part in parts[:-1]:
                dir_fd = _open_at(part, _DIR_FLAGS, dir_fd, path)
                opened.append(dir_fd)
            fd = _open_at(parts[-1], _FILE_FLAGS, dir_fd, path)
        finally:
            for each in opened:
                os.close(each)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _Refusal(ErrorCode.UNSAFE_PATH, f"{path}: not a regular file, not served")
        return fd

    # --- listing --------------------------------------------------------------------------

    def list_root(self, root: str) -> None:
        root_fd = self.open_root(root)
        try:
            batch: list[WireEntry] = []
            raw = 0
            count = 0
            for entry in self.walk(root_fd, "", 0):
                batch.append(entry)
                raw += len(entry.path) + 40
                count += 1
                if raw >= BATCH_RAW or len(batch) >= MAX_BATCH_ENTRIES:
                    self.send(ListBatch(tuple(batch)))
                    batch, raw = [], 0
            if batch:
                self.send(ListBatch(tuple(batch)))
            self.send(ListEnd(count))
        finally:
            os.close(root_fd)

    def walk(self, dir_fd: int, prefix: str, depth: int) -> Iterator[WireEntry]:
        """Entries under ``dir_fd``, sorted by name bytes, recursing into real directories."""
        try:
            with os.scandir(dir_fd) as scan:
                found = sorted(scan, key=lambda each: os.fsencode(each.name))
        except OSError as exc:
            raise _Refusal(ErrorCode.IO, f"{prefix or '.'}: {exc.strerror or exc}") from None
        for each in found:
            name = each.name
            rel = prefix + name
            try:
                # the directory entry's type spares a regular file its lstat: hashed_entry
                # opens it without following links and checks what it opened
                regular = each.is_file(follow_symlinks=False)
                st = None if regular else os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since listed: it is simply not part of this listing
            except OSError as exc:
                raise _Refusal(ErrorCode.IO, f"{rel}: {exc.strerror or exc}") from None
            if st is None:
                entry = self.hashed_entry(dir_fd, name, rel)
                if entry is not None:
                    yield entry
                continue
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                if depth >= MAX_DEPTH:
                    raise _Refusal(ErrorCode.LIMIT, f"{rel}: nested deeper than {MAX_DEPTH}")
                try:
                    sub_fd = _open_at(name, _DIR_FLAGS, dir_fd, rel)
                except _Refusal as refusal:
                    if refusal.code is ErrorCode.NOT_FOUND:
                        continue
                    raise _Refusal(ErrorCode.CHANGED, f"{rel}: changed while listed") from None
                try:
                    yield from self.walk(sub_fd, rel + "/", depth + 1)
                finally:
                    os.close(sub_fd)
            elif stat.S_ISREG(mode):  # a type the directory entry did not tell
                entry = self.hashed_entry(dir_fd, name, rel)
                if entry is not None:
                    yield entry
            else:
                kind = "symlink" if stat.S_ISLNK(mode) else "special"
                yield WireEntry(rel, kind, st.st_size, st.st_mtime_ns, mode & 0o7777, None)

    def hashed_entry(self, dir_fd: int, name: str, rel: str) -> WireEntry | None:
        try:
            fd = _open_at(name, _FILE_FLAGS, dir_fd, rel)
        except _Refusal as refusal:
            if refusal.code is ErrorCode.NOT_FOUND:
                return None
            raise _Refusal(ErrorCode.CHANGED, f"{rel}: changed while listed") from None
        try:
            for _ in range(HASH_ATTEMPTS):
                before = os.fstat(fd)
                if not stat.S_ISREG(before.st_mode):
                    break
                hasher = Hasher()
                offset = 0
                # read no further than the size seen first: a file that keeps growing ends
                while offset < before.st_size and (
                    chunk := os.pread(fd, min(READ_CHUNK, before.st_size - offset), offset)
                ):
                    hasher.update(chunk)
                    offset += len(chunk)
                after = os.fstat(fd)
                if offset == before.st_size and _same_content_stat(before, after):
                    return WireEntry(
                        rel,
                        "file",
                        before.st_size,
                        before.st_mtime_ns,
                        before.st_mode & 0o7777,
                        hasher.digest(),
                    )
        except OSError as exc:
            raise _Refusal(ErrorCode.IO, f"{rel}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        raise _Refusal(ErrorCode.CHANGED, f"{rel}: changed while listed")

    # --- indicators -----------------------------------------------------------------------

    def checked_name(self, name: str) -> str:
        try:
            return check_name(name)
        except UnsafePathError as exc:
            raise _Refusal(ErrorCode.UNSAFE_PATH, str(exc)) from None

    def indicator_exists(self, root: str, name: str) -> bool:
        name = self.checked_name(name)
        # a missing root is an error, not "no indicator": a wrong collect dir must be named
        root_fd = self.open_root(root)
        try:
            st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _Refusal(ErrorCode.IO, f"{name}: {exc.strerror or exc}") from None
        finally:
            os.close(root_fd)
        return stat.S_ISREG(st.st_mode)

    def write_indicator(self, root: str, name: str) -> None:
        """Create the empty file ``name`` atomically: temp file, fsync, rename, fsync dir."""
        name = self.checked_name(name)
        root_fd = self.open_root(root)
        temp = f".{secrets.token_hex(8)}.deltastage-tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644, dir_fd=root_fd)  # fmt: skip
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            # rename replaces a symlink named `name` itself, never the file it points to
            os.rename(temp, name, src_dir_fd=root_fd, dst_dir_fd=root_fd)
            os.fsync(root_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=root_fd)
            raise _Refusal(ErrorCode.IO, f"{root}/{name}: {exc.strerror or exc}") from None
        finally:
            os.close(root_fd)

    # --- fetch ----------------------------------------------------------------------------

    def fetch(self, request: Fetch) -> None:
        decoder = _lazy("SignatureDecoder")(
            max_blocks=MAX_SIGNATURE_BLOCKS, max_basis_size=MAX_BASIS_SIZE
        )
        problem: _Refusal | None = None
        fatal: str | None = None
        # Read the whole signature even after a problem: the master sends it without
        # listening, and an early answer would only reach it as a broken pipe.
        while True:
            event = self.next_event()
            if event is None:
                raise _MasterGone("stream ended inside a fetch")
            if isinstance(event, Cancel):
                return
            if isinstance(event, SigEnd):
                break
            assert isinstance(event, SigData)
            if problem is None and fatal is None:
                try:
                    decoder.feed(event.data)
                except ResourceLimitError as exc:
                    problem = _Refusal(ErrorCode.LIMIT, f"signature: {exc}")
                except DeltastageError as exc:
                    fatal = f"malformed signature: {exc}"
        if fatal is None and problem is None and not decoder.done:
            fatal = "malformed signature: stream ended early"
        if fatal is not None:
            raise RemoteProtocolError(fatal)
        if problem is not None:
            raise problem
        try:
            signature = decoder.result()
        except DeltaFormatError as exc:
            raise RemoteProtocolError(f"malformed signature: {exc}") from None
        self.stream_delta(request, signature)

    def stream_delta(self, request: Fetch, signature: Signature) -> None:
        root_fd = self.open_root(request.root)
        try:
            fd = self.open_file(root_fd, request.path)
        finally:
            os.close(root_fd)
        try:
            before = os.fstat(fd)
            # literals go raw into the connection's zstd stream, which also sees every
            # earlier file of the session (see protocol.stream)
            self.conn.compress_deltas(request.level)
            refined = self.refined_delta(fd, before.st_size, signature) if request.refine else None
            if refined is not None:
                delta, offset = refined
                self.send_delta(delta)
            else:
                offset = self.encode_delta(fd, before.st_size, signature)
            after = os.fstat(fd)
        except OSError as exc:
            raise _Refusal(ErrorCode.IO, f"{request.path}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        if offset != before.st_size or not _same_content_stat(before, after):
            raise _Refusal(
                ErrorCode.CHANGED,
                f"{request.path}: changed while read (size {before.st_size} -> {after.st_size})",
            )
        self.send(DeltaEnd())

    def refined_delta(self, fd: int, size: int, coarse: Signature) -> tuple[bytes, int] | None:
        """The whole raw delta of a big file, refined around its edits; None: not worth it.

        An edit costs a whole block of literal; in a big file's 11 KiB blocks that is mostly
        old bytes the master already has. One pass matches the coarse blocks (and hashes
        the file); the master is then asked, in one round trip of a few KiB, for finer
        hashes of the basis blocks no copy covers (around the edits). Copies stay as they
        are (in fine units) and only the bytes between them are matched again, against
        the fine blocks. Returns (delta, bytes read).
        """
        import numpy as np

        from deltastage.delta import Copy, Literal, Matcher, PolyIndex, Signature
        from deltastage.delta.codec import encode_ops
        from deltastage.delta.ops import Op
        from deltastage.delta.params import choose_strong_len, count_blocks

        fine = max(REFINE_MIN_BLOCK, coarse.block_size // REFINE_SPLIT // 64 * 64)
        if (
            coarse.block_size < REFINE_MIN_SIGNATURE_BLOCK  # the master would refuse it
            or coarse.basis_size == 0
            or coarse.block_size < 2 * fine
            or size == 0
            or count_blocks(coarse.basis_size, fine) > MAX_SIGNATURE_BLOCKS
        ):
            return None  # nothing to refine, or the fine tables would not fit in memory
        # pass 1: coarse ops, as (basis offset, length, new-file offset) or literal bytes
        matcher = Matcher(PolyIndex(coarse))
        hasher = Hasher()
        segments: list[tuple[int, int, int] | bytes] = []
        literal = 0
        position = offset = 0
        done = False
        while not done:
            chunk = b""
            if offset < size:
                chunk = os.pread(fd, min(FILE_CHUNK, size - offset), offset)
                offset += len(chunk)
                hasher.update(chunk)
            done = not chunk
            for op in matcher.finish() if done else matcher.feed(chunk):
                if isinstance(op, Copy):
                    start = op.start * coarse.block_size
                    stop = min((op.start + op.count) * coarse.block_size, coarse.basis_size)
                    segments.append((start, stop - start, position))
                    position += stop - start
                else:
                    segments.append(op.data)
                    literal += len(op.data)
                    position += len(op.data)
            if literal > REFINE_MAX_LITERAL:
                return None  # mostly new data: refining would not pay for the memory
        new_hash = hasher.digest()
        coarse_ops = [
            Literal(seg)
            if isinstance(seg, bytes)
            else Copy(seg[0] // coarse.block_size, -(-seg[1] // coarse.block_size))
            for seg in segments
        ]
        if literal == 0:
            return encode_ops(coarse, coarse_ops, new_size=offset, new_hash=new_hash), offset
        n_fine = count_blocks(coarse.basis_size, fine)
        strong_len = choose_strong_len(coarse.basis_size, fine)
        covered = np.zeros(n_fine, dtype=bool)
        for seg in segments:
            if not isinstance(seg, bytes):
                first, last = self._fine_span(seg[0], seg[1], fine, coarse.basis_size, n_fine)
                covered[first:last] = True
        missing = np.flatnonzero(~covered)
        if len(missing) == 0 or len(missing) > MAX_REFINE_BLOCKS:
            return encode_ops(coarse, coarse_ops, new_size=offset, new_hash=new_hash), offset
        breaks = np.flatnonzero(np.diff(missing) != 1) + 1
        starts = np.concatenate(([0], breaks)).tolist()
        ends = np.concatenate((breaks, [len(missing)])).tolist()
        ranges = tuple((int(missing[a]), int(b - a)) for a, b in zip(starts, ends, strict=True))
        self.send(RefineRequest(fine, strong_len, ranges))
        reply = self.refine_reply()
        if reply is None:
            raise _MasterGone("stream ended inside a refinement")
        assert isinstance(reply, RefineReply)  # the state table admits nothing else here
        if not reply.data:
            return encode_ops(coarse, coarse_ops, new_size=offset, new_hash=new_hash), offset
        if len(reply.data) != len(missing) * (4 + strong_len):
            raise RemoteProtocolError(
                f"refinement reply has {len(reply.data)} bytes for {len(missing)} blocks"
            )
        # Blocks no copy covers get the master's hashes; the covered ones stay all-zero
        # (folded into one candidate): the bytes between copies rarely match them anyway.
        split = 4 * len(missing)
        weak = np.zeros(n_fine, dtype="<u4")
        strong = np.zeros((n_fine, strong_len), dtype=np.uint8)
        weak[missing] = np.frombuffer(reply.data[:split], dtype="<u4")
        strong[missing] = np.frombuffer(reply.data[split:], dtype=np.uint8).reshape(-1, strong_len)
        refined = Signature(
            block_size=fine,
            strong_len=strong_len,
            basis_size=coarse.basis_size,
            basis_hash=coarse.basis_hash,
            weak=weak.tobytes(),
            strong=strong.tobytes(),
        )
        index = PolyIndex(refined)
        ops: list[Op] = []
        between = bytearray()

        def rematch() -> None:
            if between:
                fine_matcher = Matcher(index)
                ops.extend(fine_matcher.feed(between))
                ops.extend(fine_matcher.finish())
                between.clear()

        for seg in segments:
            if isinstance(seg, bytes):
                between += seg
                continue
            start, length, at = seg
            first, last = self._fine_span(start, length, fine, coarse.basis_size, n_fine)
            if last <= first:
                between += os.pread(fd, length, at)
                continue
            head = first * fine - start
            tail = min(last * fine, coarse.basis_size) - start
            between += os.pread(fd, head, at)
            rematch()
            ops.append(Copy(first, last - first))
            between += os.pread(fd, length - tail, at + tail)
        rematch()
        return encode_ops(refined, _merge_copies(ops), new_size=offset, new_hash=new_hash), offset

    @staticmethod
    def _fine_span(
        start: int, length: int, fine: int, basis_size: int, n_fine: int
    ) -> tuple[int, int]:
        """The fine blocks lying wholly inside basis bytes [start, start + length)."""
        end = start + length
        return -(-start // fine), n_fine if end == basis_size else end // fine

    def encode_delta(self, fd: int, size: int, signature: Signature) -> int:
        """Stream the delta of the file's first ``size`` bytes; return the bytes read."""
        encoder = _lazy("DeltaEncoder")(signature, level=0)
        pending = bytearray()
        offset = 0
        # the size seen first bounds the read: a file that keeps growing still ends
        while offset < size and (chunk := os.pread(fd, min(FILE_CHUNK, size - offset), offset)):
            offset += len(chunk)
            pending += encoder.update(chunk)
            if len(pending) >= DATA_FRAME:
                self.send_delta(pending)
                pending = bytearray()
        pending += encoder.finish()
        self.send_delta(pending)
        return offset

    def send_delta(self, data: bytes | bytearray) -> None:
        for start in range(0, len(data), DATA_FRAME):
            self.send(DeltaData(bytes(data[start : start + DATA_FRAME])))


def _merge_copies(ops: list[Any]) -> list[Any]:
    """Adjacent copies of consecutive blocks as one op (the rematched pieces end and start
    at the copies between them)."""
    from deltastage.delta import Copy

    merged: list[Any] = []
    for op in ops:
        last = merged[-1] if merged else None
        if isinstance(op, Copy) and isinstance(last, Copy) and last.start + last.count == op.start:
            merged[-1] = Copy(last.start, last.count + op.count)
        else:
            merged.append(op)
    return merged


def serve(
    roots: Sequence[str | Path],
    read: Callable[[int], bytes],
    write: Callable[[bytes], None],
) -> None:
    """Answer one master until it says Bye, closes the stream, or breaks the protocol.

    ``read(n)`` returns up to n bytes (b"" at end of stream); ``write`` sends all its bytes.
    A request names a root by the exact string given here.
    """
    agent = _Agent(roots, read, write)
    try:
        agent.run()
        agent.flush()
    except _MasterGone:
        return
    except RemoteProtocolError as exc:
        agent.last_word(str(exc))
    except Exception as exc:  # never a traceback on the master's stream or the peer's log
        agent.last_word(f"agent internal error: {type(exc).__name__}: {exc}")


def run_argv(argv: Sequence[str]) -> int | None:
    """``agent --root DIR ...`` served without the CLI framework (its import costs the
    master ~0.1 s of waiting per connection); None for anything else, which the CLI
    then parses and, where it must, refuses with its usual messages."""
    if not argv or argv[0] != "agent":
        return None
    roots: list[str] = []
    rest = list(argv[1:])
    while rest:
        arg = rest.pop(0)
        if arg == "--root" and rest and rest[0] and not rest[0].startswith("-"):
            roots.append(rest.pop(0))
        elif arg.startswith("--root=") and len(arg) > len("--root="):
            roots.append(arg[len("--root=") :])
        else:
            return None
    return run_stdio(roots) if roots else None


def _preload_delta() -> None:
    # numpy and the matcher take ~0.1 s to import; the handshake, the indicator query and
    # the listing need neither, so they load beside them instead of delaying HelloReply.
    # A failure here resurfaces, and is answered, when the first fetch imports them.
    with contextlib.suppress(Exception):
        importlib.import_module("deltastage.delta.codec")
        importlib.import_module("deltastage.delta.signature")


def run_stdio(roots: Sequence[str | Path]) -> int:
    """Serve over stdin/stdout, as ``deltastage agent`` (an authorized_keys forced command)."""
    threading.Thread(target=_preload_delta, name="preload-delta", daemon=True).start()
    in_fd = sys.stdin.fileno()
    out_fd = os.dup(sys.stdout.fileno())
    # Anything printed by accident must not corrupt the protocol stream: fd 1 becomes stderr.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def read(n: int) -> bytes:
        return os.read(in_fd, n)

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(out_fd, view) :]

    try:
        serve(roots, read, write)
    finally:
        os.close(out_fd)
    return 0
