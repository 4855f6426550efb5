"""Replay the real OKX capture (2022-05-13, cryptofeed; 290 ``books`` messages with real
CRC32 checksums, no seqId) through the adapter and the real feed (tests/feeds.py FeedRun:
ingest.feed.FeedBooks with shared memory, fed through ``receive`` as the runner feeds it),
and compare with a reference written here independently: Decimal keys, the original text
kept per level, the checksum rebuilt from that text (shared/docs/exchange-protocols.md
section 5).
"""

from __future__ import annotations

import json
import math
import zlib
from decimal import Decimal

import pytest

from captures import CAPTURES, read_capture
from feeds import FeedRun
from ingest.adapters.okx import OkxAdapter
from pipeline.book import ViewBook
from pipeline.config import ExchangeConfig
from pipeline.shm import BookState

CAPTURE = CAPTURES / "okx_2022-05-13.jsonl"
SYMBOLS = ("BTC-USD-220527", "UNI-USD-SWAP", "BTC-USDT")


class OkxReference:
    """Per symbol: Decimal price -> (price text, size text); checksum from that text."""

    def __init__(self):
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}
        self.verified = 0

    @staticmethod
    def _set(side: dict, levels) -> None:
        for lv in levels:
            px, sz = lv[0], lv[1]
            if Decimal(sz) == 0:
                side.pop(Decimal(px), None)
            else:
                side[Decimal(px)] = (px, sz)

    def message(self, action: str, d: dict) -> None:
        if action == "snapshot":
            self.bids, self.asks = {}, {}
        self._set(self.bids, d["bids"])
        self._set(self.asks, d["asks"])
        assert self.crc() == d["checksum"], "reference: the venue's checksum does not match"
        self.verified += 1

    def crc(self) -> int:
        bids = [self.bids[p] for p in sorted(self.bids, reverse=True)[:25]]
        asks = [self.asks[p] for p in sorted(self.asks)[:25]]
        parts = []
        for i in range(25):
            for side in (bids, asks):
                if i < len(side):
                    parts.extend(side[i])
        v = zlib.crc32(":".join(parts).encode())
        return v - 2**32 if v >= 2**31 else v

    def side(self, bids: bool) -> list[tuple[float, float]]:
        side = self.bids if bids else self.asks
        keys = sorted(side, reverse=bids)
        return [(float(k), float(Decimal(side[k][1]))) for k in keys]


def okx(*symbols, **kw):
    return OkxAdapter(ExchangeConfig(name="okx", adapter="okx", symbols=symbols, **kw))


def frames():
    _, events = read_capture(CAPTURE)
    return [(e["data"], int(e["ts"] * 1e9)) for e in events if e["src"] == "ws"]


@pytest.fixture
def replay():
    """replay(frames) -> a FeedRun that took them all; closed (shm removed) after the test."""
    runs = []

    def run(frame_list, adapter=None):
        feed = FeedRun(adapter or okx(*SYMBOLS), SYMBOLS, exchange="okx")
        runs.append(feed)
        for data, ts in frame_list:
            feed.frame(data, ts)
        return feed

    yield run
    for feed in runs:
        feed.close()


def book_frames():
    return [(d, ts) for d, ts in frames() if '"channel":"books"' in d and '"action"' in d]


@pytest.mark.shared
def test_whole_capture_verifies_every_checksum_and_equals_the_decimal_reference(replay):
    feed = replay(frames())
    refs = {s: OkxReference() for s in SYMBOLS}
    for data, _ in book_frames():
        msg = json.loads(data)
        refs[msg["arg"]["instId"]].message(msg["action"], msg["data"][0])
    assert sum(r.verified for r in refs.values()) == 290
    assert sum(feed.counts(s).checksum_ok for s in SYMBOLS) == 290
    for sym in SYMBOLS:
        c = feed.counts(sym)
        # (a crossed book counts as checksum_failed in the feed)
        assert c.checksum_failed == 0 and c.gaps == 0 and c.malformed == 0, (sym, c.as_tuple())
        # one snapshot installed (no resync), every update after it applied
        assert c.resyncs == 0 and c.updates == refs[sym].verified - 1
        assert feed.live(sym)
        book = feed.book(sym)
        # the whole book, every level, not only the view
        assert list(zip(reversed(book.bids.prices), reversed(book.bids.sizes))) == refs[sym].side(True), sym
        assert list(zip(book.asks.prices, book.asks.sizes)) == refs[sym].side(False), sym
        bids, asks = book.view()
        assert bids == refs[sym].side(True)[:50] and asks == refs[sym].side(False)[:50]
    assert feed.requests == []
    # tickers are not subscribed by this adapter: unknown, counted, never an error
    assert feed.unknown == sum(1 for d, _ in frames() if '"channel":"tickers"' in d and '"data"' in d)


@pytest.mark.shared
def test_trades_keep_the_taker_side_id_and_time(replay):
    feed = replay(frames())
    raw = []
    for data, _ in frames():
        msg = json.loads(data)
        if msg.get("arg", {}).get("channel") == "trades" and "data" in msg:
            raw.extend(msg["data"])
    assert len(feed.trades) == len(raw) > 70
    for ev, t in zip(feed.trades, raw):
        assert ev.symbol == t["instId"] and ev.trade_id == t["tradeId"]
        assert ev.side == t["side"] and ev.side in ("buy", "sell")   # OKX side is the taker's
        assert Decimal(str(ev.price)) == Decimal(t["px"]) and Decimal(str(ev.amount)) == Decimal(t["sz"])
        assert ev.ts_exchange == int(t["ts"]) * 1000
    assert {ev.side for ev in feed.trades} == {"buy", "sell"}


@pytest.mark.shared
def test_checksum_vectors():
    vectors = json.loads((CAPTURES.parent / "samples" / "okx" / "checksum_vectors.json").read_text())["vectors"]
    for v in vectors:
        bids = v.get("bids") or v["bids_top25"]
        asks = v.get("asks") or v["asks_top25"]
        sym = "BTC-USDT"
        a = okx(sym)
        snap = a.parse_frame(json.dumps({"arg": {"channel": "books", "instId": sym}, "action": "snapshot",
                                         "data": [{"asks": asks, "bids": bids, "ts": "1", "checksum": 1}]}), 0)
        book = ViewBook(25)
        book.load_snapshot(snap.bids, snap.asks)
        assert a.checksum(sym, book) == v["crc32_signed"], v["name"]
        assert math.isfinite(snap.bids[0][0])


@pytest.mark.shared
def test_a_removed_update_is_caught_by_the_checksum_and_resubscribed(replay):
    fl = frames()
    # drop the 10th UNI-USD-SWAP update (no seqId in 2022: the checksum is the only guard)
    idx = [i for i, (d, _) in enumerate(fl) if '"UNI-USD-SWAP"' in d and '"action":"update"' in d][9]
    feed = replay(fl[:idx] + fl[idx + 1:])
    c = feed.counts("UNI-USD-SWAP")
    assert c.checksum_failed >= 1 and "UNI-USD-SWAP" in feed.resubscribes
    assert not feed.live("UNI-USD-SWAP")   # waits for the resubscribed snapshot
    assert feed.shm("UNI-USD-SWAP")[0].state is BookState.STALE
    assert feed.counts("BTC-USDT").checksum_failed == 0 and feed.live("BTC-USDT")


@pytest.mark.shared
def test_a_tampered_level_is_a_checksum_mismatch(replay):
    fl = frames()
    idx = next(i for i, (d, _) in enumerate(fl) if '"BTC-USDT"' in d and '"action":"update"' in d)
    msg = json.loads(fl[idx][0])
    lv = msg["data"][0]["bids"][0] if msg["data"][0]["bids"] else msg["data"][0]["asks"][0]
    lv[1] = str(Decimal(lv[1]) + 1)  # a size the venue never had
    fl[idx] = (json.dumps(msg), fl[idx][1])
    feed = replay(fl[:idx + 1])
    assert feed.counts("BTC-USDT").checksum_failed == 1 and feed.resubscribes == ["BTC-USDT"]


def _seq_frames(sym="BTC-USDT"):
    """A small modern stream (seqId/prevSeqId, checksum 0): snapshot then chained updates."""
    def book(action, seq, prev, bids, asks):
        return json.dumps({"arg": {"channel": "books", "instId": sym}, "action": action,
                           "data": [{"asks": asks, "bids": bids, "ts": "1700000000000", "checksum": 0,
                                     "prevSeqId": prev, "seqId": seq}]})
    return [
        book("snapshot", 100, -1, [["10.0", "1", "0", "1"], ["9.9", "2", "0", "1"]], [["10.1", "3", "0", "1"]]),
        book("update", 105, 100, [["9.9", "0", "0", "0"]], [["10.2", "4", "0", "1"]]),
        book("update", 105, 105, [], []),                              # heartbeat: seqId == prevSeqId
        book("update", 7, 105, [["9.8", "5", "0", "1"]], []),          # reset after maintenance: seqId < prevSeqId
        book("update", 9, 7, [], [["10.1", "0", "0", "0"]]),
    ]


def test_seqid_chain_heartbeat_and_reset_apply(replay):
    feed = replay([(f, 0) for f in _seq_frames()])
    c = feed.counts("BTC-USDT")
    assert c.updates == 4 and c.gaps == 0 and feed.sync("BTC-USDT").book_id == 9
    assert feed.book("BTC-USDT").view() == ([(10.0, 1.0), (9.8, 5.0)], [(10.2, 4.0)])


@pytest.mark.parametrize("mutate", ["remove", "reorder", "duplicate"])
def test_seqid_gaps_removed_reordered_and_duplicated_updates(mutate, replay):
    fl = _seq_frames()
    if mutate == "remove":
        del fl[1]
    elif mutate == "reorder":
        fl[3], fl[4] = fl[4], fl[3]
    else:
        fl.insert(2, fl[1])
    feed = replay([(f, 0) for f in fl])
    assert feed.counts("BTC-USDT").gaps >= 1 and feed.resubscribes[0] == "BTC-USDT"
    # a new snapshot (what the resubscribe brings) makes the book live again
    feed.frame(_seq_frames()[0])
    assert feed.live("BTC-USDT")


@pytest.mark.shared
def test_capture_through_the_real_feed_and_shared_memory(replay):
    """The same capture into shared memory: 290 checksums counted ok in the stats as
    `pipeline status` reads them, every view equal to the Decimal reference."""
    refs = {s: OkxReference() for s in SYMBOLS}
    for data, _ in book_frames():
        msg = json.loads(data)
        refs[msg["arg"]["instId"]].message(msg["action"], msg["data"][0])
    feed = replay(frames())
    total_ok = 0
    for sym, ref in refs.items():
        snap, stats = feed.shm(sym, depth=50)
        assert snap.state is BookState.LIVE, sym
        assert stats["checksum_failed"] == 0 and stats["gaps"] == 0 and stats["malformed"] == 0, stats
        total_ok += stats["checksum_ok"]
        assert [tuple(x) for x in snap.bids.tolist()] == ref.side(True)[:50], sym
        assert [tuple(x) for x in snap.asks.tolist()] == ref.side(False)[:50], sym
    assert total_ok == 290 and len(feed.trades) > 70
