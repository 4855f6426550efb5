"""Publisher CPU per L2 bus message, in one process: the hub and its mirror, without sockets.

Synthetic L2 deltas (pipeline/benchmarks/synthetic_bus.py: 1-3 levels of 50-level books,
4 symbols) go through ``Hub.on_l2`` as the bus reader hands them over, with ``--clients``
connected clients (fake sockets: frames are taken from their outboxes) in the default
subscription (every trade and throttled book snapshots) and ``--delta-clients`` of them
subscribed to book deltas.  Each view is also written to shared memory, as the ingest does
before it sends, so snapshots can come from there.  Throttle timers fire when due; the snapshots
they ask for are rendered and counted.  The figure is this thread's CPU per L2 message; no
ZeroMQ, no WebSocket writes (``pipeline bench publisher-latency`` has those).

    .venv/bin/pipeline bench publisher-cpu                       # 10 snapshot clients
    .venv/bin/pipeline bench publisher-cpu --delta-clients 2     # 2 of them want deltas

The file runs on its own too (``python pipeline/benchmarks/publisher_cpu.py``), so an older
checkout can be measured with the same code: ``PYTHONPATH=OLD_TREE python publisher_cpu.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import tempfile
import time
from pathlib import Path

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
BLOCK = 16  # messages per batch: shared memory is written for its end, as the ingest does per batch
TIMERS_EVERY = 512  # messages between checks of the throttle timers


def run(messages: int, clients: int, delta_clients: int, seed: int = 3) -> dict:
    from pipeline.benchmarks.synthetic_bus import SyntheticBus
    from pipeline.config import parse_config
    from pipeline.shm import BookState, BookWriter
    from publisher.hub import Hub
    from publisher.mirror import BookMirror
    from publisher.settings import load_settings

    tmp = Path(tempfile.mkdtemp(prefix="l2pcpu"))
    symbols = json.dumps(SYMBOLS)
    config = parse_config(f'[pipeline]\nrun_dir = "{tmp}/run"\n[exchanges.sim]\nadapter = "binance"\n'
                          f'symbols = {symbols}\ndepth = 50\n', tmp)
    synthetic = SyntheticBus(SYMBOLS, epoch=7)
    rng = random.Random(seed)
    msgs = [(s, synthetic.l2(s, i < len(SYMBOLS))) for i in range(messages)
            for s in [SYMBOLS[i] if i < len(SYMBOLS) else SYMBOLS[rng.randrange(len(SYMBOLS))]]]
    prices = {s: (sorted(b, reverse=True), sorted(a)) for s, (b, a) in synthetic.books.items()}
    writer = BookWriter(config.shm_prefix, "sim", SYMBOLS, 50, epoch=7)
    timers: list = []
    mirror = BookMirror(config)
    hub = Hub(load_settings(config), mirror, lambda delay, f, *a: timers.append((time.monotonic() + delay, f, a)))
    conns = [hub.connect(f"bench{i}", lambda: None, lambda code, reason: None) for i in range(clients)]
    for c in conns[:delta_clients]:
        hub.receive(c, json.dumps({"op": "subscribe", "exchange": "sim", "channels": ["trades", "book"],
                                   "mode": "deltas"}))

    def drain() -> None:
        for c in conns:
            while hub.next_frame(c) is not None:
                pass

    drain()
    seqs = dict.fromkeys(SYMBOLS, 0)
    on_l2 = hub.on_l2
    cpu = 0.0
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for k0 in range(0, messages, BLOCK):
            block = msgs[k0:k0 + BLOCK]
            for s, _ in block:
                seqs[s] += 1
            for i, s in enumerate(SYMBOLS):  # shm as of the batch's end (the ingest writes it before sending)
                (bids, asks), (bp, ap) = synthetic.books[s], prices[s]
                writer.write_view(i, seqs[s], BookState.LIVE, 1, 1, seqs[s], bp, [bids[p] for p in bp], ap,
                                  [asks[p] for p in ap])
            t = time.thread_time()
            for _, (topic, payload) in block:
                on_l2(topic, payload)
            drain()  # the clients' senders take their frames
            if k0 % TIMERS_EVERY == 0:
                now = time.monotonic()
                due = [x for x in timers if x[0] <= now]
                timers[:] = [x for x in timers if x[0] > now]
                for _, f, args in due:
                    f(*args)
                drain()
            cpu += time.thread_time() - t
    finally:
        if gc_was:
            gc.enable()
        mirror.close()
        writer.close(unlink=True)
    st = hub.statistics()
    return {"messages": messages, "clients": clients, "delta_clients": delta_clients,
            "cpu_us_per_l2_msg": round(cpu / max(messages, 1) * 1e6, 3),
            "l2_in": st["l2_in"], "l2_header_only": st.get("l2_header_only"), "sent_l2": st["sent"]["l2"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="pipeline bench publisher-cpu", description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=40_000)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--delta-clients", type=int, default=0, help="how many of the clients want book deltas")
    ap.add_argument("--runs", type=int, default=3, help="the median run is reported, all runs listed")
    a = ap.parse_args(argv)
    results = [run(a.messages, a.clients, min(a.delta_clients, a.clients)) for _ in range(max(a.runs, 1))]
    figures = sorted(r["cpu_us_per_l2_msg"] for r in results)
    out = dict(results[0], cpu_us_per_l2_msg=figures[(len(figures) - 1) // 2], runs_cpu_us_per_l2_msg=figures)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
