"""One error tree for the whole tool; each class knows the exit code it maps to.

    DeltastageError                      exit 1 unless stated
    ├── ConfigError                      exit 2: bad config file, bad option, unknown user/group
    ├── UsageError                       exit 2: a command-line argument that cannot be honoured
    ├── TransportError                   the byte pipe to a peer failed
    │   ├── ConnectError                 could not connect / authenticate / host key refused
    │   ├── ConnectionClosed             the other end went away mid-conversation
    │   └── TransportTimeout             nothing arrived within the idle timeout
    ├── ProtocolError                    a malformed or out-of-order message
    │   ├── LocalProtocolError           we (the local end) would have broken the protocol
    │   └── RemoteProtocolError          the other end broke it, or reported an error message
    │       └── AgentError               the agent answered a request with an error (``code``)
    │           └── IndicatorRefused     the agent would refuse the stage indicator (handshake)
    ├── DeltaFormatError                 a signature, delta stream or recipe is malformed or
    │                                    out of bounds
    ├── IntegrityError                   a hash does not match (basis, output, staged file)
    ├── UnsafePathError                  a peer-supplied name would escape its root
    ├── SourceChangedError               a source file changed while it was read
    │   └── SourceVanishedError          a listed source file is gone
    ├── PeerNotReady                     no collect indicator in the peer's collect dir
    ├── LockError                        another run holds the staging lock
    └── ResourceLimitError               a peer exceeded a configured bound (files, bytes, frame)

Lower-level exceptions (OSError, paramiko, zstandard) are mapped at the boundary with
``raise ... from exc`` so callers only ever catch this tree.
"""

from __future__ import annotations

from deltastage.text import shown

__all__ = [
    "REPORTED",
    "AgentError",
    "ConfigError",
    "ConnectError",
    "ConnectionClosed",
    "DeltaFormatError",
    "DeltastageError",
    "IndicatorRefused",
    "IntegrityError",
    "LocalProtocolError",
    "LockError",
    "PeerNotReady",
    "ProtocolError",
    "RemoteProtocolError",
    "ResourceLimitError",
    "SourceChangedError",
    "SourceVanishedError",
    "TransportError",
    "TransportTimeout",
    "UnsafePathError",
    "UsageError",
    "describe_os_error",
    "exit_status",
]


class DeltastageError(Exception):
    """Base of every error deltastage raises on purpose."""

    exit_code: int = 1


class ConfigError(DeltastageError):
    exit_code = 2


class UsageError(DeltastageError):
    exit_code = 2


class TransportError(DeltastageError):
    pass


class ConnectError(TransportError):
    pass


class ConnectionClosed(TransportError):
    pass


class TransportTimeout(TransportError):
    pass


class ProtocolError(DeltastageError):
    pass


class LocalProtocolError(ProtocolError):
    pass


class RemoteProtocolError(ProtocolError):
    pass


class AgentError(RemoteProtocolError):
    """The agent answered a request with an error (``code`` names which kind)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"agent: {reason}")
        self.code = code


class IndicatorRefused(AgentError):
    """The agent, as the handshake shows, would refuse to write ``names`` (the master's
    stage indicator): it was started with other ``--indicator`` names."""

    def __init__(self, names: tuple[str, ...], writes: tuple[str, ...]) -> None:
        super().__init__(
            "refused",
            f"it writes only the indicators {', '.join(map(repr, writes))}, not "
            f"{', '.join(map(repr, names))} (the stage indicator): its command needs "
            "--indicator for it, or --read-only",
        )
        self.names = names


class DeltaFormatError(DeltastageError):
    pass


class IntegrityError(DeltastageError):
    pass


class UnsafePathError(DeltastageError):
    pass


class SourceChangedError(DeltastageError):
    pass


class SourceVanishedError(SourceChangedError):
    pass


class PeerNotReady(DeltastageError):
    pass


class LockError(DeltastageError):
    pass


class ResourceLimitError(DeltastageError):
    pass


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: the file it concerns (if known) and the system's reason."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


# What a command reports as one line and an exit code; anything else is a bug and keeps its
# traceback.
REPORTED = (DeltastageError, OSError, KeyboardInterrupt)


def exit_status(exc: DeltastageError | OSError | KeyboardInterrupt) -> tuple[str, int]:
    """The message (one line) and exit code a command ends with when ``exc`` stops it."""
    if isinstance(exc, DeltastageError):
        return shown(str(exc)), exc.exit_code
    if isinstance(exc, OSError):
        return shown(describe_os_error(exc)), 1
    return "interrupted", 130
