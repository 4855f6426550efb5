"""Smoke test of `pipeline bench shards` at a tiny size: the capture is split over the shards as
``processes = N`` splits symbols, every frame is passed once, the one subscriber gets every message
of every shard, and each book ends equal to its one-process view.

Counts and books only, never speed (the rates are the bench's own output).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PIPELINE = str(Path(sys.executable).with_name("pipeline"))

pytestmark = pytest.mark.integration


def test_bench_shards_splits_the_capture_and_ends_with_the_same_books(tmp_path):
    cap = tmp_path / "cap.jsonl"
    subprocess.run([PIPELINE, "bench", "gen-capture", "--out", str(cap), "--symbols", "5", "--messages", "6000",
                    "--levels", "100"], check=True, capture_output=True, timeout=120)
    r = subprocess.run([PIPELINE, "bench", "shards", "--capture", str(cap), "--processes", "1,2,3", "--repeat", "1",
                        "--depth", "20", "--json"], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = {row["processes"]: row for row in json.loads(r.stdout)["rows"]}
    assert sorted(rows) == [1, 2, 3]
    total = rows[1]["frames"]
    assert total > 6000  # depth frames + trades
    for n, row in rows.items():
        assert len(row["per_shard_frames"]) == n
        assert sum(row["per_shard_frames"]) == total and min(row["per_shard_frames"]) > 0, row
        assert row["all_delivered"] and row["bus_sent"] == row["bus_delivered"], row
        assert row["gaps"] == 0
        assert row["books_equal"], f"{n} shards ended with other books than one process"
    assert rows[1]["ratio"] == 1.0
    # without the subscriber: the same split and the same books (nothing to count as delivered)
    r = subprocess.run([PIPELINE, "bench", "shards", "--capture", str(cap), "--processes", "1,2", "--repeat", "1",
                        "--depth", "20", "--no-subscriber", "--json"], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["subscriber"] is False
    for row in out["rows"]:
        assert row["books_equal"] and row["all_delivered"] is None and sum(row["per_shard_frames"]) == total
