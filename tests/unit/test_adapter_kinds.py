"""Each venue's quotes, derivative tickers and liquidations parsed from its documented examples
(shared/data/samples/*/docs_examples.json, and tests/data/kinds_docs_examples.json for the shapes
those lack, each with its documentation page), and mangled ones rejected as malformed frames,
which the feed counts (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captures import SAMPLES
from ingest import adapters
from ingest.events import BboEvent, LiquidationEvent, Malformed, TickerEvent
from ingest.feed import parse_frame
from pipeline.config import ExchangeConfig
from pipeline.errors import ConfigError, MalformedFrame

KINDS = json.loads((Path(__file__).resolve().parents[1] / "data" / "kinds_docs_examples.json").read_text())


def example(venue: str, name: str) -> dict:
    return KINDS[venue][name]["message"]


def docs(venue: str) -> dict:
    return json.loads((SAMPLES / venue / "docs_examples.json").read_text())["examples"]


def make(adapter: str, *symbols: str, **kw):
    return adapters.create(ExchangeConfig(name="x", adapter=adapter, symbols=symbols, **kw))


def wrap(stream: str, data) -> str:
    return json.dumps({"stream": stream, "data": data})


def rejected(adapter, frame: str) -> Malformed:
    """A mangled frame: MalformedFrame from the adapter, a counted Malformed event for the feed."""
    with pytest.raises(MalformedFrame):
        adapter.parse_frame(frame, 1)
    ev = parse_frame(adapter)(frame, 1)
    assert isinstance(ev, Malformed)
    return ev


# ------------------------------------------------------------------ Binance / Aster

@pytest.mark.shared
@pytest.mark.parametrize("venue", ["binance_usdm", "aster", "binance_spot"])
def test_binance_family_book_ticker_is_a_quote(venue):
    adapter = "binance" if venue == "binance_spot" else "binance_futures"
    a = make(adapter, "BNBUSDT")
    q = a.parse_frame(wrap("bnbusdt@bookTicker", docs(venue)["book_ticker_event"]), 7)
    assert isinstance(q, BboEvent) and q.update_id == 400900217
    assert (q.bid_price, q.bid_size, q.ask_price, q.ask_size) == (25.3519, 31.21, 25.3652, 40.66)
    bad = dict(docs(venue)["book_ticker_event"], b="-1")
    assert rejected(a, wrap("bnbusdt@bookTicker", bad)).symbol == "BNBUSDT"


def test_binance_futures_mark_price_force_order_and_open_interest():
    a = make("binance_futures", "BTCUSDT")
    t = a.parse_frame(wrap("btcusdt@markPrice@1s", example("binance_usdm", "mark_price_event")), 9)
    assert isinstance(t, TickerEvent)
    assert (t.mark_price, t.index_price, t.funding_rate, t.funding_timestamp, t.ts_exchange_us) == (
        11794.15, 11784.62659091, 0.00038167, 1562306400000 * 1000, 1562305380000 * 1000)
    assert t.open_interest is None and t.last_price is None  # not in this stream: nil, never 0
    liq = a.parse_frame(wrap("btcusdt@forceOrder", example("binance_usdm", "force_order_event")), 9)
    assert isinstance(liq, LiquidationEvent)
    assert (liq.side, liq.price, liq.amount, liq.ts_exchange_us, liq.liquidation_id) == (
        "sell", 9910.0, 0.014, 1568014460893000, "")
    # raw-stream form (/ws/...) of the same messages
    assert isinstance(a.parse_frame(json.dumps(example("binance_usdm", "force_order_event")), 9), LiquidationEvent)
    assert isinstance(a.parse_frame(json.dumps(example("binance_usdm", "mark_price_event")), 9), TickerEvent)
    [(symbol, req)] = a.poll_requests()
    assert symbol == "BTCUSDT" and req.url == "https://fapi.binance.com/fapi/v1/openInterest?symbol=BTCUSDT"
    oi = a.parse_poll("BTCUSDT", json.dumps(example("binance_usdm", "rest_open_interest_response")).encode(), 9)
    assert oi.open_interest == 10659.509 and oi.mark_price is None
    with pytest.raises(MalformedFrame):
        a.parse_poll("BTCUSDT", b'{"openInterest":"x"}', 9)
    mangled = json.loads(json.dumps(example("binance_usdm", "force_order_event")))
    mangled["o"]["S"] = "SIDEWAYS"
    assert rejected(a, wrap("btcusdt@forceOrder", mangled)).symbol == "BTCUSDT"
    assert rejected(a, wrap("btcusdt@markPrice@1s", dict(example("binance_usdm", "mark_price_event"), p="nan")))


def test_binance_spot_offers_no_derivative_ticker_and_says_so_at_start():
    with pytest.raises(ConfigError, match="channels.*binance offers no derivative_ticker"):
        make("binance", "BTCUSDT", channels=("book", "derivative_ticker"))
    assert make("binance", "BTCUSDT").poll_requests() == []


# ------------------------------------------------------------------ Bybit

def test_bybit_orderbook1_is_a_quote_and_a_delta_changes_one_side():
    a = make("bybit_linear", "BTCUSDT")
    snap = example("bybit", "linear_orderbook1_snapshot")
    q = a.parse_frame(json.dumps(snap), 5)
    assert isinstance(q, BboEvent) and (q.bid_price, q.bid_size, q.ask_price, q.ask_size, q.update_id) == (
        16493.5, 0.006, 16611.0, 0.029, 18521288)
    assert q.ts_exchange_us == 1672304484976000
    delta = dict(snap, type="delta", data=dict(snap["data"], b=[], a=[["16610.00", "0.5"]], u=18521289))
    q2 = a.parse_frame(json.dumps(delta), 6)
    assert (q2.bid_price, q2.ask_price, q2.ask_size, q2.update_id) == (16493.5, 16610.0, 0.5, 18521289)
    bad = dict(snap, data=dict(snap["data"], b=[["-1", "1"]]))
    assert rejected(a, json.dumps(bad)).symbol == "BTCUSDT"


def test_bybit_tickers_snapshot_and_delta_and_all_liquidation_sides():
    a = make("bybit_linear", "BTCUSDT", "ROSEUSDT")
    t = a.parse_frame(json.dumps(example("bybit", "linear_tickers_snapshot")), 5)
    assert (t.mark_price, t.index_price, t.last_price, t.funding_rate, t.funding_timestamp, t.open_interest) == (
        17217.33, 17227.36, 17216.0, -0.000212, 1673280000000 * 1000, 68744.761)
    d = a.parse_frame(json.dumps(example("bybit", "linear_tickers_delta")), 6)
    assert (d.mark_price, d.open_interest, d.index_price, d.funding_rate) == (17218.1, 68745.001, None, None)
    [liq] = a.parse_frame(json.dumps(example("bybit", "all_liquidation")), 7)
    # S "Sell": a short position was liquidated, so the liquidation order bought
    assert (liq.symbol, liq.side, liq.price, liq.amount, liq.ts_exchange_us) == (
        "ROSEUSDT", "buy", 0.04499, 20000.0, 1739502302929000)
    bad = json.loads(json.dumps(example("bybit", "all_liquidation")))
    bad["data"][0]["S"] = "Both"
    assert rejected(a, json.dumps(bad)).symbol == "ROSEUSDT"
    bad_ticker = json.loads(json.dumps(example("bybit", "linear_tickers_delta")))
    bad_ticker["data"]["markPrice"] = "-5"
    assert rejected(a, json.dumps(bad_ticker)).symbol == "BTCUSDT"


def test_bybit_subscribes_to_what_the_channels_say():
    topics = lambda a: [t for g in a.stream_groups() for f in g.subscribe for t in json.loads(f)["args"]]  # noqa: E731
    assert sorted(topics(make("bybit_linear", "BTCUSDT"))) == sorted([
        "orderbook.200.BTCUSDT", "publicTrade.BTCUSDT", "orderbook.1.BTCUSDT", "tickers.BTCUSDT",
        "allLiquidation.BTCUSDT"])
    assert sorted(topics(make("bybit", "BTCUSDT"))) == sorted([
        "orderbook.200.BTCUSDT", "publicTrade.BTCUSDT", "orderbook.1.BTCUSDT"])
    assert topics(make("bybit_linear", "BTCUSDT", channels=("book",))) == ["orderbook.200.BTCUSDT"]


# ------------------------------------------------------------------ OKX

@pytest.mark.shared
def test_okx_bbo_tbt_is_a_quote():
    a = make("okx", "BCH-USDT-SWAP")
    ex = docs("okx")["ws_bbo_tbt"]
    q = a.parse_frame(json.dumps(ex), 5)
    assert isinstance(q, BboEvent) and q.symbol == "BCH-USDT-SWAP"
    d = ex["data"][0]
    assert (q.bid_price, q.bid_size, q.ask_price, q.ask_size) == (
        float(d["bids"][0][0]), float(d["bids"][0][1]), float(d["asks"][0][0]), float(d["asks"][0][1]))
    assert q.ts_exchange_us == int(d["ts"]) * 1000
    bad = json.loads(json.dumps(ex))
    bad["data"][0]["bids"][0][0] = "-3"
    assert rejected(a, json.dumps(bad)).symbol == "BCH-USDT-SWAP"


def test_okx_ticker_channels_merge_and_liquidation_orders_keep_configured_instruments():
    a = make("okx", "BTC-USDT-SWAP", "LTC-USD-SWAP", "BTC-USD-SWAP", "IOST-USDT-SWAP", "ETH-USDT")
    m = a.parse_frame(json.dumps(example("okx", "mark_price")), 5)
    assert (m.symbol, m.mark_price, m.ts_exchange_us, m.index_price) == ("BTC-USDT-SWAP", 42310.6, 1630049139746000, None)
    [i] = a.parse_frame(json.dumps(example("okx", "index_tickers")), 5)  # the index of BTC-USDT-SWAP
    assert (i.symbol, i.index_price, i.mark_price) == ("BTC-USDT-SWAP", 0.1, None)
    f = a.parse_frame(json.dumps(example("okx", "funding_rate")), 5)
    assert (f.symbol, f.funding_rate, f.funding_timestamp, f.predicted_funding_rate) == (
        "BTC-USD-SWAP", 0.0001875391284828, 1700726400000 * 1000, None)  # "" predicted: nil
    o = a.parse_frame(json.dumps(example("okx", "open_interest")), 5)
    assert (o.symbol, o.open_interest) == ("LTC-USD-SWAP", 5000.0)
    [liq] = a.parse_frame(json.dumps(example("okx", "liquidation_orders")), 5)
    assert (liq.symbol, liq.side, liq.price, liq.amount, liq.ts_exchange_us) == (
        "IOST-USDT-SWAP", "buy", 0.007831, 13.0, 1692266434010000)
    other = make("okx", "BTC-USDT-SWAP")
    assert other.parse_frame(json.dumps(example("okx", "liquidation_orders")), 5) is None  # not ours
    bad = json.loads(json.dumps(example("okx", "open_interest")))
    bad["data"][0]["oi"] = "lots"
    assert rejected(a, json.dumps(bad)).symbol == "LTC-USD-SWAP"
    # subscriptions: spot ETH-USDT gets a quote channel and nothing derivative
    args = [x for g in a.stream_groups() for fr in g.subscribe for x in json.loads(fr)["args"]]
    assert {"channel": "bbo-tbt", "instId": "ETH-USDT"} in args
    assert not [x for x in args if x.get("instId") == "ETH-USDT" and x["channel"] != "bbo-tbt"
                and x["channel"] not in ("books", "trades")]
    assert {"channel": "index-tickers", "instId": "BTC-USDT"} in args
    assert {"channel": "liquidation-orders", "instType": "SWAP"} in args
    # the index id can be a configured spot instrument too: index-tickers still go to the swap
    both = make("okx", "BTC-USDT", "BTC-USDT-SWAP")
    [i] = both.parse_frame(json.dumps(example("okx", "index_tickers")), 5)
    assert (i.symbol, i.index_price) == ("BTC-USDT-SWAP", 0.1)


# ------------------------------------------------------------------ Lighter

def _lighter(*symbols, **kw):
    a = make("lighter", *symbols, **kw)
    return a


@pytest.mark.shared
def test_lighter_ticker_is_a_quote_market_stats_a_ticker_and_liquidation_trades_are_liquidations():
    a = _lighter("0")
    raw = json.loads((SAMPLES / "lighter" / "nautilus_ws_ticker_update.json").read_text())
    q = a.parse_frame(json.dumps(raw), 5)
    assert isinstance(q, BboEvent) and (q.bid_price, q.bid_size, q.ask_price, q.ask_size, q.update_id) == (
        2064.30, 1.0392, 2064.48, 0.4950, 9182390020)
    assert q.ts_exchange_us == 1774883844921166
    t = a.parse_frame(json.dumps(example("lighter", "market_stats")), 5)
    assert isinstance(t, TickerEvent)
    assert (t.mark_price, t.index_price, t.last_price, t.open_interest, t.funding_rate, t.predicted_funding_rate,
            t.funding_timestamp) == (3335.09, 3335.04, 3335.65, 235.25, 0.0005, 0.0057, 1722337200000 * 1000)
    [liq] = a.parse_frame(json.dumps(example("lighter", "trade_with_liquidation")), 5)
    assert isinstance(liq, LiquidationEvent)
    assert (liq.side, liq.price, liq.amount, liq.liquidation_id) == ("sell", 2180.10, 0.5, "16164557911")
    bad = json.loads(json.dumps(example("lighter", "market_stats")))
    bad["market_stats"]["mark_price"] = "-1"
    assert rejected(a, json.dumps(bad)).symbol == "0"
    raw["ticker"]["b"]["price"] = "x"
    assert rejected(a, json.dumps(raw)).symbol == "0"


# ------------------------------------------------------------------ Hyperliquid

def test_hyperliquid_bbo_is_a_quote_and_active_asset_ctx_a_ticker_stamped_locally():
    a = make("hyperliquid", "BTC")
    q = a.parse_frame(json.dumps(example("hyperliquid", "bbo")), 5)
    assert isinstance(q, BboEvent) and (q.bid_price, q.bid_size, q.ask_price, q.ask_size, q.update_id) == (
        104990.0, 1.2, 104991.0, 0.5, 0)
    assert q.ts_exchange_us == 1737900000000 * 1000
    empty = json.loads(json.dumps(example("hyperliquid", "bbo")))
    empty["data"]["bbo"][1] = None
    assert a.parse_frame(json.dumps(empty), 5).ask_price is None  # an empty side
    ctx = json.loads(json.dumps(example("hyperliquid", "active_asset_ctx")))
    ctx["data"]["coin"] = "BTC"
    recv_ns = 1_700_000_100_000_000_000
    t = a.parse_frame(json.dumps(ctx), recv_ns)
    assert isinstance(t, TickerEvent) and t.ts_exchange_us == 0  # no venue time: the feed stamps local time
    assert (t.mark_price, t.index_price, t.funding_rate, t.open_interest, t.last_price) == (
        14.3161, 14.32, 0.0000125, 688.11, None)
    assert t.funding_timestamp == 1_700_002_800_000_000  # the next full hour
    bad = json.loads(json.dumps(example("hyperliquid", "bbo")))
    bad["data"]["bbo"][0]["px"] = "-1"
    assert rejected(a, json.dumps(bad)).symbol == "BTC"
    subs = [json.loads(f)["subscription"]["type"] for g in a.stream_groups() for f in g.subscribe]
    assert sorted(subs) == ["activeAssetCtx", "bbo", "l2Book", "trades"]
    with pytest.raises(ConfigError, match="hyperliquid offers no liquidations"):
        make("hyperliquid", "BTC", channels=("book", "liquidations"))
