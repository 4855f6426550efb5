"""Replay a real Hyperliquid node's output (shared/data/samples/hyperliquid_node: an L4
snapshot at block 985148181 and the next 51 blocks of BTC in by-block layout) through the real
source: the adapter and the file-tailing transport (ingest/filetail.py) into shared memory.

The reference is built here, independently of the adapter: the snapshot's orders and every
diff by ``oid`` with ``json`` and ``Decimal``, summed per price; the fills paired by ``tid``
with the taker from the ``crossed`` fill.  The same files converted by the test to the
streaming layout (one event per line, split over hours 9 and 10 of a day to cross a rollover
with unpadded hour names) give the same book and the same trades."""

from __future__ import annotations

import asyncio
import gzip
import json
import tarfile
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from captures import SAMPLES
from feeds import Recorder
from ingest.adapters.hyperliquid_node import HyperliquidNodeAdapter
from ingest.feed import FeedBooks
from ingest.filetail import FileRunner
from pipeline.config import ExchangeConfig
from pipeline.shm import BookReader, BookState, BookWriter

NODE = SAMPLES / "hyperliquid_node"
FIRST, LAST = 985148182, 985148232
DEPTH = 25

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def node_files(tmp_path_factory) -> Path:
    """The sample unpacked: DIR/hl/data/node_*_by_block/hourly/20260505/17 and DIR/snapshot.json."""
    d = tmp_path_factory.mktemp("node")
    with tarfile.open(NODE / "by_block_btc_985148182_985148232.tar.gz") as tar:
        tar.extractall(d, filter="data")
    (d / "snapshot.json").write_bytes(gzip.decompress((NODE / "snapshot_985148181.json.gz").read_bytes()))
    return d


def by_block_lines(node_files: Path, kind: str) -> list[dict]:
    path = node_files / "hl" / "data" / f"{kind}_by_block" / "hourly" / "20260505" / "17"
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# ------------------------------------------------------------------ the reference


def reference_book(node_files: Path) -> tuple[list, list, int]:
    """Top DEPTH levels (Decimal) after the last block, from the raw JSON; unknown oids counted."""
    height, coins = json.loads((node_files / "snapshot.json").read_text())
    assert height == FIRST - 1
    orders: dict[int, tuple[str, Decimal, Decimal]] = {}
    for coin, sides in coins:
        if coin == "BTC":
            for side in sides:
                for _user, o in side:
                    orders[o["oid"]] = (o["side"], Decimal(o["limitPx"]), Decimal(o["sz"]))
    unknown = 0
    for blk in by_block_lines(node_files, "node_raw_book_diffs"):
        for ev in blk["events"]:
            if ev["coin"] != "BTC":
                continue
            d = ev["raw_book_diff"]
            if d == "remove":
                unknown += orders.pop(ev["oid"], None) is None
            elif "new" in d:
                orders[ev["oid"]] = (ev["side"], Decimal(ev["px"]), Decimal(d["new"]["sz"]))
            else:
                if ev["oid"] not in orders:
                    unknown += 1
                    continue
                side, px, _ = orders[ev["oid"]]
                orders[ev["oid"]] = (side, px, Decimal(d["update"]["newSz"]))
    levels = {"B": defaultdict(Decimal), "A": defaultdict(Decimal)}
    for side, px, sz in orders.values():
        levels[side][px] += sz
    bids = sorted(((p, q) for p, q in levels["B"].items() if q > 0), reverse=True)[:DEPTH]
    asks = sorted((p, q) for p, q in levels["A"].items() if q > 0)[:DEPTH]
    return bids, asks, unknown


def reference_trades(node_files: Path) -> list[tuple[str, str, Decimal, Decimal]]:
    """(tid, taker side, price, size) per trade: the two fills of a tid, taker = crossed."""
    by_tid: dict[int, list[dict]] = defaultdict(list)
    for blk in by_block_lines(node_files, "node_fills"):
        for _user, fill in blk["events"]:
            by_tid[fill["tid"]].append(fill)
    out = []
    for tid, fills in by_tid.items():
        (taker,) = [f for f in fills if f["crossed"]]
        out.append((str(tid), {"B": "buy", "A": "sell"}[taker["side"]], Decimal(taker["px"]), Decimal(taker["sz"])))
    return sorted(out)


# ------------------------------------------------------------------ the replay


def to_streaming(node_files: Path, out: Path) -> Path:
    """The by-block files rewritten one event per line (an empty block: one line with no event),
    blocks up to FIRST + 24 in hour 9 of the day, the rest in hour 10."""
    for kind in ("node_raw_book_diffs", "node_fills", "node_order_statuses"):
        hours = {"9": [], "10": []}
        for blk in by_block_lines(node_files, kind):
            head = {k: blk[k] for k in ("local_time", "block_time", "block_number")}
            lines = [{**head, "events": [ev]} for ev in blk["events"]] or [{**head, "events": []}]
            hours["9" if blk["block_number"] <= FIRST + 24 else "10"] += lines
        for hour, lines in hours.items():
            path = out / f"{kind}_streaming" / "hourly" / "20260505" / hour
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(x, separators=(",", ":")) + "\n" for x in lines))
    return out


def replay(data_dir: Path, snapshot: Path, mode: str, shm_prefix: str, **options):
    """Run the source (FileRunner) until every line is read; the shm view, trades, adapter."""
    cfg = ExchangeConfig(name="hln", adapter="hyperliquid_node", symbols=("BTC",), depth=DEPTH,
                         options={"node_data_dir": data_dir, "snapshot_file": snapshot, "mode": mode,
                                  "poll_interval_s": 0.005, "l4": True, **options})
    adapter = HyperliquidNodeAdapter(cfg)
    writer = BookWriter(shm_prefix, "hln", ["BTC"], DEPTH, epoch=1)
    rec = Recorder()
    try:
        feed = FeedBooks("hln", adapter, writer, rec, epoch=1)
        runner = FileRunner(cfg, adapter, feed, None)

        async def run():
            runner.stop = stop = asyncio.Event()
            task = asyncio.create_task(runner.run())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                if adapter.height == LAST and sum(t.backlog() for t in runner.tails) == 0 and runner.tails[0].file:
                    await asyncio.sleep(0.1)  # the end of the batch (streaming: the last block closes)
                    break
            stop.set()
            await task

        asyncio.run(run())
        feed.flush()
        with BookReader.open(shm_prefix, "hln") as reader:
            snap = reader.read("BTC")
        feed.l4 = rec.kinds.get("l4", [])
        return snap, rec.trades, adapter, feed
    finally:
        writer.close(unlink=True)


@pytest.mark.parametrize("mode", ["by_block", "streaming"])
def test_node_files_replayed_through_the_source_give_the_reference_book_and_trades(node_files, tmp_path, mode,
                                                                                     shm_prefix):
    data_dir = node_files / "hl" / "data" if mode == "by_block" else to_streaming(node_files, tmp_path / "data")
    snap, trades, adapter, feed = replay(data_dir, node_files / "snapshot.json", mode, shm_prefix)
    bids, asks, unknown = reference_book(node_files)
    assert unknown == 0 and adapter.counts["unknown_oid"] == 0 and adapter.counts["block_gaps"] == 0
    # the sample's recorded top of book at block 985148232
    assert (bids[0], asks[0]) == ((Decimal("81307.0"), Decimal("2.80623")), (Decimal("81308.0"), Decimal("8.81056")))
    assert snap.state == BookState.LIVE and snap.update_id == LAST
    assert len(bids) == len(asks) == DEPTH
    assert [tuple(x) for x in snap.bids.tolist()] == [(float(p), float(q)) for p, q in bids]
    assert [tuple(x) for x in snap.asks.tolist()] == [(float(p), float(q)) for p, q in asks]
    # the view's time is the last changing block's time (µs); nothing but BTC went live
    c = feed.feeds["BTC"].counts
    assert c.gaps == 0 and c.malformed == 0 and c.updates > 40
    got = sorted((t.trade_id, t.side, Decimal(repr(t.price)), Decimal(repr(t.amount))) for t in trades)
    want = reference_trades(node_files)
    assert len(want) == 11 and adapter.counts["lines"] > 0
    assert got == want
    # the l4 stream: the snapshot's orders + every l4 message give the same book, order by order
    height, coins = json.loads((node_files / "snapshot.json").read_text())
    orders = {o["oid"]: (o["side"], Decimal(o["limitPx"]), Decimal(o["sz"]))
              for coin, sides in coins if coin == "BTC" for side in sides for _u, o in side}
    assert [m.seq for m in feed.l4] == list(range(1, len(feed.l4) + 1)) and len(feed.l4) >= 40
    for m in feed.l4:
        assert FIRST <= m.update_id <= LAST and m.symbol == "BTC"
        for oid, side, px, sz in m.orders:
            if sz == 0:
                orders.pop(oid, None)  # (an order can be placed and gone within one block)
            else:
                orders[oid] = ("B" if side == "bid" else "A", Decimal(repr(px)), Decimal(repr(sz)))
    levels = {"B": defaultdict(Decimal), "A": defaultdict(Decimal)}
    for side, px, sz in orders.values():
        levels[side][px] += sz
    assert sorted(levels["B"].items(), reverse=True)[:DEPTH] == bids
    assert sorted(levels["A"].items())[:DEPTH] == asks


def reference_statuses(node_files: Path, last: int) -> int:
    """Orders of BTC with a status other than a rejection, per block up to ``last`` (json only)."""
    n = 0
    for blk in by_block_lines(node_files, "node_order_statuses"):
        if blk["block_number"] <= last:
            n += len({ev["order"]["oid"] for ev in blk["events"]
                      if ev["order"]["coin"] == "BTC" and not ev["status"].endswith("Rejected")})
    return n


@pytest.mark.parametrize("mode", ["by_block", "streaming"])
def test_the_real_order_statuses_agree_with_the_book_order_by_order(node_files, tmp_path, mode, shm_prefix):
    """``order_statuses = true`` on the real sample (41,592 status events, 95% rejections): every
    open order has its diff in the same block, every canceled or filled one is off the book after
    it; the book and trades are those of the run without statuses."""
    data_dir = node_files / "hl" / "data" if mode == "by_block" else to_streaming(node_files, tmp_path / "data")
    snap, trades, adapter, feed = replay(data_dir, node_files / "snapshot.json", mode, shm_prefix,
                                         order_statuses=True)
    c = adapter.counts
    # streaming: the last block's statuses are whole only once a later block begins (none here)
    want = reference_statuses(node_files, LAST if mode == "by_block" else LAST - 1)
    assert want == (1267 if mode == "by_block" else want) and want > 1200
    assert (c["statuses_checked"], c["status_mismatches"], c["status_blocks_unchecked"]) == (want, 0, 0)
    bids, asks, _ = reference_book(node_files)
    assert snap.update_id == LAST and [tuple(x) for x in snap.bids.tolist()] == [(float(p), float(q)) for p, q in bids]
    assert [tuple(x) for x in snap.asks.tolist()] == [(float(p), float(q)) for p, q in asks]
    assert len(trades) == 11 and c["unknown_oid"] == 0
