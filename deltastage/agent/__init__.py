"""The agent: the peer's end of the conversation, serving only the roots it was started with.

It answers the master's requests one at a time: list a root, query or write an indicator
file, or send a file as a delta against the master's signature.

Layout: ``server`` (the handshake and the table of request handlers), ``conversation`` (the
byte pipe, requests set aside during a refinement, refusals), ``rootfs`` (the served roots,
on top of ``safefs``: no symlink followed, regular files only), ``sender`` (a fetch: the
signature in, the delta out), ``stdio`` (the process: command line, stdin/stdout).
"""

from __future__ import annotations

from deltastage.agent.server import serve
from deltastage.agent.stdio import run_stdio

__all__ = ["run_stdio", "serve"]
