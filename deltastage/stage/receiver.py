"""The receiver: patches each answer into its temp file (runs of zeros left as holes),
handing the written data to the disk as it goes, and has a big file read back
(``readback.EarlyCheck``) while the rest of it still arrives; what it received in full goes
to the committer. The answer to a fetch of content is patched into content that is
recompressed as it comes (``stage.content.RebuildingWriter``): only the rebuilt file is
written, and it must be the listed file (its size and hash), else it is fetched again as its
bytes. (The delta's own hash vouches for the content it carries, not for the rebuild.)"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from deltastage.delta.patch import Patcher
from deltastage.errors import (
    DeltastageError,
    IntegrityError,
    ResourceLimitError,
    SourceChangedError,
    SourceVanishedError,
    TransportError,
)
from deltastage.stage.batchcommit import Pending
from deltastage.stage.content import RebuildingWriter
from deltastage.stage.generator import SMALL_FILE, Transfer
from deltastage.stage.ownership import Ownership
from deltastage.stage.peerdir import Inflight, keep_partial
from deltastage.stage.readback import EarlyCheck
from deltastage.stage.sparse import write_sparse

__all__ = ["EARLY_CHECK_MIN", "WRITEBACK_CHUNK", "Receiver"]

log = logging.getLogger("deltastage.stage")

WRITEBACK_CHUNK = 8 << 20  # patched output handed to the disk as it is written
# A fetched file this big is made durable and re-read from the disk as it is written, a
# chunk behind the writing: its commit then re-reads only the end.
EARLY_CHECK_MIN = 4 * WRITEBACK_CHUNK


class Receiver:
    """Receives one attempt's answers, within the peer's byte budget."""

    def __init__(
        self,
        peer: str,
        peer_fd: int,
        ownership: Ownership,
        checker: ThreadPoolExecutor,
        inflight: Inflight,
        *,
        max_bytes: int,
    ) -> None:
        self._peer = peer
        self._peer_fd = peer_fd
        self._ownership = ownership
        self._checker = checker
        self._inflight = inflight
        self._max_bytes = max_bytes
        self.bytes_written = 0
        self.last_delta_bytes = 0  # of the last answer's delta (before the wire's compression)
        self.rebuild_failures: list[str] = []  # rebuilt files that were not the listed ones

    def receive(self, transfer: Transfer, answer: Iterator[bytes]) -> Pending | None:
        """Patch one answer into its temp file: the file to commit, or None when its job
        is to be tried again (its next plan, or once more after it changed while read)."""
        job, entry = transfer.job, transfer.job.entry
        budget = self._max_bytes - self.bytes_written
        self.last_delta_bytes = 0
        written = flushed = 0
        # a small file's bytes, until they outgrow SMALL_FILE (see ``generator``)
        memory: bytearray | None = bytearray() if transfer.out_fd < 0 else None
        early = (
            EarlyCheck(self._checker, transfer.out_fd) if entry.size >= EARLY_CHECK_MIN else None
        )

        def charge(count: int) -> None:
            nonlocal budget
            budget -= count
            if budget < 0:
                raise ResourceLimitError(
                    f"peer sent more than max_bytes_per_peer={self._max_bytes}"
                )

        def to_file(more: int) -> bool:
            """Whether the bytes go to the temp file (created, with those held so far,
            once ``more`` of them would outgrow memory)."""
            nonlocal memory
            if memory is None:
                return True
            if written + more <= SMALL_FILE:
                return False
            transfer.create_output()
            write_sparse(transfer.out_fd, bytes(memory), 0)
            memory = None
            return True

        def zeros(count: int) -> None:
            """A zero run: charged like written bytes (before the patcher hashes it), and
            left a hole; the next write, or the final size, puts the file's end past it."""
            nonlocal written
            charge(count)
            if not to_file(count):
                assert memory is not None
                memory.extend(bytes(count))
            written += count

        def write(data: bytes) -> None:
            nonlocal written, flushed
            charge(len(data))
            if not to_file(len(data)):
                assert memory is not None
                memory.extend(data)
                written += len(data)
                return
            write_sparse(transfer.out_fd, data, written)
            written += len(data)
            if written - flushed >= WRITEBACK_CHUNK:
                # start writing it to disk now (DONTNEED on dirty pages starts their
                # writeback without waiting): the batch's syncfs then finds little to do
                _start_writeback(transfer.out_fd, flushed, written - flushed)
                assert patcher is not None  # it is what calls write
                digest = patcher.output_digest() if rebuild is None else rebuild.digest()
                # so far a run killed from here on leaves a basis (see Inflight)
                self._inflight.record(job.parts, transfer.tmp, written, digest)
                if early is not None:
                    early.advance(flushed)  # up to this chunk: the one before is on its way
                flushed = written

        rebuild = None if transfer.recipe is None else RebuildingWriter(transfer.recipe, write)
        try:
            patcher: Patcher | None = None
            for chunk in answer:
                if patcher is None:
                    patcher = Patcher(
                        transfer.readers(),
                        write if rebuild is None else rebuild.content,
                        basis_size=transfer.basis_sizes,
                        basis_hash=transfer.basis_hashes or None,
                        zeros=zeros if rebuild is None else rebuild.zeros,
                    )
                patcher.feed(chunk)
                self.last_delta_bytes += len(chunk)
            if patcher is None:
                raise IntegrityError("peer sent an empty delta")
            result = patcher.finish()
            size, digest = result.size, result.xxh3_128
            if rebuild is not None:
                size, digest = rebuild.finish()
                if (size, digest) != (entry.size, entry.xxh3_128):
                    # the delta's hash vouched for the content only: the rebuilt file is
                    # not the listed one (another zlib, or it changed since it was listed)
                    transfer.discard()
                    job.next_plan()
                    self.rebuild_failures.append(entry.path)
                    return None
            self.bytes_written += size
            if memory is None:
                os.ftruncate(transfer.out_fd, size)  # a trailing hole is not written
                self._ownership.give_staged(transfer.out_fd, entry.mode, entry.mtime_ns)
        except IntegrityError as exc:
            transfer.discard()
            if not job.next_plan():
                raise IntegrityError(f"{entry.path}: {exc}") from None
            log.warning("peer=%s %s: %s; retrying without a basis", self._peer, entry.path, exc)
            return None
        except SourceVanishedError:
            transfer.discard()
            raise SourceVanishedError(f"{entry.path}: vanished since it was listed") from None
        except SourceChangedError as exc:
            transfer.discard()
            if not job.changed_retry:
                raise type(exc)(f"{entry.path}: {exc}") from None
            job.changed_retry = False
            log.warning("peer=%s %s changed while read; retrying", self._peer, entry.path)
            return None
        except TransportError:
            if written and memory is None:  # what arrived is a basis for the next attempt
                transfer.close_fds()
                with transfer.directory() as dir_fd:
                    keep_partial(self._peer_fd, dir_fd, transfer.tmp, job.parts)
            else:
                transfer.discard()
            raise
        except OSError as exc:
            transfer.discard()
            raise DeltastageError(f"{entry.path}: {exc.strerror or exc}") from exc
        except BaseException:
            transfer.discard()
            raise
        finally:
            if early is not None and transfer.out_fd < 0:  # discarded or kept as a partial
                early.abandon()
        transfer.close_fds()
        return Pending(
            entry,
            job.parts,
            transfer.tmp,
            size,
            digest,
            early=early,
            data=None if memory is None else bytes(memory),
        )


def _start_writeback(fd: int, offset: int, length: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # advice only
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
