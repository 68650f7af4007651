"""Side-by-side benchmarks; run ``python -m benchmarks [NAME|all] [options]``.

Every module ``benchmarks/<name>.py`` that defines ``main(argv: list[str]) -> int`` is a
benchmark named ``<name>``; ``core`` (the delta core against rdiff and rsync) is the default.
"""
