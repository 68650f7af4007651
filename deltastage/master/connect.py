"""Opening a session with a peer's agent (a child process for a local peer, over SSH
otherwise), and opening the first peers' sessions early."""

from __future__ import annotations

import contextlib
import getpass
import threading
from collections.abc import Callable, Sequence

from deltastage.config import Config, Options, PeerConfig
from deltastage.master.session import PeerSession
from deltastage.transports.base import Transport

__all__ = [
    "LISTED_INDICATORS",
    "EarlySessions",
    "SessionFactory",
    "agent_argv",
    "bounded_session",
    "open_peer_session",
    "select_peers",
]

SessionFactory = Callable[[PeerConfig, Options], PeerSession]
# Names in a collect dir that its listing holds besides the files to stage.
LISTED_INDICATORS = 2


def bounded_session(transport: Transport, options: Options) -> PeerSession:
    """A session held to the configured bounds: frame size and listing length (the files,
    and the collect and stage indicators the listing names too: a peer of exactly
    ``max_files_per_peer`` files is listed whole, and its files are counted when selected)."""
    return PeerSession(
        transport,
        max_entries=options.max_files_per_peer + LISTED_INDICATORS,
        max_frame=options.max_frame_size,
        indicators=[options.stage_indicator],
    )


def agent_argv(peer: PeerConfig, options: Options) -> list[str]:
    """The command a remote peer's agent runs: serving the collect dir, writing the stage
    indicator (a forced command in the peer's authorized_keys should say the same)."""
    return [
        *peer.agent_command,
        *("--root", str(peer.collect_dir)),
        *("--indicator", options.stage_indicator),
    ]


def open_peer_session(peer: PeerConfig, options: Options) -> PeerSession:
    """Start the peer's agent: a child process for a local peer, over SSH for a remote one."""
    if peer.type == "local":
        from deltastage.transports.local import LocalTransport

        local = LocalTransport(
            [str(peer.collect_dir)],
            indicators=[options.stage_indicator],
            idle_timeout=peer.idle_timeout,
        )
        return bounded_session(local, options)
    from deltastage.transports.ssh import SSHTransport

    transport = SSHTransport(
        host=peer.host or peer.name,
        port=peer.port,
        user=peer.user or options.backup_user or getpass.getuser(),
        command=agent_argv(peer, options),
        identity_file=peer.identity_file,
        known_hosts=peer.known_hosts,
        gateway=peer.gateway,
        connect_timeout=peer.connect_timeout,
        idle_timeout=peer.idle_timeout,
    )
    return bounded_session(transport, options)


def select_peers(config: Config, only_peers: Sequence[str]) -> list[PeerConfig]:
    """The peers a run stages, in order, each once: a name given twice must not have two
    workers write one peer dir (``config.peer`` refuses an unknown name)."""
    if not only_peers:
        return list(config.peers)
    return [config.peer(name) for name in dict.fromkeys(only_peers)]


class _Opening:
    """One peer's session, being opened on a thread of its own."""

    def __init__(self, peer: PeerConfig, options: Options, factory: SessionFactory) -> None:
        self._lock = threading.Lock()
        self._session: PeerSession | None = None
        self._error: BaseException | None = None
        self._abandoned = False
        self._thread = threading.Thread(
            target=self._open, args=(peer, options, factory), name="connect", daemon=True
        )
        self._thread.start()

    def _open(self, peer: PeerConfig, options: Options, factory: SessionFactory) -> None:
        session = None
        try:
            session = factory(peer, options)
            # the agent lists the collect dir while the master is still starting up
            session.send_survey(
                str(peer.collect_dir),
                options.collect_indicator,
                prove=options.transform_compressed,
            )
            session.flush()
        except BaseException as exc:  # raised to whoever takes the session, as its own
            self._error = exc
            if session is not None:
                with contextlib.suppress(Exception):
                    session.close()
            return
        with self._lock:
            self._session = session
            abandoned = self._abandoned
        if abandoned:
            with contextlib.suppress(Exception):
                session.close()

    def take(self) -> PeerSession:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._session is not None
        return self._session

    def abandon(self) -> None:
        """Close the session once it is open, without waiting for that here."""
        with self._lock:
            self._abandoned = True
            session = self._session
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()


class EarlySessions:
    """The first peers' sessions, opened at once, on threads, while the caller goes on.

    On a WAN, connecting, the SSH handshake and the agent's start take longer than the rest of
    the master's start-up; opened early, they overlap it. Each session sends its survey (the
    handshake, the indicator query, the listing request) as soon as it is open, so the agent
    lists while the master starts. ``session_factory`` hands out each
    early session once, for the peer's first attempt, and opens any other as ``factory`` does;
    an error opening it is raised there, as that attempt's. ``close`` closes what nobody took.
    """

    def __init__(
        self,
        peers: Sequence[PeerConfig],
        options: Options,
        factory: SessionFactory = open_peer_session,
    ) -> None:
        self._factory = factory
        if any(peer.type != "local" for peer in peers):
            # paramiko's imports are taken here, before the threads start: on a connecting
            # thread they would wait for the GIL while the caller imports the rest of the master
            import deltastage.transports.ssh  # noqa: F401
        self._openings = {peer.name: _Opening(peer, options, factory) for peer in peers}

    def session_factory(self, peer: PeerConfig, options: Options) -> PeerSession:
        opening = self._openings.pop(peer.name, None)
        return self._factory(peer, options) if opening is None else opening.take()

    def close(self) -> None:
        openings, self._openings = self._openings, {}
        for opening in openings.values():
            opening.abandon()

    def __enter__(self) -> EarlySessions:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
