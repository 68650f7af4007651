"""Plain value types shared across layers (no behaviour, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AgentInfo", "Gateway", "RemoteEntry"]


@dataclass(frozen=True)
class Gateway:
    """A bastion host reached first; the peer's SSH port is forwarded through it."""

    host: str
    port: int = 22
    user: str | None = None

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port}"


@dataclass(frozen=True)
class RemoteEntry:
    """One name under an agent root, as the agent reported it (validated by the session)."""

    path: str  # relative, "/"-separated, no "." / ".." / empty components, no NUL
    kind: str  # "file" | "symlink" | "special"  (directories are recursed, never listed)
    size: int
    mtime_ns: int
    mode: int  # permission bits (st_mode & 0o7777)
    xxh3_128: bytes | None  # 16 bytes for regular files, None otherwise


@dataclass(frozen=True)
class AgentInfo:
    """What the agent said about itself in the handshake."""

    version: str
    protocol: int
    roots: tuple[str, ...]
    capabilities: frozenset[str]
