"""Hypothesis fuzz of the Hyperliquid and Lighter adapters (docs/adapters.md "Tests every
adapter has"): truncated, byte-flipped, type-mangled, duplicated and reordered frames

- never raise anything but MalformedFrame / UnknownFrame;
- never yield a negative, zero-priced, NaN or infinite level or trade;
- through the real feed (FeedBooks.receive) into shared memory, never leave a book published as live
  with best bid >= best ask, and every rejected frame is counted.

The Hyperliquid frames are the real capture; the Lighter ones are generated as in
test_lighter_replay (no real Lighter capture exists)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from captures import SAMPLES, SHARED, read_capture
from ingest.adapters.hyperliquid import HyperliquidAdapter
from ingest.adapters.lighter import LighterAdapter
from feeds import FeedRun
from ingest.events import DepthDiff, DepthSnapshot, Malformed, TradeEvent, Unknown, VenueNotice
from ingest.feed import P
from pipeline.config import ExchangeConfig
from pipeline.errors import MalformedFrame, UnknownFrame
from pipeline.shm import BookState
from test_lighter_replay import Market

HL_CAPTURE = SAMPLES / "hyperliquid" / "hftbacktest_btc_20250126.capture.jsonl"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
FEED_FUZZ = settings(FUZZ, max_examples=60)  # each example builds a feed and shared memory


def hl_frames() -> list[str]:
    if not SHARED.is_dir():
        return ['{"channel":"l2Book","data":{"coin":"BTC","time":1,"levels":[[{"px":"1","sz":"1","n":1}],'
                '[{"px":"2","sz":"1","n":1}]]}}']
    return [e["data"] for e in read_capture(HL_CAPTURE)[1] if e["src"] == "ws"]


HL_FRAMES = hl_frames()


def lighter_frames(seed: int, n: int) -> tuple[Market, list[str]]:
    m = Market(seed)
    frames = [m.snapshot()] + [m.update() for _ in range(n)]
    trade = {"trade_id": 16164557907, "price": "2181.83", "size": "0.1336", "is_maker_ask": False,
             "timestamp": 1773854156654, "type": "trade"}
    frames.append(json.dumps({"channel": "trade:0", "type": "update/trade", "trades": [trade],
                              "liquidation_trades": []}))
    return m, frames


LT_FRAMES = lighter_frames(5, 6)[1] + ['{"type":"ping"}', '{"type":"pong"}', '{"type":"connected"}']

# ------------------------------------------------------------------ mutations
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                 st.text(max_size=8), st.sampled_from(["nan", "inf", "-1", "0", "-0.0", "1e400", "", "0x10"]),
                 st.lists(st.integers(), max_size=2), st.just({}))


def _nodes(obj, path=()):
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _nodes(v, path + (i,))


def _set(obj, path, value):
    if not path:
        return {} if value is _DELETE else value
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    if isinstance(parent, dict) and value is _DELETE:
        del parent[path[-1]]
    elif value is not _DELETE:
        parent[path[-1]] = value
    return obj


_DELETE = object()


@st.composite
def mutated(draw, frames: list[str]) -> str | bytes:
    text = draw(st.sampled_from(frames))
    how = draw(st.sampled_from(["truncate", "flip", "mangle", "mangle", "delete", "intact"]))
    if how == "truncate":
        return text[:draw(st.integers(0, max(0, len(text) - 1)))]
    if how == "flip" and text:
        raw = bytearray(text.encode())
        for _ in range(draw(st.integers(1, 3))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw)
    try:
        obj = json.loads(text)
    except ValueError:  # already mangled beyond JSON
        return text
    if how in ("intact", "flip"):
        return text
    paths = list(_nodes(obj))
    path = draw(st.sampled_from(paths))
    value = _DELETE if how == "delete" else draw(JUNK)
    return json.dumps(_set(obj, path, value))


def _finite_level(p, q, snapshot: bool) -> bool:
    return math.isfinite(p) and math.isfinite(q) and p > 0 and (q > 0 if snapshot else q >= 0)


def check_output(out) -> None:
    """Whatever an adapter returns is well-formed."""
    items = out if isinstance(out, list) else [out]
    for ev in items:
        if ev is None or isinstance(ev, VenueNotice):
            continue
        if isinstance(ev, TradeEvent):
            assert math.isfinite(ev.price) and ev.price > 0 and math.isfinite(ev.amount) and ev.amount > 0
            assert ev.side in ("buy", "sell") and ev.trade_id
            continue
        assert isinstance(ev, (DepthSnapshot, DepthDiff)), ev
        snap = isinstance(ev, DepthSnapshot)
        assert all(_finite_level(p, q, snap) for p, q in ev.bids + ev.asks), ev
        if snap and ev.bids and ev.asks:
            assert max(p for p, _ in ev.bids) < min(p for p, _ in ev.asks)


def parse(adapter, frame):
    try:
        out = adapter.parse_frame(frame, 1)
    except (MalformedFrame, UnknownFrame) as exc:
        return exc
    check_output(out)
    return out


@FUZZ
@given(frame=mutated(HL_FRAMES))
def test_hyperliquid_mangled_frames_raise_only_venue_errors(frame):
    parse(HyperliquidAdapter(ExchangeConfig(name="hl", adapter="hyperliquid", symbols=("BTC",))), frame)


@FUZZ
@given(frame=mutated(LT_FRAMES))
def test_lighter_mangled_frames_raise_only_venue_errors(frame):
    parse(LighterAdapter(ExchangeConfig(name="lt", adapter="lighter", symbols=("0",))), frame)


@FUZZ
@given(body=st.one_of(st.binary(max_size=64), st.sampled_from(HL_FRAMES).map(lambda t: t[:len(t) // 2].encode())))
def test_rest_bodies_raise_only_malformed(body):
    for a, sym in ((HyperliquidAdapter(ExchangeConfig(name="hl", adapter="hyperliquid", symbols=("BTC",))), "BTC"),
                   (LighterAdapter(ExchangeConfig(name="lt", adapter="lighter", symbols=("0",))), "0")):
        try:
            check_output(a.parse_snapshot(sym, body, 1))
        except MalformedFrame:
            pass


# -------------------------------------------------------------- through the feed
class FuzzRun(FeedRun):
    """The real feed (tests/feeds.py) on one symbol; each frame's parsed output is also
    checked on its own, and rejected frames are counted here to compare with the feed's
    counters."""

    def __init__(self, adapter, symbol: str):
        super().__init__(adapter, [symbol], depth=20, exchange="fz")
        self.adapter, self.symbol = adapter, symbol
        self.rejected = 0
        for g in adapter.stream_groups():
            adapter.connection_opened(g)

    @property
    def resyncs(self) -> int:
        return len(self.requests)

    def send(self, frame) -> None:
        ev = self.feed.parse_frame(frame, 1)
        if isinstance(ev, Malformed):
            self.rejected += 1
        elif not isinstance(ev, Unknown):
            check_output(ev)
        self.receive(ev)
        self.assert_not_crossed_unless_flagged()

    def assert_not_crossed_unless_flagged(self) -> None:
        snap, _ = self.shm(self.symbol)
        if snap.state is BookState.LIVE and len(snap.bids) and len(snap.asks):
            assert snap.bids[0][0] < snap.asks[0][0], "a crossed book published as live"
        if self.live(self.symbol):
            assert not self.book(self.symbol).is_crossed()

    def malformed_counted(self) -> int:
        _, stats = self.shm(self.symbol)  # (copies the counters, as the stats loop does)
        return stats["malformed"] + int(self.writer.header[P["malformed_frames"]])


@st.composite
def scrambled(draw, frames: list[str], mutate_pool: list[str]):
    """A stream with frames dropped, duplicated, swapped and mangled."""
    out = list(frames)
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["drop", "dup", "swap", "mangle"]))
        i = draw(st.integers(0, len(out) - 1))
        if op == "drop" and len(out) > 1:
            del out[i]
        elif op == "dup":
            out.insert(i, out[i])
        elif op == "swap" and i + 1 < len(out):
            out[i], out[i + 1] = out[i + 1], out[i]
        elif op == "mangle":
            out[i] = draw(mutated([out[i]] if isinstance(out[i], str) else mutate_pool))
    return out


@FEED_FUZZ
@given(stream=scrambled(HL_FRAMES[:24], HL_FRAMES))
def test_hyperliquid_scrambled_streams_never_publish_a_crossed_book(stream):
    run = FuzzRun(HyperliquidAdapter(ExchangeConfig(name="hl", adapter="hyperliquid", symbols=("BTC",))), "BTC")
    try:
        for frame in stream:
            run.send(frame)
        assert run.malformed_counted() == run.rejected
        assert run.shm("BTC")[1]["gaps"] == 0  # no sequence numbers: never a gap
    finally:
        run.close()


@FEED_FUZZ
@given(seed=st.integers(0, 10_000), data=st.data())
def test_lighter_scrambled_streams_never_publish_a_crossed_book(seed, data):
    market, frames = lighter_frames(seed, 25)
    stream = data.draw(scrambled(frames, frames))
    run = FuzzRun(LighterAdapter(ExchangeConfig(name="lt", adapter="lighter", symbols=("0",))), "0")
    try:
        for frame in stream:
            run.send(frame)
        assert run.malformed_counted() == run.rejected
        # a resync answered by a fresh snapshot brings the book back live and uncrossed
        if run.resyncs:
            run.send(market.snapshot())
            assert run.shm("0")[0].state is BookState.LIVE
        run.send(market.update())
        run.assert_not_crossed_unless_flagged()
    finally:
        run.close()


@pytest.mark.parametrize("venue", ["hyperliquid", "lighter"])
def test_crossed_snapshot_is_rejected_not_installed(venue):
    if venue == "hyperliquid":
        a, sym = HyperliquidAdapter(ExchangeConfig(name="hl", adapter="hyperliquid", symbols=("BTC",))), "BTC"
        frame = ('{"channel":"l2Book","data":{"coin":"BTC","time":5,"levels":[[{"px":"101","sz":"1","n":1}],'
                 '[{"px":"100","sz":"1","n":1}]]}}')
    else:
        a, sym = LighterAdapter(ExchangeConfig(name="lt", adapter="lighter", symbols=("0",))), "0"
        frame = ('{"channel":"order_book:0","type":"subscribed/order_book","order_book":{"nonce":5,'
                 '"bids":[{"price":"101","size":"1"}],"asks":[{"price":"100","size":"1"}]}}')
    run = FuzzRun(a, sym)
    try:
        run.send(frame)
        snap, stats = run.shm(sym)
        assert run.rejected == 1 and stats["malformed"] == 1
        assert snap.state is not BookState.LIVE
    finally:
        run.close()
