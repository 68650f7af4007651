"""One zstd stream per connection for delta data, cut into self-contained messages.

Compressing each literal on its own throws away what the session already sent: the tar of
a tree repeats the files that follow it, and text files share their vocabulary. Like
rsync's compressed token stream, the agent keeps one compressor for the whole connection
and ends every message with a block flush, so each message decodes completely on arrival
while later messages still refer back to earlier ones (a 16 MiB window).

The master's side is bounded: a message declares its raw length (at most
``MAX_STREAM_RAW``), the decompressor never holds more than one output buffer, refuses
a window larger than ``STREAM_WINDOW_LOG`` allows, and stops as soon as the output
exceeds the declared length, so a small hostile message cannot expand without limit.
"""

from __future__ import annotations

import zstandard

from deltastage.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_STREAM_RAW",
    "STREAM_CHUNK",
    "STREAM_WINDOW_LOG",
    "StreamCompressor",
    "StreamDecompressor",
]

STREAM_WINDOW_LOG = 24
MAX_STREAM_RAW = 1 << 20  # raw bytes one compressed message may declare
STREAM_CHUNK = 256 << 10  # raw bytes a sender puts in one message
_OUT_BUFFER = MAX_STREAM_RAW + (64 << 10)  # one whole message decodes in a single call


class StreamCompressor:
    """The sending half: raw bytes in, one flushed piece of the stream out."""

    def __init__(self, level: int) -> None:
        if not 1 <= level <= 22:
            raise LocalProtocolError(f"stream compression level {level} outside 1..22")
        self.level = level
        params = zstandard.ZstdCompressionParameters.from_level(
            level, window_log=STREAM_WINDOW_LOG, write_checksum=0, write_content_size=0
        )
        self._obj = zstandard.ZstdCompressor(compression_params=params).compressobj()

    def compress(self, data: bytes) -> bytes:
        if not 1 <= len(data) <= MAX_STREAM_RAW:
            raise LocalProtocolError(
                f"stream message of {len(data)} bytes outside 1..{MAX_STREAM_RAW}"
            )
        out: bytes = self._obj.compress(data) + self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        return out


class _BoundedSink:
    """Collects one message's output and refuses anything past its declared length."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.limit = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise _Overflow
        self.parts.append(bytes(data))
        return len(data)


class _Overflow(Exception):
    pass


class StreamDecompressor:
    """The receiving half: one message's compressed bytes and declared length in, raw out.

    Any failure leaves it unusable: the stream's history is then unknown.
    """

    def __init__(self) -> None:
        self._sink = _BoundedSink()
        decompressor = zstandard.ZstdDecompressor(max_window_size=1 << STREAM_WINDOW_LOG)
        # the sink is duck-typed: stream_writer only ever calls its write()
        self._writer = decompressor.stream_writer(
            self._sink,  # type: ignore[arg-type]
            write_size=_OUT_BUFFER,
        )
        self._failed: str | None = None

    def decompress(self, data: bytes, raw_len: int) -> bytes:
        if self._failed is not None:
            raise RemoteProtocolError(f"compressed stream already failed: {self._failed}")
        sink = self._sink
        sink.parts, sink.size, sink.limit = [], 0, raw_len
        try:
            if not 1 <= raw_len <= MAX_STREAM_RAW:
                raise RemoteProtocolError(
                    f"compressed message declares {raw_len} bytes (limit 1..{MAX_STREAM_RAW})"
                )
            if not data:
                raise RemoteProtocolError("compressed message carries no data")
            try:
                self._writer.write(data)
            except _Overflow:
                raise RemoteProtocolError(
                    f"compressed message expands past its declared {raw_len} bytes"
                ) from None
            except zstandard.ZstdError as exc:
                raise RemoteProtocolError(f"corrupt compressed stream: {exc}") from None
            if sink.size != raw_len:
                raise RemoteProtocolError(
                    f"compressed message holds {sink.size} bytes, not the declared {raw_len}"
                )
        except RemoteProtocolError as exc:
            self._failed = str(exc)
            raise
        finally:
            parts, sink.parts = sink.parts, []
        return b"".join(parts)
