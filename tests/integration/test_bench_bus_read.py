"""Smoke test of `pipeline bench bus-read` at a tiny size: each read path hands out every message.

What it checks is the count, never the speed: the feeder sends one snapshot per symbol, the L2
deltas and a trade after every 4th delta, and a reader that lost or misrouted one would not finish.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = str(Path(sys.executable).with_name("pipeline"))


@pytest.mark.parametrize("reader", ["consumer", "publisher"])
def test_bench_bus_read_reads_every_message(reader):
    r = subprocess.run([PIPELINE, "bench", "bus-read", "--reader", reader, "--messages", "2000", "--runs", "1"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["reader"] == reader
    assert out["messages"] == 4 + 2000 + 2000 // 4  # snapshots, deltas, trades
    assert out["cpu_us_per_msg_median"] > 0
