"""Dispatch ``python -m benchmarks [NAME|all] [options]`` to ``benchmarks/<NAME>.py:main``
(a module's underscores are hyphens in NAME: ``cedar-week`` is cedar_week.py)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path

DEFAULT = "core"


def available() -> dict[str, Callable[[list[str]], int]]:
    found: dict[str, Callable[[list[str]], int]] = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"benchmarks.{info.name}")
        entry = getattr(module, "main", None)
        if callable(entry):
            found[info.name.replace("_", "-")] = entry
    return found


def main(argv: list[str]) -> int:
    modules = available()
    name = DEFAULT
    if argv and not argv[0].startswith("-"):
        name, argv = argv[0], argv[1:]
    if name in ("-h", "--help", "help"):
        print(f"usage: python -m benchmarks [{'|'.join([*sorted(modules), 'all'])}] [options]")
        return 0
    if name == "all":
        return max((modules[n](list(argv)) for n in sorted(modules)), default=0)
    if name not in modules:
        print(f"unknown benchmark {name!r}; choose from {', '.join(sorted(modules))}, all")
        return 2
    return modules[name](list(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
