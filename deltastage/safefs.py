"""File operations confined beneath one directory, never following symlinks.

Peer-supplied relative names are resolved one component at a time from an open directory
descriptor with ``O_NOFOLLOW | O_DIRECTORY`` (openat-style), so neither a ``..`` nor a symlink
planted in the staging tree (by a hostile peer's earlier files or a local user) can redirect a
write outside the peer's staging dir.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from deltastage.errors import UnsafePathError

__all__ = [
    "DIR_FLAGS",
    "check_relative_path",
    "fsync_dir",
    "open_dir",
    "open_parent_beneath",
    "remove_tree_beneath",
    "walk_files",
]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


def check_relative_path(path: str) -> list[str]:
    """Split a peer-supplied relative '/'-path into safe components, or raise UnsafePathError."""
    if not path or len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise UnsafePathError(f"bad path length: {path[:80]!r}")
    if "\0" in path or path.startswith("/"):
        raise UnsafePathError(f"unsafe path {path[:200]!r}")
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", "..") or len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise UnsafePathError(f"unsafe path {path[:200]!r}")
    return parts


def open_dir(path: str | os.PathLike[str]) -> int:
    """Open a directory we trust by path (the staging root, or an agent root)."""
    return os.open(path, DIR_FLAGS)


@contextmanager
def open_parent_beneath(
    root_fd: int, parts: list[str], *, create: bool, mode: int = 0o755
) -> Iterator[int]:
    """Yield an fd for the directory holding ``parts[-1]``, walking without following links.

    With ``create``, missing directories are made, and a non-directory in the way (a file
    staged under that name on an earlier run) is removed: the peer's tree is the truth.
    """
    fd = os.dup(root_fd)
    try:
        for name in parts[:-1]:
            try:
                next_fd = os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(name, mode, dir_fd=fd)
                next_fd = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP) or not create:
                    raise UnsafePathError(f"{name!r} is not a directory") from exc
                os.unlink(name, dir_fd=fd)  # a symlink or file where a dir must be: never follow
                os.mkdir(name, mode, dir_fd=fd)
                next_fd = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        yield fd
    finally:
        os.close(fd)


def fsync_dir(fd: int) -> None:
    os.fsync(fd)


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
