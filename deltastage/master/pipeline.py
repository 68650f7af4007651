"""The window of fetch requests in flight, owned in one place (as borg's ``call_many`` owns its).

Requests go out ahead of the answers still to be read, so a run of small files costs one
round trip, not one each. What may go ahead is bounded twice (``may_go_ahead``):

- the agent reads a request only when it is done with the ones before it (or waits for a
  RefineReply), so requests sent ahead wait in the transport's buffers (``unread_capacity``:
  a pipe holds 64 KiB, sshd 2 MiB); a master blocked sending while the agent is blocked
  sending back would never wake up;
- while the oldest answer may still be refined, its RefineReply would go up the link behind
  them (the agent sets them aside to read it): then only a few KiB may go ahead.

Fetches with no basis (a new file's, ``FetchRequest.plain``) queued one after the other go
out many to a request (``FetchMany``): each still has its own answer, handed out in its turn,
and counts in the window as a request of its own.

Which request the agent may refine is decided here too (``may_refine``): behind unread
answers a refinement stalls the agent until the master has read everything before it, which
is worth it only for a big file's coarse blocks (and the agent asks only when the fine hashes
pay for themselves, see ``delta.refine``).

``Pipeline`` yields the answers in the order of the requests. Once an answer's delta has
started (it can no longer be refined), the requests held back meanwhile go out: whoever reads
the answers never sends a request, and an error is always the failure of the file it is
handed with.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from deltastage.errors import DeltastageError
from deltastage.master.session import PeerSession
from deltastage.protocol import REFINE_MIN_BLOCK

__all__ = [
    "AHEAD_OF_REFINABLE",
    "AHEAD_REQUESTS",
    "REFINE_AHEAD_MIN_BLOCK",
    "FetchRequest",
    "Pipeline",
    "Prepared",
    "may_go_ahead",
    "may_refine",
]

# Requests in flight at most (the answer being read among them).
AHEAD_REQUESTS = 64
# Request bytes that may wait unread by the agent while the oldest answer may be refined.
AHEAD_OF_REFINABLE = 4 << 10
# A request sent behind unread answers may be refined only when its blocks are this big (its
# basis is at least ~4 MiB, a day's dump say): scattered edits then cost a coarse block of
# literal each, far more than the round trip the agent waits.
REFINE_AHEAD_MIN_BLOCK = 2 << 10
# Fetches with no basis (``plain``) queued one after the other go as one FetchMany of up to
# this many files (each counts in the window), once at least FETCH_MANY_MIN slots are free
# (so that the window does not fall apart into requests of one file each).
FETCH_MANY_FILES = 32
FETCH_MANY_MIN = 16


def may_go_ahead(
    waiting: Sequence[int], capacity: int, *, head_refinable: bool, size: int = 0
) -> bool:
    """Whether a request of ``size`` bytes may be sent now.

    ``waiting`` holds the sizes of the requests whose answers are unread, oldest first; the
    agent has taken in the oldest, the others wait in the transport's buffers of
    ``capacity`` bytes. ``head_refinable``: the oldest answer may still be refined.
    """
    behind_head = sum(waiting[1:]) if waiting else 0
    return _may_go_ahead(len(waiting), behind_head, capacity, head_refinable, size)


def _may_go_ahead(
    count: int, behind_head: int, capacity: int, head_refinable: bool, size: int
) -> bool:
    """``may_go_ahead`` from the count of unread answers and the request bytes behind the
    oldest one (what a pipeline keeps as running totals)."""
    if not count:
        return True
    limit = min(capacity, AHEAD_OF_REFINABLE) if head_refinable else capacity
    return count < AHEAD_REQUESTS and behind_head + size < limit


def may_refine(ahead: bool, block_size: int) -> bool:
    """Whether a request sent ``ahead`` of unread answers (or not) may let the agent refine
    a signature of ``block_size``-byte blocks."""
    return not ahead or block_size >= REFINE_AHEAD_MIN_BLOCK


@dataclass(frozen=True)
class FetchRequest:
    """One file's fetch, ready to send: its path and its bases' signature."""

    path: str
    signature: Iterable[bytes]  # the encoded signature, produced as it is sent
    signature_size: int  # bytes of the encoded signature
    block_size: int
    # reads the basis, for refinement (of a fetch with one basis only)
    basis: Callable[[int, int], bytes] | None = None
    basis_sizes: tuple[int, ...] = (0,)  # the bases the signature is of (none: one empty)
    plain: bool = False  # no basis, default strong hashes: it may go in a FetchMany
    content: bool = False  # of the file's decompressed content (``basis``: the basis's)


class Prepared(Protocol):
    """What the caller prepared for one fetch (a basis and a temp file, say)."""

    @property
    def request(self) -> FetchRequest: ...

    def discard(self) -> None:
        """Release it: never sent, or sent and never read."""


J = TypeVar("J")
P = TypeVar("P", bound=Prepared)


class _InFlight(Generic[P]):
    """A request sent (or withdrawn with ``error``), its answer not yet read to its end."""

    def __init__(
        self,
        prepared: P,
        answer: Generator[bytes, None, None] | None,
        *,
        wire_size: int = 0,
        refinable: bool = False,
        error: Exception | None = None,
    ) -> None:
        self.prepared = prepared
        self.answer = answer
        self.wire_size = wire_size
        self.refinable = refinable
        self.error = error
        self.given = False  # handed to the reader: from then on, the reader's to release


class Pipeline(Generic[J, P]):
    """Fetches of queued jobs, sent as far ahead as the window admits; answers in order.

    ``prepare(job)`` readies one job's request, or returns None when the job needs no fetch
    after all. Iterating yields ``(prepared, answer)`` in the order of the requests; an
    answer the reader leaves half read is read to its end (dropped) before the next one.
    A request whose signature fails while it is sent is withdrawn (the session stays
    usable) and its answer raises that error in its turn. A job that cannot be prepared
    ends the pipeline: its error is raised before the next answer is handed out.
    """

    def __init__(
        self,
        session: PeerSession,
        root: str,
        prepare: Callable[[J], P | None],
        *,
        level: int,
    ) -> None:
        self._session = session
        self._root = root
        self._prepare = prepare
        self._level = level
        self._todo: deque[J] = deque()
        self._held: P | None = None  # prepared, waiting for room in the window
        self._in_flight: deque[_InFlight[P]] = deque()
        self._withdrawn = False  # a withdrawn request is in flight: nothing goes behind it
        self._error: Exception | None = None  # a job that could not be prepared
        # running totals of the requests sent whose answers are unread (``_sent``)
        self._sent_count = 0
        self._sent_bytes = 0

    def add(self, job: J) -> None:
        """Queue a job (behind every job queued before it)."""
        self._todo.append(job)

    def start(self, prepared: P) -> None:
        """Send a request prepared by the caller ahead of the queued jobs, window permitting."""
        assert self._held is None
        self._held = prepared
        self.send()

    def send(self) -> None:
        """Send every request the window admits now."""
        self._send()
        self._raise_deferred()

    def __iter__(self) -> Iterator[tuple[P, Iterator[bytes]]]:
        while True:
            self.send()
            if not self._in_flight:
                return
            entry = self._in_flight[0]
            entry.given = True
            answer = self._read(entry)
            yield entry.prepared, answer
            if inspect.getgeneratorstate(answer) == inspect.GEN_CREATED:
                with contextlib.suppress(DeltastageError):  # the reader skipped it:
                    next(answer, None)  # started, closing it drains it
            answer.close()

    def close(self) -> None:
        """Release what was prepared and never sent, and the answers never handed out."""
        held, self._held = self._held, None
        if held is not None:
            held.discard()
        for entry in self._in_flight:
            if not entry.given:
                entry.prepared.discard()
        self._in_flight.clear()
        self._sent_count = self._sent_bytes = 0

    # --- the window ---------------------------------------------------------------------

    def _head(self) -> _InFlight[P] | None:
        """The oldest request sent whose answer is unread. Nothing is ever sent behind a
        withdrawn request, so the sent ones are all before it."""
        head = self._in_flight[0] if self._in_flight else None
        return head if head is not None and head.error is None else None

    def _admits(self, size: int) -> bool:
        head = self._head()
        behind_head = self._sent_bytes - head.wire_size if head is not None else 0
        return _may_go_ahead(
            self._sent_count,
            behind_head,
            self._session.transport.unread_capacity,
            head is not None and head.refinable,
            size,
        )

    def _send(self) -> None:
        while self._held is not None or self._todo:
            if self._withdrawn or self._error is not None or not self._admits(0):
                return
            if self._held is None:
                try:
                    self._held = self._prepare(self._todo.popleft())
                except Exception as exc:
                    self._error = exc
                    return
                continue
            request = self._held.request
            ahead = self._sent_count > 0
            if ahead and not self._admits(request.signature_size):
                return  # its signature is too big to wait unread: once the answers are read
            if request.plain:
                room = AHEAD_REQUESTS - self._sent_count
                if ahead and room < FETCH_MANY_MIN:
                    return  # once more answers are read, with the plain ones after it
                prepared, self._held = self._held, None
                self._request_many(self._gather(prepared, min(room, FETCH_MANY_FILES)))
                continue
            prepared, self._held = self._held, None
            single = len(request.basis_sizes) == 1
            self._request(prepared, single and may_refine(ahead, request.block_size))

    def _gather(self, first: P, most: int) -> list[P]:
        """``first`` and the plain fetches queued right behind it, ``most`` in all; the first
        other one stays held for the next request."""
        batch = [first]
        while len(batch) < most and self._todo and self._held is None:
            try:
                prepared = self._prepare(self._todo.popleft())
            except Exception as exc:
                self._error = exc  # raised once the batch gathered so far is sent
                break
            if prepared is None:
                continue
            if prepared.request.plain:
                batch.append(prepared)
            else:
                self._held = prepared
        return batch

    def _request_many(self, batch: list[P]) -> None:
        before = self._session.sent_bytes
        try:
            answers = self._session.request_fetch_many(
                self._root, [prepared.request.path for prepared in batch], level=self._level
            )
        except Exception as exc:
            self._withdrawn = True
            self._in_flight.extend(_InFlight(prepared, None, error=exc) for prepared in batch)
            return
        wire_size = self._session.sent_bytes - before
        for prepared, answer in zip(batch, answers, strict=True):
            # the request's bytes are the first file's: the agent has read them all once it
            # answers that one
            self._in_flight.append(_InFlight(prepared, answer, wire_size=wire_size))
            self._sent_count += 1
            self._sent_bytes += wire_size
            wire_size = 0

    def _request(self, prepared: P, refine: bool) -> None:
        request = prepared.request
        before = self._session.sent_bytes
        try:
            answer = self._session.request_fetch(
                self._root,
                request.path,
                request.signature,
                level=self._level,
                basis=request.basis,
                refine=refine,
                basis_sizes=request.basis_sizes,
                content=request.content,
            )
        except Exception as exc:
            self._withdrawn = True
            self._in_flight.append(_InFlight(prepared, None, error=exc))
            return
        wire_size = self._session.sent_bytes - before
        self._in_flight.append(
            _InFlight(
                prepared,
                answer,
                wire_size=wire_size,
                refinable=refine and request.block_size >= REFINE_MIN_BLOCK,
            )
        )
        self._sent_count += 1
        self._sent_bytes += wire_size

    def _raise_deferred(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _read(self, entry: _InFlight[P]) -> Generator[bytes, None, None]:
        try:
            if entry.error is not None:
                raise entry.error
            assert entry.answer is not None
            for chunk in entry.answer:
                if entry.refinable:
                    # its delta has started, so it can no longer be refined: requests held
                    # back meanwhile may go now
                    entry.refinable = False
                    self._send()
                yield chunk
        finally:
            if entry.answer is not None:
                entry.answer.close()  # given up half way: read to its end
            if self._in_flight and self._in_flight[0] is entry:
                self._in_flight.popleft()
                if entry.error is None:
                    self._sent_count -= 1
                    self._sent_bytes -= entry.wire_size
            if entry.error is not None:
                self._withdrawn = False
