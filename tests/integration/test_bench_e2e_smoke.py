"""`pipeline bench e2e` at a tiny size: real processes, the documented result keys, a PNG, a results row,
and nothing left behind (processes, /dev/shm segments).  No timing is asserted: the figures belong to
the benchmark, the machine is shared.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psutil
import pytest

from helpers import PIPELINE

pytestmark = pytest.mark.integration

RATE_KEYS = {"rate", "window_s", "sim_updates_per_s", "ingest_updates_per_s", "delivered_ratio",
             "publish_lag_us_max", "reconnects", "gaps", "resyncs", "ingest_cpu_us_per_msg", "cpu_percent",
             "rss_mb", "csv", "kept_up", "why_not", "zmq_trade_latency_us", "zmq_l2_latency_us", "pids",
             "shm_prefix", "leftovers"}
SUMMARY_KEYS = {"max_sustained_rate", "max_ingest_msgs_per_s", "ingest_capacity_msgs_per_s", "ws_rate",
                "zmq_trade_latency_us", "ws_trade_latency_us", "ingest_rss_mb", "csv_rows_per_s",
                "csv_rows_per_cpu_s"}


def _ordered(lat: dict) -> None:
    assert lat["n"] > 0
    assert 0 < lat["p50"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]


def _ours_alive(pid: int) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and any("pipeline" in a for a in p.cmdline())
    except psutil.NoSuchProcess:
        return False


def test_bench_e2e_tiny_run(tmp_path: Path):
    results = tmp_path / "RESULTS.md"
    out = subprocess.run(
        PIPELINE + ["bench", "e2e", "--rates", "1000", "--seconds", "2", "--clients", "1,2", "--symbols", "2",
                    "--out", str(tmp_path / "out"), "--results", str(results), "--json"],
        capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)

    assert result["schema"] == "pipeline-bench-e2e/1"
    assert {"date", "machine", "params", "criterion", "rates", "ws", "summary", "goals", "files"} <= set(result)
    assert {"cores", "cpu_model", "python", "shared"} <= set(result["machine"])
    assert SUMMARY_KEYS <= set(result["summary"])
    [row] = result["rates"]
    assert RATE_KEYS <= set(row)
    assert row["rate"] == 1000 and row["ingest_updates_per_s"] > 0
    assert {"sim", "ingest", "publisher", "sink-csv", "zmq-sub"} <= set(row["cpu_percent"]) == set(row["rss_mb"])
    assert row["csv"]["rows_per_s"] > 0 and row["csv"]["trades_lost"] == 0
    _ordered(row["zmq_trade_latency_us"])
    assert [w["clients"] for w in result["ws"]] == [1, 2]
    for w in result["ws"]:
        _ordered(w["trade_latency_us"])
        assert w["closed_early"] == w["not_connected"] == w["client_processes_failed"] == 0
    assert {g["goal"] for g in result["goals"]} >= {"trade latency to ZeroMQ p50", "CSV sink rows/s"}

    png = Path(result["files"]["plot"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(Path(result["files"]["json"]).read_text())["date"] == result["date"]

    text = results.read_text()
    assert text.startswith("# Benchmark results") and "pipeline bench e2e" in text
    assert text.rstrip().splitlines()[-1].startswith(f"| {result['date']} |")

    # nothing left: every process stopped, no shared memory of the run
    assert row["leftovers"] == {"processes": [], "shm": []}
    assert not [n for n, pid in row["pids"].items() if _ours_alive(pid)]
    assert not list(Path("/dev/shm").glob(f"{row['shm_prefix']}*"))
