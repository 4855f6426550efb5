"""Ids and times that do not fit the int64 fields they end up in (shared memory, the trade
ring, the bus) are malformed frames, never a crash further down (found by the Lighter fuzz
test: a nonce of 2**63 reached the shared-memory writer)."""

import json

import pytest

from ingest.adapters.binance import BinanceSpotAdapter
from ingest.adapters.bybit import BybitSpotAdapter
from ingest.adapters.hyperliquid import HyperliquidAdapter
from ingest.adapters.lighter import LighterAdapter
from ingest.adapters.okx import OkxAdapter
from pipeline.config import ExchangeConfig
from pipeline.errors import MalformedFrame

BIG = 2**63


def cfg(adapter, symbol):
    return ExchangeConfig(name="x", adapter=adapter, symbols=(symbol,))


CASES = [
    (BinanceSpotAdapter(cfg("binance", "BTCUSDT")), {"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 1, "u": BIG, "b": [["1", "1"]], "a": []}}),
    (BinanceSpotAdapter(cfg("binance", "BTCUSDT")), {"stream": "btcusdt@trade", "data": {
        "e": "trade", "s": "BTCUSDT", "p": "1", "q": "1", "T": 2**60, "m": True, "t": 1}}),
    (BybitSpotAdapter(cfg("bybit", "BTCUSDT")), {"topic": "orderbook.200.BTCUSDT", "type": "delta", "ts": 1,
                                                 "data": {"s": "BTCUSDT", "b": [], "a": [], "u": BIG, "seq": 1}}),
    (OkxAdapter(cfg("okx", "BTC-USDT")), {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "update",
                                          "data": [{"asks": [], "bids": [], "ts": "1", "checksum": 0,
                                                    "prevSeqId": 1, "seqId": BIG}]}),
    (HyperliquidAdapter(cfg("hyperliquid", "BTC")), {"channel": "l2Book", "data": {
        "coin": "BTC", "time": 2**60, "levels": [[{"px": "1", "sz": "1", "n": 1}], [{"px": "2", "sz": "1", "n": 1}]]}}),
    (LighterAdapter(cfg("lighter", "0")), {"channel": "order_book:0", "type": "update/order_book", "offset": 1,
                                           "order_book": {"asks": [], "bids": [], "begin_nonce": 1, "nonce": BIG,
                                                          "offset": 1}}),
]


@pytest.mark.parametrize("adapter,frame", CASES, ids=[f"{type(a).__name__}-{i}" for i, (a, _) in enumerate(CASES)])
def test_out_of_range_ids_and_times_are_malformed(adapter, frame):
    with pytest.raises(MalformedFrame):
        adapter.parse_frame(json.dumps(frame).encode(), 0)


DEEP = b"[" * 3000 + b"]" * 3000  # 6 KB; msgspec stops at ~1000 levels with RecursionError
DEEP_FRAMES = [
    (BinanceSpotAdapter(cfg("binance", "BTCUSDT")), DEEP),
    (BinanceSpotAdapter(cfg("binance", "BTCUSDT")), b'{"stream":"btcusdt@trade","data":{"e":' + DEEP + b"}}"),
    (BybitSpotAdapter(cfg("bybit", "BTCUSDT")), b'{"topic":"orderbook.200.BTCUSDT","data":' + DEEP + b"}"),
    (OkxAdapter(cfg("okx", "BTC-USDT")), b'{"arg":{"channel":"books","instId":"BTC-USDT"},"data":' + DEEP + b"}"),
    (HyperliquidAdapter(cfg("hyperliquid", "BTC")), b'{"channel":"l2Book","data":' + DEEP + b"}"),
    (LighterAdapter(cfg("lighter", "0")), b'{"channel":"order_book:0","order_book":' + DEEP + b"}"),
]


@pytest.mark.parametrize("adapter,frame", DEEP_FRAMES,
                         ids=[f"{type(a).__name__}-{i}" for i, (a, _) in enumerate(DEEP_FRAMES)])
def test_deeply_nested_json_is_a_malformed_frame_not_a_recursion_error(adapter, frame):
    # issue 19 item 7: a RecursionError escaped the adapter, dropped the connection and
    # resynced every symbol, uncounted; a MalformedFrame is counted and the connection kept
    with pytest.raises(MalformedFrame):
        adapter.parse_frame(frame, 0)
    for symbol in adapter.symbols:
        with pytest.raises(MalformedFrame):
            adapter.parse_snapshot(symbol, b'{"bids":' + DEEP + b"}", 0)
