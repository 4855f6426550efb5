"""``pipeline bench hyperliquid-node``: how many node lines and blocks one ingest sustains.

A synthetic mainnet-like node is written to a temporary directory first: ``--coins`` coins with
``--orders`` resting orders each in an L4 snapshot, then ``--blocks`` blocks of
``--events`` raw book diffs each (new 45%, remove 40%, update 15%, spread over the coins with a
few busy ones, as on mainnet where BTC, ETH and SOL take most of the traffic) and two fills per
trade on ~2% of the events, in the by-block or streaming layout (``--mode``).  Then the real
source reads it as fast as it can: ``FileRunner`` (ingest/filetail.py) + the adapter + the feed,
writing every book to shared memory and every message to real ZeroMQ PUB sockets (no reader);
the clock runs from the first line to the last block applied.  Printed: lines/s, diff events/s,
blocks/s, and the ratio to a busy mainnet node (~15,000 diff events/s, ~14 blocks/s).

    .venv/bin/pipeline bench hyperliquid-node --coins 200 --blocks 600 --events 1000
    .venv/bin/pipeline bench hyperliquid-node --mode streaming
    .venv/bin/pipeline bench hyperliquid-node --statuses 1800   # + node_order_statuses, checked

``--statuses N`` also writes N order statuses per block (an ``open`` per new order, a
``canceled`` per removed one, the rest rejections, as on mainnet: ~25,000 status lines/s at
~14 blocks/s is ~1,800 per block, 95% rejections) and runs the source with
``order_statuses = true``: the clock then stops when the statuses are read and checked too,
and any mismatch fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

MAINNET_DIFFS_PER_S = 15_000
MAINNET_BLOCKS_PER_S = 14
MAINNET_STATUSES_PER_S = 25_000


def _coins(n: int) -> list[str]:
    named = ["BTC", "ETH", "SOL", "HYPE", "XRP", "DOGE", "SUI", "@107", "xyz:NVDA"]
    return (named + [f"C{i}" for i in range(max(0, n - len(named)))])[:n]


def write_node(root: Path, coins: list[str], orders: int, blocks: int, events: int, mode: str,
               seed: int = 1, statuses: int = 0) -> tuple[Path, int, int]:
    """The synthetic node under ``root``: (snapshot path, first block, lines written)."""
    rng = random.Random(seed)
    weights = [8.0 if i < 3 else 1.0 for i in range(len(coins))]  # a few busy coins
    height = 1_000_000_000
    oid = 500_000_000_000
    books: dict[str, dict[int, tuple[str, str, str]]] = {}
    mids = {c: 100.0 + 10 * i for i, c in enumerate(coins)}
    snap_coins = []
    for c in coins:
        book = books[c] = {}
        bids, asks = [], []
        for _ in range(orders):
            oid += 1
            side = "B" if rng.random() < 0.5 else "A"
            px = f"{mids[c] + (-1 if side == 'B' else 1) * (0.5 + rng.randrange(200) * 0.1):.1f}"
            sz = f"{rng.randrange(1, 5000) / 100:.2f}"
            book[oid] = (side, px, sz)
            (bids if side == "B" else asks).append(["0xu", {"coin": c, "side": side, "limitPx": px, "sz": sz,
                                                            "oid": oid}])
        snap_coins.append([c, [bids, asks]])
    snapshot = root / "snapshot.json"
    snapshot.write_text(json.dumps([height, snap_coins], separators=(",", ":")))
    suffix = "by_block" if mode == "by_block" else "streaming"
    day = root / "data" / f"node_raw_book_diffs_{suffix}" / "hourly" / "20260505"
    fday = root / "data" / f"node_fills_{suffix}" / "hourly" / "20260505"
    sday = root / "data" / f"node_order_statuses_{suffix}" / "hourly" / "20260505"
    day.mkdir(parents=True)
    fday.mkdir(parents=True)
    if statuses:
        sday.mkdir(parents=True)
    sout = open(sday / "17", "w") if statuses else None
    lines = 0
    t0 = 1778000000.0
    tid = 1
    with open(day / "17", "w") as out, open(fday / "17", "w") as fout:
        for b in range(1, blocks + 1):
            n = height + b
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + b * 0.07)) + f".{(b * 70_000_000) % 10**9:09d}"
            head = {"local_time": ts, "block_time": ts, "block_number": n}
            evs, fills, sts = [], [], []
            for c in rng.choices(coins, weights, k=events):
                book = books[c]
                r = rng.random()
                if r < 0.45 or len(book) < 10:
                    oid += 1
                    side = "B" if rng.random() < 0.5 else "A"
                    px = f"{mids[c] + (-1 if side == 'B' else 1) * (0.5 + rng.randrange(200) * 0.1):.1f}"
                    sz = f"{rng.randrange(1, 5000) / 100:.2f}"
                    book[oid] = (side, px, sz)
                    evs.append({"user": "0xu", "oid": oid, "coin": c, "side": side, "px": px,
                                "raw_book_diff": {"new": {"sz": sz}}})
                    sts.append(("open", c, side, px, sz, oid))
                else:
                    o = rng.choice(list(book)) if len(book) < 64 else next(iter(book))
                    side, px, sz = book[o]
                    if r < 0.85:
                        del book[o]
                        evs.append({"user": "0xu", "oid": o, "coin": c, "side": side, "px": px,
                                    "raw_book_diff": "remove"})
                        sts.append(("canceled", c, side, px, sz, o))
                    else:
                        new = f"{max(0.01, float(sz) / 2):.2f}"
                        book[o] = (side, px, new)
                        evs.append({"user": "0xu", "oid": o, "coin": c, "side": side, "px": px,
                                    "raw_book_diff": {"update": {"origSz": sz, "newSz": new}}})
                        if rng.random() < 0.13:  # a fill took the other half
                            tid += 1
                            common = {"coin": c, "px": px, "sz": new, "time": 1, "tid": tid}
                            fills += [["0xa", {**common, "side": side, "crossed": False, "oid": o}],
                                      ["0xb", {**common, "side": "A" if side == "B" else "B", "crossed": True,
                                               "oid": 1}]]
            outs = [(out, evs), (fout, fills)]
            if sout is not None:
                for c in rng.choices(coins, weights, k=max(0, statuses - len(sts))):
                    oid += 1
                    sts.append(("badAloPxRejected", c, "B", f"{mids[c]:.1f}", "1.0", oid))
                outs.append((sout, [{"time": ts, "user": "0xu", "hash": None, "builder": None, "status": s,
                                     "order": {"coin": c, "side": side, "limitPx": px, "sz": sz, "oid": o,
                                               "timestamp": 1, "triggerCondition": "N/A", "isTrigger": False,
                                               "triggerPx": "0.0", "children": [], "isPositionTpsl": False,
                                               "reduceOnly": False, "orderType": "Limit", "origSz": sz,
                                               "tif": "Alo", "cloid": None}}
                                    for s, c, side, px, sz, o in sts[:max(statuses, len(sts))]]))
            for f, items in outs:
                if mode == "by_block":
                    f.write(json.dumps({**head, "events": items}, separators=(",", ":")) + "\n")
                    lines += 1
                else:
                    for ev in items or [None]:
                        f.write(json.dumps({**head, "events": [ev] if ev is not None else []},
                                           separators=(",", ":")) + "\n")
                        lines += 1
    if sout is not None:
        sout.close()
    return snapshot, height + blocks, lines


def run_source(root: Path, snapshot: Path, coins: list[str], last: int, mode: str, depth: int,
               statuses: bool = False) -> dict:
    """The real source over the files; seconds from start to the last block applied."""
    import zmq

    from ingest.adapters.hyperliquid_node import HyperliquidNodeAdapter
    from ingest.feed import BusPublisher, FeedBooks
    from ingest.filetail import FileRunner
    from pipeline import bus
    from pipeline.config import ExchangeConfig
    from pipeline.shm import NAMES_DIR, BookWriter, ShmSpace

    cfg = ExchangeConfig(name="hlbench", adapter="hyperliquid_node", symbols=tuple(coins), depth=depth,
                         options={"node_data_dir": root / "data", "snapshot_file": snapshot, "mode": mode,
                                  "poll_interval_s": 0.001, "order_statuses": statuses})
    adapter = HyperliquidNodeAdapter(cfg)
    ctx = zmq.Context()
    trades_sock = bus.make_pub(ctx, f"ipc://{root}/t.ipc")
    l2_sock = bus.make_pub(ctx, f"ipc://{root}/l.ipc")
    writer = BookWriter(ShmSpace(f"l2bench{int(time.time())}", root / NAMES_DIR), "hlbench", list(coins), depth, 1)
    try:
        result: dict = {}

        async def main():
            loop = asyncio.get_running_loop()
            feed = FeedBooks("hlbench", adapter, writer, BusPublisher(trades_sock, l2_sock, batch=True), 1,
                             schedule_flush=lambda: loop.call_soon(feed.flush))
            stop = asyncio.Event()
            runner = FileRunner(cfg, adapter, feed, stop)
            marks = {}
            load = adapter.load_snapshot

            def timed_load(*a):  # the clock starts when the snapshot is in and the files are next
                out = load(*a)
                marks.update(t0=time.perf_counter(), cpu0=time.process_time(), lines0=runner._frames[0])
                return out

            adapter.load_snapshot = timed_load
            task = asyncio.create_task(runner.run())
            # (statuses: streaming knows a block's are whole once a later one begins: the last is not)
            while adapter.height < last or (statuses and adapter._status_done < last - (mode == "streaming")):
                await asyncio.sleep(0.005)
            result["seconds"] = time.perf_counter() - marks["t0"]
            result["cpu_seconds"] = time.process_time() - marks["cpu0"]
            result["lines"] = runner._frames[0] - marks["lines0"]
            result["updates"] = sum(f.counts.updates for f in feed.feeds.values())
            result["trades"] = sum(f.counts.trades for f in feed.feeds.values())
            result["gaps"] = sum(f.counts.gaps for f in feed.feeds.values())
            result["counts"] = dict(adapter.counts)
            stop.set()
            await task

        asyncio.run(main())
        return result
    finally:
        trades_sock.close(0)
        l2_sock.close(0)
        ctx.term()
        writer.close(unlink=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pipeline bench hyperliquid-node", description=__doc__.split("\n\n")[0])
    ap.add_argument("--coins", type=int, default=200)
    ap.add_argument("--orders", type=int, default=2000, help="resting orders per coin in the snapshot")
    ap.add_argument("--blocks", type=int, default=600)
    ap.add_argument("--events", type=int, default=1000, help="raw book diffs per block")
    ap.add_argument("--mode", choices=("by_block", "streaming"), default="by_block")
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--statuses", type=int, default=0, help="order statuses per block (0: none, not read)")
    args = ap.parse_args(argv)
    coins = _coins(args.coins)
    with tempfile.TemporaryDirectory(prefix="hlnode-bench-") as d:
        root = Path(d)
        t = time.perf_counter()
        snapshot, last, lines = write_node(root, coins, args.orders, args.blocks, args.events, args.mode,
                                           statuses=args.statuses)
        size = sum(p.stat().st_size for p in (root / "data").rglob("*") if p.is_file())
        print(f"synthetic node: {len(coins)} coins x {args.orders} orders, {args.blocks} blocks x {args.events} "
              f"diffs ({args.mode}), {lines} lines, {size / 1e6:.0f} MB, written in {time.perf_counter() - t:.1f}s")
        r = run_source(root, snapshot, coins, last, args.mode, args.depth, statuses=args.statuses > 0)
    s, cpu = r["seconds"], r["cpu_seconds"]
    print(f"read in {s:.2f}s wall, {cpu:.2f}s CPU of this process; {r['updates']} book updates, {r['trades']} trades, "
          f"{r['gaps']} gaps")
    # per CPU second: what one ingest sustains when it has a core (the wall clock also counts
    # the other processes of a shared machine)
    for what, secs in (("per CPU second", cpu), ("per wall second", s)):
        diffs_s = args.blocks * args.events / secs
        print(f"{what}: {r['lines'] / secs:,.0f} lines/s, {diffs_s:,.0f} diff events/s, {args.blocks / secs:,.0f} "
              f"blocks/s = x{diffs_s / MAINNET_DIFFS_PER_S:.2f} a busy mainnet node's diffs "
              f"({MAINNET_DIFFS_PER_S:,}/s), x{args.blocks / secs / MAINNET_BLOCKS_PER_S:.1f} its blocks "
              f"({MAINNET_BLOCKS_PER_S}/s)")
    c = r["counts"]
    if args.statuses:
        print(f"order statuses: {c['status_lines']} lines read, {c['statuses_checked']} checked against the book, "
              f"{c['status_mismatches']} mismatches, {c['status_blocks_unchecked']} blocks unchecked; "
              f"per CPU second: {args.blocks * args.statuses / cpu:,.0f} status events/s read alongside the diffs "
              f"= x{args.blocks * args.statuses / cpu / MAINNET_STATUSES_PER_S:.2f} a busy mainnet node's "
              f"({MAINNET_STATUSES_PER_S:,}/s)")
    return 0 if r["gaps"] == 0 and c["status_mismatches"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
