"""Opening a session with a peer's agent: in-process for a local peer, over SSH otherwise."""

from __future__ import annotations

import getpass
from collections.abc import Callable, Sequence

from deltastage.config import Config, Options, PeerConfig
from deltastage.master.session import PeerSession
from deltastage.transports.base import Transport

__all__ = [
    "SessionFactory",
    "agent_argv",
    "bounded_session",
    "open_peer_session",
    "select_peers",
]

SessionFactory = Callable[[PeerConfig, Options], PeerSession]


def bounded_session(transport: Transport, options: Options) -> PeerSession:
    """A session held to the configured bounds: frame size and listing length."""
    return PeerSession(
        transport,
        max_entries=options.max_files_per_peer,
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
    """Start the peer's agent: in-process for a local peer, over SSH for a remote one."""
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
    """The peers a run stages, in order (``config.peer`` refuses an unknown name)."""
    return [config.peer(name) for name in only_peers] if only_peers else list(config.peers)
