"""The one definition of a safe name, shared by the agent (requests) and the master (listings).

A relative path is '/'-separated components, each non-empty, not '.' or '..', free of NUL,
at most NAME_MAX bytes; the whole is at most PATH_MAX bytes and never absolute. Such a path
cannot leave the directory it is resolved under, provided no component is a symlink
(the agent's openat walk refuses those).
"""

from __future__ import annotations

from deltastage.errors import UnsafePathError

__all__ = ["MAX_DEPTH", "MAX_NAME", "MAX_PATH", "check_name", "split_relative"]

MAX_PATH = 4096  # bytes of a relative path or root (Linux PATH_MAX)
MAX_NAME = 255  # bytes of one path component (Linux NAME_MAX)

# Directories a path may descend through: the agent lists no deeper, and the master's
# recursive directory walks stay far from Python's recursion limit.
MAX_DEPTH = 256


def _encoded_len(text: str) -> int:
    try:
        return len(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        raise UnsafePathError(f"{text!r}: not a valid file name") from None


def check_name(name: str) -> str:
    """A single path component; return it unchanged or raise ``UnsafePathError``."""
    if not name or name in (".", ".."):
        raise UnsafePathError(f"{name!r}: not a usable file name")
    if "/" in name or "\0" in name:
        raise UnsafePathError(f"{name!r}: a file name may not contain '/' or NUL")
    if _encoded_len(name) > MAX_NAME:
        raise UnsafePathError(f"{name[:40]!r}...: file name longer than {MAX_NAME} bytes")
    return name


def split_relative(path: str) -> tuple[str, ...]:
    """The components of a safe relative path, or ``UnsafePathError``."""
    if not path:
        raise UnsafePathError("empty path")
    if "\0" in path:
        raise UnsafePathError(f"{path!r}: path contains NUL")
    if path.startswith("/"):
        raise UnsafePathError(f"{path!r}: absolute path")
    if _encoded_len(path) > MAX_PATH:
        raise UnsafePathError(f"{path[:40]!r}...: path longer than {MAX_PATH} bytes")
    parts = tuple(path.split("/"))
    if len(parts) > MAX_DEPTH + 1:
        raise UnsafePathError(f"{path[:40]!r}...: nested deeper than {MAX_DEPTH} directories")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePathError(f"{path!r}: empty, '.' or '..' component")
        check_name(part)
    return parts
