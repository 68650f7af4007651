"""One run at a time per staging dir: an flock'ed file that dies with its process.

``flock`` is released by the kernel when the holder exits, however it exits, so a lock file
left behind by a crashed or SIGKILLed run is simply taken over by the next one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from deltastage.errors import LockError

__all__ = ["LOCK_NAME", "StagingLock"]

LOCK_NAME = ".deltastage.lock"


class StagingLock:
    def __init__(self, staging_dir: Path) -> None:
        self.path = staging_dir / LOCK_NAME
        self.fd = -1

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockError(
                f"another deltastage run (pid {holder}) holds {self.path}; not starting"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock; the file stays, harmlessly
            self.fd = -1

    def __enter__(self) -> StagingLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
