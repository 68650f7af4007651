"""A slow link in front of an agent: ``python throttle.py RATE COMMAND...`` runs COMMAND
with this process's stdin and passes its stdout on at RATE bytes a second (an SSH peer's
``agent_command``, for tests that must catch a run in the middle of a transfer)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

CHUNK = 16 << 10


def main() -> int:
    rate = int(sys.argv[1])
    agent = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE)
    assert agent.stdout is not None
    started, sent = time.monotonic(), 0
    while data := os.read(agent.stdout.fileno(), CHUNK):
        view = memoryview(data)
        while view:
            view = view[os.write(1, view) :]
        sent += len(data)
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    return agent.wait()


if __name__ == "__main__":
    sys.exit(main())
