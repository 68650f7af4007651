"""Bases as content: an earlier compressed file decompressed for the delta of a new one's
content, and the new file rebuilt from its patched content.

A basis staged through its content (its manifest gives its decompressed size) is inflated
(runs of zeros left as holes, ``stage.sparse``) into an unnamed temp file in the peer's
staging dir (``O_TMPFILE``, or a temp name unlinked at once: nothing is left to sweep,
whatever stops the run), and signed and patched from like any basis. The bytes held so at
once are bounded per peer (``transform_temp_bytes``): a basis that does not fit, or whose
content is not the size its manifest says, is left out.

``RebuildingWriter`` stands between the patcher and the temp file: the content it is given
is recompressed with the listed recipe as it arrives, and only the compressed bytes are
written; they are hashed as written, and the committer verifies them against the source's
hash like every file's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable

from deltastage.errors import DeltaFormatError, IntegrityError
from deltastage.hashing import Hasher, zero_pieces
from deltastage.safefs import create_private
from deltastage.stage.peerdir import temp_name
from deltastage.stage.sparse import write_sparse
from deltastage.transform.inflate import inflate
from deltastage.transform.rebuild import Rebuilder
from deltastage.transform.recipe import Recipe
from deltastage.transform.search import SNIFF_SIZE, sniff

__all__ = ["ContentBases", "RebuildingWriter"]


class ContentBases:
    """Decompresses bases into unnamed temp files beneath ``peer_fd``, at most ``budget``
    bytes of them at once; thread-safe (fetches are prepared on the pipeline's thread and
    released on the receiver's)."""

    def __init__(self, peer_fd: int, budget: int) -> None:
        self._peer_fd = peer_fd
        self._budget = budget
        self._used = 0
        self._lock = threading.Lock()

    def open(self, fd: int, content_size: int) -> int | None:
        """An fd of the content of the compressed file open at ``fd``, ``content_size``
        bytes reserved from the budget until ``release``; None (nothing reserved) when it
        does not fit, is not compressed, or its content is not that size."""
        with self._lock:
            if self._used + content_size > self._budget:
                return None
            self._used += content_size
        out = -1
        try:
            kind = sniff(os.pread(fd, SNIFF_SIZE, 0))
            if kind is None:
                raise DeltaFormatError("not compressed")
            out = self._anonymous()
            written = 0
            size = os.fstat(fd).st_size
            for piece in inflate(lambda at, n: os.pread(fd, n, at), size, kind, content_size):
                write_sparse(out, piece, written)
                written += len(piece)
            if written != content_size:
                raise DeltaFormatError(f"content of {written} bytes, not {content_size}")
            os.ftruncate(out, written)  # a trailing run of zeros was left a hole
        except (DeltaFormatError, OSError):
            if out >= 0:
                os.close(out)
            self.release(content_size)
            return None
        return out

    def release(self, content_size: int) -> None:
        with self._lock:
            self._used -= content_size

    def _anonymous(self) -> int:
        flags = os.O_RDWR | os.O_CLOEXEC
        try:
            return os.open(".", flags | os.O_TMPFILE, 0o600, dir_fd=self._peer_fd)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
        name = temp_name()
        fd = create_private(self._peer_fd, name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self._peer_fd)
        return fd


class RebuildingWriter:
    """The content a patcher writes, recompressed by ``recipe`` and passed on to ``write``
    (the compressed bytes, in order); ``finish`` writes the rest and returns the compressed
    file's size and xxh3-128.

    Content beyond or short of what the recipe declares is an ``IntegrityError``: the agent
    lied, or the file changed since it was listed.
    """

    def __init__(self, recipe: Recipe, write: Callable[[bytes], None]) -> None:
        self._rebuilder = Rebuilder(recipe)
        self._write = write
        self._hasher = Hasher()
        self.size = 0

    def content(self, data: bytes | memoryview) -> None:
        try:
            out = self._rebuilder.write(data)
        except DeltaFormatError as exc:
            raise IntegrityError(f"rebuild: {exc}") from None
        self._emit(out)

    def zeros(self, count: int) -> None:
        for piece in zero_pieces(count):
            self.content(piece)

    def digest(self) -> bytes:
        """The xxh3-128 of the compressed bytes written so far."""
        return self._hasher.digest()

    def finish(self) -> tuple[int, bytes]:
        try:
            out = self._rebuilder.close()
        except DeltaFormatError as exc:
            raise IntegrityError(f"rebuild: {exc}") from None
        self._emit(out)
        return self.size, self._hasher.digest()

    def _emit(self, out: bytes) -> None:
        if out:
            self._hasher.update(out)
            self.size += len(out)
            self._write(out)
