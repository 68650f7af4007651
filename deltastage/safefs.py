"""File operations confined beneath one directory, never following symlinks.

Relative names (their rule is ``protocol.paths``'s) are resolved one component at a time from
an open directory descriptor with ``O_NOFOLLOW`` (openat-style), so neither a ``..`` nor a
symlink planted in the tree (by a hostile peer's earlier files, or a local user) can redirect
a read or a write outside it. The master's staging writes and the agent's reads beneath its
roots both go through here, with the flag sets defined here once.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import stat
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from deltastage.errors import UnsafePathError
from deltastage.protocol.paths import split_relative

__all__ = [
    "DIR_FLAGS",
    "FILE_CREATE",
    "FILE_READ",
    "MAX_OPEN_DIRS",
    "DirCache",
    "check_relative_path",
    "create_private",
    "fsync_dir",
    "open_at",
    "open_child_dir",
    "open_dir",
    "open_file_beneath",
    "open_parent_beneath",
    "regular_file",
    "remove_tree_beneath",
    "replace_file",
    "syncfs",
    "walk_files",
]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO found where a file was expected returns at once instead of
# waiting for a writer (a regular file's reads ignore the flag)
FILE_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
FILE_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def create_private(dir_fd: int, name: str) -> int:
    """Create the file ``name`` in ``dir_fd`` for writing, readable by us only until it is
    given its mode: never over anything already there, never through a link."""
    return os.open(name, FILE_CREATE, 0o600, dir_fd=dir_fd)


def check_relative_path(path: str) -> list[str]:
    """The components of a peer-supplied relative '/'-path (``protocol.paths`` says which
    are safe), or ``UnsafePathError``."""
    return list(split_relative(path))


def open_at(dir_fd: int, name: str, flags: int) -> int:
    """openat(2) of one name with ``flags`` (O_NOFOLLOW among them): a symlink is refused
    with ``UnsafePathError``, never followed; a non-directory opened with O_DIRECTORY raises
    ``NotADirectoryError``; any other failure its ``OSError``."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        # either errno may stand for a symlink, depending on the flags: look at what is there
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(f"{name!r} is a symlink, not followed") from None
        raise


def open_file_beneath(dir_fd: int, parts: Sequence[str]) -> int:
    """Open the regular file ``parts`` beneath ``dir_fd`` for reading, each directory on
    the way with ``DIR_FLAGS``: a symlink at any step is refused (see ``open_at``), and so
    is anything but a regular file at the end (``UnsafePathError``; a socket fails to open
    with its ``OSError``)."""
    opened: list[int] = []
    try:
        parent = dir_fd
        for name in parts[:-1]:
            parent = open_at(parent, name, DIR_FLAGS)
            opened.append(parent)
        fd = open_at(parent, parts[-1], FILE_READ)
    finally:
        for each in opened:
            os.close(each)
    return regular_file(fd, parts[-1])


def regular_file(fd: int, name: str) -> int:
    """``fd`` if it is a regular file's; else it is closed and ``UnsafePathError`` raised."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(f"{name!r} is not a regular file")
    return fd


def open_dir(path: str | os.PathLike[str]) -> int:
    """Open a directory we trust by path (the staging root); a symlink there is refused."""
    return os.open(path, DIR_FLAGS)


def open_child_dir(parent_fd: int, name: str, *, create: bool, mode: int = 0o755) -> int:
    """Open directory ``name`` in ``parent_fd`` without following a link; maybe create it.

    With ``create``, a non-directory in the way (a file staged under that name on an earlier
    run, or a planted symlink) is removed: the peer's tree is the truth, and a link is never
    followed.
    """
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        # only these say something else is there; any other failure (EMFILE, EACCES, EIO)
        # is raised as what it is
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        if not create:
            raise UnsafePathError(f"{name!r} is not a directory") from exc
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent_fd)
    # The commit worker and the receiver may clear and make the same directory at once:
    # whoever finds it gone or made already opens the other's (refused but a directory).
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, mode, dir_fd=parent_fd)
    return os.open(name, DIR_FLAGS, dir_fd=parent_fd)


@contextmanager
def open_parent_beneath(
    root_fd: int, parts: list[str], *, create: bool, mode: int = 0o755
) -> Iterator[int]:
    """Yield an fd for the directory holding ``parts[-1]``, walking without following links."""
    fd = os.dup(root_fd)
    try:
        for name in parts[:-1]:
            next_fd = open_child_dir(fd, name, create=create, mode=mode)
            os.close(fd)
            fd = next_fd
        yield fd
    finally:
        os.close(fd)


# Directory fds one ``DirCache`` keeps open at most (besides those leased at the moment: a
# few paths' depth), however many directories the tree has. An attempt holds two caches (its
# peer dir's, its bases'), beside up to 64 files read back at once (``READBACK_WINDOW``) and
# the bases of 64 fetches in flight (``AHEAD_REQUESTS``), and an agent answering a FetchMany
# one: with several peers at once (``jobs``) all of it must stay well within the usual soft
# limit of 1024 open files. A directory evicted and needed again costs one openat, little
# next to staging a file.
MAX_OPEN_DIRS = 32


@dataclass(slots=True, eq=False)
class _OpenDir:
    fd: int
    leases: int = 0  # holders using the fd now: it is not closed until they are done
    forgotten: bool = False  # out of the cache (its directory removed): closed when unleased


class DirCache:
    """Open directory fds by relative parts, at most ``max_open`` of them, shared by threads.

    Staging thousands of files walks the same few directories over and over; caching their
    fds keeps every lookup link-safe (each was opened with O_NOFOLLOW from its parent) and
    saves several syscalls per file. A tree may hold more directories than a process may
    open files, so the least recently used ones are closed; a caller uses an fd only within
    its lease (``lease``, ``parent``), and a leased fd is never closed (another thread's
    eviction cannot make it stale, nor let the kernel reuse its number meanwhile). A
    directory evicted is opened again the same way, from its parent, which is leased while
    it is used.

    Beneath ``root_fd`` (not owned by the cache); with ``None``, a key's first part is a
    trusted directory's path (an earlier day's peer dir, opened as ``open_dir`` opens it)
    and the rest is beneath it. With ``create``, a missing directory is made with ``mode``
    and whatever is in its way replaced (``open_child_dir``); without, it is opened as
    ``open_file_beneath`` opens one (a symlink refused, a non-directory NotADirectoryError).
    """

    def __init__(
        self,
        root_fd: int | None,
        *,
        create: bool,
        mode: int = 0o755,
        max_open: int = MAX_OPEN_DIRS,
    ) -> None:
        self.root_fd = root_fd
        self.create = create
        self.mode = mode
        self.max_open = max_open
        self.open_count = 0  # the fds the cache has open now, leased or not
        self._dirs: OrderedDict[tuple[str, ...], _OpenDir] = OrderedDict()  # oldest use first
        self._lock = threading.RLock()  # the receiver, committer and fetches share it

    @contextmanager
    def lease(self, dir_parts: Sequence[str]) -> Iterator[int]:
        """The fd of the directory ``dir_parts``, open until the block ends."""
        key = tuple(dir_parts)
        if not key:
            if self.root_fd is None:
                raise ValueError("a DirCache without a root has no directory ()")
            yield self.root_fd
            return
        entry = self._acquire(key)
        try:
            yield entry.fd
        finally:
            self._release(entry)

    def parent(self, parts: Sequence[str]) -> AbstractContextManager[int]:
        """The lease of the directory holding ``parts[-1]``."""
        return self.lease(parts[:-1])

    def _acquire(self, key: tuple[str, ...]) -> _OpenDir:
        with self._lock:
            entry = self._dirs.get(key)
            if entry is None:
                entry = self._dirs[key] = _OpenDir(self._open(key))
                self.open_count += 1
            else:
                self._dirs.move_to_end(key)
            entry.leases += 1
            return entry

    def _open(self, key: tuple[str, ...]) -> int:
        """Open the directory ``key``, room made for it first (its parent leased meanwhile,
        so that it stays open and is the one the child is opened from)."""
        if self.root_fd is None and len(key) == 1:
            self._make_room()
            return open_dir(key[0])
        with self.lease(key[:-1]) as parent_fd:
            self._make_room()
            if self.create:
                return open_child_dir(parent_fd, key[-1], create=True, mode=self.mode)
            return open_at(parent_fd, key[-1], DIR_FLAGS)

    def _make_room(self) -> None:
        """Close the least recently used unleased fds until one more fits the bound."""
        excess = self.open_count + 1 - self.max_open
        if excess <= 0:
            return
        idle = (key for key, entry in self._dirs.items() if not entry.leases)
        for key in list(itertools.islice(idle, excess)):
            self._close(self._dirs.pop(key))

    def _release(self, entry: _OpenDir) -> None:
        with self._lock:
            entry.leases -= 1
            if entry.forgotten and not entry.leases:
                self._close(entry)

    def _close(self, entry: _OpenDir) -> None:
        os.close(entry.fd)
        self.open_count -= 1

    def forget(self, prefix: Sequence[str]) -> None:
        """Drop the directories at or beneath ``prefix`` (that directory was removed): each
        is closed now, or when its last lease ends."""
        prefix = tuple(prefix)
        with self._lock:
            for key in [k for k in self._dirs if k[: len(prefix)] == prefix]:
                entry = self._dirs.pop(key)
                entry.forgotten = True
                if not entry.leases:
                    self._close(entry)

    def close(self) -> None:
        self.forget(())


def fsync_dir(fd: int) -> None:
    os.fsync(fd)


def replace_file(target: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``target`` with a file holding ``text``, atomically: written beside it under a
    hidden temp name (``.NAME.XXXX.tmp``, which nothing reading ``*.html`` or ``*.prom``
    takes up), fsynced, given ``mode``, renamed over it, and the rename made durable. A
    reader sees the old file or the new one, never part of one; on failure the old one
    stays and the temp file is gone."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), mode)  # mkstemp makes 0600
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    # The parent may be a symlink an admin made (a textfile dir moved elsewhere): follow it.
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fsync_dir(dir_fd)
    finally:
        os.close(dir_fd)


_LIBC = ctypes.CDLL(None, use_errno=True)


def syncfs(fd: int) -> None:
    """Flush every dirty page of the filesystem holding ``fd`` and wait for it.

    One syncfs after writing a batch of files costs about what one fsync does, where an
    fsync per file costs a disk flush each: thousands of small files differ by seconds.
    """
    call = getattr(_LIBC, "syncfs", None)
    if call is None:
        os.sync()
        return
    if call(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def remove_tree_beneath(dir_fd: int, name: str) -> None:
    """Remove ``name`` (file, link or whole directory) inside ``dir_fd``, never following links."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    sub = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    try:
        for child in os.listdir(sub):
            remove_tree_beneath(sub, child)
    finally:
        os.close(sub)
    os.rmdir(name, dir_fd=dir_fd)


def walk_files(root_fd: int, prefix: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """Yield (relative path, lstat) for every non-directory beneath ``root_fd``, sorted."""
    for name in sorted(os.listdir(root_fd)):
        st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
        rel = f"{prefix}{name}"
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(name, DIR_FLAGS, dir_fd=root_fd)
            try:
                yield from walk_files(sub, rel + "/")
            finally:
                os.close(sub)
        else:
            yield rel, st
