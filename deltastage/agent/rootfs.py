"""The roots an agent serves: open a file beneath one, list one, query and write indicators.

A request names a root by the exact string the agent was started with. Every name beneath it
is opened through ``safefs`` (``O_NOFOLLOW`` at every step), so neither a '..' nor
a symlink planted inside a root can lead outside; only regular files are served. Failures
are ``Refusal``s, each with the ``ErrorCode`` the master acts on (a vanished file is
``not-found``, a symlink ``unsafe-path``, a file that changed while read ``changed``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from deltastage.agent.conversation import Refusal
from deltastage.errors import UnsafePathError
from deltastage.hashing import READ_CHUNK, Hasher
from deltastage.protocol import ErrorCode, WireEntry
from deltastage.protocol.paths import MAX_DEPTH, check_name, split_relative
from deltastage.safefs import (
    DIR_FLAGS,
    FILE_CREATE,
    FILE_READ,
    fsync_dir,
    open_at,
    open_file_beneath,
)

__all__ = ["RootFS", "same_content"]

HASH_ATTEMPTS = 3  # re-hash a file that changed while listed, then give up on it
_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # a root is the admin's path


def same_content(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether two stats of one open file show the same content (size and mtime)."""
    return (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)


def _open_refusal(exc: OSError | UnsafePathError, what: str) -> Refusal:
    """The refusal for a name ``open_at`` could not open."""
    if isinstance(exc, UnsafePathError):
        return Refusal(ErrorCode.UNSAFE_PATH, f"{what}: {exc}")
    if isinstance(exc, NotADirectoryError):
        return Refusal(ErrorCode.NOT_FOUND, f"{what}: {exc.filename!r} is not a directory")
    if exc.errno == errno.ENOENT:
        return Refusal(ErrorCode.NOT_FOUND, f"{what}: no such file or directory")
    if exc.errno == errno.ELOOP:
        return Refusal(ErrorCode.UNSAFE_PATH, f"{what}: is a symlink, not followed")
    return Refusal.io(what, exc)


class RootFS:
    """The roots one agent was started with, and what it may do beneath them."""

    def __init__(self, roots: Sequence[str | Path]) -> None:
        self.roots = tuple(os.fspath(root) for root in roots)

    @contextlib.contextmanager
    def _root(self, root: str) -> Iterator[int]:
        if root not in self.roots:
            raise Refusal(ErrorCode.NOT_A_ROOT, f"{root!r} is not one of this agent's roots")
        try:
            fd = os.open(root, _ROOT_FLAGS)
        except FileNotFoundError:
            raise Refusal(ErrorCode.NOT_FOUND, f"root {root}: does not exist") from None
        except OSError as exc:
            raise Refusal(ErrorCode.IO, f"root {root}: {exc.strerror or exc}") from None
        try:
            yield fd
        finally:
            os.close(fd)

    def open_file(self, root: str, path: str) -> int:
        """Open ``path`` beneath ``root`` with no symlink followed; regular files only."""
        with self._root(root) as root_fd:
            try:
                parts = split_relative(path)
            except UnsafePathError as exc:
                raise Refusal(ErrorCode.UNSAFE_PATH, str(exc)) from None
            try:
                return open_file_beneath(root_fd, parts)
            except (OSError, UnsafePathError) as exc:
                raise _open_refusal(exc, path) from None

    # --- listing --------------------------------------------------------------------------

    def listing(self, root: str) -> Iterator[WireEntry]:
        """Every file, symlink and special file beneath ``root``, sorted by name bytes
        within each directory; directories are implied, symlinks never followed."""
        with self._root(root) as root_fd:
            yield from self._walk(root_fd, "", 0)

    def _walk(self, dir_fd: int, prefix: str, depth: int) -> Iterator[WireEntry]:
        try:
            with os.scandir(dir_fd) as scan:
                found = sorted(scan, key=lambda each: os.fsencode(each.name))
        except OSError as exc:
            raise Refusal.io(prefix or ".", exc) from None
        for each in found:
            name = each.name
            rel = prefix + name
            try:
                # the directory entry's type spares a regular file its lstat: _hashed_entry
                # opens it without following links and checks what it opened
                regular = each.is_file(follow_symlinks=False)
                st = None if regular else os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since listed: it is simply not part of this listing
            except OSError as exc:
                raise Refusal.io(rel, exc) from None
            if st is None or stat.S_ISREG(st.st_mode):
                entry = self._hashed_entry(dir_fd, name, rel)
                if entry is not None:
                    yield entry
            elif stat.S_ISDIR(st.st_mode):
                if depth >= MAX_DEPTH:
                    raise Refusal(ErrorCode.LIMIT, f"{rel}: nested deeper than {MAX_DEPTH}")
                sub_fd = self._open_listed(dir_fd, name, DIR_FLAGS, rel)
                if sub_fd is None:
                    continue
                try:
                    yield from self._walk(sub_fd, rel + "/", depth + 1)
                finally:
                    os.close(sub_fd)
            else:
                kind = "symlink" if stat.S_ISLNK(st.st_mode) else "special"
                yield WireEntry(rel, kind, st.st_size, st.st_mtime_ns, st.st_mode & 0o7777, None)

    @staticmethod
    def _open_listed(dir_fd: int, name: str, flags: int, rel: str) -> int | None:
        """Open a name just listed; None when it has gone since."""
        try:
            return open_at(dir_fd, name, flags)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, UnsafePathError):
            raise Refusal(ErrorCode.CHANGED, f"{rel}: changed while listed") from None

    def _hashed_entry(self, dir_fd: int, name: str, rel: str) -> WireEntry | None:
        fd = self._open_listed(dir_fd, name, FILE_READ, rel)
        if fd is None:
            return None
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
                if offset == before.st_size and same_content(before, os.fstat(fd)):
                    return WireEntry(
                        rel,
                        "file",
                        before.st_size,
                        before.st_mtime_ns,
                        before.st_mode & 0o7777,
                        hasher.digest(),
                    )
        except OSError as exc:
            raise Refusal.io(rel, exc) from None
        finally:
            os.close(fd)
        raise Refusal(ErrorCode.CHANGED, f"{rel}: changed while listed")

    # --- indicators -----------------------------------------------------------------------

    @staticmethod
    def _indicator_name(name: str) -> str:
        try:
            return check_name(name)
        except UnsafePathError as exc:
            raise Refusal(ErrorCode.UNSAFE_PATH, str(exc)) from None

    def indicator_exists(self, root: str, name: str) -> bool:
        """Whether ``name`` in ``root`` is a regular file (a symlink does not count)."""
        name = self._indicator_name(name)
        # a missing root is an error, not "no indicator": a wrong collect dir must be named
        with self._root(root) as root_fd:
            try:
                st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise Refusal.io(name, exc) from None
        return stat.S_ISREG(st.st_mode)

    def write_indicator(self, root: str, name: str) -> None:
        """Create the empty file ``name`` atomically: temp file, fsync, rename, fsync dir."""
        name = self._indicator_name(name)
        with self._root(root) as root_fd:
            temp = f".{secrets.token_hex(8)}.deltastage-tmp"
            try:
                fd = os.open(temp, FILE_CREATE, 0o644, dir_fd=root_fd)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                # rename replaces a symlink named `name` itself, never the file it points to
                os.rename(temp, name, src_dir_fd=root_fd, dst_dir_fd=root_fd)
                fsync_dir(root_fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=root_fd)
                raise Refusal.io(f"{root}/{name}", exc) from None
