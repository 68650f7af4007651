"""Re-hash staged files against their manifests: the nightly bit-rot check."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from deltastage.errors import DeltastageError, IntegrityError
from deltastage.hashing import hash_fd
from deltastage.manifest import INTERNAL_PREFIX, MANIFEST_NAME, read_manifest
from deltastage.models import json_fields
from deltastage.safefs import (
    FILE_READ,
    check_relative_path,
    open_dir,
    open_parent_beneath,
    walk_files,
)

__all__ = ["PeerVerification", "VerifyReport", "verify_daily_dir", "verify_peer_dir"]


@dataclass
class PeerVerification:
    name: str
    files: int = 0
    bytes: int = 0
    manifest: bool = True
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    # deltastage's own names (temp files, partials) left in a staged dir: no manifest lists
    # them, yet Cedar's store would archive them
    stray: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0  # how long reading and hashing took

    @property
    def ok(self) -> bool:
        return self.error is None and not (self.missing or self.corrupt or self.extra or self.stray)

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        if not self.manifest:
            return "not-staged"
        return "ok" if self.ok else "damaged"

    def as_json(self) -> dict[str, object]:
        return json_fields(
            self,
            "name",
            "status",
            "files",
            "bytes",
            "missing",
            "corrupt",
            "extra",
            "stray",
            "error",
        )


@dataclass
class VerifyReport:
    daily_dir: Path
    peers: list[PeerVerification]

    @property
    def exit_code(self) -> int:
        return 0 if self.peers and all(p.ok for p in self.peers) else 1

    def as_json(self) -> dict[str, object]:
        # "error" is what stopped a verify before its report (see cli.verify): none here
        return {
            **json_fields(self, "daily_dir", "exit_code"),
            "error": None,
            **json_fields(self, "peers"),
        }


def verify_peer_dir(peer_dir: Path) -> PeerVerification:
    result = PeerVerification(peer_dir.name)
    try:
        peer_fd = open_dir(peer_dir)
    except OSError as exc:
        result.error = f"{peer_dir}: {exc.strerror}"
        return result
    try:
        manifest = read_manifest(peer_fd)
        on_disk: set[str] = set()
        internal: list[str] = []
        for rel, _ in walk_files(peer_fd):
            if any(part.startswith(INTERNAL_PREFIX) for part in rel.split("/")):
                internal.append(rel)
            elif rel != MANIFEST_NAME:
                on_disk.add(rel)
        if manifest is None:
            result.manifest = False
            if on_disk:  # files with nothing vouching for them: a failed or foreign stage
                result.error = f"no {MANIFEST_NAME} but {len(on_disk)} files present"
            return result
        listed = set()
        for entry in manifest.files:
            listed.add(entry.path)
            if _matches(peer_fd, entry.path, entry.size, entry.xxh3_128, result):
                result.files += 1
                result.bytes += entry.size
        result.extra = sorted(on_disk - listed)
        result.stray = sorted(internal)
    except (DeltastageError, OSError) as exc:
        result.error = str(exc)
    finally:
        os.close(peer_fd)
    return result


def _matches(peer_fd: int, path: str, size: int, digest: bytes, result: PeerVerification) -> bool:
    parts = check_relative_path(path)
    try:
        with open_parent_beneath(peer_fd, parts, create=False) as dir_fd:
            fd = os.open(parts[-1], FILE_READ, dir_fd=dir_fd)
    except OSError:
        result.missing.append(path)
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or hash_fd(fd) != (size, digest):
            result.corrupt.append(path)
            return False
        return True
    finally:
        os.close(fd)


def verify_daily_dir(directory: Path) -> VerifyReport:
    """Verify a daily dir (every peer subdir), or a single peer dir holding a manifest."""
    if not directory.is_dir():
        raise IntegrityError(f"{directory}: no such staging directory")
    if (directory / MANIFEST_NAME).exists():
        return VerifyReport(directory, [_timed(directory)])
    peers = [
        _timed(child)
        for child in sorted(directory.iterdir())
        if child.is_dir() and not child.is_symlink() and not child.name.startswith(".")
    ]
    return VerifyReport(directory, peers)


def _timed(peer_dir: Path) -> PeerVerification:
    start = time.monotonic()
    result = verify_peer_dir(peer_dir)
    result.seconds = time.monotonic() - start
    return result
