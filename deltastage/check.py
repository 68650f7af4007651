"""Validate a configuration and every peer it names, like Cedar Backup's validate action.

A peer whose agent would refuse the stage indicator (its forced command names other
``--indicator`` names) is unusable, and its report carries the forced command that fixes it.
A peer whose collect dir holds gzip or bzip2 files that zlib or libbzip2 did not write
(GNU gzip, pigz...) stays usable, with a ``hint``: such files cannot be rebuilt from their
content, so only their compressed bytes are delta'd, which saves little.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from deltastage.config import Config
from deltastage.errors import DeltastageError, IndicatorRefused
from deltastage.master.connect import SessionFactory, agent_argv, open_peer_session
from deltastage.models import json_fields
from deltastage.protocol import ProbeReply

__all__ = ["CheckReport", "PeerCheck", "check_config", "compression_hint", "forced_command"]


def forced_command(argv: Sequence[str]) -> str:
    """``argv`` as the ``command="..."`` option of an authorized_keys line."""
    return 'command="{}"'.format(shlex.join(argv).replace('"', '\\"'))


@dataclass
class PeerCheck:
    name: str
    type: str
    usable: bool = False
    agent_version: str | None = None
    collect_indicator: bool | None = None
    stage_indicator: bool | None = None
    agent_indicators: list[str] | None = None  # what the agent writes; []: it is read-only
    wire_bytes: int = 0
    error: str | None = None
    fix: str | None = None  # the forced command that makes an unusable peer usable
    compressed: dict[str, int] | None = None  # gzip/bzip2 files: rebuilt, foreign, corrupt
    hint: str | None = None  # what to change so that its compressed files delta well

    @property
    def state(self) -> str:
        if not self.usable:
            return "unusable"
        if not self.collect_indicator:
            return "not-ready"
        return "already-staged" if self.stage_indicator else "ready"

    def as_json(self) -> dict[str, object]:
        return json_fields(
            self,
            "name",
            "type",
            "usable",
            "state",
            "agent_version",
            "collect_indicator",
            "stage_indicator",
            "agent_indicators",
            "error",
            "fix",
            "compressed",
            "hint",
        )


@dataclass
class CheckReport:
    config: str
    staging_dir: str
    staging_problem: str | None
    peers: list[PeerCheck] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.staging_problem is None and all(p.usable for p in self.peers) else 1

    def as_json(self) -> dict[str, object]:
        # "error" is what stopped a check before its report (see cli.check): none here
        return {
            **json_fields(self, "config", "staging_dir", "staging_problem", "exit_code"),
            "error": None,
            **json_fields(self, "peers"),
        }


def compression_hint(probed: ProbeReply) -> str | None:
    """What to tell the operator of a peer whose compressed files cannot be rebuilt."""
    if not probed.foreign:
        return None
    shown = ", ".join(map(repr, probed.examples))
    more = (
        f" and {probed.foreign - len(probed.examples)} more"
        if probed.foreign > len(probed.examples)
        else ""
    )
    return (
        f"{probed.foreign} compressed file(s) ({shown}{more}) were not written by zlib or "
        "libbzip2 (GNU gzip, pigz...): they cannot be rebuilt from their content, so "
        "only their compressed bytes are delta'd, which saves little; collect them "
        "uncompressed (Cedar: archive_mode tar) or compress with `gzip --rsyncable`"
    )


def _staging_problem(config: Config) -> str | None:
    probe = config.staging_dir
    while not probe.exists():
        probe = probe.parent  # it will be created under the nearest existing ancestor
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def check_config(
    config: Config, session_factory: SessionFactory = open_peer_session
) -> CheckReport:
    report = CheckReport(str(config.source), str(config.staging_dir), _staging_problem(config))
    for peer in config.peers:
        result = PeerCheck(peer.name, peer.type)
        root = str(peer.collect_dir)
        try:
            session = session_factory(peer, config.options)
            try:
                info = session.handshake()
                result.agent_version = info.version
                result.agent_indicators = list(info.indicators)
                result.collect_indicator = session.indicator_exists(
                    root, config.options.collect_indicator
                )
                result.stage_indicator = session.indicator_exists(
                    root, config.options.stage_indicator
                )
                probed = session.probe_compression(root)
                result.compressed = {
                    "rebuilt": probed.rebuilt,
                    "foreign": probed.foreign,
                    "corrupt": probed.corrupt,
                }
                result.hint = compression_hint(probed)
                result.usable = True
                result.wire_bytes = session.wire_bytes
            finally:
                session.close()
        except IndicatorRefused as exc:
            result.error = str(exc)
            result.fix = forced_command(agent_argv(peer, config.options))
        except DeltastageError as exc:
            result.error = str(exc)
        report.peers.append(result)
    return report
