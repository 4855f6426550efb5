"""Runtime streams on Hyperliquid and Lighter (issue 14), adapter side: the (un)subscribe frames on a
live connection, the instrument checks (Hyperliquid info meta/spotMeta, Lighter orderBookDetails),
the market id a new Lighter symbol gets from its check, and Hyperliquid's per-IP subscription limit
refused before anything changes."""

from __future__ import annotations

import json

import msgspec
import pytest

from ingest.adapters.hyperliquid import MAX_SUBSCRIPTIONS, HyperliquidAdapter
from ingest.adapters.lighter import LighterAdapter
from ingest.events import DepthSnapshot, TradeEvent
from pipeline.config import ExchangeConfig
from pipeline.errors import StreamError


def hl(*symbols, channels=("trades", "book"), **options):
    return HyperliquidAdapter(ExchangeConfig(name="hl", adapter="hyperliquid", symbols=symbols or ("BTC",),
                                             channels=channels, options=options))


def lighter(*symbols, channels=("trades", "book")):
    return LighterAdapter(ExchangeConfig(name="lt", adapter="lighter", symbols=symbols or ("0",), channels=channels))


DETAILS = json.dumps({"order_book_details": [{"symbol": "ETH", "market_id": 0}, {"symbol": "BTC", "market_id": 1}],
                      "spot_order_book_details": [{"symbol": "ETH/USDC", "market_id": 2048}]}).encode()


# ------------------------------------------------------------------------------- Hyperliquid

@pytest.mark.parametrize("fast", [False, True])
def test_hyperliquid_unsubscribes_with_the_same_subscription_body_it_subscribed(fast):
    a = hl("BTC", fast=fast)
    assert a.supports_live_subscribe
    sub = [json.loads(f) for f in a.live_subscribe("depth", ("ETH",))]
    unsub = [json.loads(f) for f in a.live_subscribe("depth", ("ETH",), subscribe=False)]
    book = {"type": "l2Book", "coin": "ETH", **({"fast": True} if fast else {})}
    assert sub == [{"method": "subscribe", "subscription": book}]
    assert unsub == [{"method": "unsubscribe", "subscription": book}]  # the venue matches the body exactly
    assert [json.loads(f) for f in a.live_subscribe("trades", ("ETH",))] == [
        {"method": "subscribe", "subscription": {"type": "trades", "coin": "ETH"}}]
    # a connection rebuilt at a reconnect carries the same frames
    assert a.stream_group("depth", ("ETH",)).subscribe == tuple(a.live_subscribe("depth", ("ETH",)))


def test_hyperliquid_a_coin_added_live_gets_the_chosen_channels_of_the_trades_connection():
    a = hl("BTC", channels=None)  # every channel the venue offers
    frames = [json.loads(f)["subscription"] for f in a.live_subscribe("trades", ("ETH", "@107"))]
    assert frames == [{"type": "trades", "coin": "ETH"}, {"type": "bbo", "coin": "ETH"},
                      {"type": "activeAssetCtx", "coin": "ETH"},  # perps only
                      {"type": "trades", "coin": "@107"}, {"type": "bbo", "coin": "@107"}]
    assert a.symbols_per_connection("trades") == 500 // 3
    assert hl("BTC", channels=("book",)).stream_kinds() == ("depth",)


def test_hyperliquid_stream_groups_are_as_before_books_apart_from_trades():
    a = hl("BTC", "ETH")
    groups = a.stream_groups()
    assert [(g.kind, g.symbols) for g in groups] == [("depth", ("BTC", "ETH")), ("trades", ("BTC", "ETH"))]
    assert a.symbols_per_connection("depth") == 500


def test_hyperliquid_frames_of_an_added_coin_are_parsed_after_add_symbol():
    a = hl("BTC")
    book = b'{"channel":"l2Book","data":{"coin":"ETH","time":5,"levels":[[{"px":"1.0","sz":"2.0","n":1}],[]]}}'
    trades = b'{"channel":"trades","data":[{"coin":"ETH","side":"B","px":"1.5","sz":"1.0","time":5,"tid":9}]}'
    a.add_symbol("ETH")
    assert a.symbols == ("BTC", "ETH")
    assert isinstance(a.parse_frame(book, 1), DepthSnapshot)
    assert [type(t) for t in a.parse_frame(trades, 1)] == [TradeEvent]
    assert a.parse_frame(trades, 2) is None  # de-duplicated as for a configured coin


@pytest.mark.parametrize("symbol, body", [
    ("ETH", {"type": "meta"}), ("xyz:NVDA", {"type": "meta", "dex": "xyz"}),
    ("PURR/USDC", {"type": "spotMeta"}), ("@107", {"type": "spotMeta"})])
def test_hyperliquid_checks_a_new_coin_against_the_list_it_belongs_to(symbol, body):
    req = hl().instrument_request(symbol)
    assert (req.method, req.url, json.loads(req.body)) == ("POST", "https://api.hyperliquid.xyz/info", body)


def test_hyperliquid_instrument_listed_reads_meta_and_spot_meta():
    a = hl()
    meta = msgspec.json.encode({"universe": [{"name": "ETH", "szDecimals": 4}, {"name": "OLD", "isDelisted": True}]})
    spot = msgspec.json.encode({"universe": [{"name": "PURR/USDC", "index": 0}, {"name": "@107", "index": 107}],
                                "tokens": []})
    hip3 = msgspec.json.encode({"universe": [{"name": "xyz:NVDA"}]})
    assert a.instrument_listed("ETH", 200, meta)
    assert not a.instrument_listed("OLD", 200, meta)       # delisted
    assert not a.instrument_listed("XRP", 200, meta)
    assert a.instrument_listed("PURR/USDC", 200, spot) and a.instrument_listed("@107", 200, spot)
    assert not a.instrument_listed("@108", 200, spot)
    assert a.instrument_listed("xyz:NVDA", 200, hip3)
    assert a.instrument_listed("xyz:NVDA", 200, msgspec.json.encode({"universe": [{"name": "NVDA"}]}))
    for status, body in ((200, b"null"), (200, b"{"), (200, b"[]"), (422, meta)):
        assert not a.instrument_listed("ETH", status, body)


def test_hyperliquid_refuses_coins_past_the_per_ip_subscriptions_before_any_change():
    a = hl(*(f"C{i}" for i in range(MAX_SUBSCRIPTIONS // 2 - 1)))
    a.check_new_symbols(("NEW1",))  # two subscriptions left: one coin fits
    with pytest.raises(StreamError) as err:
        a.check_new_symbols(("NEW1", "NEW2"))
    assert err.value.code == "full" and "1000" in str(err.value)
    assert "NEW1" not in a.symbols


# ------------------------------------------------------------------------------------ Lighter

def test_lighter_subscribes_and_unsubscribes_by_market_id_on_a_live_connection():
    a = lighter("0")
    assert a.supports_live_subscribe
    a.add_symbol("12")  # a market id as is
    assert [json.loads(f) for f in a.live_subscribe("depth", ("12",))] == [
        {"type": "subscribe", "channel": "order_book/12"}]
    assert [json.loads(f) for f in a.live_subscribe("trades", ("12",), subscribe=False)] == [
        {"type": "unsubscribe", "channel": "trade/12"}]
    assert a.stream_group("depth", ("0", "12")).subscribe == (
        '{"type":"subscribe","channel":"order_book/0"}', '{"type":"subscribe","channel":"order_book/12"}')


def test_lighter_a_market_added_live_gets_the_chosen_channels_of_the_trades_connection():
    a = lighter("0", channels=None)
    a.add_symbol("12")
    a.add_symbol("2049")  # a spot id: no market_stats
    frames = [json.loads(f)["channel"] for f in a.live_subscribe("trades", ("12", "2049"), subscribe=False)]
    assert frames == ["trade/12", "ticker/12", "market_stats/12", "trade/2049", "ticker/2049"]
    assert lighter("0", channels=("liquidations", "book")).stream_group("trades", ("0",)).subscribe == (
        '{"type":"subscribe","channel":"trade/0"}',)


def test_lighter_checks_a_new_symbol_against_order_book_details_and_keeps_its_market_id():
    a = lighter("0")
    assert a.instrument_request("7") is None  # a market id needs no list
    req = a.instrument_request("BTC")
    assert req.url == "https://mainnet.zklighter.elliot.ai/api/v1/orderBookDetails"
    assert not a.instrument_listed("XRP", 200, DETAILS)
    assert not a.instrument_listed("BTC", 500, DETAILS) and not a.instrument_listed("BTC", 200, b"{")
    assert a.instrument_listed("btc", 200, DETAILS)  # case folded when unique, as at discovery
    assert a.instrument_listed("ETH/USDC", 200, DETAILS)
    a.add_symbol("btc")
    a.add_symbol("ETH/USDC")
    assert (a.market_id("btc"), a.market_id("ETH/USDC")) == (1, 2048)
    assert a.instrument("ETH/USDC").kind == "spot" and a.instrument("btc").kind == "perp"
    frame = (b'{"type":"subscribed/order_book","channel":"order_book:1","order_book":{"asks":[],'
             b'"bids":[{"price":"5.0","size":"1.0"}],"nonce":3}}')
    snap = a.parse_frame(frame, 1)
    assert (snap.symbol, snap.last_id, snap.bids) == ("btc", 3, [(5.0, 1.0)])


def test_lighter_add_symbol_without_a_market_id_is_refused():
    with pytest.raises(StreamError) as err:
        lighter("0").add_symbol("DOGE")
    assert err.value.code == "unknown_symbol"
