"""A peer's staging dir as a tree: temp names, what a crashed run left, what the peer no
longer has, interrupted transfers kept as partials, and its directories' ownership."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator

from deltastage.manifest import INTERNAL_PREFIX, MANIFEST_NAME
from deltastage.safefs import (
    DIR_FLAGS,
    open_parent_beneath,
    remove_tree_beneath,
    walk_files,
)
from deltastage.stage.basis import PARTIAL_DIR
from deltastage.stage.ownership import Ownership

__all__ = [
    "TMP_PREFIX",
    "apply_dir_ownership",
    "clear_name",
    "is_fresh",
    "keep_partial",
    "remove_extras",
    "sweep_temp_files",
    "temp_name",
]

TMP_PREFIX = f"{INTERNAL_PREFIX}tmp-"


def temp_name() -> str:
    """A new temp file's name: never a staged file's, swept if a run crashes."""
    return f"{TMP_PREFIX}{secrets.token_hex(8)}"


def is_fresh(peer_fd: int) -> bool:
    """A new day's dir holds nothing an earlier run could have staged: no need to look."""
    return not any(not name.startswith(INTERNAL_PREFIX) for name in os.listdir(peer_fd))


def clear_name(dir_fd: int, name: str) -> bool:
    """Make room for a file where an earlier run left a directory of the same name."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        remove_tree_beneath(dir_fd, name)
        return True
    return False


def keep_partial(peer_fd: int, dir_fd: int, tmp: str, parts: list[str]) -> None:
    """An interrupted transfer's output becomes an extra basis for the next attempt."""
    partial_parts = [PARTIAL_DIR, *parts]
    try:
        with open_parent_beneath(peer_fd, partial_parts, create=True, mode=0o700) as partial_fd:
            clear_name(partial_fd, partial_parts[-1])
            os.rename(tmp, partial_parts[-1], src_dir_fd=dir_fd, dst_dir_fd=partial_fd)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)


def _unlink_files(peer_fd: int, doomed: Callable[[list[str]], bool]) -> None:
    """Remove every non-directory beneath the peer dir whose path parts ``doomed`` picks."""
    for rel, _ in list(walk_files(peer_fd)):
        parts = rel.split("/")
        if not doomed(parts):
            continue
        with (
            open_parent_beneath(peer_fd, parts, create=False) as dir_fd,
            contextlib.suppress(FileNotFoundError),
        ):
            os.unlink(parts[-1], dir_fd=dir_fd)


def sweep_temp_files(peer_fd: int) -> None:
    """Temp files of a crashed run are never mistaken for staged ones: remove them."""
    _unlink_files(
        peer_fd, lambda parts: parts[0] != PARTIAL_DIR and parts[-1].startswith(TMP_PREFIX)
    )


def remove_extras(peer_fd: int, keep: set[str]) -> None:
    """A re-run after the peer removed a file: today's tree must match the peer's."""

    def doomed(parts: list[str]) -> bool:
        rel = "/".join(parts)
        return not (parts[0].startswith(INTERNAL_PREFIX) or rel == MANIFEST_NAME or rel in keep)

    _unlink_files(peer_fd, doomed)


def apply_dir_ownership(peer_fd: int, ownership: Ownership) -> None:
    """The peer dir and every directory beneath it get the staged mode and owner."""
    ownership.apply_fd(peer_fd, is_dir=True)
    for directory_fd in _walk_dirs(peer_fd):
        try:
            ownership.apply_fd(directory_fd, is_dir=True)
        finally:
            os.close(directory_fd)


def _walk_dirs(dir_fd: int) -> Iterator[int]:
    """Yield an fd for every subdirectory (not links), depth first; the caller closes each."""
    # the entries' types come with the listing: a file costs no stat
    with os.scandir(dir_fd) as scan:
        names = sorted(e.name for e in scan if e.is_dir(follow_symlinks=False))
    for name in names:
        if not name.startswith(INTERNAL_PREFIX):
            sub = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
            yield from _walk_dirs(sub)
            yield sub
