"""An importer for Cedar Backup 3's XML config (/etc/cback3.conf), the one deltastage replaces.

``load_cedar_config`` maps it to the same Config a TOML file gives, applies Cedar's own
validation rules, and explains in warnings what has no deltastage equivalent.
"""

from __future__ import annotations

import os
import posixpath
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from deltastage.config import checks, values
from deltastage.config.model import (
    IGNORE_FAILURE_MODES,
    PEER_TYPES,
    WEEKDAYS,
    Config,
    IgnoreFailures,
    Options,
    PeerConfig,
)
from deltastage.config.problems import Problems
from deltastage.config.sshargs import SshSettings, ssh_settings
from deltastage.config.values import Invalid
from deltastage.errors import ConfigError

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
    def __init__(self, source: Path, problems: Problems) -> None:
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
        problem = values.path_text_problem(text)
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
    elif (problem := values.peer_name_problem(name)) is not None:
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
        values.host_name(host)
    except Invalid as exc:
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


def _cedar_ssh(at: str, reader: _CedarReader, rcp: str | None, rsh: str | None) -> SshSettings:
    """SSH settings from the peer's effective copy and shell commands; the copy command wins
    because it is the one Cedar's stage action actually ran."""
    found: list[tuple[str, SshSettings]] = []
    for label, command in (("rcp_command", rcp), ("rsh_command", rsh)):
        if command is None:
            continue
        try:
            found.append((label, ssh_settings(command, reader.base)))
        except ValueError as exc:
            reader.problems.add(f"{at}/{label}", f"cannot split {command!r}: {exc}")
    merged = SshSettings()
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
    data = checks.read_source(source, "Cedar Backup XML config")
    if _FORBIDDEN_XML.search(data):
        raise ConfigError(f"{source}: DTDs and entity declarations are not accepted")
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
    problems = Problems(source)
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
        checks.layout(
            Path(os.path.normpath(staging_dir)),
            ((f"{k}/collect_dir", p) for k, p in chosen),
            problems,
        )
    checks.peer_names(options, ((f"{k}/name", p) for k, p in chosen), problems)
    checks.accounts(
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
