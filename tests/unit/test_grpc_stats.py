"""The gRPC server's stats file: `pipeline status`'s ``grpc`` section and the l2p_grpc_* series of /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from pipeline.app.config import parse_config
from publisher.grpc_stats import GrpcCollector, read_stats, write_stats

BASE = """
[pipeline]
run_dir = "r"
[exchanges.sim]
adapter = "binance"
symbols = ["BTCUSDT"]
"""
STATS = {"clients": 1, "streams_total": 3, "subscriptions": 2, "refused": {"NOT_FOUND": 2},
         "disconnected": {"client": 1, "slow": 1}, "disconnected_total": 2, "conflated": 4, "dropped": 9,
         "undelivered_trades": 5, "queue_depth": 1, "queue_depth_max": 1, "trades_in": 10, "l2_in": 20, "get_book": 0,
         "sent": {"trades": 7, "deltas": 6, "snapshots": 2},
         "stream_list": [{"id": 3, "queues": {"control": 0, "trades": 1, "snapshots": 0, "deltas": 0}}]}


def scrape(config) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GrpcCollector(config))
    return generate_latest(registry).decode()


def test_down_until_the_server_writes_its_file(tmp_path):
    config = parse_config(BASE + "[grpc]\nport = 6000\n", tmp_path)
    assert read_stats(config) == {"state": "down", "pid": None, "address": "127.0.0.1:6000", "clients": 0}
    assert "l2p_grpc_up 0.0" in scrape(config) and "l2p_grpc_streams" not in scrape(config)


def test_status_section_and_metrics_from_the_file(tmp_path):
    config = parse_config(BASE + "[grpc]\nport = 6000\n", tmp_path)
    config.run_dir.mkdir(parents=True)
    write_stats(config, STATS, "127.0.0.1:6000")
    st = read_stats(config)
    assert st["state"] == "up" and st["address"] == "127.0.0.1:6000" and st["clients"] == 1
    text = scrape(config)
    for line in ("l2p_grpc_up 1.0", "l2p_grpc_streams 1.0", 'l2p_grpc_disconnects_total{reason="slow"} 1.0',
                 'l2p_grpc_refused_total{code="NOT_FOUND"} 2.0', "l2p_grpc_conflations_total 4.0",
                 'l2p_grpc_sent_total{kind="deltas"} 6.0', 'l2p_grpc_stream_queue_depth{lane="trades",stream="3"} 1.0'):
        assert line in text, line


def test_no_series_without_a_grpc_table(tmp_path):
    assert scrape(parse_config(BASE, tmp_path)) == ""
