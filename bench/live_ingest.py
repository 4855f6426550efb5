"""Live ingest benchmark: sim -> ingest -> ZeroMQ SUB consumer, as real processes.

For each sim rate, runs for a fixed time and prints: the sim's generated update rate,
the depth messages/s the ingest applied, its CPU, and the update-to-consumer latency
(ingest receive time -> consumer receive time, both on this host's clock) p50/p99.
`@depth@0ms` is used, so one sim update is one depth message.

    .venv/bin/python bench/live_ingest.py --rates 500,5000,10000,20000 --seconds 8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from helpers import PIPELINE, Procs, eventually, feeds, start_sim, write_config  # noqa: E402

from pipeline import schema  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.consumer import Consumer  # noqa: E402
from pipeline.shm import BookReader  # noqa: E402

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]


def one_rate(rate: float, seconds: float) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="l2pb", dir="/tmp"))
    (workdir / "sim.toml").write_text('[exchanges.x]\nadapter = "binance"\nsymbols = ["X"]\n')
    procs = Procs(workdir)
    try:
        port = start_sim(procs, ",".join(SYMBOLS), rate=rate, extra=["--levels", "1000"])
        cfg = write_config(workdir, port, SYMBOLS, extra='depth_stream = "depth@0ms"\n')
        cfg.write_text(cfg.read_text().replace("depth = 20", "depth = 50"))
        ingest = procs.start("ingest", PIPELINE + ["--config", str(cfg), "ingest", "sim"])
        eventually(lambda: all(f["state"] == "live" for f in feeds(cfg).values()), 60, 0.2, "live")
        config = load_config(cfg)
        p = psutil.Process(ingest.pid)
        lat_l2, lat_trade = [], []
        with Consumer(config, use_shm=True) as c:
            # warm up 1 s, then measure
            t_end = time.monotonic() + 1.0
            while time.monotonic() < t_end:
                c.poll(0.1)
            reader = BookReader.open(config.shm_prefix, "sim")
            u0 = sum(reader.stats(s)["updates"] for s in SYMBOLS)
            cpu0 = p.cpu_times()
            t0 = time.monotonic()
            t_end = t0 + seconds
            sock_l2, sock_t = c.l2_sock, c.trades_sock
            import zmq
            poller = zmq.Poller()
            poller.register(sock_l2, zmq.POLLIN)
            poller.register(sock_t, zmq.POLLIN)
            while time.monotonic() < t_end:
                for s, _ in poller.poll(100):
                    while True:
                        try:
                            s.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        payload = s.recv()
                        now_us = time.time_ns() // 1000
                        if s is sock_t:
                            lat_trade.append(now_us - schema.decode_trade(payload).ts_received)
                        else:
                            lat_l2.append(now_us - schema.decode_l2(payload).ts_received)
            elapsed = time.monotonic() - t0
            cpu1 = p.cpu_times()
            u1 = sum(reader.stats(s)["updates"] for s in SYMBOLS)
            reader.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/state", timeout=5) as r:
            sim_state = json.loads(r.read())
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed * 100
        l2 = np.array(lat_l2) if lat_l2 else np.array([0])
        tr = np.array(lat_trade) if lat_trade else np.array([0])
        return {
            "sim_rate": rate, "sim_measured": sim_state.get("measured_rate"),
            "ingest_msgs_per_s": round((u1 - u0) / elapsed), "ingest_cpu_percent": round(cpu, 1),
            "ingest_rss_mb": round(p.memory_info().rss / 2**20, 1),
            "l2_msgs": len(lat_l2), "l2_p50_us": int(np.percentile(l2, 50)), "l2_p99_us": int(np.percentile(l2, 99)),
            "trades": len(lat_trade), "trade_p50_us": int(np.percentile(tr, 50)),
            "trade_p99_us": int(np.percentile(tr, 99)),
        }
    finally:
        procs.stop_all()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="500,5000,10000,20000")
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    for rate in [float(r) for r in args.rates.split(",")]:
        print(json.dumps(one_rate(rate, args.seconds)), flush=True)


if __name__ == "__main__":
    main()
