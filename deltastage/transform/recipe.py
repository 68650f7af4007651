"""A recipe: how to rebuild a compressed file's exact bytes from its decompressed content.

Binary encoding (big-endian), versioned; the decoder checks every field against its bound
and raises ``DeltaFormatError`` for anything else::

    b"DSRC" | version u8 | kind u8 (1 gzip, 2 bzip2) | n_members u16 (1..MAX_MEMBERS)
    gzip member    header_len u32 | header (a valid RFC 1952 member header, verbatim)
                   | level u8 (0..9) | mem_level u8 (1..9) | strategy u8 (0..4)
                   | wbits u8 (9..15) | size u64
    bzip2 stream   level u8 (1..9, the block size in 100 kB) | size u64

``size`` is the member's decompressed length, so the content splits into members again;
all sizes together are at most ``MAX_CONTENT_SIZE``, the whole encoding at most
``MAX_RECIPE_SIZE``. A gzip member's CRC32/ISIZE trailer follows from its content.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from deltastage.errors import DeltaFormatError
from deltastage.transform.gzipheader import MAX_HEADER_SIZE, gzip_header_length

__all__ = [
    "MAX_CONTENT_SIZE",
    "MAX_MEMBERS",
    "MAX_RECIPE_SIZE",
    "Bzip2Stream",
    "DeflateParams",
    "GzipMember",
    "Kind",
    "Member",
    "Recipe",
    "decode_recipe",
    "encode_recipe",
]

MAGIC = b"DSRC"
VERSION = 1
MAX_MEMBERS = 4096
MAX_RECIPE_SIZE = 1 << 20
MAX_CONTENT_SIZE = 1 << 48
_HEAD = struct.Struct(">BBH")
_LEN = struct.Struct(">I")
_DEFLATE = struct.Struct(">BBBBQ")
_BZIP2 = struct.Struct(">BQ")


class Kind(enum.IntEnum):
    GZIP = 1
    BZIP2 = 2


@dataclass(frozen=True)
class DeflateParams:
    """zlib's ``compressobj`` arguments for a raw deflate stream (``-wbits``)."""

    level: int
    mem_level: int = 8
    strategy: int = 0
    wbits: int = 15

    def valid(self) -> bool:
        return (
            0 <= self.level <= 9
            and 1 <= self.mem_level <= 9
            and 0 <= self.strategy <= 4
            and 9 <= self.wbits <= 15
        )


@dataclass(frozen=True)
class GzipMember:
    header: bytes
    params: DeflateParams
    size: int


@dataclass(frozen=True)
class Bzip2Stream:
    level: int
    size: int


Member = GzipMember | Bzip2Stream


@dataclass(frozen=True)
class Recipe:
    kind: Kind
    members: tuple[Member, ...]

    @property
    def content_size(self) -> int:
        return sum(member.size for member in self.members)


def encode_recipe(recipe: Recipe) -> bytes:
    """The recipe's binary form; raises ``DeltaFormatError`` for one the decoder would refuse,
    so a recipe that encodes always decodes to itself."""
    try:
        parts = [MAGIC, _HEAD.pack(VERSION, recipe.kind, len(recipe.members))]
        for member in recipe.members:
            if isinstance(member, GzipMember):
                p = member.params
                parts += [_LEN.pack(len(member.header)), member.header]
                parts.append(_DEFLATE.pack(p.level, p.mem_level, p.strategy, p.wbits, member.size))
            else:
                parts.append(_BZIP2.pack(member.level, member.size))
    except struct.error:
        raise DeltaFormatError("recipe field out of range") from None
    data = b"".join(parts)
    if decode_recipe(data) != recipe:
        raise DeltaFormatError("recipe out of bounds")
    return data


def decode_recipe(data: bytes) -> Recipe:
    """Parse and bound-check an encoded recipe; ``DeltaFormatError`` for anything else."""
    if len(data) > MAX_RECIPE_SIZE:
        raise DeltaFormatError(f"recipe too long: {len(data)} bytes")
    reader = _Reader(data)
    magic = reader.take(len(MAGIC))
    version, kind, count = reader.unpack(_HEAD)
    if magic != MAGIC or version != VERSION:
        raise DeltaFormatError("not a recipe, or a recipe version this build does not know")
    if kind not in (Kind.GZIP, Kind.BZIP2) or not 1 <= count <= MAX_MEMBERS:
        raise DeltaFormatError(f"recipe: kind {kind} with {count} members")
    members: list[Member] = []
    for _ in range(count):
        if kind == Kind.GZIP:
            (length,) = reader.unpack(_LEN)
            if length > MAX_HEADER_SIZE:
                raise DeltaFormatError(f"recipe: gzip header of {length} bytes")
            header = reader.take(length)
            if gzip_header_length(header) != length:
                raise DeltaFormatError("recipe: bytes after the gzip header")
            level, mem_level, strategy, wbits, size = reader.unpack(_DEFLATE)
            params = DeflateParams(level, mem_level, strategy, wbits)
            if not params.valid():
                raise DeltaFormatError(f"recipe: deflate parameters out of range: {params}")
            members.append(GzipMember(header, params, size))
        else:
            level, size = reader.unpack(_BZIP2)
            if not 1 <= level <= 9:
                raise DeltaFormatError(f"recipe: bzip2 level {level}")
            members.append(Bzip2Stream(level, size))
    reader.finish()
    recipe = Recipe(Kind(kind), tuple(members))
    if recipe.content_size > MAX_CONTENT_SIZE:
        raise DeltaFormatError("recipe: content too large")
    return recipe


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise DeltaFormatError("recipe: truncated")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        values: tuple[int, ...] = fmt.unpack(self.take(fmt.size))
        return values

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise DeltaFormatError("recipe: trailing bytes")
