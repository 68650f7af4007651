"""The configuration as the rest of deltastage sees it: a Config of Options and PeerConfigs.

Both loaders (``toml``, ``cedar``) build these frozen dataclasses only from validated values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

from deltastage.errors import ConfigError
from deltastage.models import Gateway

WEEKDAYS: tuple[str, ...] = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)
IgnoreFailures = Literal["none", "all", "daily", "weekly"]
IGNORE_FAILURE_MODES: tuple[IgnoreFailures, ...] = ("none", "all", "daily", "weekly")
PeerType = Literal["local", "remote"]
PEER_TYPES: tuple[PeerType, ...] = ("local", "remote")
DEFAULT_AGENT_COMMAND: tuple[str, ...] = ("deltastage", "agent")


@dataclass(frozen=True)
class PeerConfig:
    """One peer whose collect directory is staged into ``<staging_dir>/YYYY/MM/DD/<name>``."""

    name: str
    type: PeerType
    # local: absolute path on this machine; remote: absolute POSIX path on the peer
    collect_dir: Path
    ignore_failures: IgnoreFailures = "none"
    host: str | None = None
    port: int = 22
    user: str | None = None
    identity_file: Path | None = None
    known_hosts: Path | None = None
    agent_command: tuple[str, ...] = DEFAULT_AGENT_COMMAND
    gateway: Gateway | None = None
    connect_timeout: float = 30.0
    idle_timeout: float = 300.0

    @property
    def remote(self) -> bool:
        return self.type == "remote"


@dataclass(frozen=True)
class Options:
    starting_day: str = "monday"
    backup_user: str | None = None
    backup_group: str | None = None
    file_mode: int | None = None
    dir_mode: int | None = None
    collect_indicator: str = "cback.collect"
    stage_indicator: str = "cback.stage"
    jobs: int = 1
    retries: int = 2
    retry_backoff: float = 5.0
    compress_level: int = 3
    link_unchanged: bool = True
    max_files_per_peer: int = 1_000_000
    max_bytes_per_peer: int = 1 << 40
    max_frame_size: int = 4 << 20


@dataclass(frozen=True)
class Config:
    # Where a config came from is provenance, not content: a Cedar file and the TOML it
    # converts to describe the same configuration and should compare equal.
    source: Path = field(compare=False)
    options: Options
    staging_dir: Path
    peers: tuple[PeerConfig, ...]

    def peer(self, name: str) -> PeerConfig:
        for peer in self.peers:
            if peer.name == name:
                return peer
        known = ", ".join(p.name for p in self.peers)
        raise ConfigError(f"{self.source}: no peer named {name!r} (configured: {known})")


def failure_ignored(mode: IgnoreFailures, run_date: date, starting_day: str, full: bool) -> bool:
    """Whether a peer's failure to stage is logged quietly instead of failing the run.

    Cedar Backup 3's rule (CedarBackup3/actions/stage.py, ``_getIgnoreFailuresFlag``):
    "none" never ignores and "all" always does; otherwise, on a full run or on the week's
    starting day the failure is ignored only for mode "weekly", and on any other day only
    for mode "daily". So a "daily" peer must succeed on the weekly run, and a "weekly" peer
    is expected to be absent on the weekly run but must succeed every other day.
    """
    if mode not in IGNORE_FAILURE_MODES:
        raise ConfigError(f"unknown ignore_failures mode {mode!r}")
    if starting_day not in WEEKDAYS:
        raise ConfigError(f"unknown starting day {starting_day!r}")
    if mode == "none":
        return False
    if mode == "all":
        return True
    weekly_run = full or WEEKDAYS[run_date.weekday()] == starting_day
    return mode == ("weekly" if weekly_run else "daily")
