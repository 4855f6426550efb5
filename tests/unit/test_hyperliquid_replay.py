"""Replay the real Hyperliquid capture (shared/data/samples/hyperliquid) through the
adapter and a real ViewBook driven the way the feed drives a "ws" snapshot venue:
the first l2Book installs the book, every later one replaces it and yields the exact
view delta.  The reference is independent: each frame's own levels as Decimal strings
(exchange-protocols.md section 6: every l2Book is the whole top of the book)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from captures import SAMPLES, read_capture
from ingest.adapters.hyperliquid import HyperliquidAdapter
from ingest.events import DepthSnapshot
from pipeline.book import ViewBook
from pipeline.config import ExchangeConfig

CAPTURE = SAMPLES / "hyperliquid" / "hftbacktest_btc_20250126.capture.jsonl"
DEPTH = 50  # deeper than the venue's 20: the view is the whole frame

pytestmark = pytest.mark.shared


def adapter():
    return HyperliquidAdapter(ExchangeConfig(name="hl", adapter="hyperliquid", symbols=("BTC",), depth=DEPTH))


def frames():
    _, events = read_capture(CAPTURE)
    return [(e["data"], int(e["ts"] * 1e9)) for e in events if e["src"] == "ws"]


def reference_levels(text: str) -> tuple[list, list]:
    """The frame's book, best first, from the decimal strings (no adapter code)."""
    levels = json.loads(text)["data"]["levels"]
    bids = sorted(((Decimal(lv["px"]), Decimal(lv["sz"])) for lv in levels[0]), reverse=True)
    asks = sorted((Decimal(lv["px"]), Decimal(lv["sz"])) for lv in levels[1])
    return [(float(p), float(q)) for p, q in bids], [(float(p), float(q)) for p, q in asks]


class Consumer:
    """What a bus consumer holds: the first snapshot, then absolute deltas (0 deletes)."""

    def __init__(self, bids, asks):
        self.sides = [dict(bids), dict(asks)]

    def apply(self, delta_bids, delta_asks):
        for side, delta in zip(self.sides, (delta_bids, delta_asks)):
            for p, q in delta:
                if q == 0.0:
                    side.pop(p, None)
                else:
                    side[p] = q

    def top(self, n):
        b, a = self.sides
        return sorted(b.items(), reverse=True)[:n], sorted(a.items())[:n]


def drive(book: ViewBook, snap: DepthSnapshot, first: bool):
    """The feed's handling of an in-stream snapshot (docs/adapters.md)."""
    if first:
        book.clear()
        book.load_snapshot(snap.bids, snap.asks)
        return None
    return book.replace(snap.bids, snap.asks)


def test_capture_shape_is_as_documented():
    kinds = [json.loads(t)["channel"] for t, _ in frames()]
    assert kinds.count("l2Book") == 46 and kinds.count("trades") == 9
    books = [t for t, _ in frames() if '"l2Book"' in t[:30]]
    assert json.loads(books[0]) == json.loads(books[1])  # the first two are identical


def test_every_frame_replaces_the_book_and_the_deltas_rebuild_each_frame_exactly():
    a = adapter()
    book = ViewBook(DEPTH)
    consumer = None
    n = empty_deltas = 0
    last_time = -1
    for text, recv_ns in frames():
        ev = a.parse_frame(text, recv_ns)
        if not isinstance(ev, DepthSnapshot):
            continue
        ref_bids, ref_asks = reference_levels(text)
        assert len(ref_bids) == len(ref_asks) == 20
        assert ev.last_id == json.loads(text)["data"]["time"] >= last_time
        last_time = ev.last_id
        delta = drive(book, ev, consumer is None)
        assert book.view() == (ref_bids, ref_asks), f"book after frame {n}"
        assert not book.is_crossed()
        if consumer is None:
            consumer = Consumer(*book.view())
        else:
            consumer.apply(*delta)
            empty_deltas += not (delta[0] or delta[1])
        assert consumer.top(DEPTH) == (ref_bids, ref_asks), f"consumer after frame {n}"
        n += 1
    assert n == 46
    assert empty_deltas >= 1  # the repeated first frame publishes nothing


def test_trades_are_never_emitted_twice_even_when_the_backlog_is_replayed():
    a = adapter()
    emitted = []
    backlog = None
    for text, recv_ns in frames():
        out = a.parse_frame(text, recv_ns)
        if isinstance(out, list):
            if backlog is None:
                backlog = text
            emitted += out
    raw = [t for text, _ in frames() if '"trades"' in text[:30] for t in json.loads(text)["data"]]
    assert len(json.loads(backlog)["data"]) == 30
    keys = [(t["coin"], t["time"], t["tid"]) for t in raw]
    # in this capture the backlog does not overlap the live frames: every trade comes out once
    assert len(set(keys)) == len(keys) == len(emitted) == 64
    assert [e.trade_id for e in emitted] == [str(t["tid"]) for t in raw]
    # a reconnect: the venue sends its backlog again, then later frames repeat too
    for g in a.stream_groups():
        a.connection_opened(g)
    for text, recv_ns in frames():
        assert not isinstance(a.parse_frame(text, recv_ns), list)
    assert len({(e.trade_id, e.ts_exchange_us) for e in emitted}) == 64


def test_taker_side_matches_the_book_the_trade_printed_against():
    """B (taker buy) prints at or through the best ask, A at or through the best bid
    (verified on this capture; the first frame is a backlog older than the book)."""
    a = adapter()
    book = ViewBook(DEPTH)
    first_book = True
    trade_frames = checked = 0
    for text, recv_ns in frames():
        ev = a.parse_frame(text, recv_ns)
        if isinstance(ev, DepthSnapshot):
            drive(book, ev, first_book)
            first_book = False
        elif isinstance(ev, list):
            trade_frames += 1
            if trade_frames == 1:
                continue
            for t in ev:
                if t.side == "buy":
                    assert t.price >= book.best_ask()[0], t
                else:
                    assert t.side == "sell" and t.price <= book.best_bid()[0], t
                checked += 1
    assert checked == 34


def test_a_missing_frame_is_harmless_and_an_older_one_is_dropped():
    """No sequence numbers, no gaps: each frame is the whole book (section 6 rule 1-2)."""
    books = [(t, r) for t, r in frames() if '"l2Book"' in t[:30]]
    a = adapter()
    book = ViewBook(DEPTH)
    consumer = None
    for i, (text, recv_ns) in enumerate(books):
        if i % 3 == 1:
            continue  # lost frames
        ev = a.parse_frame(text, recv_ns)
        delta = drive(book, ev, consumer is None)
        if consumer is None:
            consumer = Consumer(*book.view())
        else:
            consumer.apply(*delta)
        assert book.view() == reference_levels(text) == consumer.top(DEPTH)
        if i >= 4:
            # an older frame arriving late (reordered) is dropped, the book stays
            older = books[i - 4][0]
            if json.loads(older)["data"]["time"] < ev.last_id:
                assert a.parse_frame(older, recv_ns) is None
                assert book.view() == reference_levels(text)


def test_through_the_feed_shared_memory_and_bus_equal_every_frame():
    """The real FeedBooks (through its entry point, tests/feeds.py): first l2Book installs,
    later ones replace with an exact delta on the bus; shared memory and a consumer of the
    bus equal each frame's book."""
    from feeds import FeedRun
    from ingest.events import DepthSnapshot
    from pipeline.shm import BookState

    a = adapter()
    for g in a.stream_groups():
        a.connection_opened(g)
    feed = FeedRun(a, ["BTC"], depth=DEPTH, exchange="hl")
    bus = feed.bus
    try:
        consumer = None
        books = 0
        for text, recv_ns in frames():
            ev = feed.feed.parse_frame(text, recv_ns)
            feed.receive(ev)
            if isinstance(ev, list):  # trades
                continue
            assert isinstance(ev, DepthSnapshot)
            books += 1
            ref = reference_levels(text)
            snap, _ = feed.shm("BTC", depth=DEPTH)
            assert snap.state is BookState.LIVE
            assert ([tuple(x) for x in snap.bids.tolist()], [tuple(x) for x in snap.asks.tolist()]) == ref
            for msg in bus.l2:
                if msg.snapshot:
                    consumer = Consumer(msg.bids, msg.asks)
                else:
                    consumer.apply(msg.bids, msg.asks)
            bus.l2.clear()
            assert consumer.top(DEPTH) == ref
        _, stats = feed.shm("BTC")
        assert books == 46 and stats["gaps"] == 0 and stats["checksum_failed"] == 0 and not feed.requests
        assert [m.trade_id for m in bus.trades] == list(dict.fromkeys(m.trade_id for m in bus.trades))
        assert len(bus.trades) == 64
        assert {m.side for m in bus.trades} == {"buy", "sell"}
    finally:
        feed.close()
