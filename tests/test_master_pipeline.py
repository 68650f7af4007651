"""master.pipeline: the window of fetch requests in flight, pure and over a real session."""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deltastage.delta.codec import apply_delta
from deltastage.delta.signature import SignatureBuilder
from deltastage.errors import DeltastageError, IntegrityError
from deltastage.master.pipeline import (
    AHEAD_OF_REFINABLE,
    AHEAD_REQUESTS,
    FETCH_MANY_FILES,
    FETCH_MANY_MIN,
    REFINE_AHEAD_MIN_BLOCK,
    FetchRequest,
    Pipeline,
    may_go_ahead,
    may_refine,
)
from deltastage.master.session import PeerSession
from deltastage.protocol import REFINE_MIN_BLOCK
from deltastage.transports.local import LocalTransport
from tests.helpers.transports import TurnCounter
from tests.test_master_session import empty_signature

CAPACITY = 48 << 10

# --- the window, pure -----------------------------------------------------------------------


def test_nothing_unread_lets_anything_go() -> None:
    assert may_go_ahead([], CAPACITY, head_refinable=True, size=10 * CAPACITY)


def test_what_waits_unread_must_fit_the_transports_buffers() -> None:
    """Requests sent ahead wait unread in the transport's buffers (a pipe's 64 KiB): a big
    one could stall both ends. The oldest request is the agent's already."""
    assert may_go_ahead([50_000], CAPACITY, head_refinable=False, size=1000)
    assert not may_go_ahead([50_000], CAPACITY, head_refinable=False, size=CAPACITY)
    assert may_go_ahead([100, 40_000], CAPACITY, head_refinable=False, size=9000)
    assert not may_go_ahead([100, 40_000], CAPACITY, head_refinable=False, size=9152)
    assert not may_go_ahead([100] * AHEAD_REQUESTS, CAPACITY, head_refinable=False)
    assert may_go_ahead([100] * (AHEAD_REQUESTS - 1), CAPACITY, head_refinable=False)


def test_a_refinable_head_lets_only_a_few_kib_go_ahead() -> None:
    """Its RefineReply would go up the link behind them."""
    assert may_go_ahead([5000], CAPACITY, head_refinable=True, size=100)
    assert not may_go_ahead([5000], CAPACITY, head_refinable=True, size=AHEAD_OF_REFINABLE)
    assert may_go_ahead([5000], CAPACITY, head_refinable=False, size=AHEAD_OF_REFINABLE)
    assert not may_go_ahead([5000, 4000], CAPACITY, head_refinable=True, size=100)


def test_only_the_awaited_fetch_or_a_big_files_coarse_blocks_may_be_refined() -> None:
    assert may_refine(False, REFINE_MIN_BLOCK)
    assert not may_refine(True, REFINE_AHEAD_MIN_BLOCK - 1)
    assert may_refine(True, REFINE_AHEAD_MIN_BLOCK)
    assert may_refine(True, SignatureBuilder(4 << 20).block_size)  # a dump of a few MiB


# --- the pipeline over a scripted session ---------------------------------------------------


@dataclass
class Item:
    """A prepared fetch, as a caller's would be: a request and something to release."""

    request: FetchRequest
    discarded: bool = False

    def discard(self) -> None:
        self.discarded = True


def item(
    path: str,
    *,
    size: int = 10,
    block: int = 512,
    signature: Iterable[bytes] | None = None,
    plain: bool = False,
) -> Item:
    signature = [b"s" * size] if signature is None else signature
    return Item(FetchRequest(path, signature, size, block, plain=plain))


@dataclass
class ScriptedSession:
    """Records each request (path, refine, requests unread before it) and answers with
    ``answers[path]`` (two chunks by default)."""

    capacity: int = CAPACITY
    answers: dict[str, list[bytes]] = field(default_factory=dict)
    requests: list[tuple[str, bool, int]] = field(default_factory=list)
    batches: list[list[str]] = field(default_factory=list)  # the FetchMany requests
    sent_bytes: int = 0
    unread: int = 0

    @property
    def transport(self) -> SimpleNamespace:
        return SimpleNamespace(unread_capacity=self.capacity)

    def request_fetch(
        self, root: str, path: str, signature: Iterable[bytes], **kw: Any
    ) -> Generator[bytes, None, None]:
        data = b"".join(signature)  # a failing signature raises here, as the session's does
        self.sent_bytes += len(data)
        self.requests.append((path, kw["refine"], self.unread))
        self.unread += 1

        def answer() -> Generator[bytes, None, None]:
            try:
                yield from self.answers.get(path, [path.encode(), b"."])
            finally:
                self.unread -= 1

        return answer()

    def request_fetch_many(
        self, root: str, paths: list[str], **kw: Any
    ) -> list[Generator[bytes, None, None]]:
        self.batches.append(list(paths))
        self.sent_bytes += 10 * len(paths)
        return [self.request_fetch(root, path, [], refine=False) for path in paths]


def pipeline(
    session: ScriptedSession, prepare: Callable[[Item], Item | None] = lambda job: job
) -> Pipeline[Item, Item]:
    return Pipeline(session, "/r", prepare, level=3)  # type: ignore[arg-type]


def sent(session: ScriptedSession) -> list[str]:
    return [path for path, _, _ in session.requests]


def test_plain_fetches_in_a_row_go_as_one_request() -> None:
    """Fetches with no basis queued one after the other go as FetchMany requests of up to
    FETCH_MANY_FILES; the next one waits for FETCH_MANY_MIN free slots of the window; any
    other fetch breaks the run and goes on its own."""
    session = ScriptedSession()
    names = [f"p{i}" for i in range(AHEAD_REQUESTS + 10)]
    with closing(pipeline(session)) as pipe:
        for name in names[:3]:
            pipe.add(item(name, plain=True))
        pipe.add(item("basis"))
        for name in names[3:]:
            pipe.add(item(name, plain=True))
        got = [each.request.path for each, answer in pipe if b"".join(answer)]
    assert got == [*names[:3], "basis", *names[3:]]
    sizes = [len(batch) for batch in session.batches]
    assert session.batches[0] == names[:3]
    assert sizes[1:3] == [FETCH_MANY_FILES, AHEAD_REQUESTS - 4 - FETCH_MANY_FILES]
    assert all(FETCH_MANY_MIN <= size <= FETCH_MANY_FILES for size in sizes[3:-1])
    assert sum(sizes) == len(names)


def test_answers_come_in_order_and_small_requests_go_ahead() -> None:
    session = ScriptedSession()
    with closing(pipeline(session)) as pipe:
        for name in "abc":
            pipe.add(item(name))
        got = [(each.request.path, b"".join(answer)) for each, answer in pipe]
    assert got == [("a", b"a."), ("b", b"b."), ("c", b"c.")]
    assert session.requests == [("a", True, 0), ("b", False, 1), ("c", False, 2)]


def test_a_refinable_head_holds_back_a_big_request_until_its_delta_starts() -> None:
    session = ScriptedSession()
    big_block = REFINE_MIN_BLOCK
    with closing(pipeline(session)) as pipe:
        pipe.add(item("head", block=big_block))
        pipe.add(item("small", size=100))
        pipe.add(item("big", size=AHEAD_OF_REFINABLE))
        pipe.add(item("coarse", size=100, block=REFINE_AHEAD_MIN_BLOCK))
        pipe.send()
        assert sent(session) == ["head", "small"]
        answers = iter(pipe)
        _, answer = next(answers)
        assert sent(session) == ["head", "small"]
        assert next(answer) == b"head"
        assert sent(session) == ["head", "small", "big", "coarse"], "sent once it can't refine"
        assert list(answer) == [b"."]
        assert [each.request.path for each, _ in answers] == ["small", "big", "coarse"]
    assert [refine for _, refine, _ in session.requests] == [True, False, False, True]


def test_a_request_without_refine_holds_nothing_back() -> None:
    session = ScriptedSession()
    with closing(pipeline(session)) as pipe:
        pipe.add(item("head", block=REFINE_MIN_BLOCK - 1))  # too fine to be refined
        pipe.add(item("big", size=AHEAD_OF_REFINABLE))
        pipe.send()
        assert sent(session) == ["head", "big"]


def test_a_big_signature_waits_until_the_answers_before_it_are_read() -> None:
    session = ScriptedSession(capacity=1000)
    with closing(pipeline(session)) as pipe:
        pipe.add(item("a", size=2000))  # nothing unread: anything goes
        pipe.add(item("b", size=500))
        pipe.add(item("c", size=600))
        pipe.send()
        assert sent(session) == ["a", "b"], "c would not fit behind b"
        answers = iter(pipe)
        for expected in "abc":
            each, answer = next(answers)
            assert each.request.path == expected
            list(answer)
    assert session.requests[2] == ("c", False, 1), "sent once a was read, behind b"


def test_a_withdrawn_request_fails_in_its_turn_and_nothing_goes_behind_it() -> None:
    def failing() -> Iterator[bytes]:
        yield b"half"
        raise IntegrityError("basis shrank while being signed")

    session = ScriptedSession()
    with closing(pipeline(session)) as pipe:
        for each in (item("a"), item("b", signature=failing()), item("c")):
            pipe.add(each)
        pipe.send()
        assert sent(session) == ["a"]
        answers = iter(pipe)
        _, answer = next(answers)
        assert b"".join(answer) == b"a."
        second, answer = next(answers)
        assert second.request.path == "b"
        with pytest.raises(IntegrityError, match="shrank"):
            next(answer)
        third, answer = next(answers)
        assert (third.request.path, b"".join(answer)) == ("c", b"c.")
        assert next(answers, None) is None


def test_an_answer_skipped_or_left_half_read_is_read_to_its_end() -> None:
    session = ScriptedSession(answers={"a": [b"1", b"2", b"3"], "b": [b"4", b"5"]})
    with closing(pipeline(session)) as pipe:
        for name in "abc":
            pipe.add(item(name))
        answers = iter(pipe)
        next(answers)  # a: skipped
        _, answer = next(answers)
        assert session.unread == 2, "a's answer drained"
        assert next(answer) == b"4"  # b: given up half way
        _, answer = next(answers)
        assert session.unread == 1
        assert b"".join(answer) == b"c."
    assert session.unread == 0


def test_a_job_that_cannot_be_prepared_ends_the_pipeline_after_the_current_answer() -> None:
    def prepare(job: Item) -> Item | None:
        if job.request.path == "bad":
            raise DeltastageError("bad: no such basis")
        return None if job.request.path == "done" else job

    session = ScriptedSession()
    with closing(pipeline(session, prepare)) as pipe:
        pipe.add(item("head", block=REFINE_MIN_BLOCK))
        pipe.add(item("big", size=AHEAD_OF_REFINABLE))  # held while head may be refined
        pipe.add(item("done"))
        pipe.add(item("bad"))
        answers = iter(pipe)
        _, answer = next(answers)
        assert b"".join(answer) == b"head.", "the reader sees only its own file's answer"
        assert sent(session) == ["head", "big"]
        with pytest.raises(DeltastageError, match="no such basis"):
            next(answers)


def test_close_releases_what_was_never_sent_or_handed_out() -> None:
    session = ScriptedSession(capacity=100)
    items = [item("a"), item("b"), item("c", size=200)]
    with closing(pipeline(session)) as pipe:
        for each in items:
            pipe.add(each)
        answers = iter(pipe)
        next(answers)
        assert sent(session) == ["a", "b"]
        assert pipe._held is items[2]
    assert [each.discarded for each in items] == [False, True, True], "a is the reader's"


# --- over a real session ---------------------------------------------------------------------


@dataclass
class Fetch:
    request: FetchRequest

    def discard(self) -> None:
        pass


def fetch(name: str, signature: list[bytes], basis: bytes = b"") -> Fetch:
    builder = SignatureBuilder(len(basis))
    return Fetch(
        FetchRequest(
            name,
            signature,
            sum(map(len, signature)),
            builder.block_size,
            (lambda offset, n: basis[offset : offset + n]) if basis else None,
            (len(basis),),
        )
    )


def test_small_fetches_pipeline_into_a_few_round_trips(tmp_path: Path) -> None:
    files = {f"f{i:02d}": random.Random(i).randbytes(1000 + i) for i in range(40)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    counter = TurnCounter(LocalTransport([str(tmp_path)]))
    assert counter.inner.unread_capacity <= 64 << 10
    session = PeerSession(counter)
    session.handshake()
    before = counter.turns
    got = {}
    with closing(Pipeline[Fetch, Fetch](session, str(tmp_path), lambda j: j, level=3)) as pipe:
        for name in sorted(files):
            pipe.add(fetch(name, empty_signature()))
        for each, answer in pipe:
            got[each.request.path] = apply_delta(b"", b"".join(answer))
    assert got == files
    assert counter.turns - before <= 4, "40 fetches, sent ahead: not one round trip each"
    assert [e.path for e in session.list_files(str(tmp_path))] == sorted(files)
    session.close()


def test_requests_go_ahead_of_a_fetch_that_is_then_refined(tmp_path: Path) -> None:
    """Small requests go ahead; a big one waits until the refinement is over (its
    RefineReply would go up the link behind it)."""
    basis = random.Random(1).randbytes(2 << 20)
    (tmp_path / "big").write_bytes(basis[:1000] + b"edit" + basis[1000:])
    (tmp_path / "other").write_bytes(basis)
    for i in range(3):
        (tmp_path / f"small{i}").write_bytes(b"small %d" % i)
    session = PeerSession(LocalTransport([str(tmp_path)]))
    session.handshake()
    builder = SignatureBuilder(len(basis))
    assert builder.block_size >= REFINE_MIN_BLOCK
    sig = builder.update(basis) + builder.finish()
    assert len(sig) >= AHEAD_OF_REFINABLE
    with closing(Pipeline[Fetch, Fetch](session, str(tmp_path), lambda j: j, level=3)) as pipe:
        pipe.add(fetch("big", [sig], basis))
        for i in range(3):
            pipe.add(fetch(f"small{i}", empty_signature()))
        pipe.add(fetch("other", [sig], basis))
        pipe.send()
        assert session.unread_answers == 4, "the other big one is held back"
        answers = iter(pipe)
        _, answer = next(answers)
        delta = next(answer)
        assert session.unread_answers == 5, "sent once the big one's delta started"
        delta += b"".join(answer)
        assert apply_delta(basis, delta) == basis[:1000] + b"edit" + basis[1000:]
        rest = {each.request.path: b"".join(answer) for each, answer in answers}
    for i in range(3):
        assert apply_delta(b"", rest[f"small{i}"]) == b"small %d" % i
    assert apply_delta(basis, rest["other"]) == basis
    session.close()
