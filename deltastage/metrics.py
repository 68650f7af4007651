"""A stage or verify run's outcome for monitoring: the Prometheus text exposition format,
written atomically for node_exporter's textfile collector (``--metrics-file``).

Per peer: its status (one sample per status the command knows, 1 for the peer's), the run's
counts and seconds, and the time of its last success. The last success outlives the runs in
which the peer fails: it is read back from the file being replaced and from the history
catalog (so a new metrics file starts from the catalog's record), and a peer that never
succeeded has 0, so an alert on its age fires for it too. A configured peer the run did not
touch (``--peer``) keeps what the replaced file said of it, so a manual run for one peer
neither hides nor clears another's failure; a peer no longer configured is dropped.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deltastage.errors import DeltastageError, describe_os_error
from deltastage.history import last_successes
from deltastage.safefs import replace_file
from deltastage.stage.report import StageReport
from deltastage.text import shown
from deltastage.verify import VerifyReport

__all__ = [
    "STAGE",
    "VERIFY",
    "Kind",
    "Outcome",
    "PeerOutcome",
    "exposition",
    "stage_outcome",
    "verify_outcome",
    "write_metrics",
]

log = logging.getLogger("deltastage.metrics")

PREFIX = "deltastage"


@dataclass(frozen=True)
class Kind:
    """How one command's outcome is exposed."""

    action: str  # stage | verify: the metric names' second word
    statuses: tuple[str, ...]  # every status the command knows
    success: str  # the status that is a success
    catalog_status: str  # how the history catalog records a success
    families: tuple[tuple[str, str], ...]  # the per-peer values: (name, help)

    def name(self, family: str) -> str:
        return f"{PREFIX}_{self.action}_{family}"


STAGE = Kind(
    "stage",
    ("staged", "not-ready", "failed", "would-stage"),
    "staged",
    "staged",
    (
        ("peer_files", "Files in the peer's staged dir after the last stage run."),
        ("peer_bytes", "Bytes in the peer's staged dir after the last stage run."),
        ("peer_wire_bytes", "Bytes that crossed the transport, both ways, in the last run."),
        ("peer_seconds", "Seconds the peer took in the last stage run."),
    ),
)
VERIFY = Kind(
    "verify",
    ("ok", "damaged", "not-staged", "error"),
    "ok",
    "verify-ok",
    (
        ("peer_files", "Files that matched their manifest in the last verify run."),
        ("peer_bytes", "Bytes that matched their manifest in the last verify run."),
        ("peer_missing_files", "Files the manifest lists that are not there."),
        ("peer_corrupt_files", "Files whose content does not match the manifest."),
        ("peer_extra_files", "Files no manifest lists."),
        ("peer_stray_files", "deltastage's own temp or partial files left behind."),
        ("peer_seconds", "Seconds the peer's re-hash took in the last verify run."),
    ),
)


@dataclass(frozen=True)
class PeerOutcome:
    name: str
    status: str
    values: tuple[float, ...]  # in the order of ``Kind.families``


@dataclass(frozen=True)
class Outcome:
    """What one run of a command says of each peer."""

    kind: Kind
    peers: tuple[PeerOutcome, ...]
    exit_code: int


def stage_outcome(report: StageReport) -> Outcome:
    peers = tuple(
        PeerOutcome(p.name, p.status, (p.files, p.bytes, p.wire_bytes, p.seconds))
        for p in report.peers
    )
    return Outcome(STAGE, peers, report.exit_code)


def verify_outcome(report: VerifyReport) -> Outcome:
    peers = tuple(
        PeerOutcome(
            p.name,
            p.status,
            (
                p.files,
                p.bytes,
                len(p.missing),
                len(p.corrupt),
                len(p.extra),
                len(p.stray),
                p.seconds,
            ),
        )
        for p in report.peers
    )
    return Outcome(VERIFY, peers, report.exit_code)


def _label(value: str) -> str:
    """A label value as the exposition format quotes it (and as UTF-8 can hold it)."""
    return shown(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


# A sample line with a peer label: its metric name, the raw peer label value, the value.
_SAMPLE = re.compile(r'^(\w+)\{(?:[^}]*,)?peer="((?:[^"\\]|\\.)*)"[^}]*\}\s+(\S+)')


def _unquoted(raw: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], raw)


@dataclass
class _Previous:
    """What a metrics file about to be replaced said: each sample line by metric and peer."""

    lines: dict[str, dict[str, list[str]]]

    @classmethod
    def read(cls, path: Path) -> _Previous:
        lines: dict[str, dict[str, list[str]]] = {}
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if match:
                metric, peer = match[1], _unquoted(match[2])
                lines.setdefault(metric, {}).setdefault(peer, []).append(line)
        return cls(lines)

    def value(self, metric: str, peer: str) -> float:
        """The value the file gave ``metric`` for ``peer``; 0 where it gave none."""
        lines = self.lines.get(metric, {}).get(peer)
        match = _SAMPLE.match(lines[0]) if lines else None
        try:
            return float(match[3]) if match else 0.0
        except ValueError:
            return 0.0


def exposition(
    outcome: Outcome,
    *,
    now: float,
    last_success: Mapping[str, float],
    carried: Mapping[str, Mapping[str, Sequence[str]]],
) -> str:
    """The text of a metrics file: ``outcome``'s peers, then the sample lines ``carried``
    over (by metric name, for peers the run did not touch), and ``last_success`` (by peer:
    this run's successes are ``now``)."""
    out: list[str] = []

    def family(name: str, help_text: str, samples: Sequence[str]) -> None:
        out.extend([f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples])
        out.extend(line for lines in carried.get(name, {}).values() for line in lines)

    status = outcome.kind.name("peer_status")
    family(
        status,
        f"1 for the peer's status in the last {outcome.kind.action} run, 0 for the others.",
        [
            f'{status}{{peer="{_label(peer.name)}",status="{each}"}} {int(peer.status == each)}'
            for peer in outcome.peers
            for each in outcome.kind.statuses
        ],
    )
    for index, (suffix, help_text) in enumerate(outcome.kind.families):
        name = outcome.kind.name(suffix)
        samples = [
            f'{name}{{peer="{_label(p.name)}"}} {_number(p.values[index])}' for p in outcome.peers
        ]
        family(name, help_text, samples)
    success = outcome.kind.name("peer_last_success_timestamp_seconds")
    out.extend(
        [
            f"# HELP {success} Unix time of the peer's last successful {outcome.kind.action} "
            "(0: none recorded).",
            f"# TYPE {success} gauge",
            *(
                f'{success}{{peer="{_label(peer)}"}} {_number(when)}'
                for peer, when in sorted(last_success.items())
            ),
        ]
    )
    for suffix, help_text, value in (
        ("exit_code", f"Exit code of the last {outcome.kind.action} run.", outcome.exit_code),
        ("last_run_timestamp_seconds", f"Unix time the last {outcome.kind.action} run ended.", now),
    ):
        name = outcome.kind.name(suffix)
        out.extend([f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"])
    return "\n".join(out) + "\n"


def write_metrics(
    path: Path,
    outcome: Outcome,
    *,
    staging_dir: Path | None,
    configured: Collection[str] | None,
    now: float | None = None,
) -> None:
    """Replace the metrics file at ``path`` with ``outcome``, atomically (see the module's
    docstring for what carries over from the file it replaces and from ``staging_dir``'s
    catalog); ``configured``: the config's peers, None without a config (all carry over)."""
    now = time.time() if now is None else now
    previous = _Previous.read(path)
    recorded: dict[str, float] = {}
    if staging_dir is not None:
        try:
            recorded = last_successes(staging_dir, outcome.kind.action, outcome.kind.catalog_status)
        except DeltastageError as exc:
            log.warning("last successes not read from the catalog: %s", exc)
    # Peers are told apart as the file names them (an undecodable byte as \xNN).
    recorded = {shown(peer): when for peer, when in recorded.items()}
    configured = None if configured is None else {shown(peer) for peer in configured}
    ran = {shown(peer.name) for peer in outcome.peers}

    def kept(peer: str) -> bool:
        return peer not in ran and (configured is None or peer in configured)

    success_metric = outcome.kind.name("peer_last_success_timestamp_seconds")
    known = set(previous.lines.get(success_metric, {})) | set(recorded)
    last_success = {
        peer: max(recorded.get(peer, 0.0), previous.value(success_metric, peer))
        for peer in {*ran, *(configured if configured is not None else known)}
    }
    for peer in outcome.peers:
        if peer.status == outcome.kind.success:
            last_success[shown(peer.name)] = now
    carried = {
        metric: {peer: lines for peer, lines in by_peer.items() if kept(peer)}
        for metric, by_peer in previous.lines.items()
        if metric != success_metric
    }
    text = exposition(outcome, now=now, last_success=last_success, carried=carried)
    try:
        replace_file(path, text, mode=0o644)
    except OSError as exc:
        raise DeltastageError(
            f"metrics file {path} not written: {describe_os_error(exc)}"
        ) from None
