"""The messages of the agent protocol: frozen dataclasses and their payload codecs.

Every message knows its one-byte frame type and how to write and read its payload.
Decoding checks every length, count and enumerated value, so a malformed payload is
always a ``RemoteProtocolError`` with a one-line reason.

``Hello`` and ``HelloReply`` start with a magic, the protocol number and the version, and
that prefix is frozen across protocol versions: the rest of a handshake in another protocol
is not decoded (its fields may differ), so that two different versions can still tell each
other, in words, that they disagree.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import ClassVar

import zstandard

from deltastage.delta.params import MAX_BASES, MAX_SKETCH_BYTES
from deltastage.errors import LocalProtocolError, RemoteProtocolError, UnsafePathError
from deltastage.hashing import HASH_SIZE
from deltastage.protocol.paths import MAX_NAME, MAX_PATH, check_name
from deltastage.protocol.wire import Reader, Writer

__all__ = [
    "CAPABILITIES",
    "DEFAULT_INDICATOR",
    "EVENT_TYPES",
    "MAGIC",
    "MAX_BATCH_ENTRIES",
    "MAX_BATCH_RAW",
    "MAX_FETCH_MANY",
    "MAX_INDICATORS",
    "MAX_LISTED_RECIPE",
    "MAX_PATH",
    "MAX_PROBE_EXAMPLES",
    "MAX_REASON",
    "MAX_REFINE_BLOCKS",
    "PROTOCOL_VERSION",
    "REFINE_MIN_BLOCK",
    "Bye",
    "Cancel",
    "CompressedDeltaData",
    "DeltaData",
    "DeltaEnd",
    "Error",
    "ErrorCode",
    "Event",
    "Fetch",
    "FetchMany",
    "Hello",
    "HelloReply",
    "IndicatorQuery",
    "IndicatorState",
    "IndicatorWrite",
    "ListBatch",
    "ListEnd",
    "ListRequest",
    "Ok",
    "ProbeReply",
    "ProbeRequest",
    "RefineReply",
    "RefineRequest",
    "SigData",
    "SigEnd",
    "WireEntry",
    "decode_event",
]

# 2: delta data may travel as one connection-wide zstd stream (CompressedDeltaData), and the
# agent may ask for finer block hashes of the basis mid-fetch (RefineRequest/RefineReply)
# 3: the master may send the next fetches while a delta streams in (the agent reads its
# requests one at a time, so they wait in order); refinement only before a fetch's first
# delta data, and only of a signature in blocks of at least REFINE_MIN_BLOCK bytes
# 4: a RefineReply may follow requests sent ahead (the agent sets them aside until it comes),
# so nothing waits for a refinable fetch's delta to start before going ahead of it; a Fetch
# says whether it may be refined at all
# 5: the handshake names the indicators each end will write (the master's Hello: those it
# will ask for; the agent's HelloReply: those it was started to write, none when read-only),
# and an agent refuses a write it was not started for with the code ``refused``
# 6: the error code ``denied``: a name the agent's user may not read (it was ``io``, or
# ``changed`` for a file found unreadable while listing)
# 7: a Fetch names the bases its signature is of (1 to MAX_BASES, by size); a signature and
# a delta may be of several bases (the DSGM and DDLM formats)
# 8: FetchMany: the master asks for several files with no basis in one request, each
# answered in turn as a Fetch against an empty signature is
# 9: a listed file may carry a content sketch (at most MAX_SKETCH_BYTES), for the master to
# choose its bases by content
# 10: ProbeRequest/ProbeReply: how the files of a root are compressed, for ``check``
# 11: a delta may carry zero runs (the delta format's ``H`` op): a sparse file's holes,
# which the agent no longer reads
# 12: a listed gzip or bzip2 file may carry the recipe that rebuilds it from its content (its
# sketch is then its content's), and a Fetch may ask for the delta of a file's content
# 13: a ListRequest says whether the agent is to prove recipes (the master may not use them)
PROTOCOL_VERSION = 13
MAGIC = b"DSTG"
# What this build needs from the other end; both sides refuse a peer lacking any of them.
CAPABILITIES = frozenset(
    {
        "hash=xxh3-128",
        "compression=zstd",
        "delta=1",
        "stream=zstd-w24",
        "refine=1",
        "pipeline=2",
    }
)
# A fetch whose signature has smaller blocks is never refined: finer blocks would cost more
# in hashes than they could save in literal.
REFINE_MIN_BLOCK = 1024

MAX_REASON = 1024
MAX_VERSION = 64
MAX_ROOTS = 256
MAX_CAPABILITIES = 64
MAX_CAPABILITY = 64
MAX_INDICATORS = 16  # indicator names in a Hello or HelloReply
MAX_BATCH_ENTRIES = 65536
MAX_BATCH_RAW = 4 << 20  # decompressed bytes of one listing batch
MAX_LEVEL = 22  # zstd's highest level
MAX_REFINE_BLOCKS = 1 << 17  # fine blocks one RefineRequest may ask for (<= 2.5 MiB reply)
MAX_REFINE_BLOCK_SIZE = 1 << 20
MAX_FETCH_MANY = 256  # paths in one FetchMany
MAX_PROBE_EXAMPLES = 8  # names of files that cannot be rebuilt, in one ProbeReply
MAX_LISTED_RECIPE = 1 << 16  # bytes of one listed file's recipe (transform.recipe)
LISTING_LEVEL = 3
# The indicator an agent writes, and a master says it will write, when told nothing else
# (Cedar's stage indicator).
DEFAULT_INDICATOR = "cback.stage"

ENTRY_KINDS = ("file", "symlink", "special")


class ErrorCode(enum.StrEnum):
    NOT_FOUND = "not-found"
    CHANGED = "changed"
    UNSAFE_PATH = "unsafe-path"
    NOT_A_ROOT = "not-a-root"
    IO = "io"
    LIMIT = "limit"
    PROTOCOL = "protocol"
    REFUSED = "refused"  # the agent was not started to allow it (an indicator write)
    DENIED = "denied"  # the agent's user may not read it (EACCES, EPERM)


_ERROR_CODES = tuple(ErrorCode)


class Event:
    """Base of all messages; ``TYPE`` is the frame type byte."""

    TYPE: ClassVar[int]

    def encode_payload(self) -> bytes:
        writer = Writer()
        self._write(writer)
        return writer.getvalue()

    def _write(self, writer: Writer) -> None:
        """Messages without fields have an empty payload."""

    @classmethod
    def _read(cls, reader: Reader) -> Event:
        return cls()


def _write_strings(writer: Writer, values: list[str], limit: int, what: str) -> None:
    writer.u16(len(values), f"{what} count")
    for value in values:
        writer.text(value, limit, what)


def _read_strings(reader: Reader, count_limit: int, limit: int, what: str) -> list[str]:
    count = reader.u16(f"{what} count")
    if count > count_limit:
        raise RemoteProtocolError(f"too many {what} entries: {count} (limit {count_limit})")
    return [reader.text(limit, what) for _ in range(count)]


def _write_prefix(writer: Writer, protocol: int, version: str) -> None:
    writer.raw(MAGIC)
    writer.u16(protocol, "protocol")
    writer.text(version, MAX_VERSION, "version")


def _read_prefix(reader: Reader, what: str) -> tuple[int, str]:
    """The frozen prefix of a handshake message: its protocol number and version."""
    if reader.raw(len(MAGIC), "magic") != MAGIC:
        raise RemoteProtocolError(f"{what} lacks the deltastage magic: not a deltastage peer")
    return reader.u16("protocol"), reader.text(MAX_VERSION, "version")


def _write_indicators(writer: Writer, names: tuple[str, ...]) -> None:
    if len(names) > MAX_INDICATORS:
        raise LocalProtocolError(f"too many indicators: {len(names)} (limit {MAX_INDICATORS})")
    _write_strings(writer, list(names), MAX_NAME, "indicator")


def _read_indicators(reader: Reader) -> tuple[str, ...]:
    names = _read_strings(reader, MAX_INDICATORS, MAX_NAME, "indicator")
    for name in names:
        try:
            check_name(name)
        except UnsafePathError as exc:
            raise RemoteProtocolError(f"bad indicator name: {exc}") from None
    return tuple(names)


def _read_bool(reader: Reader, what: str) -> bool:
    value = reader.u8(what)
    if value > 1:
        raise RemoteProtocolError(f"{what} is not a boolean: {value}")
    return value == 1


def _write_level(writer: Writer, level: int) -> None:
    if not 0 <= level <= MAX_LEVEL:
        raise LocalProtocolError(f"compression level out of range: {level}")
    writer.u8(level, "level")


def _read_level(reader: Reader) -> int:
    level = reader.u8("level")
    if level > MAX_LEVEL:
        raise RemoteProtocolError(f"compression level out of range: {level}")
    return level


@dataclass(frozen=True)
class Hello(Event):
    """Master → agent, first message: who I am, what I need, which indicators I will ask
    you to write.

    Decoded from another protocol, only ``protocol`` and ``version`` are read; the other
    fields are left empty (the handshake refuses it anyway)."""

    TYPE: ClassVar[int] = 0x01
    protocol: int
    version: str
    capabilities: frozenset[str]
    indicators: tuple[str, ...] = ()

    def _write(self, writer: Writer) -> None:
        _write_prefix(writer, self.protocol, self.version)
        _write_strings(writer, sorted(self.capabilities), MAX_CAPABILITY, "capability")
        _write_indicators(writer, self.indicators)

    @classmethod
    def _read(cls, reader: Reader) -> Hello:
        protocol, version = _read_prefix(reader, "Hello")
        if protocol != PROTOCOL_VERSION:
            reader.rest()
            return cls(protocol, version, frozenset())
        caps = _read_strings(reader, MAX_CAPABILITIES, MAX_CAPABILITY, "capability")
        return cls(protocol, version, frozenset(caps), _read_indicators(reader))


@dataclass(frozen=True)
class HelloReply(Event):
    """Agent → master: my version, the roots I serve, what I offer, the indicators I write
    (none: I am read-only). Decoded from another protocol like ``Hello``."""

    TYPE: ClassVar[int] = 0x02
    protocol: int
    version: str
    roots: tuple[str, ...]
    capabilities: frozenset[str]
    indicators: tuple[str, ...] = ()

    def _write(self, writer: Writer) -> None:
        _write_prefix(writer, self.protocol, self.version)
        if len(self.roots) > MAX_ROOTS:
            raise LocalProtocolError(f"too many roots: {len(self.roots)} (limit {MAX_ROOTS})")
        _write_strings(writer, list(self.roots), MAX_PATH, "root")
        _write_strings(writer, sorted(self.capabilities), MAX_CAPABILITY, "capability")
        _write_indicators(writer, self.indicators)

    @classmethod
    def _read(cls, reader: Reader) -> HelloReply:
        protocol, version = _read_prefix(reader, "HelloReply")
        if protocol != PROTOCOL_VERSION:
            reader.rest()
            return cls(protocol, version, (), frozenset())
        roots = _read_strings(reader, MAX_ROOTS, MAX_PATH, "root")
        caps = _read_strings(reader, MAX_CAPABILITIES, MAX_CAPABILITY, "capability")
        return cls(protocol, version, tuple(roots), frozenset(caps), _read_indicators(reader))


@dataclass(frozen=True)
class Bye(Event):
    """Master → agent: the conversation is over."""

    TYPE: ClassVar[int] = 0x03


@dataclass(frozen=True)
class Error(Event):
    """Agent → master: a request failed (or, with code ``protocol``, the conversation)."""

    TYPE: ClassVar[int] = 0x04
    code: ErrorCode
    reason: str

    def _write(self, writer: Writer) -> None:
        writer.u8(_ERROR_CODES.index(self.code), "error code")
        writer.text(self.reason, MAX_REASON, "reason")

    @classmethod
    def _read(cls, reader: Reader) -> Error:
        index = reader.u8("error code")
        if index >= len(_ERROR_CODES):
            raise RemoteProtocolError(f"unknown error code {index}")
        return cls(_ERROR_CODES[index], reader.text(MAX_REASON, "reason"))


@dataclass(frozen=True)
class ListRequest(Event):
    """Master → agent: list ``root``; with ``prove``, also prove the recipe of each gzip
    or bzip2 file (which costs the agent a recompression of each)."""

    TYPE: ClassVar[int] = 0x10
    root: str
    prove: bool = False

    def _write(self, writer: Writer) -> None:
        writer.text(self.root, MAX_PATH, "root")
        writer.u8(int(self.prove), "prove")

    @classmethod
    def _read(cls, reader: Reader) -> ListRequest:
        return cls(reader.text(MAX_PATH, "root"), _read_bool(reader, "prove"))


# a listed entry's fixed fields, as ``WireEntry._write`` writes them one by one
_ENTRY_HEAD = struct.Struct(">BHQq")  # kind, mode, size, mtime_ns


@dataclass(frozen=True)
class WireEntry:
    """One listed name, as carried in a ``ListBatch`` (paths are checked by the session)."""

    path: str
    kind: str  # one of ENTRY_KINDS
    size: int
    mtime_ns: int
    mode: int
    xxh3_128: bytes | None  # HASH_SIZE bytes for "file", None otherwise
    # a file's content sketch (1..MAX_SKETCH_BYTES bytes, see delta.sketch; read by the stage,
    # which decodes it); None for anything else, and for a file not sketched (a small one)
    sketch: bytes | None = None
    # the encoded recipe (transform.recipe, decoded and checked by the session) that
    # rebuilds a gzip or bzip2 file from its content; its sketch is then the content's
    recipe: bytes | None = None

    def _write(self, writer: Writer) -> None:
        if self.kind not in ENTRY_KINDS:
            raise LocalProtocolError(f"unknown entry kind {self.kind!r}")
        if (self.kind == "file") != (self.xxh3_128 is not None) or (
            self.xxh3_128 is not None and len(self.xxh3_128) != HASH_SIZE
        ):
            raise LocalProtocolError(f"{self.path!r}: a {HASH_SIZE}-byte hash iff a file")
        if self.sketch is not None and (
            self.kind != "file" or not 0 < len(self.sketch) <= MAX_SKETCH_BYTES
        ):
            raise LocalProtocolError(
                f"{self.path!r}: a sketch of 1..{MAX_SKETCH_BYTES} bytes, of a file"
            )
        if self.recipe is not None and (
            self.kind != "file" or not 0 < len(self.recipe) <= MAX_LISTED_RECIPE
        ):
            raise LocalProtocolError(
                f"{self.path!r}: a recipe of 1..{MAX_LISTED_RECIPE} bytes, of a file"
            )
        if not 0 <= self.mode <= 0o7777:
            raise LocalProtocolError(f"{self.path!r}: mode out of range: {self.mode:o}")
        writer.u8(ENTRY_KINDS.index(self.kind), "kind")
        writer.u16(self.mode, "mode")
        writer.u64(self.size, "size")
        writer.i64(self.mtime_ns, "mtime_ns")
        writer.text(self.path, MAX_PATH, "path")
        if self.xxh3_128 is not None:
            writer.raw(self.xxh3_128)
            sketch = self.sketch or b""
            writer.u8(len(sketch), "sketch length")
            writer.raw(sketch)
            recipe = self.recipe or b""
            writer.u32(len(recipe), "recipe length")
            writer.raw(recipe)

    @classmethod
    def _read(cls, reader: Reader) -> WireEntry:
        kind_index, mode, size, mtime_ns = reader.fields(_ENTRY_HEAD, "kind, mode, size, mtime_ns")
        if kind_index >= len(ENTRY_KINDS):
            raise RemoteProtocolError(f"unknown entry kind {kind_index}")
        kind = ENTRY_KINDS[kind_index]
        if mode > 0o7777:
            raise RemoteProtocolError(f"entry mode out of range: {mode:o}")
        path = reader.text(MAX_PATH, "path")
        if kind != "file":
            return cls(path, kind, size, mtime_ns, mode, None)
        digest = reader.raw(HASH_SIZE, "hash")
        length = reader.u8("sketch length")
        if length > MAX_SKETCH_BYTES:
            raise RemoteProtocolError(f"sketch of {length} bytes (limit {MAX_SKETCH_BYTES})")
        sketch = reader.raw(length, "sketch") if length else None
        length = reader.u32("recipe length")
        if length > MAX_LISTED_RECIPE:
            raise RemoteProtocolError(f"recipe of {length} bytes (limit {MAX_LISTED_RECIPE})")
        recipe = reader.raw(length, "recipe") if length else None
        return cls(path, kind, size, mtime_ns, mode, digest, sketch, recipe)


@dataclass(frozen=True)
class ListBatch(Event):
    """Agent → master: some entries, zstd-compressed as one block (paths share prefixes)."""

    TYPE: ClassVar[int] = 0x11
    entries: tuple[WireEntry, ...]

    def _write(self, writer: Writer) -> None:
        if len(self.entries) > MAX_BATCH_ENTRIES:
            raise LocalProtocolError(
                f"listing batch too large: {len(self.entries)} entries (limit {MAX_BATCH_ENTRIES})"
            )
        body = Writer()
        for entry in self.entries:
            entry._write(body)
        raw = body.getvalue()
        if len(raw) > MAX_BATCH_RAW:
            raise LocalProtocolError(f"listing batch too large: {len(raw)} bytes")
        writer.u32(len(self.entries), "entry count")
        writer.raw(zstandard.ZstdCompressor(level=LISTING_LEVEL).compress(raw))

    @classmethod
    def _read(cls, reader: Reader) -> ListBatch:
        count = reader.u32("entry count")
        if count > MAX_BATCH_ENTRIES:
            raise RemoteProtocolError(
                f"listing batch too large: {count} entries (limit {MAX_BATCH_ENTRIES})"
            )
        body = Reader(_decompress_bounded(reader.rest(), MAX_BATCH_RAW), "ListBatch body")
        entries = tuple(WireEntry._read(body) for _ in range(count))
        body.finish()
        return cls(entries)


def _decompress_bounded(data: bytes, limit: int) -> bytes:
    """One zstd frame whose declared size is at most ``limit``; nothing after it."""
    try:
        declared = zstandard.frame_content_size(data)
        if declared < 0 or declared > limit:
            raise RemoteProtocolError(f"compressed block declares {declared} bytes (limit {limit})")
        # the declared size was bounded above, and zstd refuses output beyond the declaration
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        out: bytes = decompressor.decompress(data)
        complete = decompressor.eof and not decompressor.unused_data
    except zstandard.ZstdError as exc:
        raise RemoteProtocolError(f"corrupt compressed block: {exc}") from None
    if not complete or len(out) != declared:
        raise RemoteProtocolError("compressed block is truncated or has trailing data")
    return out


@dataclass(frozen=True)
class ListEnd(Event):
    TYPE: ClassVar[int] = 0x12
    count: int

    def _write(self, writer: Writer) -> None:
        writer.u64(self.count, "count")

    @classmethod
    def _read(cls, reader: Reader) -> ListEnd:
        return cls(reader.u64("count"))


@dataclass(frozen=True)
class _RootName(Event):
    root: str
    name: str

    def _write(self, writer: Writer) -> None:
        writer.text(self.root, MAX_PATH, "root")
        writer.text(self.name, MAX_NAME, "name")

    @classmethod
    def _read(cls, reader: Reader) -> _RootName:
        return cls(reader.text(MAX_PATH, "root"), reader.text(MAX_NAME, "name"))


@dataclass(frozen=True)
class IndicatorQuery(_RootName):
    """Master → agent: is there a regular file ``name`` directly in ``root``?"""

    TYPE: ClassVar[int] = 0x20


@dataclass(frozen=True)
class IndicatorState(Event):
    TYPE: ClassVar[int] = 0x21
    exists: bool

    def _write(self, writer: Writer) -> None:
        writer.u8(int(self.exists), "exists")

    @classmethod
    def _read(cls, reader: Reader) -> IndicatorState:
        return cls(_read_bool(reader, "exists"))


@dataclass(frozen=True)
class IndicatorWrite(_RootName):
    """Master → agent: create (or refresh) the empty indicator file ``name`` in ``root``."""

    TYPE: ClassVar[int] = 0x22


@dataclass(frozen=True)
class Ok(Event):
    TYPE: ClassVar[int] = 0x23


@dataclass(frozen=True)
class Fetch(Event):
    """Master → agent: send me ``path`` as a delta against the signature that follows.

    ``level`` is the zstd level of the connection's delta stream: 0 sends this delta
    uncompressed; the first non-zero level of a connection is the one it keeps. Without
    ``refine`` the agent must not ask for finer hashes: a RefineReply would reach it only
    after the master has read every answer queued before this one. ``basis_sizes`` names
    the bases the signature is of, in its order (1 to ``MAX_BASES``; no basis is one empty
    one): the agent refuses a signature of others. With ``content`` the signature is of
    the content the bases hold and the delta is of the file's decompressed content (a gzip
    or bzip2 file the listing gave a recipe for)."""

    TYPE: ClassVar[int] = 0x30
    root: str
    path: str
    level: int = 3
    refine: bool = True
    basis_sizes: tuple[int, ...] = (0,)
    content: bool = False

    def _write(self, writer: Writer) -> None:
        if not 1 <= len(self.basis_sizes) <= MAX_BASES:
            raise LocalProtocolError(f"{len(self.basis_sizes)} bases outside 1..{MAX_BASES}")
        writer.text(self.root, MAX_PATH, "root")
        writer.text(self.path, MAX_PATH, "path")
        writer.u8(len(self.basis_sizes), "basis count")
        for size in self.basis_sizes:
            writer.u64(size, "basis size")
        _write_level(writer, self.level)
        writer.u8(int(self.refine), "refine")
        writer.u8(int(self.content), "content")

    @classmethod
    def _read(cls, reader: Reader) -> Fetch:
        root = reader.text(MAX_PATH, "root")
        path = reader.text(MAX_PATH, "path")
        count = reader.u8("basis count")
        if not 1 <= count <= MAX_BASES:
            raise RemoteProtocolError(f"{count} bases outside 1..{MAX_BASES}")
        sizes = tuple(reader.u64("basis size") for _ in range(count))
        level, refine = _read_level(reader), _read_bool(reader, "refine")
        return cls(root, path, level, refine, sizes, _read_bool(reader, "content"))


@dataclass(frozen=True)
class FetchMany(Event):
    """Master → agent: send me each of ``paths`` (1 to ``MAX_FETCH_MANY``) as a delta
    against no basis. Each is answered in turn as a ``Fetch`` with an empty signature and
    ``refine`` off would be (delta data then DeltaEnd, or an Error): one request instead of
    three messages and a signature for each small new file."""

    TYPE: ClassVar[int] = 0x39
    root: str
    paths: tuple[str, ...]
    level: int = 3

    def _write(self, writer: Writer) -> None:
        if not 1 <= len(self.paths) <= MAX_FETCH_MANY:
            raise LocalProtocolError(f"FetchMany of {len(self.paths)} paths")
        writer.text(self.root, MAX_PATH, "root")
        _write_level(writer, self.level)
        _write_strings(writer, list(self.paths), MAX_PATH, "path")

    @classmethod
    def _read(cls, reader: Reader) -> FetchMany:
        root = reader.text(MAX_PATH, "root")
        level = _read_level(reader)
        paths = _read_strings(reader, MAX_FETCH_MANY, MAX_PATH, "path")
        if not paths:
            raise RemoteProtocolError("FetchMany names no path")
        return cls(root, tuple(paths), level)


@dataclass(frozen=True)
class _Data(Event):
    data: bytes = field(repr=False)

    def _write(self, writer: Writer) -> None:
        writer.raw(self.data)

    @classmethod
    def _read(cls, reader: Reader) -> _Data:
        return cls(reader.rest())


@dataclass(frozen=True)
class SigData(_Data):
    """Master → agent: the next piece of the encoded signature stream."""

    TYPE: ClassVar[int] = 0x31


@dataclass(frozen=True)
class SigEnd(Event):
    TYPE: ClassVar[int] = 0x32


@dataclass(frozen=True)
class Cancel(Event):
    """Master → agent: abandon this fetch before ``SigEnd`` (the basis could not be read)."""

    TYPE: ClassVar[int] = 0x33


@dataclass(frozen=True)
class DeltaData(_Data):
    """Agent → master: the next piece of the encoded delta stream."""

    TYPE: ClassVar[int] = 0x34


@dataclass(frozen=True)
class CompressedDeltaData(Event):
    """Agent → master: a ``DeltaData`` carried as the next piece of the connection's zstd
    stream (see ``stream``). ``Connection`` makes and unpacks these; callers only ever see
    ``DeltaData``."""

    TYPE: ClassVar[int] = 0x36
    raw_len: int
    packed: bytes = field(repr=False)

    def _write(self, writer: Writer) -> None:
        writer.u32(self.raw_len, "raw length")
        writer.raw(self.packed)

    @classmethod
    def _read(cls, reader: Reader) -> CompressedDeltaData:
        return cls(reader.u32("raw length"), reader.rest())


@dataclass(frozen=True)
class DeltaEnd(Event):
    """Agent → master: the delta is complete and the file did not change while read."""

    TYPE: ClassVar[int] = 0x35


@dataclass(frozen=True)
class RefineRequest(Event):
    """Agent → master, before any delta data of a fetch: the weak and strong hashes of
    these basis blocks at the finer ``block_size``. ``ranges`` are (first block, count)."""

    TYPE: ClassVar[int] = 0x37
    block_size: int
    strong_len: int
    ranges: tuple[tuple[int, int], ...]

    @property
    def n_blocks(self) -> int:
        return sum(count for _, count in self.ranges)

    def _write(self, writer: Writer) -> None:
        if self.n_blocks > MAX_REFINE_BLOCKS:
            raise LocalProtocolError(f"refinement of {self.n_blocks} blocks is too large")
        writer.u32(self.block_size, "block size")
        writer.u8(self.strong_len, "strong length")
        writer.u32(len(self.ranges), "range count")
        for first, count in self.ranges:
            writer.u64(first, "first block")
            writer.u32(count, "block count")

    @classmethod
    def _read(cls, reader: Reader) -> RefineRequest:
        block_size = reader.u32("block size")
        if not 1 <= block_size <= MAX_REFINE_BLOCK_SIZE:
            raise RemoteProtocolError(f"refinement block size {block_size} out of range")
        strong_len = reader.u8("strong length")
        if not 1 <= strong_len <= HASH_SIZE:
            raise RemoteProtocolError(f"refinement strong length {strong_len} out of range")
        n = reader.u32("range count")
        if n > MAX_REFINE_BLOCKS:
            raise RemoteProtocolError(f"too many refinement ranges: {n}")
        ranges = []
        total = 0
        for _ in range(n):
            first, count = reader.u64("first block"), reader.u32("block count")
            total += count
            if count == 0 or total > MAX_REFINE_BLOCKS:
                raise RemoteProtocolError("refinement ranges are empty or too large")
            ranges.append((first, count))
        return cls(block_size, strong_len, tuple(ranges))


@dataclass(frozen=True)
class RefineReply(_Data):
    """Master → agent: every requested block's weak hash (u32 LE), then every strong hash,
    in request order; empty when the master declines (the agent keeps the coarse blocks)."""

    TYPE: ClassVar[int] = 0x38


@dataclass(frozen=True)
class ProbeRequest(Event):
    """Master → agent: how are the files under ``root`` compressed? (``check`` asks.)"""

    TYPE: ClassVar[int] = 0x40
    root: str

    def _write(self, writer: Writer) -> None:
        writer.text(self.root, MAX_PATH, "root")

    @classmethod
    def _read(cls, reader: Reader) -> ProbeRequest:
        return cls(reader.text(MAX_PATH, "root"))


@dataclass(frozen=True)
class ProbeReply(Event):
    """Agent → master: how many gzip and bzip2 files a recipe rebuilds, how many another
    compressor wrote (``foreign``: only their plain bytes can be delta'd) and how many are
    corrupt; the paths of the first foreign ones."""

    TYPE: ClassVar[int] = 0x41
    rebuilt: int
    foreign: int
    corrupt: int
    examples: tuple[str, ...] = ()

    def _write(self, writer: Writer) -> None:
        if len(self.examples) > min(MAX_PROBE_EXAMPLES, self.foreign):
            raise LocalProtocolError(f"too many probe examples: {len(self.examples)}")
        writer.u64(self.rebuilt, "rebuilt")
        writer.u64(self.foreign, "foreign")
        writer.u64(self.corrupt, "corrupt")
        writer.u8(len(self.examples), "examples")
        for path in self.examples:
            writer.text(path, MAX_PATH, "example")

    @classmethod
    def _read(cls, reader: Reader) -> ProbeReply:
        rebuilt, foreign, corrupt = (reader.u64(f) for f in ("rebuilt", "foreign", "corrupt"))
        count = reader.u8("examples")
        if count > min(MAX_PROBE_EXAMPLES, foreign):
            raise RemoteProtocolError(f"probe reply: {count} examples of {foreign} files")
        return cls(
            rebuilt, foreign, corrupt, tuple(reader.text(MAX_PATH, "example") for _ in range(count))
        )


EVENT_TYPES: dict[int, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        HelloReply,
        Bye,
        Error,
        ListRequest,
        ListBatch,
        ListEnd,
        IndicatorQuery,
        IndicatorState,
        IndicatorWrite,
        Ok,
        Fetch,
        FetchMany,
        SigData,
        SigEnd,
        Cancel,
        DeltaData,
        DeltaEnd,
        CompressedDeltaData,
        RefineRequest,
        RefineReply,
        ProbeRequest,
        ProbeReply,
    )
}


def decode_event(frame_type: int, payload: bytes) -> Event:
    """Decode one frame's payload; any malformation is a ``RemoteProtocolError``."""
    cls = EVENT_TYPES.get(frame_type)
    if cls is None:
        raise RemoteProtocolError(f"unknown message type 0x{frame_type:02x}")
    reader = Reader(payload, cls.__name__)
    event = cls._read(reader)
    reader.finish()
    return event
