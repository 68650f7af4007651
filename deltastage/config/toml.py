"""deltastage's own configuration file: TOML, read with every problem named, and written back.

The file has three tables: ``[options]`` (``Options``), ``[stage]`` (``Config.staging_dir``)
and one ``[[peers]]`` entry per ``PeerConfig``. Which keys each takes, of what kind, with
what default and meaning, is declared on the model's fields (``model``, ``schema``); this
module reads, writes and documents the file from that one description: ``markdown_table``
renders the README's table of keys. Relative local paths resolve against the directory of
the config file.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import MISSING
from pathlib import Path
from typing import Any, cast

import tomli_w

from deltastage.config import checks
from deltastage.config.model import Config, Options, PeerConfig
from deltastage.config.problems import Problems
from deltastage.config.schema import Context, Key, keys_of, toml_type
from deltastage.config.values import Invalid, host_name
from deltastage.errors import ConfigError

_ABSENT = object()


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
        return self.data.get(name, _ABSENT)

    def has(self, name: str) -> bool:
        return name in self.data

    def read(self, name: str, spec: Key, required: bool, context: Context) -> object:
        """The key's value; ``_ABSENT`` when it is not set or was reported as invalid."""
        raw = self.raw(name)
        if raw is _ABSENT:
            if required:
                self.bad(name, "missing")
            return _ABSENT
        try:
            return spec.kind.read(raw, context)
        except Invalid as exc:
            self.bad(name, str(exc))
            return _ABSENT

    def read_all(self, model: type[Any], context: Context) -> dict[str, Any]:
        """Every key of ``model`` that is set and valid, by name."""
        found: dict[str, Any] = {}
        for name, spec, default in keys_of(model):
            value = self.read(name, spec, default is MISSING, context)
            if value is not _ABSENT:
                found[name] = value
        return found

    def finish(self) -> None:
        for name in self.data:
            if name not in self.known:
                self.problems.unknown(self.key(_toml_key(name)), name, self.known)


def _toml_key(name: str) -> str:
    """``name`` as a TOML file spells it: bare, or quoted."""
    return tomli_w.dumps({name: 0}).removesuffix(" = 0\n")


def _sub_table(root: _Table, name: str, required: bool) -> _Table | None:
    value = root.raw(name)
    if value is _ABSENT:
        if required:
            root.bad(name, "missing table")
        return None
    if not isinstance(value, dict):
        root.bad(name, f"must be a table, got {toml_type(value)}")
        return None
    return _Table(cast("dict[str, object]", value), name, root.problems)


def _read_options(table: _Table | None, base: Path) -> Options:
    if table is None:
        return Options()
    options = Options(**table.read_all(Options, Context(base)))
    if options.collect_indicator == options.stage_indicator:
        table.bad("stage_indicator", "must differ from collect_indicator")
    table.finish()
    return options


def _read_peer(table: _Table, options: Options, base: Path) -> PeerConfig | None:
    found: dict[str, Any] = {}
    for name, spec, default in keys_of(PeerConfig):
        peer_type = found.get("type")  # PeerConfig lists it before the keys it decides
        if peer_type is None and (spec.remote_only or name == "collect_dir"):
            # with no valid type there is no telling which keys belong; judge them once it
            # is fixed
            table.known.add(name)
            if default is MISSING and not table.has(name):
                table.bad(name, "missing")
        elif spec.remote_only and peer_type == "local":
            table.known.add(name)
            if table.has(name):
                table.bad(name, "only valid for remote peers")
        else:
            context = Context(base, remote=peer_type == "remote")
            value = table.read(name, spec, default is MISSING, context)
            if value is not _ABSENT:
                found[name] = value
    if found.get("type") == "remote":
        # Cedar Backup's defaults: the peer's name is its host, options.backup_user its user
        if not table.has("host") and "name" in found:
            try:
                found["host"] = host_name(found["name"])
            except Invalid as exc:
                table.bad("host", f"missing, and the peer's name is no host name: {exc}")
        found.setdefault("user", options.backup_user)
    table.finish()
    if not {"name", "type", "collect_dir"} <= found.keys():
        return None
    return PeerConfig(**found)


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
    options = _read_options(_sub_table(root, "options", required=False), base)
    stage = _sub_table(root, "stage", required=True)
    staging_dir: Path | None = None
    if stage is not None:
        staging_dir = stage.read_all(Config, Context(base)).get("staging_dir")
        stage.finish()
    peers: list[tuple[str, PeerConfig]] = []
    raw_peers = root.raw("peers")
    if raw_peers is _ABSENT or raw_peers == []:
        problems.add("peers", "at least one [[peers]] entry is required")
    elif not isinstance(raw_peers, list) or not all(isinstance(p, dict) for p in raw_peers):
        problems.add("peers", "must be an array of tables ([[peers]])")
    else:
        seen: dict[str, str] = {}
        for index, raw in enumerate(cast("list[dict[str, object]]", raw_peers)):
            where = f"peers[{index}]"
            peer = _read_peer(_Table(raw, where, problems), options, base)
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
    checks.peer_names(options, ((f"{k}.name", p) for k, p in peers), problems)
    checks.accounts(
        options, "options.backup_user", "options.backup_group", problems, check_accounts
    )
    problems.check()
    assert staging_dir is not None  # a missing one was reported above
    return Config(
        source=source, options=options, staging_dir=staging_dir, peers=tuple(p for _, p in peers)
    )


def _table(model: object, *, remote: bool = True) -> dict[str, object]:
    """``model``'s keys as a TOML table: those set to other than their default, and those an
    administrator should see."""
    table: dict[str, object] = {}
    for name, spec, default in keys_of(type(model)):
        value = getattr(model, name)
        if value is None or (spec.remote_only and not remote):
            continue
        if value != default or spec.always_written:
            table[name] = spec.kind.write(value)
    return table


def config_to_toml(config: Config) -> str:
    """Render ``config`` as TOML that ``load_config`` reads back to an equal Config.

    Paths are written absolute, so the file can live anywhere. Options at their default are
    left out, except the ones an administrator should see.
    """
    tables = [("[options]", _table(config.options)), ("[stage]", _table(config))]
    tables += [("[[peers]]", _table(peer, remote=peer.remote)) for peer in config.peers]
    # One table at a time: given the whole document, tomli-w would write short peers as an
    # inline array, where an administrator edits one [[peers]] table each.
    return "# deltastage configuration\n" + "".join(
        f"\n{header}\n{tomli_w.dumps(table)}" for header, table in tables
    )


def _table_rows(table: str, model: type[Any]) -> Iterable[str]:
    for name, spec, default in keys_of(model):
        if spec.default_help is not None:
            default_text = spec.default_help
        elif default is MISSING:
            default_text = "required"
        else:
            default_text = f"`{json.dumps(spec.kind.write(default))}`"
        meaning = ("remote peers: " if spec.remote_only else "") + spec.help
        yield f"| `{table}` | `{name}` | {spec.kind.describe()} | {default_text} | {meaning} |"


def markdown_table() -> str:
    """The README's table of every config key: its table, kind of value, default and meaning."""
    rows = [
        "| table | key | value | default | meaning |",
        "| --- | --- | --- | --- | --- |",
        *_table_rows("[options]", Options),
        *_table_rows("[stage]", Config),
        *_table_rows("[[peers]]", PeerConfig),
    ]
    return "\n".join(rows) + "\n"
