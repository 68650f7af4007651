"""deltastage's own configuration file: TOML read with every problem named, and written back.

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

import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import TypeVar, cast

from deltastage.config import checks, values
from deltastage.config.model import (
    DEFAULT_AGENT_COMMAND,
    IGNORE_FAILURE_MODES,
    PEER_TYPES,
    WEEKDAYS,
    Config,
    IgnoreFailures,
    Options,
    PeerConfig,
    PeerType,
)
from deltastage.config.problems import Problems
from deltastage.config.values import Invalid
from deltastage.errors import ConfigError
from deltastage.models import Gateway

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

    def __init__(self, data: Mapping[str, object], where: str, problems: Problems) -> None:
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
        except Invalid as exc:
            self.bad(name, str(exc))
            return None

    def finish(self) -> None:
        for name in self.data:
            if name in self.known:
                continue
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
        problem = values.name_problem(value)
        if problem:
            table.bad(name, f"must be a plain file name: {problem}")
        else:
            indicators[name] = value
    options = Options(
        starting_day=starting_day.lower() if starting_day else default.starting_day,
        backup_user=table.string("backup_user"),
        backup_group=table.string("backup_group"),
        file_mode=table.parsed("file_mode", values.octal_mode),
        dir_mode=table.parsed("dir_mode", values.octal_mode),
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
        problem = values.peer_name_problem(name)
        if problem:
            table.bad("name", problem)
            name = None
    peer_type = cast("PeerType | None", table.choice("type", PEER_TYPES, None))
    ignore = cast("IgnoreFailures", table.choice("ignore_failures", IGNORE_FAILURE_MODES, "none"))
    connect_timeout = table.number("connect_timeout", 30.0, 0.1, 86400.0)
    idle_timeout = table.number("idle_timeout", 300.0, 0.1, 7 * 86400.0)
    collect_dir: Path | None = None
    if peer_type == "local":
        collect_dir = table.parsed("collect_dir", lambda t: values.local_path(t, base))
        for key in _REMOTE_ONLY_KEYS:
            table.known.add(key)
            if table.has(key):
                table.bad(key, "only valid for remote peers")
    elif peer_type == "remote":
        collect_dir = table.parsed("collect_dir", values.remote_path)
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
        host = table.parsed("host", values.host_name)
        if host is None and not table.has("host") and name is not None:
            try:
                host = values.host_name(name)
            except Invalid as exc:
                table.bad("host", f"missing, and the peer's name is no host name: {exc}")
        user = table.string("user") or options.backup_user
        port = table.integer("port", 22, 1, 65535)
        identity_file = table.parsed("identity_file", lambda t: values.local_path(t, base))
        known_hosts = table.parsed("known_hosts", lambda t: values.local_path(t, base))
        gateway = table.parsed("gateway", values.gateway)
        command = table.raw("agent_command")
        if command is not _MISSING:
            try:
                agent_command = values.agent_command(command)
            except Invalid as exc:
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
    data = checks.read_source(source, "TOML config")
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: TOML syntax error: {exc}") from None
    base = Path(os.path.abspath(source)).parent
    problems = Problems(source)
    root = _Table(document, "", problems)
    options = _toml_options(_sub_table(root, "options", required=False))
    stage = _sub_table(root, "stage", required=True)
    staging_dir: Path | None = None
    if stage is not None:
        staging_dir = stage.parsed("staging_dir", lambda t: values.local_path(t, base))
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
        checks.layout(staging_dir, ((f"{k}.collect_dir", p) for k, p in peers), problems)
    checks.accounts(
        options, "options.backup_user", "options.backup_group", problems, check_accounts
    )
    problems.check()
    assert staging_dir is not None  # a missing one was reported above
    return Config(
        source=source, options=options, staging_dir=staging_dir, peers=tuple(p for _, p in peers)
    )


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
                lines.append(f"gateway = {_toml_string(values.gateway_text(value))}")
            else:
                lines.append(f"{spec.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
