"""The Binance adapters on the venues' documented frames, and on bad input."""

import json

import pytest

from captures import SAMPLES
from ingest.adapters.binance import BinanceFuturesAdapter, BinanceSpotAdapter
from ingest.events import BboEvent, DepthDiff, DepthSnapshot, TradeEvent, VenueNotice
from pipeline.config import ExchangeConfig
from pipeline.errors import MalformedFrame, UnknownFrame


def docs(venue):
    return json.loads((SAMPLES / venue / "docs_examples.json").read_text())["examples"]


def spot(*symbols):
    return BinanceSpotAdapter(ExchangeConfig(name="b", adapter="binance", symbols=symbols))


def futures(*symbols, **kw):
    return BinanceFuturesAdapter(ExchangeConfig(name="f", adapter="binance_futures", symbols=symbols, **kw))


def wrap(stream, data):
    return json.dumps({"stream": stream, "data": data})


@pytest.mark.shared
def test_spot_documented_frames_parse_to_events():
    ex = docs("binance_spot")
    a = spot("BNBBTC", "BNBUSDT")
    d = a.parse_frame(wrap("bnbbtc@depth", ex["diff_depth_event"]), 5)
    assert isinstance(d, DepthDiff) and (d.first_id, d.last_id, d.prev_id) == (157, 160, -1)
    assert d.bids == [(0.0024, 10.0)] and d.asks == [(0.0026, 100.0)] and d.ts_exchange_us == 1672515782136000
    t = a.parse_frame(wrap("bnbbtc@trade", ex["trade_event"]), 5)
    assert isinstance(t, TradeEvent) and t.side == "sell" and t.trade_id == "12345"  # m: buyer is maker
    agg = a.parse_frame(wrap("bnbbtc@aggTrade", ex["agg_trade_event"]), 5)
    assert agg.trade_id == "12345" and agg.amount == 100.0
    b = a.parse_frame(wrap("bnbusdt@bookTicker", ex["book_ticker_event"]), 5)
    assert isinstance(b, BboEvent) and b.update_id == 400900217 and b.bid_price == 25.3519
    # raw streams (/ws/...) carry the same events unwrapped
    assert a.parse_frame(json.dumps(ex["diff_depth_event"]), 5).last_id == 160
    assert isinstance(a.parse_frame(json.dumps(ex["ws_subscribe_response"]), 5), VenueNotice)
    assert a.parse_frame(json.dumps(ex["server_shutdown_event"]), 5).kind == "server_shutdown"
    snap = a.parse_snapshot("BNBBTC", json.dumps(ex["rest_depth_response"]).encode(), 5)
    assert isinstance(snap, DepthSnapshot) and snap.last_id == 1027024 and snap.asks == [(4.000002, 12.0)]


@pytest.mark.shared
@pytest.mark.parametrize("venue", ["binance_usdm", "aster"])
def test_usdm_and_aster_documented_frames_parse_with_pu(venue):
    ex = docs(venue)
    a = futures("BTCUSDT", "BNBUSDT")
    d = a.parse_frame(wrap("btcusdt@depth@100ms", ex["diff_depth_event"]), 5)
    assert (d.first_id, d.last_id, d.prev_id) == (157, 160, 149)
    assert d.ts_exchange_us == 123456788000  # T (matching time) preferred over E
    assert a.parse_frame(wrap("btcusdt@aggTrade", ex["agg_trade_event"]), 5).side == "sell"
    assert a.parse_frame(wrap("bnbusdt@bookTicker", ex["book_ticker_event"]), 5).update_id == 400900217
    assert a.parse_snapshot("BTCUSDT", json.dumps(ex["rest_depth_response"]).encode(), 5).last_id == 1027024


def test_futures_urls_are_routed_and_aster_urls_are_not():
    groups = futures("BTCUSDT").stream_groups()
    depth = next(g for g in groups if g.kind == "depth")
    trades = next(g for g in groups if g.kind == "trades")
    assert depth.url.startswith("wss://fstream.binance.com/public/stream?streams=btcusdt@depth@100ms")
    assert "btcusdt@bookTicker" in depth.url
    assert trades.url == ("wss://fstream.binance.com/market/stream?streams=btcusdt@aggTrade/btcusdt@markPrice@1s"
                          "/btcusdt@forceOrder")
    only = futures("BTCUSDT", channels=("trades", "book"), verify_bbo=False).stream_groups()
    assert [g.url for g in only] == ["wss://fstream.binance.com/public/stream?streams=btcusdt@depth@100ms",
                                     "wss://fstream.binance.com/market/stream?streams=btcusdt@aggTrade"]
    aster = futures("BTCUSDT", ws_url="wss://fstream.asterdex.com", rest_url="https://fapi.asterdex.com",
                    rest_depth_path="/fapi/v3/depth")
    assert all(g.url.startswith("wss://fstream.asterdex.com/stream?streams=") for g in aster.stream_groups())
    req = aster.snapshot_request("BTCUSDT")
    assert req.url == "https://fapi.asterdex.com/fapi/v3/depth?symbol=BTCUSDT&limit=1000" and req.weight == 20


def test_spot_snapshot_weight_follows_the_limit():
    for limit, weight in ((100, 5), (500, 25), (1000, 50), (5000, 250)):
        a = BinanceSpotAdapter(ExchangeConfig(name="b", adapter="binance", symbols=("X",), snapshot_limit=limit))
        assert a.snapshot_request("X").weight == weight


def test_trades_and_depth_never_share_a_connection():
    a = spot(*[f"S{i}" for i in range(250)])
    groups = a.stream_groups()
    assert {g.kind for g in groups} == {"depth", "trades"}
    for g in groups:
        streams = g.url.split("streams=")[1].split("/")
        assert len(streams) <= 200
        assert all(("@trade" in s) == (g.kind == "trades") for s in streams)
    assert sum(len(g.symbols) for g in groups if g.kind == "depth") == 250


DIFF = {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 1, "u": 2, "b": [["1.5", "2"]], "a": []}


@pytest.mark.parametrize("frame", [
    wrap("btcusdt@depth@100ms", DIFF)[:-7],                                        # truncated
    wrap("btcusdt@depth@100ms", {**DIFF, "U": "x"}),                               # wrong type
    wrap("btcusdt@depth@100ms", {**DIFF, "b": [["abc", "1"]]}),                    # not a number
    wrap("btcusdt@depth@100ms", {**DIFF, "b": [["NaN", "1"]]}),                    # not finite
    wrap("btcusdt@depth@100ms", {**DIFF, "b": [["1.5", "-2"]]}),                   # negative size
    wrap("btcusdt@depth@100ms", {**DIFF, "U": 5, "u": 2}),                         # u < U
    wrap("btcusdt@depth@100ms", {k: v for k, v in DIFF.items() if k != "u"}),      # missing field
    wrap("btcusdt@trade", {"e": "trade", "s": "BTCUSDT", "p": "0", "q": "1", "T": 1, "m": True, "t": 1}),
])
def test_malformed_frames_raise_malformed_with_the_symbol(frame):
    with pytest.raises(MalformedFrame) as info:
        spot("BTCUSDT").parse_frame(frame, 0)
    assert info.value.symbol == "BTCUSDT"


@pytest.mark.parametrize("frame", [
    wrap("btcusdt@kline_1m", {"e": "kline"}),
    wrap("ethusdt@depth@100ms", {**DIFF, "s": "ETHUSDT"}),   # a symbol we do not follow
    json.dumps({"e": "mystery", "s": "BTCUSDT"}),
])
def test_unknown_frames_raise_unknown(frame):
    with pytest.raises(UnknownFrame):
        spot("BTCUSDT").parse_frame(frame, 0)


def test_non_object_json_is_malformed():
    with pytest.raises(MalformedFrame):
        spot("BTCUSDT").parse_frame("[1, 2]", 0)


@pytest.mark.parametrize("frame", [
    wrap("btcusdt@depth@100ms", {**DIFF, "s": "X"}).encode().replace(b'"X"', b'"\xff\xfe"'),  # bad UTF-8 in a string
    b"\xff\xfe\x00",
    b'{"e":"\xff"}',
])
def test_invalid_utf8_is_malformed_not_a_crash(frame):
    with pytest.raises(MalformedFrame):
        spot("BTCUSDT").parse_frame(frame, 0)
