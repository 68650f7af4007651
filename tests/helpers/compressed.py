"""Real compressed files for the tests: GNU gzip's output of real source files."""

from __future__ import annotations

import io
import subprocess
import sysconfig
import tarfile
from pathlib import Path


def stdlib_tar() -> bytes:
    """Real files (the email and json packages' sources), as a plain tar."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(root.glob("email/*.py")) + sorted(root.glob("json/*.py")):
            tar.add(path, arcname=path.name)
    return out.getvalue()


def gnu_gzip(data: bytes, level: int) -> bytes:
    return subprocess.run(
        ["gzip", f"-{level}", "-n", "-c"], input=data, capture_output=True, check=True
    ).stdout
