"""Offline ingest benchmark: the real adapter, sync, book, shared-memory view and bus
publish, in one process, no network.  Frames come from the sim's seeded market in
Binance `@depth@0ms` form (10 sim updates per frame by default), with trades and
bookTicker frames as the sim would send them.

    .venv/bin/python bench/offline_ingest.py --messages 100000 --symbols 4

Prints messages/s and us per message by stage (parse | book+shm+publish).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time

import zmq

from ingest.events import DepthDiff
from ingest.feed import BusPublisher, FeedBooks
from ingest.main import load_adapter
from pipeline.config import ExchangeConfig
from pipeline.shm import BookWriter
from pipeline.sim.market import Market


DRAIN = """
import sys, zmq
s = zmq.Context().socket(zmq.SUB)
s.setsockopt(zmq.SUBSCRIBE, b"")
for ep in sys.argv[1:]:
    s.connect(ep)
while True:
    s.recv()
"""


def frames(symbols: list[str], n: int, per_frame: int, seed: int) -> tuple[list[bytes], dict]:
    m = Market(symbols, seed=seed, levels=1000)
    snaps = {}
    for s in symbols:
        last, bids, asks = m.snapshot(s, 1000)
        snaps[s] = json.dumps({"lastUpdateId": last, "bids": bids, "asks": asks}).encode()
    pending: dict[str, list] = {s: [] for s in symbols}
    out = []
    while len(out) < n:
        u = m.step()
        pending[u.symbol].append(u)
        if len(pending[u.symbol]) == per_frame:
            ups = pending[u.symbol]
            pending[u.symbol] = []
            b = {p: q for up in ups for side, p, q in up.changes if side == "b"}
            a = {p: q for up in ups for side, p, q in up.changes if side == "a"}
            data = {"e": "depthUpdate", "E": 1, "s": u.symbol, "U": ups[0].update_id, "u": ups[-1].update_id,
                    "b": [[p, q] for p, q in b.items()], "a": [[p, q] for p, q in a.items()]}
            out.append(json.dumps({"stream": f"{u.symbol.lower()}@depth@0ms", "data": data},
                                  separators=(",", ":")).encode())
    return out, snaps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--symbols", type=int, default=4)
    ap.add_argument("--per-frame", type=int, default=10, help="sim updates aggregated in one depth frame")
    ap.add_argument("--depth", type=int, default=50)
    args = ap.parse_args()
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT"][:args.symbols]
    data, snaps = frames(symbols, args.messages, args.per_frame, seed=1)
    cfg = ExchangeConfig(name="bench", adapter="binance", symbols=tuple(symbols), depth=args.depth,
                         depth_stream="depth@0ms")
    adapter = load_adapter(cfg)
    tmp = tempfile.mkdtemp(prefix="l2pbo", dir="/tmp")
    ctx = zmq.Context()
    t_sock, l_sock = ctx.socket(zmq.PUB), ctx.socket(zmq.PUB)
    t_sock.bind(f"ipc://{tmp}/t.sock")
    l_sock.bind(f"ipc://{tmp}/l.sock")
    # a live subscriber in another process, draining both sockets, so publishing does real work
    drain = subprocess.Popen([sys.executable, "-c", DRAIN, f"ipc://{tmp}/l.sock", f"ipc://{tmp}/t.sock"])
    writer = BookWriter(f"l2pbo{int(time.time())}", "bench", symbols, args.depth, epoch=1)
    feed = FeedBooks("bench", adapter, writer, BusPublisher(t_sock, l_sock), epoch=1)
    feed.request_snapshot = lambda s: None
    feed.depth_connected(symbols)
    for s in symbols:
        feed.on_snapshot(adapter.parse_snapshot(s, snaps[s], 0))
    time.sleep(0.5)  # the subscriber connects
    # as in the ingest process (ingest/main.py): start-up objects frozen, young GC less often
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    parse, on_diff = adapter.parse_frame, feed.on_diff
    levels = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for f in data:
        ev = parse(f, 0)
        levels += len(ev.bids) + len(ev.asks)
        on_diff(ev)
    c2, t2 = time.process_time(), time.perf_counter()
    # parse alone, on the same frames (the events are dropped at once)
    tp = time.perf_counter()
    for f in data:
        parse(f, 0)
    t_parse = time.perf_counter() - tp
    stats = {s: writer.slots[i].stats for i, s in enumerate(symbols)}
    gaps = sum(int(st[2]) for st in stats.values())
    n = len(data)
    total = t2 - t0
    print(json.dumps({
        "messages": n, "seconds": round(total, 3), "msgs_per_s": round(n / total),
        "level_changes_per_s": round(levels / total), "levels_per_msg": round(levels / n, 1),
        "us_parse": round(t_parse / n * 1e6, 2), "us_book_shm_publish": round(((t2 - t0) - t_parse) / n * 1e6, 2),
        "cpu_us_per_msg": round((c2 - c0) / n * 1e6, 2), "gaps": gaps,
    }))
    assert gaps == 0 and isinstance(ev, DepthDiff)
    writer.close()
    drain.kill()
    drain.wait()
    t_sock.close(0)
    l_sock.close(0)
    ctx.term()


if __name__ == "__main__":
    main()
