"""The ingest's trade hot path: CPU per trade through ``FeedBooks.receive`` -> trade ring -> bus.

Prebuilt ``TradeEvent``s of 2 symbols go through one ``FeedBooks`` (real shared-memory book
writer and trade ring, ``BusPublisher`` on two real ZeroMQ PUB sockets over ipc, batch mode with
a flush every 64 trades, as the runner flushes a read batch), twice in the same process: with
the derived kinds off (``cvd = false``, ``bar_intervals = []``: the send path alone) and with
the defaults (CVD and 1s/1m bars, computed at the flush after the batch's trades are sent).
The figure is this thread's CPU per trade, the best of ``--repeat`` passes; the ratio of the
two says what the derived kinds cost, in one run on one machine.

    .venv/bin/pipeline bench trade-path                 # 200,000 trades, best of 5
    .venv/bin/pipeline bench trade-path --trades 50000 --repeat 3

The file runs on its own too (``python pipeline/benchmarks/trade_path.py``), so an older checkout
can be measured with the same code: ``PYTHONPATH=OLD_TREE python trade_path.py --plain-only``
(a tree without the derived kinds takes no ``cvd``/``bar_intervals`` arguments).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
import time

SYMBOLS = ("BTCUSDT", "ETHUSDT")
FLUSH_EVERY = 64


def run(trades: int, repeat: int, derived: bool | None) -> float:
    """Best CPU µs per trade; ``derived`` None: the tree's FeedBooks defaults, untouched."""
    import zmq

    from ingest.adapters.binance import BinanceSpotAdapter
    from ingest.events import TradeEvent
    from ingest.feed import BusPublisher, FeedBooks
    from pipeline import bus
    from pipeline.config import ExchangeConfig
    from pipeline.shm import NAMES_DIR, BookWriter, ShmSpace

    adapter = BinanceSpotAdapter(ExchangeConfig(name="tb", adapter="binance", symbols=SYMBOLS))
    tmp = tempfile.mkdtemp(prefix="l2ptp", dir="/tmp")
    writer = BookWriter(ShmSpace(f"l2ptp{os.getpid()}", f"{tmp}/{NAMES_DIR}"), "tb", list(SYMBOLS), 20, epoch=1)
    ctx = zmq.Context()
    pub_t, pub_l = bus.make_pub(ctx, f"ipc://{tmp}/t.sock"), bus.make_pub(ctx, f"ipc://{tmp}/l.sock")
    kw = {} if derived is None else ({"bar_intervals": ("1s", "1m")} if derived else {"cvd": False, "bar_intervals": ()})
    try:
        feed = FeedBooks("tb", adapter, writer, BusPublisher(pub_t, pub_l, batch=True), epoch=1,
                         schedule_flush=None, **kw)
        events = [TradeEvent(SYMBOLS[i & 1], 100.0 + (i % 50) * 0.1, 0.5, "buy" if i % 3 else "sell", str(i),
                             1_700_000_000_000_000 + i * 1000, i) for i in range(trades)]
        receive, flush = feed.receive, feed.flush
        best = float("inf")
        gc_was = gc.isenabled()
        gc.disable()
        try:
            for _ in range(max(repeat, 1)):
                t0 = time.thread_time()
                for i, ev in enumerate(events):
                    receive(ev)
                    if i % FLUSH_EVERY == FLUSH_EVERY - 1:
                        flush()
                flush()
                best = min(best, (time.thread_time() - t0) / trades * 1e6)
        finally:
            if gc_was:
                gc.enable()
        return best
    finally:
        pub_t.close(0)
        pub_l.close(0)
        ctx.term()
        writer.close(unlink=True)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="pipeline bench trade-path", description=__doc__.splitlines()[0])
    ap.add_argument("--trades", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5, help="passes over the trades; the best is reported")
    ap.add_argument("--plain-only", action="store_true",
                    help="one run with the tree's defaults (an older tree without the derived kinds)")
    a = ap.parse_args(argv)
    if a.plain_only:
        print(json.dumps({"trades": a.trades, "cpu_us_per_trade": round(run(a.trades, a.repeat, None), 3)}))
        return
    off = run(a.trades, a.repeat, False)
    on = run(a.trades, a.repeat, True)
    print(json.dumps({"trades": a.trades, "repeat": a.repeat, "cpu_us_per_trade_derived_off": round(off, 3),
                      "cpu_us_per_trade_cvd_and_bars": round(on, 3), "ratio": round(on / off, 3)}))


if __name__ == "__main__":
    main()
