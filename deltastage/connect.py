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
from typing import TYPE_CHECKING

from deltastage.config import Config, Options, PeerConfig
from deltastage.errors import DeltastageError

if TYPE_CHECKING:
    from deltastage.session import PeerSession
    from deltastage.stageargv import StageArgs
    from deltastage.transports.base import Transport

__all__ = [
    "EarlySessions",
    "SessionFactory",
    "bounded_session",
    "claim_early_sessions",
    "discard_early_sessions",
    "open_early",
    "open_peer_session",
    "select_peers",
]

SessionFactory = Callable[[PeerConfig, Options], "PeerSession"]


def bounded_session(transport: Transport, options: Options) -> PeerSession:
    """A session held to the configured bounds: frame size and listing length."""
    # imported here: an early connect starts before the protocol's ~15 ms of imports
    from deltastage.session import PeerSession

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
    """One peer's session being opened on a background thread, its survey (the handshake,
    the indicator query and the listing request) sent as soon as the agent is started: the
    agent answers while the master is still starting up."""

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
            session.send_survey(str(peer.collect_dir), options.collect_indicator)
            session.flush()
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

    ``take(name)`` returns a peer's session, its survey sent (``PeerSession.survey_sent``), or
    raises what opening it raised (the stager counts that as its first attempt); None when
    that peer was not opened early.
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


# The stage command's early sessions, opened by ``open_early`` before cli.py (and typer) is
# imported, and claimed by the command once it has loaded its config.
_pending: tuple[Config, tuple[str, ...], int, EarlySessions] | None = None


def open_early(args: StageArgs) -> None:
    """Start connecting to the first peers of a stage command right away.

    Importing cli.py and the rest of the master takes ~0.1 s; the SSH key exchange, the
    agent's start on the peer and the handshake overlap it instead of following it. Best
    effort and silent: on a dry run or a config that does not load it does nothing, and the
    command reports what is wrong as usual. The sessions are used only if
    ``claim_early_sessions`` is called with exactly the config, peers and job count seen here.
    """
    global _pending
    if args.dry_run or (args.config is None) == (args.cedar_config is None):
        return
    from deltastage.config import load_cedar_config, load_config

    try:
        if args.config is not None:
            config = load_config(args.config)
        else:
            assert args.cedar_config is not None
            config = load_cedar_config(args.cedar_config)[0]
        count = args.jobs or config.options.jobs
        first = select_peers(config, args.peer)[: max(1, count)]
    except Exception:  # the command itself loads the config again and reports the error
        return
    if any(peer.type == "remote" for peer in first):
        # paramiko is imported here, not on the connecting thread, so that the connect does
        # not wait for the GIL while the rest of the master is imported on this one.
        import deltastage.transports.ssh  # noqa: F401

    _pending = (config, args.peer, count, EarlySessions(config, args.peer, count=count))


def claim_early_sessions(config: Config, only_peers: Sequence[str], count: int) -> EarlySessions:
    """The sessions ``open_early`` opened, if it was asked for the same thing; otherwise
    those are closed and the first peers' sessions are opened now."""
    global _pending
    pending, _pending = _pending, None
    if pending is not None:
        if pending[:3] == (config, tuple(only_peers), count):
            return pending[3]
        pending[3].close()
    return EarlySessions(config, only_peers, count=count)


def discard_early_sessions() -> None:
    """Close the sessions ``open_early`` opened (a dry run uses none)."""
    global _pending
    pending, _pending = _pending, None
    if pending is not None:
        pending[3].close()
