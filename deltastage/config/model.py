"""The configuration as the rest of deltastage sees it: a Config of Options and PeerConfigs.

Both loaders (``toml``, ``cedar``) build these frozen dataclasses only from validated values.
Each field that is a config key says so in its metadata (``schema.key``): its kind of value,
its range or choices and its help, next to its name and default; the TOML reader and writer
and the README's table of keys all follow that one description.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

from deltastage.config.schema import (
    Boolean,
    Choice,
    CollectDir,
    Command,
    FileName,
    GatewayAddress,
    Host,
    Integer,
    LocalPath,
    Mode,
    Number,
    PeerName,
    Text,
    key,
)
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
    """One ``[[peers]]`` entry: a collect dir staged into ``<staging_dir>/YYYY/MM/DD/<name>``."""

    name: str = field(metadata=key(PeerName(), "also the name of its staging subdir"))
    type: PeerType = field(metadata=key(Choice(PEER_TYPES), "where its collect dir is"))
    collect_dir: Path = field(metadata=key(CollectDir(), "the dir to stage"))
    ignore_failures: IgnoreFailures = field(
        default="none",
        metadata=key(
            Choice(IGNORE_FAILURE_MODES),
            "when a failure to stage it leaves the run's exit status alone (Cedar's rule, below)",
            always_written=True,
        ),
    )
    host: str | None = field(
        default=None,
        metadata=key(
            Host(),
            "SSH server to connect to",
            default_help="the peer's name",
            always_written=True,
            remote_only=True,
        ),
    )
    port: int = field(default=22, metadata=key(Integer(1, 65535), "SSH port", remote_only=True))
    user: str | None = field(
        default=None,
        metadata=key(
            Text("user name"),
            "SSH user",
            default_help="`options.backup_user`, else the local user",
            remote_only=True,
        ),
    )
    identity_file: Path | None = field(
        default=None,
        metadata=key(
            LocalPath(),
            "private key for SSH; a passphrase-protected one must be in ssh-agent instead",
            default_help="ssh-agent's keys, then `~/.ssh/id_*`",
            remote_only=True,
        ),
    )
    known_hosts: Path | None = field(
        default=None,
        metadata=key(
            LocalPath(),
            "the peer's host key must be in it: unknown or changed keys are refused",
            default_help="`~/.ssh/known_hosts`",
            remote_only=True,
        ),
    )
    agent_command: tuple[str, ...] = field(
        default=DEFAULT_AGENT_COMMAND,
        metadata=key(
            Command(),
            "run on the peer over SSH, with `--root COLLECT_DIR --indicator STAGE_INDICATOR` added",
            remote_only=True,
        ),
    )
    gateway: Gateway | None = field(
        default=None,
        metadata=key(
            GatewayAddress(),
            "reach the peer through this SSH jump host",
            default_help="none",
            remote_only=True,
        ),
    )
    connect_timeout: float = field(
        default=30.0, metadata=key(Number(0.1, 86400.0), "seconds to connect and log in")
    )
    idle_timeout: float = field(
        default=300.0,
        metadata=key(
            Number(0.1, 7 * 86400.0), "seconds without a byte before the peer is given up"
        ),
    )

    @property
    def remote(self) -> bool:
        return self.type == "remote"


@dataclass(frozen=True)
class Options:
    """The ``[options]`` table: settings for the whole run."""

    starting_day: str = field(
        default="monday",
        metadata=key(
            Choice(WEEKDAYS, ignore_case=True, what="a weekday name (monday..sunday)"),
            "first day of the weekly cycle (`ignore_failures`, `--full`)",
            always_written=True,
        ),
    )
    backup_user: str | None = field(
        default=None,
        metadata=key(
            Text("user name"),
            "owner of staged files and dirs when run as root; remote peers' default `user`",
            default_help="none",
            always_written=True,
        ),
    )
    backup_group: str | None = field(
        default=None,
        metadata=key(
            Text("group name"),
            "group of staged files and dirs when run as root",
            default_help="none",
            always_written=True,
        ),
    )
    file_mode: int | None = field(
        default=None,
        metadata=key(
            Mode(),
            "permissions of staged files (setuid and setgid are always dropped)",
            default_help="the source file's",
        ),
    )
    dir_mode: int | None = field(
        default=None,
        metadata=key(
            Mode(),
            "permissions of staged dirs",
            default_help="`file_mode` with x where r is set and rwx for the owner, else `0755`",
        ),
    )
    collect_indicator: str = field(
        default="cback.collect",
        metadata=key(FileName(), "a peer is staged only once its collect dir holds this file"),
    )
    stage_indicator: str = field(
        default="cback.stage",
        metadata=key(
            FileName(), "written into the daily dir and each staged collect dir when done"
        ),
    )
    jobs: int = field(default=1, metadata=key(Integer(1, 256), "peers staged at once (`--jobs`)"))
    retries: int = field(
        default=2,
        metadata=key(Integer(0, 100), "extra attempts per peer after a connection failure"),
    )
    retry_backoff: float = field(
        default=5.0,
        metadata=key(Number(0.0, 3600.0), "seconds before the first retry, doubled each time"),
    )
    compress_level: int = field(
        default=3, metadata=key(Integer(0, 22), "zstd level for literals on the wire, 0 = off")
    )
    link_unchanged: bool = field(
        default=True,
        metadata=key(
            Boolean(),
            "hard-link files identical to the previous day's copy (content, mtime, mode, "
            "owner), like rsync `--link-dest`; `false` = copy",
        ),
    )
    basis_days: int = field(
        default=14,
        metadata=key(
            Integer(1, 3660),
            "a file's bases are searched for in the peer's daily dirs of this many days "
            "back (the most recent earlier one always)",
        ),
    )
    transform_compressed: bool = field(
        default=True,
        metadata=key(
            Boolean(),
            "a gzip or bzip2 file the peer proves a recipe for moves as the delta of its "
            "content and is rebuilt bit for bit; `false` = as its compressed bytes (and the "
            "peer is not asked to prove recipes)",
        ),
    )
    transform_max_ratio: int = field(
        default=256,
        metadata=key(
            Integer(1, 1 << 20),
            "a compressed file whose content is declared more than this many times its "
            "size moves as its compressed bytes",
        ),
    )
    transform_temp_bytes: int = field(
        default=16 << 30,
        metadata=key(
            Integer(0, 1 << 62),
            "decompressed bases (of compressed files) held at once per peer, in bytes, in "
            "unnamed temp files in its staging dir; a file needing more moves as its "
            "compressed bytes",
        ),
    )
    max_files_per_peer: int = field(
        default=1_000_000,
        metadata=key(Integer(1, 1 << 40), "a peer listing more files fails"),
    )
    max_bytes_per_peer: int = field(
        default=1 << 40,
        metadata=key(Integer(1, 1 << 62), "a peer listing or sending more bytes fails"),
    )
    max_frame_size: int = field(
        default=4 << 20,
        # honest agents send 256 KiB data frames: a smaller bound would refuse them
        metadata=key(Integer(1 << 20, 1 << 30), "largest protocol frame accepted, in bytes"),
    )


@dataclass(frozen=True)
class Config:
    # Where a config came from is provenance, not content: a Cedar file and the TOML it
    # converts to describe the same configuration and should compare equal.
    source: Path = field(compare=False)
    options: Options
    staging_dir: Path = field(
        metadata=key(LocalPath(), "where the daily dirs go: `YYYY/MM/DD/<peer name>`")
    )
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
