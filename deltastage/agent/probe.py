"""How the files of a root are compressed, for ``deltastage check``'s hint.

Each regular file is recognised by its content and probed (``transform.search.probe``: at
most ``PROBE_SAMPLE`` bytes decompressed each): a gzip or bzip2 file that zlib or libbzip2
did not write can only travel as its compressed bytes, which deltas badly, and the operator
is told. A file that only differs past the sample is counted as rebuilt: a hint, not a proof.
"""

from __future__ import annotations

import os

from deltastage.agent.conversation import Refusal
from deltastage.agent.rootfs import RootFS
from deltastage.protocol import ProbeReply
from deltastage.protocol.events import MAX_PROBE_EXAMPLES
from deltastage.transform.search import Verdict, probe

__all__ = ["probe_root"]


def probe_root(rootfs: RootFS, root: str) -> ProbeReply:
    counts = dict.fromkeys((Verdict.REBUILT, Verdict.FOREIGN, Verdict.CORRUPT), 0)
    examples: list[str] = []
    for entry in rootfs.listing(root):
        if entry.kind != "file":
            continue
        verdict = _probe_file(rootfs, root, entry.path, entry.size)
        if verdict is Verdict.TOO_COSTLY:
            verdict = Verdict.FOREIGN
        if verdict in counts:
            counts[verdict] += 1
        if verdict is Verdict.FOREIGN and len(examples) < MAX_PROBE_EXAMPLES:
            examples.append(entry.path)
    return ProbeReply(
        counts[Verdict.REBUILT], counts[Verdict.FOREIGN], counts[Verdict.CORRUPT], tuple(examples)
    )


def _probe_file(rootfs: RootFS, root: str, path: str, size: int) -> Verdict:
    try:
        fd = rootfs.open_file(root, path)
    except Refusal:
        return Verdict.PLAIN  # gone or replaced since it was listed: not this probe's concern
    try:
        return probe(lambda offset, n: os.pread(fd, n, offset), size)
    except OSError as exc:
        raise Refusal.io(path, exc) from None
    finally:
        os.close(fd)
