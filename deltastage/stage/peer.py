"""One peer of a run: its attempts, each over a new session, retried with backoff when the
transport fails; the presigner works for all of them."""

from __future__ import annotations

import contextlib
import logging
import time

from deltastage.errors import DeltastageError, PeerNotReady, TransportError, describe_os_error
from deltastage.master.connect import SessionFactory
from deltastage.master.session import PeerSession
from deltastage.stage.attempt import Attempt, PeerTarget
from deltastage.stage.basis import earlier_peer_dirs
from deltastage.stage.presign import Presigner
from deltastage.stage.report import PeerReport

__all__ = ["stage_peer"]

log = logging.getLogger("deltastage.stage")


def stage_peer(target: PeerTarget, session_factory: SessionFactory) -> PeerReport:
    """Stage one peer: not-ready, staged, or failed after its last attempt."""
    started = time.monotonic()
    config = target.config
    earlier = earlier_peer_dirs(config.staging_dir, target.peer.name, target.run_date)
    presigner = Presigner(earlier[0][1]) if earlier else None
    try:
        report = _attempts(target, session_factory, presigner)
    finally:
        if presigner is not None:
            presigner.close()
    report.seconds = time.monotonic() - started
    return report


def _attempts(
    target: PeerTarget, session_factory: SessionFactory, presigner: Presigner | None
) -> PeerReport:
    options, name = target.config.options, target.peer.name
    report = PeerReport(name)
    attempts = 1 + max(0, options.retries)
    for number in range(1, attempts + 1):
        report.attempts = number
        session: PeerSession | None = None
        try:
            session = session_factory(target.peer, options)
            report.error = None
            with contextlib.closing(Attempt(target, session, report, presigner)) as attempt:
                attempt.run()
            report.status = "staged"
            break
        except PeerNotReady as exc:
            report.status, report.error = "not-ready", str(exc)
            break
        except TransportError as exc:
            report.status, report.error = "failed", str(exc)
            if number < attempts:
                delay = options.retry_backoff * (2 ** (number - 1))
                log.warning(
                    "peer=%s attempt %d/%d failed: %s; retrying in %.0fs",
                    name,
                    number,
                    attempts,
                    exc,
                    delay,
                )
                time.sleep(delay)
        except DeltastageError as exc:
            report.status, report.error = "failed", str(exc)
            break
        except OSError as exc:
            report.status, report.error = "failed", describe_os_error(exc)
            break
        except Exception as exc:
            # a bug met on this peer's data fails this peer, never the run: the other peers
            # are staged and the run's report and history are written
            log.exception("peer=%s unexpected error", name)
            report.status, report.error = "failed", f"unexpected {type(exc).__name__}: {exc}"
            break
        finally:
            if session is not None:
                report.wire_bytes += session.wire_bytes
                with contextlib.suppress(Exception):
                    session.close()
    return report
