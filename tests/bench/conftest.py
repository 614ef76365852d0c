"""Makes bench/ importable (benchmarks run as `python bench/<script>.py`, so `netlab` is a
top-level package there) and skips link tests where links cannot be built."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from netlab.link import unavailable_reason


@pytest.fixture
def needs_links() -> None:
    """Skip, with the reason, unless this machine can build links (root and /dev/net/tun)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
