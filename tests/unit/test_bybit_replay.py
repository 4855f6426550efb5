"""Replay the real Bybit v5 spot frames (gocryptotrader: orderbook.50 snapshot u=2876700,
then the delta u=2876701) through the adapter and the real feed (tests/feeds.py FeedRun:
ingest.feed.FeedBooks, fed through ``receive`` as the runner feeds it), and compare with a reference written
here independently: Decimal strings in dicts, the section 4 rules spelled out again
(shared/docs/exchange-protocols.md)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from captures import SAMPLES, read_capture
from ingest.adapters.bybit import BybitSpotAdapter
from pipeline.config import ExchangeConfig
from feeds import FeedRun

CAPTURE = SAMPLES / "bybit" / "gocryptotrader_spot_frames.capture.jsonl"
SYM = "BTCUSDT"


class BybitReference:
    """Section 4: a snapshot replaces the book; a delta needs ``u == last u + 1``; trim to N."""

    def __init__(self, cap: int):
        self.cap = cap
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.u = None
        self.applied = 0

    @staticmethod
    def _set(side: dict, levels) -> None:
        for p, q in levels:
            if Decimal(q) == 0:
                side.pop(Decimal(p), None)
            else:
                side[Decimal(p)] = Decimal(q)

    def frame(self, msg: dict) -> None:
        d = msg["data"]
        if msg["type"] == "snapshot":
            self.bids, self.asks = {}, {}
        else:
            assert d["u"] == self.u + 1, "reference: u gap"
            self.applied += 1
        self._set(self.bids, d["b"])
        self._set(self.asks, d["a"])
        self.bids = dict(sorted(self.bids.items(), reverse=True)[:self.cap])
        self.asks = dict(sorted(self.asks.items())[:self.cap])
        self.u = d["u"]

    def side(self, bids: bool) -> list[tuple[float, float]]:
        side = self.bids if bids else self.asks
        return [(float(p), float(side[p])) for p in sorted(side, reverse=bids)]


def bybit(depth_stream="orderbook.50"):
    return BybitSpotAdapter(ExchangeConfig(name="bybit", adapter="bybit", symbols=(SYM,), depth_stream=depth_stream))


def frames() -> list[str]:
    return [e["data"] for e in read_capture(CAPTURE)[1] if e["src"] == "ws"]


def book_frames() -> list[str]:
    return [f for f in frames() if '"topic":"orderbook.' in f]


@pytest.fixture
def make_feed():
    """make_feed(adapter) -> a FeedRun on SYM, closed (shm removed) after the test."""
    runs = []

    def make(adapter):
        runs.append(FeedRun(adapter, [SYM], exchange="bybit"))
        return runs[-1]

    yield make
    for run in runs:
        run.close()


def full_book(feed):
    b = feed.book(SYM)
    return list(zip(reversed(b.bids.prices), reversed(b.bids.sizes))), list(zip(b.asks.prices, b.asks.sizes))


def equals_reference(feed, ref) -> bool:
    return full_book(feed) == (ref.side(True), ref.side(False))


@pytest.mark.shared
def test_real_spot_frames_apply_with_u_continuity_and_equal_the_reference(make_feed):
    feed = make_feed(bybit())
    ref = BybitReference(50)
    for f in frames():
        feed.frame(f)
        if '"topic":"orderbook.' in f:
            ref.frame(json.loads(f))
    c = feed.counts(SYM)
    assert c.resyncs == 0 and c.updates == 1 == ref.applied   # one snapshot installed, one delta
    assert c.gaps == 0 and c.malformed == 0 and c.checksum_failed == 0   # (a crossed book counts there)
    assert feed.sync(SYM).book_id == 2876701 == ref.u and feed.live(SYM)
    assert equals_reference(feed, ref)
    assert feed.book(SYM).view() == (ref.side(True)[:50], ref.side(False)[:50])
    # the trade frame (taker Sell) and the pong
    assert [(t.side, t.trade_id, t.price, t.amount) for t in feed.trades] == \
        [("sell", "2200000000067341890", 3.6279, 1.3637)]
    assert feed.unknown == 0


@pytest.mark.shared
def test_top_n_trim_matches_the_venue_window(make_feed):
    """With a cap below the snapshot depth every level past N is dropped, as the venue does."""
    snap, delta = book_frames()
    msg = json.loads(snap)
    feed = make_feed(bybit("orderbook.1"))
    ref = BybitReference(1)
    for f in (snap, delta):
        m = json.loads(f)
        m["topic"] = f"orderbook.1.{SYM}"
        feed.frame(json.dumps(m))
        ref.frame(m)
    assert len(msg["data"]["b"]) > 1 and len(feed.book(SYM).bids) == 1
    assert equals_reference(feed, ref)


@pytest.mark.shared
def test_a_snapshot_mid_stream_replaces_the_book_and_u1_after_a_restart_is_accepted(make_feed):
    snap, delta = book_frames()
    feed = make_feed(bybit())
    ref = BybitReference(50)
    feed.frame(snap)
    feed.frame(delta)
    ref.frame(json.loads(snap))
    ref.frame(json.loads(delta))
    # a resent snapshot with other levels: replaces, not merges
    m = json.loads(snap)
    m["data"]["b"], m["data"]["a"], m["data"]["u"] = [["100.5", "2"], ["100", "1"]], [["101", "3"]], 2876702
    feed.frame(json.dumps(m))
    ref.frame(m)
    assert equals_reference(feed, ref) and feed.sync(SYM).book_id == 2876702
    # Bybit service restart: a snapshot with u == 1, then deltas from 2
    m["data"]["u"], m["data"]["b"] = 1, [["99", "4"]]
    feed.frame(json.dumps(m))
    ref.frame(m)
    d = json.loads(delta)
    d["data"]["u"], d["data"]["b"], d["data"]["a"] = 2, [["99.5", "1"]], [["101", "0"], ["102", "7"]]
    feed.frame(json.dumps(d))
    ref.frame(d)
    c = feed.counts(SYM)
    # 3 snapshots: the first installed, the next two replace the live book (counted as updates
    # with the 2 deltas); the bus got the first as a snapshot, the replacements as exact deltas
    assert c.resyncs == 0 and c.updates == 4 and c.gaps == 0 and feed.live(SYM)
    assert [m.snapshot for m in feed.bus.l2] == [True, False, False, False, False]
    assert equals_reference(feed, ref) and feed.sync(SYM).book_id == 2
    # depth-1 style resend of the same snapshot (same u): accepted quietly
    feed.frame(json.dumps(m))
    assert feed.counts(SYM).gaps == 0 and feed.live(SYM)


def _deltas(n=4):
    """Synthetic deltas chaining after the real snapshot (u=2876700)."""
    out = []
    for k in range(1, n + 1):
        out.append(json.dumps({"topic": f"orderbook.50.{SYM}", "ts": 1731035685345 + k, "type": "delta",
                               "data": {"s": SYM, "b": [[f"75840.{k}", f"0.0{k}"]], "a": [[f"75860.{k}", "1"]],
                                        "u": 2876700 + k, "seq": 47474967823 + k}, "cts": 1731035685342 + k}))
    return out


@pytest.mark.shared
@pytest.mark.parametrize("mutate", ["remove", "reorder"])
def test_removed_and_reordered_deltas_are_gaps_and_a_resubscribed_snapshot_recovers(mutate, make_feed):
    snap = book_frames()[0]
    ds = _deltas()
    if mutate == "remove":
        del ds[1]
    else:
        ds[1], ds[2] = ds[2], ds[1]
    a = bybit()
    feed = make_feed(a)
    for f in [snap] + ds:
        feed.frame(f)
    assert feed.counts(SYM).gaps >= 1 and feed.resubscribes[0] == SYM and not feed.live(SYM)
    unsub, sub = a.resubscribe(SYM)
    assert json.loads(unsub)["op"] == "unsubscribe" and json.loads(sub)["args"] == [f"orderbook.50.{SYM}"]
    feed.frame(snap)  # what the resubscribe brings
    assert feed.live(SYM)


@pytest.mark.shared
def test_a_duplicated_delta_is_skipped_not_a_gap(make_feed):
    snap = book_frames()[0]
    ds = _deltas(2)
    feed = make_feed(bybit())
    for f in [snap, ds[0], ds[0], ds[1]]:
        feed.frame(f)
    c = feed.counts(SYM)
    assert c.gaps == 0 and c.dropped == 1 and c.updates == 2 and feed.live(SYM)
