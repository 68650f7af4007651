"""Configuration: deltastage's TOML file, and an importer for Cedar Backup 3's XML.

Both loaders validate the whole file before returning anything: a config is either complete
and valid or a ``ConfigError`` whose one-line message names the file, every offending key
(``peers[2].ignore_failures``, or ``stage/peer[2]/ignore_failures`` in Cedar's XML) and why.

The TOML schema::

    [options]                      # optional; every key has a default
    starting_day = "monday"        # first day of the weekly cycle (ignore_failures, --full)
    backup_user = "backup"         # owner of staged files and dirs when run as root
    backup_group = "backup"
    file_mode = "0640"             # optional; default: keep the source's permission bits
    dir_mode = "0750"              # optional; default: file_mode plus x where r, or keep
    collect_indicator = "cback.collect"
    stage_indicator = "cback.stage"
    jobs = 1                       # peers staged in parallel
    retries = 2                    # extra attempts per peer after a transport failure
    retry_backoff = 5.0            # seconds before the first retry, doubled each time
    compress_level = 3             # zstd level for literals, 0 = off
    link_unchanged = true          # hard-link files equal to yesterday's copy, like --link-dest
    max_files_per_peer = 1000000
    max_bytes_per_peer = 1099511627776
    max_frame_size = 4194304

    [stage]
    staging_dir = "/srv/backup/staging"

    [[peers]]
    name = "db1"                   # also the staging subdirectory's name
    type = "local"                 # "local" | "remote"
    collect_dir = "/srv/backup/collect"
    ignore_failures = "none"       # none | all | daily | weekly
    connect_timeout = 30.0         # seconds
    idle_timeout = 300.0           # seconds without a byte before the peer is given up

    [[peers]]                      # remote peers add SSH settings
    name = "web1"
    type = "remote"
    collect_dir = "/var/backup/collect"   # absolute path on the peer
    host = "web1.example.org"      # default: the peer's name, as in Cedar Backup
    port = 22
    user = "backup"                # default: options.backup_user
    identity_file = "keys/id_ed25519"
    known_hosts = "keys/known_hosts"
    agent_command = "deltastage agent"    # a string (shlex-split) or an array of strings
    gateway = "jump@bastion.example.org:2222"

Relative local paths resolve against the directory of the config file.
"""

from __future__ import annotations

import grp
import math
import os
import posixpath
import pwd
import re
import shlex
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar, cast

from deltastage.errors import ConfigError
from deltastage.models import Gateway

if TYPE_CHECKING:  # imported where used: a stage run reads TOML and starts connecting at once
    import xml.etree.ElementTree as ET

__all__ = [
    "DEFAULT_AGENT_COMMAND",
    "IGNORE_FAILURE_MODES",
    "WEEKDAYS",
    "Config",
    "IgnoreFailures",
    "Options",
    "PeerConfig",
    "PeerType",
    "config_to_toml",
    "failure_ignored",
    "load_cedar_config",
    "load_config",
    "parse_gateway",
    "parse_mode",
]

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

# A config file is a few kilobytes; refusing big ones keeps a mistaken path (a backup
# image, /dev/zero) from being read into memory.
MAX_CONFIG_BYTES = 4 << 20
MAX_NAME_LENGTH = 255
MAX_PROBLEMS_SHOWN = 8


# --- the model --------------------------------------------------------------------------


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

    def effective_dir_mode(self) -> int | None:
        """The mode for staged directories: ``dir_mode``, else ``file_mode`` with x added
        wherever r is set (so 0640 gives 0750), else None (keep the source's bits)."""
        if self.dir_mode is not None:
            return self.dir_mode
        if self.file_mode is None:
            return None
        return self.file_mode | ((self.file_mode & 0o444) >> 2)


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


# --- value parsers shared by both formats -------------------------------------------------


class _Invalid(Exception):
    """A value is unacceptable; the message is the reason, the caller adds the key."""


_MODE_RE = re.compile(r"(?:0o)?([0-7]{3,4})")


def _mode(text: str) -> int:
    match = _MODE_RE.fullmatch(text.strip())
    if match is None:
        raise _Invalid(f'must be an octal permission string like "0640", got {text!r}')
    return int(match.group(1), 8)


def parse_mode(text: str) -> int:
    """Parse an octal permission string ("0640", "640", "0o2750"); ConfigError if bad."""
    try:
        return _mode(text)
    except _Invalid as exc:
        raise ConfigError(str(exc)) from None


def _host(text: str) -> str:
    if not text or any(c.isspace() or not c.isprintable() for c in text) or "/" in text:
        raise _Invalid(f"not a host name: {text!r}")
    if text.startswith("-"):
        # ssh would read a leading dash as an option
        raise _Invalid(f"a host name cannot start with '-': {text!r}")
    return text


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _Invalid(f"must be a port number from 1 to 65535, got {value!r}")
    return value


def _gateway(text: str) -> Gateway:
    user: str | None = None
    rest = text.strip()
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        if not user or any(c.isspace() or not c.isprintable() for c in user):
            raise _Invalid(f'not a gateway "user@host:port": {text!r}')
    port = 22
    port_text: str | None = None
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise _Invalid(f'not a gateway "user@host:port": {text!r}')
        port_text = tail[1:] if tail else None
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host = rest
    if port_text is not None:
        if not port_text.isdigit():
            raise _Invalid(f"gateway port must be a number: {text!r}")
        port = _port(int(port_text))
    return Gateway(host=_host(host), port=port, user=user)


def parse_gateway(text: str) -> Gateway:
    """Parse ``[user@]host[:port]`` (``[v6addr]:port`` for IPv6); ConfigError if bad."""
    try:
        return _gateway(text)
    except _Invalid as exc:
        raise ConfigError(str(exc)) from None


def _gateway_text(gateway: Gateway) -> str:
    user = f"{gateway.user}@" if gateway.user else ""
    host = f"[{gateway.host}]" if ":" in gateway.host else gateway.host
    return f"{user}{host}:{gateway.port}"


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a directory or file name of its own, or None."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"longer than {MAX_NAME_LENGTH} characters"
    if name in (".", ".."):
        return f"{name!r} is not a usable name"
    if "/" in name or "\\" in name:
        return f"must not contain a path separator: {name!r}"
    if any(not c.isprintable() for c in name):
        return f"must not contain control characters: {name!r}"
    return None


def _peer_name_problem(name: str) -> str | None:
    problem = _name_problem(name)
    if problem is None and name.startswith("."):
        return f"must not start with '.' (it names a staging directory): {name!r}"
    if problem is None and name != name.strip():
        return f"must not start or end with blanks: {name!r}"
    return problem


def _path_text_problem(text: str) -> str | None:
    if not text:
        return "must not be empty"
    if "\0" in text:
        return "must not contain a NUL character"
    return None


def _local_path(text: str, base: Path) -> Path:
    problem = _path_text_problem(text)
    if problem:
        raise _Invalid(problem)
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = base / path
    return Path(os.path.normpath(path))


def _remote_path(text: str) -> Path:
    problem = _path_text_problem(text)
    if problem:
        raise _Invalid(problem)
    if not text.startswith("/"):
        raise _Invalid(f"must be an absolute path on the peer, got {text!r}")
    return Path(posixpath.normpath(text))


def _agent_command(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise _Invalid(f"cannot split {value!r}: {exc}") from None
    elif isinstance(value, list) and all(isinstance(w, str) for w in value):
        words = list(cast("list[str]", value))
    else:
        raise _Invalid("must be a string or an array of strings")
    if not words or not words[0]:
        raise _Invalid("must name a program")
    if any("\0" in w for w in words):
        raise _Invalid("must not contain a NUL character")
    return tuple(words)


class _Problems:
    """Every problem found in one file, so a user fixes them all in one round."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, key: str, reason: str) -> None:
        self.items.append(f"{key}: {reason}")

    def check(self) -> None:
        if not self.items:
            return
        shown = self.items[:MAX_PROBLEMS_SHOWN]
        hidden = len(self.items) - len(shown)
        text = "; ".join(shown) + (f"; and {hidden} more" if hidden else "")
        # one line, whatever the file's values contained
        text = text.replace("\r", "\\r").replace("\n", "\\n")
        raise ConfigError(f"{self.source}: {text}")


def _check_accounts(
    options: Options, user_key: str, group_key: str, problems: _Problems, check: bool | None
) -> None:
    # Ownership is only changed when running as root, so only then must the names resolve
    # (Cedar Backup does the same through getUidGid).
    if not (os.geteuid() == 0 if check is None else check):
        return
    if options.backup_user is not None:
        try:
            pwd.getpwnam(options.backup_user)
        except KeyError:
            problems.add(user_key, f"no such user {options.backup_user!r} on this machine")
    if options.backup_group is not None:
        try:
            grp.getgrnam(options.backup_group)
        except KeyError:
            problems.add(group_key, f"no such group {options.backup_group!r} on this machine")


def _check_layout(
    staging_dir: Path, peers: Iterable[tuple[str, PeerConfig]], problems: _Problems
) -> None:
    """A local collect dir inside the staging dir (or the reverse) would stage its own output."""
    for key, peer in peers:
        if peer.type != "local":
            continue
        if peer.collect_dir.is_relative_to(staging_dir):
            problems.add(key, f"collect dir {str(peer.collect_dir)!r} lies inside the staging dir")
        elif staging_dir.is_relative_to(peer.collect_dir):
            problems.add(key, f"the staging dir lies inside collect dir {str(peer.collect_dir)!r}")


def _read_source(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes, not a {what}")
    return data


# --- TOML -------------------------------------------------------------------------------

_MISSING = object()
_T = TypeVar("_T")
_REMOTE_ONLY_KEYS = (
    "host",
    "port",
    "user",
    "identity_file",
    "known_hosts",
    "agent_command",
    "gateway",
)


class _Table:
    """One TOML table being read; keys never asked for are reported as unknown."""

    def __init__(self, data: Mapping[str, object], where: str, problems: _Problems) -> None:
        self.data = data
        self.where = where
        self.problems = problems
        self.known: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def bad(self, name: str, reason: str) -> None:
        self.problems.add(self.key(name), reason)

    def raw(self, name: str) -> object:
        self.known.add(name)
        return self.data.get(name, _MISSING)

    def has(self, name: str) -> bool:
        return name in self.data

    def string(self, name: str, *, required: bool = False) -> str | None:
        value = self.raw(name)
        if value is _MISSING:
            if required:
                self.bad(name, "missing")
            return None
        if not isinstance(value, str):
            self.bad(name, f"must be a string, got {_toml_type(value)}")
            return None
        if not value:
            self.bad(name, "must not be empty")
            return None
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
        value = self.string(name, required=default is None)
        if value is None:
            return default
        if value not in choices:
            self.bad(name, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.bad(name, f"must be an integer, got {_toml_type(value)}")
            return default
        if not low <= value <= high:
            self.bad(name, f"must be from {low} to {high}, got {value}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.bad(name, f"must be true or false, got {_toml_type(value)}")
            return default
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.bad(name, f"must be a number, got {_toml_type(value)}")
            return default
        number = float(value)
        if math.isnan(number) or not low <= number <= high:
            self.bad(name, f"must be from {low:g} to {high:g}, got {value!r}")
            return default
        return number

    def parsed(self, name: str, parse: Callable[[str], _T]) -> _T | None:
        text = self.string(name)
        if text is None:
            return None
        try:
            return parse(text)
        except _Invalid as exc:
            self.bad(name, str(exc))
            return None

    def finish(self) -> None:
        for name in self.data:
            if name in self.known:
                continue
            import difflib

            close = difflib.get_close_matches(name, sorted(self.known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.problems.add(self.key(_toml_key(name)), f"unknown key{hint}")


def _toml_type(value: object) -> str:
    names = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _toml_string(name)


def _sub_table(root: _Table, name: str, required: bool) -> _Table | None:
    value = root.raw(name)
    if value is _MISSING:
        if required:
            root.bad(name, "missing table")
        return None
    if not isinstance(value, dict):
        root.bad(name, f"must be a table, got {_toml_type(value)}")
        return None
    return _Table(cast("dict[str, object]", value), name, root.problems)


def _toml_options(table: _Table | None) -> Options:
    if table is None:
        return Options()
    default = Options()
    starting_day = table.string("starting_day")
    if starting_day is not None and starting_day.lower() not in WEEKDAYS:
        table.bad("starting_day", f"must be a weekday name (monday..sunday), got {starting_day!r}")
        starting_day = None
    indicators: dict[str, str] = {}
    for name in ("collect_indicator", "stage_indicator"):
        value = table.string(name)
        if value is None:
            continue
        problem = _name_problem(value)
        if problem:
            table.bad(name, f"must be a plain file name: {problem}")
        else:
            indicators[name] = value
    options = Options(
        starting_day=starting_day.lower() if starting_day else default.starting_day,
        backup_user=table.string("backup_user"),
        backup_group=table.string("backup_group"),
        file_mode=table.parsed("file_mode", _mode),
        dir_mode=table.parsed("dir_mode", _mode),
        collect_indicator=indicators.get("collect_indicator", default.collect_indicator),
        stage_indicator=indicators.get("stage_indicator", default.stage_indicator),
        jobs=table.integer("jobs", default.jobs, 1, 256),
        retries=table.integer("retries", default.retries, 0, 100),
        retry_backoff=table.number("retry_backoff", default.retry_backoff, 0.0, 3600.0),
        compress_level=table.integer("compress_level", default.compress_level, 0, 22),
        link_unchanged=table.boolean("link_unchanged", default.link_unchanged),
        max_files_per_peer=table.integer(
            "max_files_per_peer", default.max_files_per_peer, 1, 1 << 40
        ),
        max_bytes_per_peer=table.integer(
            "max_bytes_per_peer", default.max_bytes_per_peer, 1, 1 << 62
        ),
        max_frame_size=table.integer(
            "max_frame_size", default.max_frame_size, 1 << 20, 1 << 30
        ),  # honest agents send 256 KiB data frames: a smaller bound would refuse them
    )
    if options.collect_indicator == options.stage_indicator:
        table.bad("stage_indicator", "must differ from collect_indicator")
    table.finish()
    return options


def _toml_peer(table: _Table, options: Options, base: Path) -> PeerConfig | None:
    name = table.string("name", required=True)
    if name is not None:
        problem = _peer_name_problem(name)
        if problem:
            table.bad("name", problem)
            name = None
    peer_type = cast("PeerType | None", table.choice("type", PEER_TYPES, None))
    ignore = cast("IgnoreFailures", table.choice("ignore_failures", IGNORE_FAILURE_MODES, "none"))
    connect_timeout = table.number("connect_timeout", 30.0, 0.1, 86400.0)
    idle_timeout = table.number("idle_timeout", 300.0, 0.1, 7 * 86400.0)
    collect_dir: Path | None = None
    if peer_type == "local":
        collect_dir = table.parsed("collect_dir", lambda t: _local_path(t, base))
        for key in _REMOTE_ONLY_KEYS:
            table.known.add(key)
            if table.has(key):
                table.bad(key, "only valid for remote peers")
    elif peer_type == "remote":
        collect_dir = table.parsed("collect_dir", _remote_path)
    else:
        # with no valid type there is no telling which keys belong; judge them once it is fixed
        table.known.update(("collect_dir", *_REMOTE_ONLY_KEYS))
    if not table.has("collect_dir"):
        table.bad("collect_dir", "missing")
    host: str | None = None
    user: str | None = None
    port = 22
    identity_file: Path | None = None
    known_hosts: Path | None = None
    gateway: Gateway | None = None
    agent_command = DEFAULT_AGENT_COMMAND
    if peer_type == "remote":
        host = table.parsed("host", _host)
        if host is None and not table.has("host") and name is not None:
            try:
                host = _host(name)
            except _Invalid as exc:
                table.bad("host", f"missing, and the peer's name is no host name: {exc}")
        user = table.string("user") or options.backup_user
        port = table.integer("port", 22, 1, 65535)
        identity_file = table.parsed("identity_file", lambda t: _local_path(t, base))
        known_hosts = table.parsed("known_hosts", lambda t: _local_path(t, base))
        gateway = table.parsed("gateway", _gateway)
        command = table.raw("agent_command")
        if command is not _MISSING:
            try:
                agent_command = _agent_command(command)
            except _Invalid as exc:
                table.bad("agent_command", str(exc))
    table.finish()
    if name is None or peer_type is None or collect_dir is None:
        return None
    return PeerConfig(
        name=name,
        type=peer_type,
        collect_dir=collect_dir,
        ignore_failures=ignore,
        connect_timeout=connect_timeout,
        idle_timeout=idle_timeout,
        host=host,
        port=port,
        user=user,
        identity_file=identity_file,
        known_hosts=known_hosts,
        agent_command=agent_command,
        gateway=gateway,
    )


def load_config(path: str | Path, *, check_accounts: bool | None = None) -> Config:
    """Read and validate a deltastage TOML config; ConfigError names every problem.

    ``check_accounts``: verify backup_user/backup_group exist (default: when running as root).
    """
    source = Path(path)
    data = _read_source(source, "TOML config")
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: TOML syntax error: {exc}") from None
    base = Path(os.path.abspath(source)).parent
    problems = _Problems(source)
    root = _Table(document, "", problems)
    options = _toml_options(_sub_table(root, "options", required=False))
    stage = _sub_table(root, "stage", required=True)
    staging_dir: Path | None = None
    if stage is not None:
        staging_dir = stage.parsed("staging_dir", lambda t: _local_path(t, base))
        if not stage.has("staging_dir"):
            stage.bad("staging_dir", "missing")
        stage.finish()
    peers: list[tuple[str, PeerConfig]] = []
    raw_peers = root.raw("peers")
    if raw_peers is _MISSING or raw_peers == []:
        problems.add("peers", "at least one [[peers]] entry is required")
    elif not isinstance(raw_peers, list) or not all(isinstance(p, dict) for p in raw_peers):
        problems.add("peers", "must be an array of tables ([[peers]])")
    else:
        seen: dict[str, str] = {}
        for index, raw in enumerate(cast("list[dict[str, object]]", raw_peers)):
            where = f"peers[{index}]"
            peer = _toml_peer(_Table(raw, where, problems), options, base)
            if peer is None:
                continue
            if peer.name in seen:
                problems.add(
                    f"{where}.name", f"duplicate peer name {peer.name!r} (also {seen[peer.name]})"
                )
                continue
            seen[peer.name] = where
            peers.append((where, peer))
    root.finish()
    if staging_dir is not None:
        _check_layout(staging_dir, ((f"{k}.collect_dir", p) for k, p in peers), problems)
    _check_accounts(
        options, "options.backup_user", "options.backup_group", problems, check_accounts
    )
    problems.check()
    assert staging_dir is not None  # a missing one was reported above
    return Config(
        source=source, options=options, staging_dir=staging_dir, peers=tuple(p for _, p in peers)
    )


# --- TOML output ------------------------------------------------------------------------


def _toml_string(text: str) -> str:
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Path):
        return _toml_string(str(value))
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def config_to_toml(config: Config) -> str:
    """Render ``config`` as TOML that ``load_config`` reads back to an equal Config.

    Paths are written absolute, so the file can live anywhere. Options at their default are
    left out, except the ones an administrator should see.
    """
    lines = ["# deltastage configuration", "", "[options]"]
    default = Options()
    for spec in fields(Options):
        value = getattr(config.options, spec.name)
        shown = spec.name in ("starting_day", "backup_user", "backup_group")
        if value is None or (value == getattr(default, spec.name) and not shown):
            continue
        if spec.name in ("file_mode", "dir_mode"):
            lines.append(f'{spec.name} = "{value:04o}"')
        else:
            lines.append(f"{spec.name} = {_toml_value(value)}")
    lines += ["", "[stage]", f"staging_dir = {_toml_value(config.staging_dir)}"]
    peer_default = PeerConfig(name="", type="local", collect_dir=Path("/"))
    for peer in config.peers:
        lines += ["", "[[peers]]"]
        for spec in fields(PeerConfig):
            value = getattr(peer, spec.name)
            if spec.name in _REMOTE_ONLY_KEYS and not peer.remote:
                continue
            always = spec.name in ("name", "type", "collect_dir", "ignore_failures", "host")
            if value is None or (value == getattr(peer_default, spec.name) and not always):
                continue
            if isinstance(value, Gateway):
                lines.append(f"gateway = {_toml_string(_gateway_text(value))}")
            else:
                lines.append(f"{spec.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


# --- Cedar Backup 3 XML -----------------------------------------------------------------
#
# Element names and rules follow CedarBackup3/config.py (``_parseOptions``,
# ``_parsePeerList``, ``_parseStage``, ``_validatePeerList``) and xmlutil.py (booleans are
# Y/y/N/n, the first element of a name wins, an empty element counts as absent).

_CEDAR_OPTIONS = frozenset(
    {
        "starting_day",
        "working_dir",
        "backup_user",
        "backup_group",
        "rcp_command",
        "rsh_command",
        "cback_command",
        "managed_actions",
        "override",
        "pre_action_hook",
        "post_action_hook",
    }
)
_CEDAR_PEER = frozenset(
    {
        "name",
        "type",
        "collect_dir",
        "ignore_failures",
        "backup_user",
        "rcp_command",
        "rsh_command",
        "cback_command",
        "managed",
        "managed_actions",
    }
)
_CEDAR_STAGE = frozenset({"staging_dir", "peer"})
_CEDAR_SECTIONS = frozenset(
    {
        "reference",
        "extensions",
        "options",
        "peers",
        "collect",
        "stage",
        "store",
        "purge",
    }
)
_FORBIDDEN_XML = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_ACTION_NAME = re.compile(r"[a-z0-9]*")


class _CedarReader:
    def __init__(self, source: Path, problems: _Problems) -> None:
        self.base = Path(os.path.abspath(source)).parent
        self.problems = problems
        self.warnings: list[str] = []

    def unknown(self, element: ET.Element, where: str, known: frozenset[str]) -> None:
        for child in element:
            if child.tag not in known:
                self.warnings.append(
                    f"{where}/{child.tag}: unknown element, ignored (as Cedar Backup does)"
                )

    def text(self, element: ET.Element, tag: str, where: str) -> str | None:
        found = [child for child in element if child.tag == tag]
        if not found:
            return None
        if len(found) > 1:
            self.warnings.append(
                f"{where}/{tag}: appears {len(found)} times; the first is used, as in Cedar Backup"
            )
        text = (found[0].text or "").strip()
        return text or None

    def boolean(self, element: ET.Element, tag: str, where: str) -> bool | None:
        text = self.text(element, tag, where)
        if text is None:
            return None
        if text in ("Y", "y"):
            return True
        if text in ("N", "n"):
            return False
        self.problems.add(f"{where}/{tag}", f"must be Y or N, got {text!r}")
        return None

    def absolute(self, element: ET.Element, tag: str, where: str, required: bool) -> str | None:
        text = self.text(element, tag, where)
        if text is None:
            if required:
                self.problems.add(f"{where}/{tag}", "missing")
            return None
        problem = _path_text_problem(text)
        if problem is None and not text.startswith("/"):
            problem = f"must be an absolute path, got {text!r}"
        if problem:
            self.problems.add(f"{where}/{tag}", problem)
            return None
        return text


@dataclass(frozen=True)
class _CedarOptions:
    options: Options
    rcp_command: str | None
    rsh_command: str | None
    cback_command: str | None
    managed_actions: tuple[str, ...]


@dataclass
class _SshSettings:
    port: int | None = None
    identity: Path | None = None
    gateway: Gateway | None = None
    unmapped: list[str] = field(default_factory=list)


# ssh/scp options that take an argument (ssh(1), scp(1)); others are single-letter flags.
_SSH_ARG_FLAGS = frozenset("BbcDEeFIiJLlmOoPpQRSWw")
_SCP_ARG_FLAGS = frozenset("cDFiJloPSX")
# Flags that change nothing deltastage needs to reproduce: batch mode, quiet, verbose and
# compression (deltastage compresses literals itself); scp's -p and -r are added below.
_HARMLESS_FLAGS = frozenset("BqvC")


def _ssh_settings(command: str, base: Path) -> _SshSettings:
    """What an ssh/scp command line says about reaching the peer: port, key, jump host."""
    words = shlex.split(command)
    settings = _SshSettings()
    if not words:
        return settings
    program = posixpath.basename(words[0])
    is_scp = program.startswith("scp")
    if not (is_scp or program.startswith("ssh")):
        settings.unmapped.append(words[0])
        return settings
    arg_flags = _SCP_ARG_FLAGS if is_scp else _SSH_ARG_FLAGS
    port_flag = "P" if is_scp else "p"
    harmless = _HARMLESS_FLAGS | ({"p", "r"} if is_scp else set())
    args = iter(words[1:])
    for word in args:
        if not word.startswith("-") or word == "-":
            settings.unmapped.append(word)
            continue
        letters = word[1:]
        while letters:
            flag, letters = letters[0], letters[1:]
            if flag not in arg_flags:
                if flag not in harmless:
                    settings.unmapped.append(f"-{flag}")
                continue
            value = letters or next(args, "")
            letters = ""
            _ssh_option(settings, flag, port_flag, value, base)
    return settings


def _ssh_option(settings: _SshSettings, flag: str, port_flag: str, value: str, base: Path) -> None:
    try:
        if flag == port_flag:
            settings.port = _port(int(value)) if value.isdigit() else _port(value)
        elif flag == "i":
            settings.identity = _local_path(value, base)
        elif flag == "J" and "," not in value:
            settings.gateway = _gateway(value)
        elif flag == "o" and "=" in value:
            key, _, option = value.partition("=")
            key = key.strip().lower()
            if key == "port":
                settings.port = _port(int(option) if option.strip().isdigit() else option)
            elif key == "identityfile":
                settings.identity = _local_path(option.strip(), base)
            elif key == "proxyjump" and "," not in option:
                settings.gateway = _gateway(option.strip())
            else:
                settings.unmapped.append(f"-o {value}")
        else:
            settings.unmapped.append(f"-{flag} {value}")
    except _Invalid:
        settings.unmapped.append(f"-{flag} {value}")


def _cedar_options(root: ET.Element, reader: _CedarReader) -> _CedarOptions | None:
    section = next((c for c in root if c.tag == "options"), None)
    if section is None:
        reader.problems.add("options", "missing (Cedar Backup requires an <options> section)")
        return None
    where = "options"
    reader.unknown(section, where, _CEDAR_OPTIONS)
    missing = "missing (Cedar Backup requires it)"
    day = reader.text(section, "starting_day", where)
    if day is None:
        reader.problems.add(f"{where}/starting_day", missing)
    elif day not in WEEKDAYS:
        reader.problems.add(
            f"{where}/starting_day", f"must be a weekday name (monday..sunday), got {day!r}"
        )
        day = None
    reader.absolute(section, "working_dir", where, required=True)
    user = reader.text(section, "backup_user", where)
    group = reader.text(section, "backup_group", where)
    rcp = reader.text(section, "rcp_command", where)
    for tag, value in (("backup_user", user), ("backup_group", group), ("rcp_command", rcp)):
        if value is None:
            reader.problems.add(f"{where}/{tag}", missing)
    rsh = reader.text(section, "rsh_command", where)
    cback = reader.text(section, "cback_command", where)
    actions = _managed_actions(reader, section, where)
    for tag in ("pre_action_hook", "post_action_hook"):
        for index, hook in enumerate((c for c in section if c.tag == tag), 1):
            at = f"{where}/{tag}[{index}]"
            if reader.text(hook, "action", at) == "stage":
                command = reader.text(hook, "command", at)
                reader.warnings.append(
                    f"{at}: the stage hook {command!r} is not run by deltastage; "
                    "run it from the job that calls `deltastage stage`"
                )
    options = Options(starting_day=day or "monday", backup_user=user, backup_group=group)
    return _CedarOptions(options, rcp, rsh, cback, actions)


def _managed_actions(reader: _CedarReader, element: ET.Element, where: str) -> tuple[str, ...]:
    text = reader.text(element, "managed_actions", where)
    if text is None:
        return ()
    actions = tuple(a.strip() for a in text.split(",") if a.strip())
    for action in actions:
        if not _ACTION_NAME.fullmatch(action):
            reader.problems.add(f"{where}/managed_actions", f"not an action name: {action!r}")
    return actions


def _cedar_peers(
    section: ET.Element, where: str, reader: _CedarReader, cedar: _CedarOptions | None
) -> list[tuple[str, PeerConfig]]:
    peers: list[tuple[str, PeerConfig]] = []
    seen: dict[str, str] = {}
    entries = [c for c in section if c.tag == "peer"]
    for index, entry in enumerate(entries, 1):
        at = f"{where}/peer[{index}]"
        peer = _cedar_peer(entry, at, reader, cedar)
        if peer is None:
            continue
        if peer.name in seen:
            reader.problems.add(
                f"{at}/name", f"duplicate peer name {peer.name!r} (also {seen[peer.name]})"
            )
            continue
        seen[peer.name] = at
        peers.append((at, peer))
    return peers


def _cedar_peer(
    entry: ET.Element, at: str, reader: _CedarReader, cedar: _CedarOptions | None
) -> PeerConfig | None:
    reader.unknown(entry, at, _CEDAR_PEER)
    problems = reader.problems
    name = reader.text(entry, "name", at)
    if name is None:
        problems.add(f"{at}/name", "missing")
    elif (problem := _peer_name_problem(name)) is not None:
        problems.add(f"{at}/name", problem)
        name = None
    peer_type = reader.text(entry, "type", at)
    if peer_type not in PEER_TYPES:
        # Cedar Backup silently skips such an entry; a peer that vanishes from the nightly
        # run is worse than a refused config.
        problems.add(f"{at}/type", f"must be local or remote, got {peer_type!r}")
        peer_type = None
    collect_dir = reader.absolute(entry, "collect_dir", at, required=True)
    ignore = reader.text(entry, "ignore_failures", at) or "none"
    if ignore not in IGNORE_FAILURE_MODES:
        problems.add(
            f"{at}/ignore_failures",
            f"must be one of {', '.join(IGNORE_FAILURE_MODES)}, got {ignore!r}",
        )
        ignore = "none"
    if peer_type == "remote":
        return _cedar_remote_peer(
            entry, at, reader, cedar, name, collect_dir, cast("IgnoreFailures", ignore)
        )
    for tag in sorted(_CEDAR_PEER - {"name", "type", "collect_dir", "ignore_failures"}):
        if any(child.tag == tag for child in entry):
            reader.warnings.append(f"{at}/{tag}: ignored for a local peer (as in Cedar Backup)")
    if name is None or peer_type is None or collect_dir is None:
        return None
    return PeerConfig(
        name=name,
        type="local",
        collect_dir=Path(os.path.normpath(collect_dir)),
        ignore_failures=cast("IgnoreFailures", ignore),
    )


def _cedar_remote_peer(
    entry: ET.Element,
    at: str,
    reader: _CedarReader,
    cedar: _CedarOptions | None,
    name: str | None,
    collect_dir: str | None,
    ignore: IgnoreFailures,
) -> PeerConfig | None:
    problems = reader.problems
    user = reader.text(entry, "backup_user", at)
    rcp = reader.text(entry, "rcp_command", at)
    rsh = reader.text(entry, "rsh_command", at)
    cback = reader.text(entry, "cback_command", at)
    managed = reader.boolean(entry, "managed", at)
    actions = _managed_actions(reader, entry, at)
    if cedar is not None:
        user = user or cedar.options.backup_user
        if managed:
            # CedarBackup3/config.py _validatePeerList: a managed peer needs all three
            if rsh is None and cedar.rsh_command is None:
                problems.add(
                    f"{at}/rsh_command", "a managed peer needs an rsh_command (here or in options)"
                )
            if cback is None and cedar.cback_command is None:
                problems.add(
                    f"{at}/cback_command",
                    "a managed peer needs a cback_command (here or in options)",
                )
            if not actions and not cedar.managed_actions:
                problems.add(
                    f"{at}/managed_actions",
                    "a managed peer needs managed_actions (here or in options)",
                )
    label = f"{at} ({name})" if name else at
    if managed:
        reader.warnings.append(
            f"{label}: managed=Y not carried over: deltastage does not run cback3 actions "
            "on peers; keep running them from cron on the peer"
        )
    elif cback is not None:
        reader.warnings.append(f"{at}/cback_command: not used (only managed peers need it)")
    if rcp is not None:
        reader.warnings.append(
            f"{at}/rcp_command: {rcp!r} not used; deltastage runs `deltastage agent` on the "
            "peer over SSH (port, -i key and -J jump host are carried over)"
        )
    ssh = _cedar_ssh(
        at,
        reader,
        rcp or (cedar.rcp_command if cedar else None),
        rsh or (cedar.rsh_command if cedar else None),
    )
    if name is None or collect_dir is None:
        return None
    host = name
    try:
        _host(host)
    except _Invalid as exc:
        problems.add(f"{at}/name", f"a remote peer's name is its host name: {exc}")
        return None
    return PeerConfig(
        name=name,
        type="remote",
        collect_dir=Path(posixpath.normpath(collect_dir)),
        ignore_failures=ignore,
        host=host,
        port=ssh.port or 22,
        user=user,
        identity_file=ssh.identity,
        gateway=ssh.gateway,
    )


def _cedar_ssh(at: str, reader: _CedarReader, rcp: str | None, rsh: str | None) -> _SshSettings:
    """SSH settings from the peer's effective copy and shell commands; the copy command wins
    because it is the one Cedar's stage action actually ran."""
    found: list[tuple[str, _SshSettings]] = []
    for label, command in (("rcp_command", rcp), ("rsh_command", rsh)):
        if command is None:
            continue
        try:
            found.append((label, _ssh_settings(command, reader.base)))
        except ValueError as exc:
            reader.problems.add(f"{at}/{label}", f"cannot split {command!r}: {exc}")
    merged = _SshSettings()
    for label, settings in reversed(found):
        for attr in ("port", "identity", "gateway"):
            new, old = getattr(settings, attr), getattr(merged, attr)
            if new is not None and old is not None and new != old:
                reader.warnings.append(
                    f"{at}: rcp_command and rsh_command disagree on "
                    f"{attr}; the rcp_command's {new} is used"
                )
            if new is not None:
                setattr(merged, attr, new)
        if settings.unmapped:
            reader.warnings.append(
                f"{at}: {label} options with no deltastage equivalent: "
                + " ".join(settings.unmapped)
            )
    return merged


def load_cedar_config(
    path: str | Path, *, check_accounts: bool | None = None
) -> tuple[Config, list[str]]:
    """Read a Cedar Backup 3 XML config (/etc/cback3.conf) into a deltastage Config.

    Returns the config and warnings about settings that have no deltastage equivalent.
    Cedar's own validation rules apply, and a DTD or entity declaration is refused before
    parsing (the stdlib parser would expand entities: billion laughs).
    """
    source = Path(path)
    data = _read_source(source, "Cedar Backup XML config")
    if _FORBIDDEN_XML.search(data):
        raise ConfigError(f"{source}: DTDs and entity declarations are not accepted")
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line, column = exc.position
        reason = str(exc).split(":", 1)[0]
        raise ConfigError(
            f"{source}: XML syntax error: {reason} (line {line}, column {column})"
        ) from None
    except (ValueError, LookupError) as exc:
        raise ConfigError(f"{source}: not a readable XML document: {exc}") from None
    if root.tag != "cb_config":
        raise ConfigError(
            f"{source}: not a Cedar Backup config (root element is "
            f"<{root.tag}>, expected <cb_config>)"
        )
    problems = _Problems(source)
    reader = _CedarReader(source, problems)
    reader.unknown(root, "cb_config", _CEDAR_SECTIONS)
    cedar = _cedar_options(root, reader)
    if cedar is not None:
        if cedar.rcp_command is not None:
            reader.warnings.append(
                f"options/rcp_command: {cedar.rcp_command!r} not used; deltastage runs "
                "`deltastage agent` on each remote peer over SSH"
            )
        if cedar.cback_command is not None or cedar.managed_actions:
            reader.warnings.append(
                "options/cback_command, managed_actions: not used; "
                "deltastage does not run cback3 actions on peers"
            )
    peer_sections = [c for c in root if c.tag == "peers"]
    stage = next((c for c in root if c.tag == "stage"), None)
    from_peers = _cedar_peers(peer_sections[0], "peers", reader, cedar) if peer_sections else []
    staging_dir: str | None = None
    from_stage: list[tuple[str, PeerConfig]] = []
    stage_has_peers = False
    if stage is None:
        problems.add("stage", "missing (deltastage needs <stage><staging_dir>)")
    else:
        reader.unknown(stage, "stage", _CEDAR_STAGE)
        staging_dir = reader.absolute(stage, "staging_dir", "stage", required=True)
        stage_has_peers = any(c.tag == "peer" for c in stage)
        from_stage = _cedar_peers(stage, "stage", reader, cedar)
    # CedarBackup3/actions/stage.py: peers listed in <stage> replace the <peers> section.
    if stage_has_peers:
        if peer_sections:
            reader.warnings.append(
                "stage/peer: the peers listed in <stage> replace the "
                "<peers> section, as in Cedar Backup"
            )
        chosen = from_stage
    else:
        chosen = from_peers
    has_any = stage_has_peers or (
        bool(peer_sections) and any(c.tag == "peer" for c in peer_sections[0])
    )
    if not has_any:
        problems.add("peers", "at least one <peer> is required (in <peers> or <stage>)")
    options = cedar.options if cedar is not None else Options()
    if staging_dir is not None:
        _check_layout(
            Path(os.path.normpath(staging_dir)),
            ((f"{k}/collect_dir", p) for k, p in chosen),
            problems,
        )
    _check_accounts(
        options, "options/backup_user", "options/backup_group", problems, check_accounts
    )
    problems.check()
    assert staging_dir is not None  # a missing one was reported above
    config = Config(
        source=source,
        options=options,
        staging_dir=Path(os.path.normpath(staging_dir)),
        peers=tuple(p for _, p in chosen),
    )
    return config, reader.warnings
