"""FeedBooks with the kinds beside trades and books (issue 13): quotes, derivative tickers
(merged per symbol, absent fields nil, never 0), liquidations, each with its own contiguous seq;
CVD and trade bars derived from the published trades equal an independent aggregation of the same
trades.  Every event goes in through ``FeedBooks.receive``, the entry point the runner uses."""

from __future__ import annotations

import random

from feeds import FeedRun
from ingest.adapters.base import APPLY, Adapter, AdapterTraits, SnapshotSource
from ingest.events import BboEvent, LiquidationEvent, TickerEvent, TradeEvent
from pipeline import schema

DAY = 86_400_000_000


class PlainAdapter(Adapter):
    name = "plain"

    def __init__(self):
        self.traits = AdapterTraits(SnapshotSource.STREAM)

    @staticmethod
    def check(ev, book_id, first):
        return APPLY

    @staticmethod
    def snapshot_usable(snapshot_id, first):
        return True

    def instrument(self, symbol):
        return schema.Instrument("BTC", "USDT", "perp")


def _run(symbols=("A", "B")) -> FeedRun:
    return FeedRun(PlainAdapter(), list(symbols), depth=5)


def test_quotes_tickers_and_liquidations_are_published_with_a_seq_per_stream():
    run = _run()
    try:
        feed = run.feed
        feed.receive(BboEvent("A", 7, 99.0, 2.0, 101.0, 1.0, 5_000, ts_exchange_us=4))
        feed.receive([BboEvent("B", 0, None, None, 50.0, 1.0, 6_000), BboEvent("A", 8, 99.5, 1.0, 101.0, 1.0, 7_000)])
        feed.receive(LiquidationEvent("A", "sell", 98.0, 0.5, "x1", 10, 8_000))
        feed.receive(TickerEvent(symbol="A", ts_exchange_us=11, recv_ns=9_000, mark_price=100.0))
        feed.receive(TickerEvent(symbol="A", ts_exchange_us=0, recv_ns=10_000, funding_rate=0.0001,
                                 funding_timestamp=1_700_000_000_000_000))
        feed.receive(TickerEvent(symbol="A", ts_exchange_us=13, recv_ns=11_000, mark_price=100.0))  # no change
        kinds = run.bus.kinds
        quotes = kinds["quote"]
        assert [(q.symbol, q.seq, q.update_id) for q in quotes] == [("A", 1, 7), ("B", 1, 0), ("A", 2, 8)]
        assert (quotes[0].ts_exchange, quotes[0].ts_received, quotes[0].bid_price) == (4, 5, 99.0)
        assert quotes[1].bid_price is None and quotes[1].ts_exchange == 6  # no venue time: the receive time
        assert quotes[0].instrument == schema.Instrument("BTC", "USDT", "perp")
        [liq] = kinds["liquidation"]
        assert (liq.seq, liq.side, liq.price, liq.amount, liq.liquidation_id, liq.ts_exchange) == (
            1, "sell", 98.0, 0.5, "x1", 10)
        tickers = kinds["derivative_ticker"]
        assert [t.seq for t in tickers] == [1, 2]  # the repeat changed nothing: not published
        assert (tickers[0].mark_price, tickers[0].funding_rate, tickers[0].open_interest) == (100.0, None, None)
        assert (tickers[1].mark_price, tickers[1].funding_rate, tickers[1].funding_timestamp) == (
            100.0, 0.0001, 1_700_000_000_000_000)
        assert tickers[1].ts_exchange == 10  # no venue time: the receive time (µs)
        counts = run.counts("A")
        assert (counts.quotes, counts.tickers, counts.liquidations) == (2, 3, 1)
        assert (counts.last_quote_ns, counts.last_liquidation_ns, counts.last_ticker_ns) == (7_000, 8_000, 11_000)
    finally:
        run.close()


def _reference_bars(trades, interval_us):
    bars = {}
    for t in trades:
        start = t.ts_exchange - t.ts_exchange % interval_us
        b = bars.setdefault(start, {"open": t.price, "high": t.price, "low": t.price, "volume": 0.0, "buy": 0.0,
                                    "sell": 0.0, "n": 0, "first": t.seq})
        b["high"], b["low"], b["close"] = max(b["high"], t.price), min(b["low"], t.price), t.price
        b["volume"] += t.amount
        b["buy" if t.side == "buy" else "sell"] += t.amount if t.side in ("buy", "sell") else 0.0
        b["n"] += 1
        b["last"] = t.seq
    return bars


def test_cvd_and_bars_equal_an_independent_aggregation_of_the_published_trades():
    rng = random.Random(13)
    run = _run(["A"])
    try:
        feed = run.feed
        t0 = 3 * DAY - 90_000_000  # 90 s before a UTC midnight: the CVD resets there
        ts = t0
        for i in range(2_000):
            ts += rng.choice((0, 1_000, 50_000, 700_000, 2_500_000))  # empty intervals too
            feed.receive(TradeEvent("A", round(rng.uniform(90, 110), 1), round(rng.uniform(0.1, 2), 3),
                                    rng.choice(("buy", "sell", "sell", "unknown")), str(i), ts, ts * 1000))
            if rng.random() < 0.1:
                feed.flush()  # a batch ends
        feed.flush()
        trades = run.trades
        assert len(trades) == 2_000
        # CVD: the last one covers every trade since the last UTC midnight
        cvds = run.bus.kinds["cvd"]
        assert [c.seq for c in cvds] == list(range(1, len(cvds) + 1))
        last = cvds[-1]
        day = trades[-1].ts_exchange - trades[-1].ts_exchange % DAY
        today = [t for t in trades if t.ts_exchange >= day]
        buy = sum(t.amount for t in today if t.side == "buy")
        sell = sum(t.amount for t in today if t.side == "sell")
        assert (last.trade_seq, last.since) == (trades[-1].seq, day)
        assert abs(last.buy_volume - buy) < 1e-9 and abs(last.sell_volume - sell) < 1e-9
        assert abs(last.cvd - (buy - sell)) < 1e-9
        # and each CVD is the sum up to the trade it names
        for c in cvds:
            upto = [t for t in trades if t.seq <= c.trade_seq and t.ts_exchange >= c.since]
            assert abs(c.cvd - sum(t.amount if t.side == "buy" else -t.amount if t.side == "sell" else 0.0
                                   for t in upto)) < 1e-6
        # bars: every closed bar equals the reference; the open ones are not published yet
        feed.tick(trades[-1].ts_exchange * 1000 + 61_000_000_000 * 2)  # local time far past: all close
        bars = run.bus.kinds["trade_bar"]
        assert [b.seq for b in bars] == list(range(1, len(bars) + 1))
        for interval, interval_us in (("1s", 1_000_000), ("1m", 60_000_000)):
            ref = _reference_bars(trades, interval_us)
            got = {b.open_time: b for b in bars if b.interval == interval}
            assert sorted(got) == sorted(ref), interval
            for start, b in got.items():
                r = ref[start]
                assert (b.open, b.high, b.low, b.close, b.trades, b.first_trade_seq, b.last_trade_seq) == (
                    r["open"], r["high"], r["low"], r["close"], r["n"], r["first"], r["last"])
                assert abs(b.volume - r["volume"]) < 1e-9 and abs(b.buy_volume - r["buy"]) < 1e-9
                assert b.ts_exchange == start + interval_us and b.interval_us == interval_us
    finally:
        run.close()


def test_a_late_trade_joins_no_closed_bar_and_the_tick_closes_a_quiet_bar():
    run = _run(["A"])
    try:
        feed = run.feed
        feed.receive(TradeEvent("A", 10.0, 1.0, "buy", "1", 1_500_000, 1))
        feed.receive(TradeEvent("A", 11.0, 1.0, "buy", "2", 2_100_000, 2))    # closes the 1 s bar [1, 2) s
        feed.receive(TradeEvent("A", 12.0, 1.0, "sell", "3", 1_900_000, 3))   # late for [1, 2): in no bar
        bars = run.bus.kinds["trade_bar"]
        assert [(b.interval, b.open_time, b.trades, b.close) for b in bars] == [("1s", 1_000_000, 1, 10.0)]
        feed.tick(3_900_000 * 1000)  # 0.9 s past the end of [2, 3): within the 1 s grace, still open
        assert len(run.bus.kinds["trade_bar"]) == 1
        feed.tick(4_000_000 * 1000)  # the grace is over: it closes
        assert [(b.interval, b.open_time, b.trades) for b in run.bus.kinds["trade_bar"][1:]] == [("1s", 2_000_000, 1)]
        feed.flush()
        assert run.bus.kinds["cvd"][-1].cvd == 1.0  # the late trade still counts in the CVD
    finally:
        run.close()
