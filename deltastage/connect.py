"""Opening a session with a peer's agent, and opening the first ones early.

This module is light on purpose (no numpy, no rich): the stage command imports it right after
reading its config, so that connecting to the first peers, starting their agents and the
handshake (mostly waiting on the network and on the peer) overlap the rest of the master's
start-up instead of following it.
"""

from __future__ import annotations

import contextlib
import getpass
import threading
from collections.abc import Callable, Sequence

from deltastage.config import Config, Options, PeerConfig
from deltastage.errors import DeltastageError
from deltastage.session import PeerSession
from deltastage.transports.base import Transport

__all__ = [
    "EarlySessions",
    "SessionFactory",
    "bounded_session",
    "open_peer_session",
    "select_peers",
]

SessionFactory = Callable[[PeerConfig, Options], PeerSession]


def bounded_session(transport: Transport, options: Options) -> PeerSession:
    """A session held to the configured bounds: frame size and listing length."""
    return PeerSession(
        transport, max_entries=options.max_files_per_peer, max_frame=options.max_frame_size
    )


def open_peer_session(peer: PeerConfig, options: Options) -> PeerSession:
    """Start the peer's agent: in-process for a local peer, over SSH for a remote one."""
    if peer.type == "local":
        from deltastage.transports.local import LocalTransport

        local = LocalTransport([str(peer.collect_dir)], idle_timeout=peer.idle_timeout)
        return bounded_session(local, options)
    from deltastage.transports.ssh import SSHTransport

    transport = SSHTransport(
        host=peer.host or peer.name,
        port=peer.port,
        user=peer.user or options.backup_user or getpass.getuser(),
        command=[*peer.agent_command, "--root", str(peer.collect_dir)],
        identity_file=peer.identity_file,
        known_hosts=peer.known_hosts,
        gateway=peer.gateway,
        connect_timeout=peer.connect_timeout,
        idle_timeout=peer.idle_timeout,
    )
    return bounded_session(transport, options)


def select_peers(config: Config, only_peers: Sequence[str]) -> list[PeerConfig]:
    """The peers a run stages, in order (``config.peer`` refuses an unknown name)."""
    return [config.peer(name) for name in only_peers] if only_peers else list(config.peers)


class _Opening:
    """One peer's session being opened (and handshaken) on a background thread."""

    def __init__(self, peer: PeerConfig, options: Options, factory: SessionFactory) -> None:
        self.session: PeerSession | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._abandoned = False
        self._thread = threading.Thread(
            target=self._open, args=(peer, options, factory), name="connect", daemon=True
        )
        self._thread.start()

    def _open(self, peer: PeerConfig, options: Options, factory: SessionFactory) -> None:
        session = None
        try:
            session = factory(peer, options)
            session.handshake()
        except BaseException as exc:  # handed to the stager, which decides (and retries)
            self.error = exc
            if session is not None:
                with contextlib.suppress(Exception):
                    session.close()
            return
        with self._lock:
            self.session = session
            abandoned = self._abandoned
        if abandoned:
            with contextlib.suppress(Exception):
                session.close()

    def result(self) -> PeerSession:
        self._thread.join()
        if self.error is not None:
            raise self.error
        assert self.session is not None
        return self.session

    def abandon(self) -> None:
        """Close the session once it is open, without waiting for that here."""
        with self._lock:
            self._abandoned = True
            session = self.session
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()


class EarlySessions:
    """The first peers' sessions, opened while the master starts up.

    ``take(name)`` returns a peer's handshaken session, or raises what opening it raised (the
    stager counts that as its first attempt); None when that peer was not opened early.
    ``close()`` closes every session nobody took.
    """

    def __init__(
        self,
        config: Config,
        only_peers: Sequence[str] = (),
        *,
        count: int = 1,
        factory: SessionFactory = open_peer_session,
    ) -> None:
        self._openings: dict[str, _Opening] = {}
        try:
            peers = select_peers(config, only_peers)
        except DeltastageError:
            return  # the stage itself reports the unknown name
        for peer in peers[: max(1, count)]:
            self._openings[peer.name] = _Opening(peer, config.options, factory)

    def take(self, name: str) -> PeerSession | None:
        opening = self._openings.pop(name, None)
        return None if opening is None else opening.result()

    def close(self) -> None:
        openings, self._openings = self._openings, {}
        for opening in openings.values():
            opening.abandon()
