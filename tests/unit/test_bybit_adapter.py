"""The Bybit v5 adapters on the venue's documented frames, the connection plan, and bad input."""

import json

import pytest

from captures import SAMPLES
from ingest.adapters.bybit import APPLY, GAP, SKIP, BybitLinearAdapter, BybitSpotAdapter
from ingest.events import DepthDiff, DepthSnapshot, Instrument, TradeEvent, VenueNotice
from pipeline.config import ExchangeConfig
from pipeline.errors import ConfigError, MalformedFrame, UnknownFrame


def spot(*symbols, **kw):
    return BybitSpotAdapter(ExchangeConfig(name="bybit", adapter="bybit", symbols=symbols, **kw))


def linear(*symbols, **kw):
    return BybitLinearAdapter(ExchangeConfig(name="bl", adapter="bybit_linear", symbols=symbols, **kw))


def docs():
    return json.loads((SAMPLES / "bybit" / "docs_examples.json").read_text())["examples"]


def book(kind="delta", u=5, b=(("10", "1"),), a=(("11", "2"),), topic="orderbook.200.BTCUSDT", s="BTCUSDT"):
    return json.dumps({"topic": topic, "ts": 1700000000001, "type": kind,
                       "data": {"s": s, "b": [list(x) for x in b], "a": [list(x) for x in a], "u": u, "seq": 9},
                       "cts": 1700000000000})


def test_defaults_and_declared_contract():
    a, lin = spot("BTCUSDT"), linear("BTCUSDT")
    assert a.ws_url == "wss://stream.bybit.com/v5/public/spot"
    assert lin.ws_url == "wss://stream.bybit.com/v5/public/linear"
    assert a.traits.snapshot_source.value == "ws" and a.traits.book_cap == 200 and a.traits.app_ping == '{"op":"ping"}'
    assert spot("BTCUSDT", depth_stream="orderbook.1000").traits.book_cap == 1000
    assert spot("BTCUSDT", depth_stream="orderbook.1").traits.book_cap == 1
    assert a.instrument("BTCUSDT") == Instrument("BTC", "USDT", "spot")
    assert lin.instrument("ETHUSDC") == Instrument("ETH", "USDC", "perp")
    assert lin.instrument("BTCUSDT-26DEC25") == Instrument("BTC", "USDT", "future")
    assert a.rest_weight_limit * 5 / 60 < 600  # far below the 600 requests / 5 s IP limit


@pytest.mark.parametrize("stream", ["orderbook.full", "orderbook.25", "depth", "orderbook.200x"])
def test_unsupported_depth_streams_are_config_errors(stream):
    with pytest.raises(ConfigError, match="exchanges.bybit.depth_stream"):
        spot("BTCUSDT", depth_stream=stream)


def test_snapshot_and_delta_events_carry_u():
    a = spot("BTCUSDT")
    s = a.parse_frame(book("snapshot", 7), 3)
    assert isinstance(s, DepthSnapshot) and s.last_id == 7 and s.bids == [(10.0, 1.0)] and s.asks == [(11.0, 2.0)]
    assert s.ts_exchange_us == 1700000000000000 and s.recv_ns == 3  # cts (matching time) preferred
    d = a.parse_frame(book("delta", 8, b=(("10", "0"),)), 4)
    assert isinstance(d, DepthDiff) and (d.first_id, d.last_id, d.prev_id) == (8, 8, 7) and d.bids == [(10.0, 0.0)]
    assert d.checksum == 0


def test_check_rule():
    ev = DepthDiff("BTCUSDT", 8, 8, 7, [], [], 0, 0)
    check = BybitSpotAdapter.check
    assert check(ev, 7, True) == APPLY and check(ev, 7, False) == APPLY
    assert check(ev, 8, False) == SKIP and check(ev, 100, False) == SKIP
    assert check(ev, 6, False) == GAP and check(ev, -1, True) == GAP
    assert BybitSpotAdapter.snapshot_usable(1, ev)  # u=1 after a restart replaces the book


@pytest.mark.shared
def test_documented_frames_parse():
    ex = docs()
    a = linear("BTCUSDT", depth_stream="orderbook.50")
    d = a.parse_frame(json.dumps(ex["linear_orderbook50_delta"]), 1)
    assert d.last_id == 177400507 and d.prev_id == 177400506 and (30240.0, 0.0) in d.bids and len(d.asks) == 7
    (t,) = a.parse_frame(json.dumps(ex["linear_public_trade"]), 1)
    assert isinstance(t, TradeEvent) and t.side == "buy" and t.trade_id == "20f43950-d8dd-5b31-9112-a178eb6023af"
    assert t.price == 16578.5 and t.amount == 0.001 and t.ts_exchange_us == 1672304486865000
    for pong in ("ws_pong_spot", "ws_pong_linear_inverse", "ws_pong_option_spread"):
        assert a.parse_frame(json.dumps(ex[pong]), 1) is None
    snap = a.parse_snapshot("BTCUSDT", json.dumps(ex["rest_orderbook_response"]).encode(), 1)
    assert snap.last_id == 230704 and snap.bids == [(65485.47, 47.081829)] and snap.asks == [(65557.7, 16.606555)]
    with pytest.raises(UnknownFrame):  # delta-only full-depth stream: not ours
        spot("MNTUSDT").parse_frame(json.dumps(ex["spot_orderbook_full_delta"]), 1)


@pytest.mark.shared
def test_real_spot_frames_parse():
    text = (SAMPLES / "bybit" / "gocryptotrader_spot_frames.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    a = spot("BTCUSDT", depth_stream="orderbook.50")
    evs = [a.parse_frame(json.dumps(r["frame"]), 1) for r in rows]
    assert isinstance(evs[0], DepthSnapshot) and evs[0].last_id == 2876700 and len(evs[0].bids) == 50
    assert isinstance(evs[1], DepthDiff) and evs[1].last_id == 2876701 and evs[1].prev_id == 2876700
    assert evs[2][0].side == "sell" and evs[3] is None


def test_subscribe_acks_and_failures():
    a = spot("BTCUSDT")
    assert a.parse_frame('{"success":true,"ret_msg":"","conn_id":"c","req_id":"1","op":"subscribe"}', 1) is None
    n = a.parse_frame('{"success":false,"ret_msg":"Invalid symbol :[orderbook.200.XXX]","conn_id":"c",'
                      '"req_id":"1","op":"subscribe"}', 1)
    assert isinstance(n, VenueNotice) and n.kind == "error" and "Invalid symbol" in n.detail["ret_msg"]
    assert a.parse_frame('{"success":true,"ret_msg":"","op":"unsubscribe"}', 1) is None


def test_stream_groups_batch_ten_args_and_keep_trades_apart():
    syms = tuple(f"C{i}USDT" for i in range(25))
    a = spot(*syms, streams_per_connection=12, channels=("trades", "book"))
    groups = a.stream_groups()
    depth = [g for g in groups if g.kind == "depth"]
    trades = [g for g in groups if g.kind == "trades"]
    assert [len(g.symbols) for g in depth] == [12, 12, 1] and [len(g.symbols) for g in trades] == [12, 12, 1]
    for g in groups:
        assert g.url == "wss://stream.bybit.com/v5/public/spot"
        args = [json.loads(f) for f in g.subscribe]
        assert all(x["op"] == "subscribe" and 1 <= len(x["args"]) <= 10 for x in args)
        topics = [t for x in args for t in x["args"]]
        prefix = "orderbook.200." if g.kind == "depth" else "publicTrade."
        assert topics == [prefix + s for s in g.symbols]
        assert sum(len(t) for t in topics) <= 21000
    unsub, sub = a.resubscribe("C3USDT")
    assert json.loads(unsub)["op"] == "unsubscribe" and json.loads(unsub)["args"] == ["orderbook.200.C3USDT"]
    assert json.loads(sub)["op"] == "subscribe" and json.loads(sub)["args"] == ["orderbook.200.C3USDT"]


def test_rest_snapshot_request_and_errors():
    a = linear("BTCUSDT", rest_url="http://127.0.0.1:9", snapshot_limit=50)
    req = a.snapshot_request("BTCUSDT")
    assert req.url == "http://127.0.0.1:9/v5/market/orderbook?category=linear&symbol=BTCUSDT&limit=50"
    assert req.weight == 1 and req.method == "GET"
    with pytest.raises(MalformedFrame) as ei:
        a.parse_snapshot("BTCUSDT", b'{"retCode":10001,"retMsg":"params error","result":{}}', 1)
    assert ei.value.symbol == "BTCUSDT"
    with pytest.raises(MalformedFrame):
        a.parse_snapshot("BTCUSDT", b"<html>", 1)


@pytest.mark.parametrize("frame", [
    book(b=(("10", "-1"),)),
    book(b=(("-10", "1"),)),
    book(a=(("NaN", "1"),)),
    book(a=(("11", "inf"),)),
    book(a=(("11", "1e999"),)),
    book(b=(("10", "1", "x"),)),
    book(kind="partial"),
    book(u=0),
    book(s="ETHUSDT"),
    book().replace('"u": 5', '"u": "five"'),
    book().replace('"u": 5', '"u": null'),
    book().replace('"b": [[', '"b": [[[').replace('"]], "a"', '"]]], "a"'),
    book()[:-20],
    '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"i":"1","T":1,"p":"1","v":"1","S":"Hold"}]}',
    '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"i":"1","T":1,"p":"0","v":"1","S":"Buy"}]}',
    '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":{"i":"1"}}',
])
def test_malformed_frames_raise_malformed_with_the_symbol(frame):
    with pytest.raises(MalformedFrame) as ei:
        spot("BTCUSDT").parse_frame(frame, 1)
    assert ei.value.symbol == "BTCUSDT"


@pytest.mark.parametrize("frame", [
    book(topic="orderbook.200.ETHUSDT", s="ETHUSDT"),
    book(topic="orderbook.50.BTCUSDT"),
    '{"topic":"tickers.BTCUSDT","type":"snapshot","data":{}}',
    '{"op":"auth","success":true}',
])
def test_unknown_frames_raise_unknown(frame):
    with pytest.raises(UnknownFrame):
        spot("BTCUSDT").parse_frame(frame, 1)


@pytest.mark.parametrize("frame", ["not json", "[1,2]", "", "null", '{"topic":5}'])
def test_garbage_is_malformed(frame):
    with pytest.raises(MalformedFrame):
        spot("BTCUSDT").parse_frame(frame, 1)
