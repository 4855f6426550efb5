"""The publisher section of `pipeline status --json`: from the stats file, down when its writer is gone."""

from __future__ import annotations

import json
import os

from pipeline.app import status
from pipeline.config import parse_config
from publisher import stats

CONFIG = """
[pipeline]
run_dir = "r"
[exchanges.sim]
adapter = "binance"
symbols = ["BTCUSDT"]
[publisher]
port = 9555
"""


def test_down_without_a_stats_file(tmp_path):
    config = parse_config(CONFIG, tmp_path)
    assert stats.read(config) == {"state": "down", "pid": None, "url": "ws://127.0.0.1:9555/", "clients": 0}


def test_up_with_the_hub_statistics_and_down_when_the_writer_died(tmp_path):
    config = parse_config(CONFIG, tmp_path)
    config.run_dir.mkdir()
    stats.write(config, {"clients": 2, "queue_depth": 5, "conflated": 1}, "ws://127.0.0.1:9555/")
    pub = stats.read(config)
    assert pub["state"] == "up" and pub["pid"] == os.getpid() and pub["clients"] == 2 and pub["conflated"] == 1
    from_status = status.publisher(config)  # the `publisher` key of `pipeline status --json`
    assert {k: v for k, v in from_status.items() if k != "age_s"} == {k: v for k, v in pub.items() if k != "age_s"}
    data = json.loads(stats.path(config).read_text())
    assert stats.read(config, now=data["written_at"] + 60)["state"] == "stale"
    data["pid"] = 2**22 + 12345  # no such process
    stats.path(config).write_text(json.dumps(data))
    assert stats.read(config)["state"] == "down"
    stats.remove(config)
    assert not stats.path(config).exists()
