"""The gRPC server's statistics in ``RUN_DIR/grpc.stats.json``: for `pipeline status` and ``/metrics``.

The server rewrites the file about once a second (temporary file, then rename).  ``read_stats``
is the ``grpc`` section of `pipeline status --json` (docs/grpc.md "Status"); ``GrpcCollector``
exports the same figures as Prometheus series on the WebSocket publisher's ``/metrics`` (the
gRPC port speaks only HTTP/2 gRPC, and one scrape target per host is simpler to run).  Neither
imports grpcio.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from pipeline.config import Config
from pipeline.pidfile import pid_alive
from publisher.grpc_settings import STATS_FILE, grpc_config

STALE_AFTER_S = 5.0


def stats_path(config: Config) -> Path:
    return Path(config.run_dir) / STATS_FILE


def write_stats(config: Config, stats: dict, address: str) -> None:
    p = stats_path(config)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "written_at": time.time(), "address": address, **stats}))
    os.replace(tmp, p)


def read_stats(config: Config, now: float | None = None) -> dict:
    """The ``grpc`` section of `pipeline status --json`: the hub's statistics plus state, pid, address."""
    now = time.time() if now is None else now
    c = grpc_config(config)
    down = {"state": "down", "pid": None, "address": f"{c.host}:{c.port}", "clients": 0}
    try:
        data = json.loads(stats_path(config).read_text())
    except (FileNotFoundError, ValueError):
        return down
    pid = data.pop("pid", None)
    if not pid_alive(pid):
        return down
    age = now - float(data.pop("written_at", 0.0))
    return {"state": "up" if age <= STALE_AFTER_S else "stale", "pid": pid, "age_s": round(age, 3), **data}


class GrpcCollector:
    """``l2p_grpc_*`` series from the stats file, read at scrape time (nothing while gRPC is down)."""

    def __init__(self, config: Config):
        self.config = config

    def describe(self):
        return []

    def collect(self):
        if "grpc" not in self.config.servers:
            return
        st = read_stats(self.config)
        yield GaugeMetricFamily("l2p_grpc_up", "1 while the gRPC server runs and refreshes its figures.",
                                value=1.0 if st["state"] == "up" else 0.0)
        if st["state"] == "down":
            return
        yield GaugeMetricFamily("l2p_grpc_streams", "Open SubscribeBooks and SubscribeTrades streams.",
                                value=st["clients"])
        yield GaugeMetricFamily("l2p_grpc_subscriptions", "Symbols subscribed over all open streams.",
                                value=st["subscriptions"])
        yield CounterMetricFamily("l2p_grpc_streams_opened", "Streams opened.", value=st["streams_total"])
        disc = CounterMetricFamily("l2p_grpc_disconnects", "Streams ended, by reason (client, slow).",
                                   labels=["reason"])
        for reason, n in st["disconnected"].items():
            disc.add_metric([reason], n)
        refused = CounterMetricFamily("l2p_grpc_refused", "Calls refused, by status code.", labels=["code"])
        for code, n in st["refused"].items():
            refused.add_metric([code], n)
        yield from (disc, refused)
        yield CounterMetricFamily("l2p_grpc_conflations", "Delta backlogs replaced by snapshots.",
                                  value=st["conflated"])
        yield CounterMetricFamily("l2p_grpc_undelivered_trades", "Trades still queued when a slow stream was ended.",
                                  value=st["undelivered_trades"])
        sent = CounterMetricFamily("l2p_grpc_sent", "Messages written to streams.", labels=["kind"])
        for kind, n in st["sent"].items():
            sent.add_metric([kind], n)
        yield sent
        depth = GaugeMetricFamily("l2p_grpc_stream_queue_depth", "Messages queued for a stream, by lane.",
                                  labels=["stream", "lane"])
        for s in st["stream_list"]:
            for lane, n in s["queues"].items():
                depth.add_metric([str(s["id"]), lane], n)
        yield depth
