"""The roots an agent serves: open a file beneath one, list one, query and write indicators.

A listing reads each regular file once: the same pieces give its hash and, for a file of
``SKETCH_MIN_SIZE`` bytes or more, its content sketch (``delta.sketch``).

A request names a root by the exact string the agent was started with. Every name beneath it
is opened through ``safefs`` (``O_NOFOLLOW`` at every step), so neither a '..' nor
a symlink planted inside a root can lead outside; only regular files are served. Failures
are ``Refusal``s, each with the ``ErrorCode`` the master acts on (a vanished file is
``not-found``, a symlink ``unsafe-path``, a file that changed while read ``changed``, one
the agent's user may not read ``denied``, any other OS error ``io``).

The only write is an indicator: an empty file, directly in a root, under one of the names
the agent was started with (none: it is read-only). It is created where nothing is, and an
empty regular file already there is left as it is; anything else under that name (data, a
symlink, a directory, a FIFO, a device) is never replaced. So whoever holds the master's
key can read the roots and drop the named empty files in them, and nothing more.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from deltastage.agent.compressed import TRANSFORM_MIN_SIZE, listed_recipe
from deltastage.agent.conversation import Refusal
from deltastage.errors import UnsafePathError
from deltastage.hashing import Hasher, hash_zeros
from deltastage.holes import read_listed
from deltastage.protocol import ErrorCode, WireEntry
from deltastage.protocol.paths import MAX_DEPTH, check_name, split_relative
from deltastage.safefs import (
    DIR_FLAGS,
    FILE_CREATE,
    FILE_READ,
    DirCache,
    fsync_dir,
    open_at,
    open_file_beneath,
    regular_file,
)
from deltastage.transform.search import SNIFF_SIZE, sniff

if TYPE_CHECKING:
    from deltastage.delta.sketch import Sketcher

__all__ = ["RootFS", "same_content"]

HASH_ATTEMPTS = 3  # re-hash a file that changed while listed, then give up on it
# Smaller files are listed without a content sketch: the choice of their basis matters little
# (a wrong one costs at most the file), a small file has too few chunks to be told apart by
# one, and a tree of many files would pay each sketch's listing CPU and wire bytes.
SKETCH_MIN_SIZE = 1 << 20
_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # a root is the admin's path


def same_content(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether two stats of one open file show the same content (size and mtime)."""
    return (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)


def _sketcher() -> Sketcher:
    # imported at the first file big enough: numpy loads on a thread while the handshake and
    # the first small files are answered (see agent.stdio), not before the agent can answer
    from deltastage.delta.sketch import Sketcher

    return Sketcher()


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


def _parts(path: str) -> tuple[str, ...]:
    try:
        return split_relative(path)
    except UnsafePathError as exc:
        raise Refusal(ErrorCode.UNSAFE_PATH, str(exc)) from None


class RootFS:
    """The roots one agent was started with, and what it may do beneath them: read, and
    write the ``indicators`` it was started with (none: nothing)."""

    def __init__(self, roots: Sequence[str | Path], indicators: Sequence[str] = ()) -> None:
        self.roots = tuple(os.fspath(root) for root in roots)
        self.indicators = tuple(indicators)

    @contextlib.contextmanager
    def _root(self, root: str) -> Iterator[int]:
        if root not in self.roots:
            raise Refusal(ErrorCode.NOT_A_ROOT, f"{root!r} is not one of this agent's roots")
        try:
            fd = os.open(root, _ROOT_FLAGS)
        except FileNotFoundError:
            raise Refusal(ErrorCode.NOT_FOUND, f"root {root}: does not exist") from None
        except OSError as exc:
            raise Refusal.io(f"root {root}", exc) from None
        try:
            yield fd
        finally:
            os.close(fd)

    def open_file(self, root: str, path: str) -> int:
        """Open ``path`` beneath ``root`` with no symlink followed; regular files only."""
        with self._root(root) as root_fd:
            parts = _parts(path)
            try:
                return open_file_beneath(root_fd, parts)
            except (OSError, UnsafePathError) as exc:
                raise _open_refusal(exc, path) from None

    @contextlib.contextmanager
    def files_beneath(self, root: str) -> Iterator[Callable[[str], int]]:
        """``open_file`` for the files of one request (a FetchMany's): the root and the
        directories on the way are opened (``O_NOFOLLOW``, as ``open_file`` opens them)
        once for the request, not once per file (at most ``safefs.MAX_OPEN_DIRS`` of them
        open at once, however many the request names), and closed when it is answered."""
        with self._root(root) as root_fd:
            dirs = DirCache(root_fd, create=False)

            def open_one(path: str) -> int:
                parts = _parts(path)
                try:
                    with dirs.parent(parts) as parent:
                        return regular_file(open_at(parent, parts[-1], FILE_READ), parts[-1])
                except (OSError, UnsafePathError) as exc:
                    raise _open_refusal(exc, path) from None

            try:
                yield open_one
            finally:
                dirs.close()

    # --- listing --------------------------------------------------------------------------

    def listing(self, root: str, *, prove: bool = False) -> Iterator[WireEntry]:
        """Every file, symlink and special file beneath ``root``, sorted by name bytes
        within each directory; directories are implied, symlinks never followed. With
        ``prove``, a compressed file's entry has its recipe (``agent.compressed``)."""
        with self._root(root) as root_fd:
            yield from self._walk(root_fd, "", 0, prove)

    def _walk(self, dir_fd: int, prefix: str, depth: int, prove: bool) -> Iterator[WireEntry]:
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
                entry = self._hashed_entry(dir_fd, name, rel, prove)
                if entry is not None:
                    yield entry
            elif stat.S_ISDIR(st.st_mode):
                if depth >= MAX_DEPTH:
                    raise Refusal(ErrorCode.LIMIT, f"{rel}: nested deeper than {MAX_DEPTH}")
                sub_fd = self._open_listed(dir_fd, name, DIR_FLAGS, rel)
                if sub_fd is None:
                    continue
                try:
                    yield from self._walk(sub_fd, rel + "/", depth + 1, prove)
                finally:
                    os.close(sub_fd)
            else:
                kind = "symlink" if stat.S_ISLNK(st.st_mode) else "special"
                yield WireEntry(rel, kind, st.st_size, st.st_mtime_ns, st.st_mode & 0o7777, None)

    @staticmethod
    def _open_listed(dir_fd: int, name: str, flags: int, rel: str) -> int | None:
        """Open a name just listed; None when it has gone since. A symlink found where
        the listing saw a file or directory changed; any other failure keeps its cause."""
        try:
            return open_at(dir_fd, name, flags)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except UnsafePathError:
            raise Refusal(ErrorCode.CHANGED, f"{rel}: changed while listed") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Refusal(ErrorCode.CHANGED, f"{rel}: changed while listed") from None
            raise Refusal.io(rel, exc) from None

    def _hashed_entry(self, dir_fd: int, name: str, rel: str, prove: bool) -> WireEntry | None:
        """A file's entry: its hash and (from the same read) its content sketch; for a
        compressed file, its recipe and its content's sketch (``agent.compressed``)."""
        fd = self._open_listed(dir_fd, name, FILE_READ, rel)
        if fd is None:
            return None
        try:
            for _ in range(HASH_ATTEMPTS):
                before = os.fstat(fd)
                if not stat.S_ISREG(before.st_mode):
                    break
                hasher = Hasher()
                sketcher: Sketcher | None = None
                prefix = b""
                offset = 0
                # read no further than the size seen first: a file that keeps growing ends;
                # a hole is hashed (and sketched) as the zeros it reads as, never read
                for piece in read_listed(fd, before):
                    if not offset and before.st_size >= SKETCH_MIN_SIZE:
                        # a compressed file is sketched by its content, if at all
                        compressed = not isinstance(piece, int) and sniff(piece[:SNIFF_SIZE])
                        sketcher = None if compressed else _sketcher()
                    if isinstance(piece, int):
                        hash_zeros(hasher, piece)
                        if sketcher is not None:
                            sketcher.zeros(piece)
                        offset += piece
                    else:
                        if not offset:
                            prefix = piece[:SNIFF_SIZE]
                        hasher.update(piece)
                        if sketcher is not None:
                            sketcher.update(piece)
                        offset += len(piece)
                if offset != before.st_size or not same_content(before, os.fstat(fd)):
                    continue
                sketch = None if sketcher is None else sketcher.finish().encode()
                proving = (
                    prove and before.st_size >= TRANSFORM_MIN_SIZE and sniff(prefix) is not None
                )
                content = _sketcher() if proving else None
                recipe = None
                if content is not None:
                    recipe = listed_recipe(fd, before.st_size, prefix, content.update)
                if recipe is not None:
                    assert content is not None  # for mypy: a recipe was looked for
                    sketch = content.finish().encode() if recipe[1] >= SKETCH_MIN_SIZE else None
                    if not same_content(before, os.fstat(fd)):
                        continue
                return WireEntry(
                    rel,
                    "file",
                    before.st_size,
                    before.st_mtime_ns,
                    before.st_mode & 0o7777,
                    hasher.digest(),
                    sketch,
                    None if recipe is None else recipe[0],
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
        """Make sure the empty regular file ``name`` is in ``root``: created (O_EXCL, so
        nothing is ever replaced) and made durable, or found there already."""
        if not self.indicators:
            raise Refusal(ErrorCode.REFUSED, "this agent is read-only: it writes nothing")
        name = self._indicator_name(name)
        if name not in self.indicators:
            raise Refusal(
                ErrorCode.REFUSED,
                f"{name!r} is not an indicator this agent writes "
                f"(it writes {', '.join(map(repr, self.indicators))})",
            )
        with self._root(root) as root_fd:
            where = f"{root}/{name}"
            try:
                fd = os.open(name, FILE_CREATE, 0o644, dir_fd=root_fd)
            except FileExistsError:
                self._check_existing(root_fd, name, where)
                return
            except OSError as exc:
                raise Refusal.io(where, exc) from None
            try:
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                fsync_dir(root_fd)
            except OSError as exc:
                # the file was created here (O_EXCL): an indicator that may not last goes
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=root_fd)
                raise Refusal.io(where, exc) from None

    @staticmethod
    def _check_existing(root_fd: int, name: str, where: str) -> None:
        """An indicator already there is fine when it is an empty regular file; anything
        else is refused, and stays as it is (lstat: a symlink is judged, not followed)."""
        try:
            st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise Refusal(ErrorCode.CHANGED, f"{where}: removed while written") from None
        except OSError as exc:
            raise Refusal.io(where, exc) from None
        if stat.S_ISREG(st.st_mode) and st.st_size == 0:
            return
        raise Refusal(
            ErrorCode.REFUSED,
            f"{where}: exists and is {_what_is(st)}; an indicator never replaces it",
        )


def _what_is(st: os.stat_result) -> str:
    """What a name that is not an empty regular file is, for a refusal."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return f"a file of {st.st_size} bytes"
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"
