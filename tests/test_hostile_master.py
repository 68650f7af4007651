"""A hostile master against a real agent: the master's key gets no more than staging needs.

The mirror of the hostile-agent suite. Whoever holds the key in a peer's ``authorized_keys``
speaks the protocol to ``deltastage agent`` as it likes; here each attack is such a
transcript of indicator writes, sent to the real agent (``serve`` over a socketpair) on a
collect dir holding data, symlinks (in, out, dangling), a directory, a FIFO, a socket, a
hard link and a device node, with a secret outside it. The whole tmp tree is snapshotted
before and after (type, mode, bytes, mtime, link target): nothing may change. Every write
is answered with an ``Error`` (or ends the conversation), and every refused write is logged.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deltastage.protocol import (
    CAPABILITIES,
    NEED_DATA,
    PROTOCOL_VERSION,
    Bye,
    Connection,
    Error,
    ErrorCode,
    Event,
    Hello,
    HelloReply,
    IndicatorWrite,
    Ok,
    Role,
)
from deltastage.protocol.events import MAX_NAME
from deltastage.protocol.frames import encode_frame
from deltastage.transports.pipe import PipeTransport
from tests.helpers.hostile_master import RawMaster, plant, snapshot

# A root of the agent; the attacks name it by these keys.
ROOTS = {"root": "collect", "parent": ".", "slash": "collect/", "outside": "outside"}


@dataclass
class Attack:
    name: str
    writes: list[tuple[str, str]]  # (a key of ROOTS, or a root as sent; the indicator name)
    code: ErrorCode  # the answer to each write
    reason: str = ""  # a part of each answer's reason
    indicators: tuple[str, ...] = ("cback.stage",)  # the agent's --indicator options
    root_only: bool = False
    hello: tuple[str, ...] = ()  # what the master's Hello says it will write
    logged: bool = True  # a refused write is logged (a malformed frame ends the conversation)
    writes_raw: list[bytes] = field(default_factory=list)


def at(root: str, *names: str) -> list[tuple[str, str]]:
    return [(root, name) for name in names]


REFUSED, UNSAFE, NOT_A_ROOT = ErrorCode.REFUSED, ErrorCode.UNSAFE_PATH, ErrorCode.NOT_A_ROOT

ATTACKS = [
    # names that are no indicator of this agent: data, Cedar's other indicator, look-alikes
    Attack("data-file", at("root", "a.txt", "dump.tar.gz"), REFUSED, "not an indicator"),
    Attack("collect-indicator", at("root", "cback.collect"), REFUSED, "not an indicator"),
    Attack(
        "look-alikes",
        at("root", "CBACK.STAGE", "cback.stage ", " cback.stage", "cback.stage.", "cback\u2024st"),
        REFUSED,
        "not an indicator",
    ),
    Attack("new-name", at("root", "x" * MAX_NAME, "newfile"), REFUSED, "not an indicator"),
    # an indicator name (a mistaken --indicator) over what must never be replaced
    Attack("data-named", at("root", "a.txt"), REFUSED, "file of 4700 bytes", ("a.txt",)),
    Attack("hard-link-to-data", at("root", "hard"), REFUSED, "file of 4700 bytes", ("hard",)),
    Attack("symlink-to-data", at("root", "link-in"), REFUSED, "is a symlink", ("link-in",)),
    Attack("symlink-outside", at("root", "link-out"), REFUSED, "is a symlink", ("link-out",)),
    Attack(
        "symlink-to-an-empty-file",
        at("root", "link-out-empty"),
        REFUSED,
        "is a symlink",
        ("link-out-empty",),
    ),
    Attack("dangling-symlink", at("root", "dangling"), REFUSED, "is a symlink", ("dangling",)),
    Attack("directory", at("root", "a-dir"), REFUSED, "is a directory", ("a-dir",)),
    Attack("fifo", at("root", "fifo"), REFUSED, "is a FIFO", ("fifo",)),
    Attack("socket", at("root", "sock"), REFUSED, "is a socket", ("sock",)),
    Attack("device", at("root", "device"), REFUSED, "is a device", ("device",), root_only=True),
    # names that are not one file name
    Attack(
        "slash",
        at("root", "sub/cback.stage", "../outside/cback.stage", "/tmp/cback.stage", "a-dir/"),
        UNSAFE,
        "may not contain '/'",
    ),
    Attack("dots", at("root", "..", ".", ""), UNSAFE, "not a usable file name"),
    Attack("nul", at("root", "cback.stage\0", "\0"), UNSAFE, "NUL"),
    # the roots: only the exact string the agent was started with
    Attack("parent-root", at("parent", "cback.stage"), NOT_A_ROOT),
    Attack("root-with-a-slash", at("slash", "cback.stage"), NOT_A_ROOT),
    Attack("another-dir", at("outside", "cback.stage"), NOT_A_ROOT),
    Attack("system-dir", at("/etc", "cback.stage"), NOT_A_ROOT),
    # a read-only agent writes nothing, not even where an indicator would be harmless
    Attack(
        "read-only",
        at("root", "cback.stage", "cback.collect", "a.txt", "newfile"),
        REFUSED,
        "read-only",
        (),
    ),
    # a master that says it will write is not refused by a read-only agent: it is told the
    # agent writes nothing (and records its indicator on its own side)
    Attack(
        "read-only-after-saying-so",
        at("root", "cback.stage"),
        REFUSED,
        "read-only",
        indicators=(),
        hello=("cback.stage",),
    ),
    # a name over NAME_MAX is not even decoded: the conversation ends
    Attack(
        "overlong",
        [],
        ErrorCode.PROTOCOL,
        "name too long",
        logged=False,
        writes_raw=[
            encode_frame(
                IndicatorWrite.TYPE,
                IndicatorWrite("collect", "x").encode_payload()[:-5]
                + (MAX_NAME + 1).to_bytes(4, "big")
                + b"x" * (MAX_NAME + 1),
            )
        ],
    ),
]


def test_attack_count() -> None:
    assert len(ATTACKS) == 24


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda attack: attack.name)
def test_every_write_is_refused_and_nothing_changes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    attack: Attack,
) -> None:
    if attack.root_only and os.geteuid() != 0:
        pytest.skip("mknod needs root")
    plant(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    master = RawMaster(["collect"], indicators=attack.indicators)
    caplog.set_level(logging.INFO, "deltastage.agent")
    try:
        master.send(Hello(PROTOCOL_VERSION, "hostile", CAPABILITIES, attack.hello))
        reply = master.receive()
        assert isinstance(reply, HelloReply) and reply.indicators == attack.indicators
        answers: list[Event | None] = []
        for root, name in attack.writes:
            master.send(IndicatorWrite(ROOTS.get(root, root), name))
            answers.append(master.receive())
        for frame in attack.writes_raw:
            master.agent.send(frame)
            answers.append(master.receive())
            assert master.receive() is None  # that was the agent's last word
        assert answers
        for answer in answers:
            assert isinstance(answer, Error) and answer.code is attack.code, answer
            assert attack.reason in answer.reason, answer
    finally:
        master.close()
    assert snapshot(tmp_path) == before
    refusals = [r for r in caplog.records if "refused to write" in r.getMessage()]
    assert len(refusals) == (len(attack.writes) if attack.logged else 0)


def test_a_master_that_says_it_will_write_another_name_is_refused_at_the_handshake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    plant(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    master = RawMaster(["collect"])
    caplog.set_level(logging.INFO, "deltastage.agent")
    try:
        hello = Hello(PROTOCOL_VERSION, "hostile", CAPABILITIES, ("cback.stage", "a.txt"))
        write = IndicatorWrite("collect", "a.txt")  # sent with it, and never acted on
        master.agent.send(
            master.conn.send(hello) + encode_frame(write.TYPE, write.encode_payload())
        )
        reply = master.receive()
        assert isinstance(reply, HelloReply) and reply.indicators == ("cback.stage",)
        answer = master.receive()
        assert isinstance(answer, Error) and answer.code is ErrorCode.PROTOCOL
        assert "writes only the indicators 'cback.stage', not 'a.txt'" in answer.reason
        assert master.receive() is None
    finally:
        master.close()
    assert snapshot(tmp_path) == before
    assert any("refused the handshake" in r.getMessage() for r in caplog.records)


def test_an_honest_write_creates_only_the_empty_indicator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The baseline the attacks are measured against: the one change an agent makes."""
    collect = plant(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    master = RawMaster(["collect"], indicators=("cback.stage", "cback.collect"))
    try:
        master.send(Hello(PROTOCOL_VERSION, "honest", CAPABILITIES, ("cback.stage",)))
        assert isinstance(master.receive(), HelloReply)
        for name in ("cback.stage", "cback.stage", "cback.collect"):
            master.send(IndicatorWrite("collect", name))
            assert master.receive() == Ok()
        master.send(Bye())
    finally:
        master.close()
    after = snapshot(tmp_path)
    assert (collect / "cback.stage").read_bytes() == b""
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert changed == {"collect", "collect/cback.stage"}  # the dir's mtime, and the new file


def test_the_agent_process_logs_each_refusal_on_stderr(tmp_path: Path) -> None:
    collect = plant(tmp_path)
    before = snapshot(tmp_path)
    argv = [sys.executable, "-m", "deltastage", "agent", "--root", str(collect), "--read-only"]
    transport = PipeTransport(argv, idle_timeout=30)
    conn = Connection(Role.MASTER)

    def receive() -> Event:
        while (event := conn.next_event()) is NEED_DATA:
            conn.receive_data(transport.recv(1 << 16))
        assert isinstance(event, Event)
        return event

    try:
        transport.send(conn.send(Hello(PROTOCOL_VERSION, "hostile", CAPABILITIES)))
        reply = receive()
        assert isinstance(reply, HelloReply) and reply.indicators == ()
        for name in ("cback.stage", "a.txt"):
            transport.send(conn.send(IndicatorWrite(str(collect), name)))
            answer = receive()
            assert isinstance(answer, Error) and answer.code is ErrorCode.REFUSED
        logged = transport.stderr_tail()  # written before each answer was sent
        transport.send(conn.send(Bye()))
    finally:
        transport.close()
    assert "refused to write 'cback.stage'" in logged and "refused to write 'a.txt'" in logged
    assert "read-only" in logged and f"{collect}" in logged
    assert snapshot(tmp_path) == before
