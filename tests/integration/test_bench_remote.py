"""Smoke test of `pipeline bench remote` at a tiny size: both transports hand trades to their
consumers, the bridge puts every offered message into its stream, and the run ends in one JSON line.

Counts only, never speed (speed is the bench's own output, docs in pipeline/benchmarks/remote.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PIPELINE = str(Path(sys.executable).with_name("pipeline"))

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("nats-server") is None,
                                 reason="nats-server not installed (Debian package nats-server; .ci/run installs it)")]


def test_bench_remote_runs_both_transports_and_the_bridge():
    r = subprocess.run([PIPELINE, "bench", "remote", "--seconds", "3", "--rate", "300", "--messages", "3000"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["tcp_trades"] > 0 and out["nats_trades"] > 0
    assert out["bridge_messages"] == 3000 and out["bridge_errors"] == 0
    assert out["stream_messages"] >= 3000  # + the first snapshots
    assert abs(out["clock_offset_us"]) <= out["clock_rtt_us"] / 2 + 1  # one host: zero within the bound
    for key in ("nats_over_tcp_p50", "nats_over_tcp_p99", "bridge_headroom", "bridge_cpu_us_per_msg"):
        assert out[key] > 0, key
    assert "ratios (same run)" in r.stdout
