"""A master that speaks raw protocol to a real agent, and the peer tree it is let loose on.

``RawMaster`` sends whatever it is told (no session-side checks) to the real agent in a
thread (``AgentThread``), so the agent's own checks are what a test exercises; raw bytes go
through ``agent.send``. ``plant`` lays out a collect dir holding every kind of thing a
request could meet; ``snapshot`` records a tree so a test can show nothing in it changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import stat
from pathlib import Path

from deltastage.delta.codec import DeltaEncoder
from deltastage.delta.signature import decode_signatures
from deltastage.delta.signature import signature_of as sign
from deltastage.errors import DeltastageError
from deltastage.protocol import (
    CAPABILITIES,
    DEFAULT_INDICATOR,
    EOF,
    NEED_DATA,
    PROTOCOL_VERSION,
    Connection,
    DeltaData,
    Error,
    Event,
    Fetch,
    Hello,
    HelloReply,
    ListBatch,
    ListEnd,
    ListRequest,
    RefineReply,
    RefineRequest,
    Role,
    SigData,
    SigEnd,
    WireEntry,
)
from tests.helpers.transports import AgentThread

__all__ = ["DATA", "SECRET", "RawMaster", "plant", "refine_reply", "snapshot"]

DATA = b"an archive the collect action left for tonight\n" * 100
SECRET = b"outside the collect dir\n"


def refine_reply(request: RefineRequest, basis: bytes) -> bytes:
    """What an honest master answers: the requested fine blocks' weak, then strong hashes."""
    bs = request.block_size
    sigs = [
        sign(basis[first * bs : (first + count) * bs], block_size=bs, strong_len=request.strong_len)
        for first, count in request.ranges
    ]
    return b"".join(s.weak for s in sigs) + b"".join(s.strong for s in sigs)


class RawMaster:
    """A master that speaks raw protocol to an agent thread; no session-side checks."""

    def __init__(
        self,
        roots: list[str],
        encoder: type[DeltaEncoder] = DeltaEncoder,
        *,
        indicators: tuple[str, ...] = (DEFAULT_INDICATOR,),
    ) -> None:
        self.agent = AgentThread(roots, encoder=encoder, indicators=indicators, idle_timeout=20)
        self.conn = Connection(Role.MASTER)
        self.refinements: list[RefineRequest] = []

    def send(self, event: Event) -> None:
        self.agent.send(self.conn.send(event))

    def receive(self) -> Event | None:
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                self.conn.receive_data(self.agent.recv(1 << 16))
            elif event is EOF:
                return None
            else:
                assert isinstance(event, Event)
                return event

    def hello(self, indicators: tuple[str, ...] = ()) -> HelloReply:
        """The handshake, saying the master will write ``indicators``."""
        self.send(Hello(PROTOCOL_VERSION, "test", CAPABILITIES, indicators))
        reply = self.receive()
        assert isinstance(reply, HelloReply)
        return reply

    def fetch(
        self, root: str, path: str, sig: bytes, level: int = 3, basis: bytes | None = None
    ) -> tuple[bytes, Event]:
        """A fetch; a refinement request is answered from ``basis``, or declined. The Fetch
        names the bases ``sig`` is of (when it is a signature at all)."""
        try:
            sizes = tuple(each.basis_size for each in decode_signatures(sig))
        except DeltastageError:
            sizes = (0,)
        self.send(Fetch(root, path, level, basis_sizes=sizes))
        for start in range(0, len(sig), 1000):
            self.send(SigData(sig[start : start + 1000]))
        self.send(SigEnd())
        delta = bytearray()
        while True:
            event = self.receive()
            if isinstance(event, DeltaData):
                delta += event.data
            elif isinstance(event, RefineRequest):
                self.refinements.append(event)
                self.send(RefineReply(refine_reply(event, basis) if basis is not None else b""))
            else:
                assert event is not None
                return bytes(delta), event

    def listing(self, root: str) -> list[WireEntry] | Error:
        self.send(ListRequest(root))
        entries: list[WireEntry] = []
        while True:
            event = self.receive()
            if isinstance(event, ListBatch):
                entries.extend(event.entries)
            elif isinstance(event, ListEnd):
                assert event.count == len(entries)
                return entries
            else:
                assert isinstance(event, Error)
                return event

    def close(self) -> None:
        self.agent.close()
        assert not self.agent.agent_alive


def snapshot(top: Path) -> dict[str, tuple[object, ...]]:
    """Every path beneath ``top`` (and ``top``): its type, mode, mtime, and its bytes (a
    regular file) or target (a symlink). FIFOs and devices are never opened."""
    found: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [".", *dirnames, *filenames]:
            path = Path(dirpath, name)
            st = path.lstat()
            content: object = None
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            rel = os.path.normpath(path.relative_to(top))
            found[rel] = (st.st_mode, st.st_mtime_ns, st.st_size, content)
    return found


def plant(top: Path) -> Path:
    """``top/collect`` with every kind of thing an indicator name could meet (data, links in,
    out and dangling, a directory, a FIFO, a socket, a hard link, a device when root), and
    ``top/outside`` beside it; returns the collect dir."""
    collect = top / "collect"
    outside = top / "outside"
    collect.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    (outside / "cback.stage").write_bytes(b"")  # an indicator, but outside the root
    (collect / "a.txt").write_bytes(DATA)
    (collect / "dump.tar.gz").write_bytes(DATA[::-1])
    (collect / "cback.collect").write_bytes(b"")
    (collect / "sub").mkdir()
    (collect / "sub" / "cback.stage").write_bytes(b"")
    (collect / "link-in").symlink_to("a.txt")
    (collect / "link-out").symlink_to(outside / "secret")
    (collect / "link-out-empty").symlink_to(outside / "cback.stage")
    (collect / "dangling").symlink_to(outside / "nothing-here")
    (collect / "a-dir").mkdir()
    os.mkfifo(collect / "fifo")
    os.link(collect / "a.txt", collect / "hard")
    with socket.socket(socket.AF_UNIX) as sock, contextlib.chdir(collect):
        sock.bind("sock")  # relative: a socket's path must be short
    if os.geteuid() == 0:
        os.mknod(collect / "device", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    return collect
