"""The RFC 1952 gzip member header: where it ends, checked field by field.

A recipe keeps each member's header verbatim (name, mtime, comment, extra field, XFL, OS
and the optional header CRC as found), so only its extent and validity matter here.
"""

from __future__ import annotations

import zlib

from deltastage.errors import DeltaFormatError

__all__ = ["GZIP_MAGIC", "MAX_HEADER_SIZE", "gzip_header_length", "level_hint"]

GZIP_MAGIC = b"\x1f\x8b\x08"  # ID1 ID2 and CM=8 (deflate), the only method RFC 1952 defines
# A header longer than this (a 64 KiB extra field plus long name and comment) is refused.
MAX_HEADER_SIZE = 1 << 17
_FIXED = 10
_FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 0x02, 0x04, 0x08, 0x10
_RESERVED = 0xE0
_XFL_MAX, _XFL_FAST = 2, 4


def gzip_header_length(data: bytes) -> int:
    """The length of the valid member header at the start of ``data``.

    Raises ``DeltaFormatError`` when the header is malformed, longer than
    ``MAX_HEADER_SIZE``, incomplete in ``data``, or its FHCRC does not match.
    """
    if len(data) < _FIXED or data[:3] != GZIP_MAGIC:
        raise DeltaFormatError("not a gzip member header")
    flags = data[3]
    if flags & _RESERVED:
        raise DeltaFormatError("gzip header: reserved flag bits set")
    pos = _FIXED
    if flags & _FEXTRA:
        if len(data) < pos + 2:
            raise DeltaFormatError("gzip header: truncated extra field")
        pos += 2 + int.from_bytes(data[pos : pos + 2], "little")
    for flag, what in ((_FNAME, "name"), (_FCOMMENT, "comment")):
        if flags & flag:
            end = data.find(b"\0", pos, MAX_HEADER_SIZE)
            if end < 0:
                raise DeltaFormatError(f"gzip header: unterminated or overlong {what}")
            pos = end + 1
    if flags & _FHCRC:
        if len(data) >= pos + 2 and (
            int.from_bytes(data[pos : pos + 2], "little") != zlib.crc32(data[:pos]) & 0xFFFF
        ):
            raise DeltaFormatError("gzip header: header CRC does not match")
        pos += 2
    if pos > len(data) or pos > MAX_HEADER_SIZE:
        raise DeltaFormatError("gzip header: truncated or too long")
    return pos


def level_hint(header: bytes) -> int | None:
    """The deflate level the XFL byte suggests (zlib and Python's gzip write 2 for level 9
    and 4 for level 1), or None."""
    return {_XFL_MAX: 9, _XFL_FAST: 1}.get(header[8])
