"""xxh3-128, the one whole-file hash deltastage trusts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

import xxhash

__all__ = [
    "HASH_SIZE",
    "READ_CHUNK",
    "ZEROS",
    "Hasher",
    "hash_bytes",
    "hash_fd",
    "hash_file",
    "hash_stream",
    "hash_zeros",
    "zero_pieces",
]

HASH_SIZE = 16
READ_CHUNK = 1 << 20
# A hole reads as zeros: this one shared buffer stands for it, so a hole is hashed (and
# matched) without being read from the disk or allocated anew.
ZEROS = memoryview(bytes(READ_CHUNK))

Hasher = xxhash.xxh3_128


def zero_pieces(count: int) -> Iterator[memoryview]:
    """``count`` zero bytes as slices of the shared ``ZEROS`` buffer (nothing allocated)."""
    while count > 0:
        step = min(count, len(ZEROS))
        yield ZEROS[:step]
        count -= step


def hash_zeros(hasher: Hasher | xxhash.xxh3_64, count: int) -> None:
    """Feed ``count`` zero bytes to ``hasher``."""
    for piece in zero_pieces(count):
        hasher.update(piece)


def hash_bytes(data: bytes) -> bytes:
    return xxhash.xxh3_128_digest(data)


def hash_stream(stream: BinaryIO) -> tuple[int, bytes]:
    """Hash a stream to its end; return (bytes read, 16-byte digest)."""
    hasher = Hasher()
    size = 0
    while chunk := stream.read(READ_CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    return size, hasher.digest()


def hash_fd(fd: int, *, offset: int = 0, hasher: Hasher | None = None) -> tuple[int, bytes]:
    """Hash an open file descriptor to its end without moving the caller's position: from
    offset 0, or from ``offset`` on, continuing ``hasher`` (which holds the bytes before
    it). Returns (the file's end, 16-byte digest)."""
    if hasher is None:
        hasher = Hasher()
    while chunk := os.pread(fd, READ_CHUNK, offset):
        hasher.update(chunk)
        offset += len(chunk)
    return offset, hasher.digest()


def hash_file(path: str | os.PathLike[str]) -> tuple[int, bytes]:
    with open(path, "rb") as stream:
        return hash_stream(stream)
