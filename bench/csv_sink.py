"""CSV sink benchmark: sim -> ingest -> bus -> `pipeline sink csv`, as real processes.

For each sim rate, runs for a fixed time and prints the rows/s the sink wrote (from its
status counters), its CPU and the ingest's, the bytes written, and what it had to
repair (L2 gaps resynced, trades backfilled or lost).  `@depth@0ms` is used, so one sim
update is one depth message.  A last, offline line feeds pre-encoded bus messages
straight into the sink core (no sockets) to show its ceiling on this machine.

    .venv/bin/python bench/csv_sink.py --rates 2000,10000,20000 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from helpers import PIPELINE, Procs, eventually, feeds, start_sim, write_config  # noqa: E402

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]


def _stats(path: Path) -> dict:
    return json.loads(path.read_text())


def one_rate(rate: float, seconds: float) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="l2pb", dir="/tmp"))
    (workdir / "sim.toml").write_text('[exchanges.x]\nadapter = "binance"\nsymbols = ["X"]\n')
    procs = Procs(workdir)
    try:
        port = start_sim(procs, ",".join(SYMBOLS), rate=rate)
        cfg = write_config(workdir, port, SYMBOLS,
                           extra='depth_stream = "depth@0ms"\n[sinks.csv]\ndir = "csv"\nflush_interval_s = 1.0\n')
        stats = workdir / "run" / "sink-csv.stats.json"
        sink = procs.start("sink", PIPELINE + ["--config", str(cfg), "sink", "csv"])
        eventually(stats.exists, 20, what="sink started")
        ingest = procs.start("ingest", PIPELINE + ["--config", str(cfg), "ingest", "sim"])
        eventually(lambda: all(f["state"] == "live" for f in feeds(cfg).values()), 30, 0.2, "books live")
        time.sleep(2.0)  # warm up
        ps, pi = psutil.Process(sink.pid), psutil.Process(ingest.pid)
        s0, c0, i0, t0 = _stats(stats), ps.cpu_times(), pi.cpu_times(), time.monotonic()
        time.sleep(seconds)
        s1, c1, i1, t1 = _stats(stats), ps.cpu_times(), pi.cpu_times(), time.monotonic()
        dt = t1 - t0
        return {
            "sim_rate": rate,
            "rows_per_s": round((s1["rows"] - s0["rows"]) / dt),
            "book_rows_per_s": round((s1["book_rows"] - s0["book_rows"]) / dt),
            "trade_rows_per_s": round((s1["trade_rows"] - s0["trade_rows"]) / dt),
            "sink_cpu_pct": round(100 * ((c1.user + c1.system) - (c0.user + c0.system)) / dt, 1),
            "ingest_cpu_pct": round(100 * ((i1.user + i1.system) - (i0.user + i0.system)) / dt, 1),
            "mb_per_s": round((s1["bytes"] - s0["bytes"]) / dt / 2**20, 2),
            "book_resyncs": s1["book_resyncs"], "gaps_filled": s1["gaps_filled"],
            "trades_lost": s1["trades_lost"], "errors": s1["errors"],
        }
    finally:
        procs.stop_all()


def offline(n_messages: int = 200_000) -> dict:
    """The sink core alone: encoded deltas and trades in, rows to files out."""
    from pipeline import schema
    from pipeline.book import ViewBook
    from pipeline.config import parse_config
    from sinks.csv_sink import CsvSink
    import random

    workdir = Path(tempfile.mkdtemp(prefix="l2pb", dir="/tmp"))
    config = parse_config('[exchanges.sim]\nadapter = "binance"\nsymbols = ["BTCUSDT"]\ndepth = 50\n'
                          '[sinks.csv]\ndir = "csv"\n', workdir)
    rng = random.Random(1)
    book = ViewBook(50)
    book.load_snapshot([(100.0 - i * 0.1, 1.0) for i in range(400)], [(100.1 + i * 0.1, 1.0) for i in range(400)])
    now = time.time_ns() // 1000
    payloads = [schema.encode(schema.L2Update(exchange="sim", symbol="BTCUSDT", epoch=1, seq=1, ts_exchange=now,
                                              ts_received=now, snapshot=True, state="live", depth=50,
                                              bids=book.view()[0], asks=book.view()[1]))]
    seq = trade_seq = 1
    while len(payloads) < n_messages:
        now += 50
        if rng.random() < 0.1:
            payloads.append(b"T" + schema.encode(schema.Trade(
                exchange="sim", symbol="BTCUSDT", epoch=1, seq=trade_seq, ts_exchange=now, ts_received=now,
                price=100.0, amount=0.25, side="buy", trade_id=str(1_000_000 + trade_seq))))
            trade_seq += 1
            continue
        bid = rng.random() < 0.5
        p = round((100.0 - rng.randrange(60) * 0.1) if bid else (100.1 + rng.randrange(60) * 0.1), 1)
        s = 0.0 if rng.random() < 0.2 else round(rng.random() * 5, 3)
        db, da = book.apply([(p, s)] if bid else [], [] if bid else [(p, s)])
        if db or da:
            seq += 1
            payloads.append(schema.encode(schema.L2Update(
                exchange="sim", symbol="BTCUSDT", epoch=1, seq=seq, ts_exchange=now, ts_received=now,
                snapshot=False, state="live", depth=50, bids=db, asks=da)))
    sink = CsvSink(config)
    sink.start()
    t0, c0 = time.perf_counter(), time.process_time()
    for p in payloads:
        if p[:1] == b"T":
            sink.on_trade(p[1:])
        else:
            sink.on_l2(p)
    sink.close()
    dt = time.perf_counter() - t0
    rows = sink.statistics()["rows"]
    return {"offline_messages_per_s": round(len(payloads) / dt), "offline_rows_per_s": round(rows / dt),
            "cpu_s": round(time.process_time() - c0, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="2000,10000,20000", help="Comma-separated sim rates (updates/s).")
    ap.add_argument("--seconds", type=float, default=10.0, help="Measurement window per rate.")
    args = ap.parse_args()
    for rate in (float(r) for r in args.rates.split(",")):
        print(json.dumps(one_rate(rate, args.seconds)), flush=True)
    print(json.dumps(offline()), flush=True)


if __name__ == "__main__":
    main()
