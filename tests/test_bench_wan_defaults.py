"""The WAN benchmark measures a WAN by default: 8 Mbit/s, 25 ms each way; zero stays possible."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.wan import arguments  # noqa: E402


def test_the_default_link_is_8_mbit_with_a_50_ms_round_trip() -> None:
    args = arguments().parse_args([])
    assert args.rate == "8mbit"
    assert args.delay_ms == 25


def test_zero_delay_is_an_option() -> None:
    assert arguments().parse_args(["--delay-ms", "0"]).delay_ms == 0
