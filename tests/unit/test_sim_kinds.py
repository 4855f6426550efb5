"""The venue sims' quote, ticker and liquidation frames (issue 13), without sockets: the frames a
subscriber would be sent are parsed by the venue's own adapter, and say what the market did: the
last quote is the market's best bid/ask, the ticker's open interest the trades so far, one
liquidation for every 25th taker order."""

from __future__ import annotations

import pytest

from ingest import adapters
from ingest.events import BboEvent, LiquidationEvent, TickerEvent
from pipeline.config import ExchangeConfig
from pipeline.sim.base import SimOptions
from pipeline.sim.feeds import LIQUIDATION_EVERY
from pipeline.sim.venues import make_server

CASES = {
    # protocol: (adapter, symbols, the topic keys subscribed, does it report liquidations, quotes)
    "bybit": ("bybit_linear", ("BTCUSDT", "ETHUSDT"),
              [("linear", "tickers.BTCUSDT"), ("linear", "allLiquidation.BTCUSDT")], True, False),
    "okx": ("okx", ("BTC-USDT-SWAP", "ETH-USDT"),
            [("bbo-tbt", "BTC-USDT-SWAP"), ("mark-price", "BTC-USDT-SWAP"), ("index-tickers", "BTC-USDT"),
             ("funding-rate", "BTC-USDT-SWAP"), ("open-interest", "BTC-USDT-SWAP"), ("liquidation-orders", "SWAP")],
            True, True),
    "hyperliquid": ("hyperliquid", ("BTC", "ETH"), [("bbo", "BTC"), ("activeAssetCtx", "BTC")], False, True),
}


class Conn:
    """What a subscription needs of a connection: its streams and the frames queued for it."""

    def __init__(self):
        self.out: list[bytes] = []
        self.streams: dict = {}


def _payloads(frames: list[bytes]):
    """Text payloads of unmasked server frames."""
    for f in frames:
        n, i = f[1] & 0x7F, 2
        if n == 126:
            n, i = int.from_bytes(f[2:4], "big"), 4
        elif n == 127:
            n, i = int.from_bytes(f[2:10], "big"), 10
        yield f[i:i + n].decode()


@pytest.mark.parametrize("protocol", list(CASES))
def test_sim_frames_parse_with_the_venue_adapter_and_follow_the_market(protocol):
    adapter_name, symbols, keys, liquidations, quotes = CASES[protocol]
    server = make_server(protocol, SimOptions(symbols=symbols, seed=4, levels=60))
    conn = Conn()
    for key in keys:
        server.subscribe_topic(conn, key, server.other_topic(key))
    adapter = adapters.create(ExchangeConfig(name="x", adapter=adapter_name, symbols=symbols))
    sym = symbols[0]
    takers = 0
    events = []
    for i in range(4000):
        update = server.market.step()
        server.on_update(update, 1_700_000_000_000 + i)
        takers += update.trade is not None and update.symbol == sym
        if i % 500 == 0:
            server.ticker_frames(1_700_000_000_000 + i)
            trades_then = server.market.trade_count(sym)
        for text in _payloads(conn.out):
            got = adapter.parse_frame(text, 1)
            events += got if isinstance(got, list) else [got] if got is not None else []
        conn.out.clear()
    assert all(e.symbol == sym for e in events)  # only the subscribed symbol's topics
    tickers = [e for e in events if isinstance(e, TickerEvent)]
    assert tickers and any(t.mark_price for t in tickers) and any(t.index_price for t in tickers)
    assert [t.open_interest for t in tickers if t.open_interest][-1] == 1000 + trades_then
    assert all(t.funding_rate in (None, 0.0001) for t in tickers) and any(t.funding_rate for t in tickers)
    liqs = [e for e in events if isinstance(e, LiquidationEvent)]
    assert len(liqs) == (takers // LIQUIDATION_EVERY if liquidations else 0) and (liqs or not liquidations)
    assert all(x.side in ("buy", "sell") and x.price > 0 and x.amount > 0 for x in liqs)
    bbos = [e for e in events if isinstance(e, BboEvent)]
    if quotes:
        b, bq, a, aq = map(float, server.market.bbo(sym))
        assert (bbos[-1].bid_price, bbos[-1].bid_size, bbos[-1].ask_price, bbos[-1].ask_size) == (b, bq, a, aq)
    else:
        assert not bbos  # Bybit's quotes are the orderbook.1 book topic, not these hooks
