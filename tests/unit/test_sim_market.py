"""The seeded market generator behind ``pipeline sim`` (pipeline/sim/market.py).

The book rules checked here are Binance spot's (shared/docs/exchange-protocols.md §1 and
§0): absolute sizes with zero meaning delete, update ids contiguous per symbol, a REST-like
snapshot whose ``lastUpdateId`` is the last update in it, taker buys hitting the ask.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipeline.sim.market import ZERO, Market, Update, format_units, symbol_spec

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")


def _run(market: Market, n: int) -> list[Update]:
    return [market.step() for _ in range(n)]


class DictBook:
    """A tiny, obviously correct book: price text -> size text per side (§0 rule 2)."""

    def __init__(self, last_id: int, bids: list[list[str]], asks: list[list[str]]):
        self.last_id = last_id
        self.sides = {"b": {p: q for p, q in bids}, "a": {p: q for p, q in asks}}

    def apply(self, update: Update) -> None:
        assert update.update_id == self.last_id + 1
        for side, price, size in update.changes:
            if size == ZERO:
                self.sides[side].pop(price, None)
            else:
                self.sides[side][price] = size
        self.last_id = update.update_id

    def levels(self, side: str) -> list[list[str]]:
        return [[p, q] for p, q in sorted(self.sides[side].items(), key=lambda kv: Decimal(kv[0]),
                                          reverse=side == "b")]


def test_same_seed_gives_the_same_update_sequence():
    first = _run(Market(SYMBOLS, seed=7, levels=100), 5000)
    second = _run(Market(SYMBOLS, seed=7, levels=100), 5000)
    assert first == second
    other = _run(Market(SYMBOLS, seed=8, levels=100), 5000)
    assert first != other


def test_same_seed_gives_the_same_start_book():
    a, b = Market(SYMBOLS, seed=3, levels=50), Market(SYMBOLS, seed=3, levels=50)
    for symbol in SYMBOLS:
        assert a.snapshot(symbol, 5000) == b.snapshot(symbol, 5000)


def test_book_never_crosses_and_every_level_has_a_positive_size():
    market = Market(SYMBOLS, seed=1, levels=60)
    for i in range(30_000):
        update = market.step()
        for _, _, size in update.changes:
            assert size == ZERO or Decimal(size) > 0
        bid, bid_qty, ask, ask_qty = market.bbo(update.symbol)
        assert Decimal(bid) < Decimal(ask)
        assert Decimal(bid_qty) > 0 and Decimal(ask_qty) > 0
        if i % 1000 == 0:
            for symbol in SYMBOLS:
                _, bids, asks = market.snapshot(symbol, 5000)
                bid_prices = [Decimal(p) for p, _ in bids]
                ask_prices = [Decimal(p) for p, _ in asks]
                assert bid_prices == sorted(bid_prices, reverse=True)
                assert len(set(bid_prices)) == len(bid_prices)
                assert ask_prices == sorted(ask_prices)
                assert len(set(ask_prices)) == len(ask_prices)
                assert bid_prices[0] < ask_prices[0]
                assert all(Decimal(q) > 0 for _, q in bids + asks)


def test_update_and_trade_ids_are_contiguous_per_symbol():
    market = Market(SYMBOLS, seed=2, levels=100)
    last_update = {s: market.last_update_id(s) for s in SYMBOLS}
    last_trade = {s: market.stats(s).last_trade_id for s in SYMBOLS}
    last_agg: dict[str, int] = {}
    for update in _run(market, 20_000):
        assert update.update_id == last_update[update.symbol] + 1
        last_update[update.symbol] = update.update_id
        trade = update.trade
        if trade is not None:
            assert trade.first_id == last_trade[update.symbol] + 1
            assert trade.last_id == trade.first_id + len(trade.quantities) - 1
            last_trade[update.symbol] = trade.last_id
            if update.symbol in last_agg:
                assert trade.agg_id == last_agg[update.symbol] + 1
            last_agg[update.symbol] = trade.agg_id
    for symbol in SYMBOLS:
        stats = market.stats(symbol)
        assert stats.last_update_id == last_update[symbol]
        assert stats.last_trade_id == last_trade[symbol]


def test_snapshot_plus_later_updates_equals_a_later_snapshot():
    market = Market(SYMBOLS, seed=5, levels=200)
    _run(market, 1000)
    books = {s: DictBook(*market.snapshot(s, 5000)) for s in SYMBOLS}
    for checkpoint in range(5):
        for update in _run(market, 4000):
            books[update.symbol].apply(update)
        for symbol, book in books.items():
            last_id, bids, asks = market.snapshot(symbol, 5000)
            assert last_id == book.last_id
            assert book.levels("b") == bids
            assert book.levels("a") == asks


def test_snapshot_limit_keeps_the_best_levels():
    market = Market(("BTCUSDT",), seed=1, levels=100)
    _run(market, 500)
    last_id, bids, asks = market.snapshot("BTCUSDT", 5000)
    assert market.snapshot("BTCUSDT", 7) == (last_id, bids[:7], asks[:7])


def test_trades_consume_the_best_level_of_the_passive_side():
    market = Market(SYMBOLS, seed=11, levels=100)
    trades = 0
    steps = 40_000
    for _ in range(steps):
        before = {s: market.bbo(s) for s in SYMBOLS}
        update = market.step()
        trade = update.trade
        if trade is None:
            continue
        trades += 1
        bid, bid_qty, ask, ask_qty = before[update.symbol]
        # m == false: the buyer is the taker, so it hits the ask (§1 taker side).
        side, best, best_qty = ("b", bid, bid_qty) if trade.buyer_is_maker else ("a", ask, ask_qty)
        assert trade.price == best
        assert sum(Decimal(q) for q in trade.quantities) == Decimal(trade.quantity)
        assert all(Decimal(q) > 0 for q in trade.quantities)
        ((change_side, change_price, change_size),) = update.changes
        assert (change_side, change_price) == (side, best)
        assert Decimal(change_size) == Decimal(best_qty) - Decimal(trade.quantity)
        assert update.bbo == market.bbo(update.symbol)
    assert 0.04 * steps < trades < 0.12 * steps


def test_bbo_is_reported_exactly_when_the_top_of_book_changes():
    market = Market(SYMBOLS, seed=4, levels=100)
    before = {s: market.bbo(s) for s in SYMBOLS}
    changed = 0
    for _ in range(20_000):
        update = market.step()
        now = market.bbo(update.symbol)
        if now != before[update.symbol]:
            assert update.bbo == now
            changed += 1
        else:
            assert update.bbo is None
        before[update.symbol] = now
    assert changed > 1000


def test_depth_stays_near_the_requested_levels_and_the_mid_stays_plausible():
    market = Market(SYMBOLS, seed=9, levels=150)
    _run(market, 120_000)
    for symbol in SYMBOLS:
        stats = market.stats(symbol)
        assert 0.8 * 150 <= stats.bid_levels <= 1.2 * 150
        assert 0.8 * 150 <= stats.ask_levels <= 1.2 * 150
        start = Decimal(format_units(symbol_spec(symbol).start_tick, symbol_spec(symbol).tick_decimals))
        mid = (Decimal(stats.best_bid) + Decimal(stats.best_ask)) / 2
        assert abs(mid - start) / start < Decimal("0.05")
        assert stats.updates > 0 and stats.trades > 0


def test_every_symbol_gets_updates_and_prices_follow_the_tick_size():
    market = Market(SYMBOLS, seed=1, levels=50)
    seen = set()
    for update in _run(market, 5000):
        seen.add(update.symbol)
        spec = symbol_spec(update.symbol)
        for _, price, size in update.changes:
            assert Decimal(price) % Decimal(spec.tick_size) == 0
            assert Decimal(size) % Decimal(spec.step_size) == 0
            assert len(price.split(".")[1]) == 8 and len(size.split(".")[1]) == 8
    assert seen == set(SYMBOLS)


@pytest.mark.parametrize("value,decimals,text", [
    (6183763, 2, "61837.63000000"),
    (1, 2, "0.01000000"),
    (5, 5, "0.00005000"),
    (154698, 5, "1.54698000"),
    (0, 8, "0.00000000"),
    (42, 0, "42.00000000"),
])
def test_format_units_writes_binance_8_decimal_text(value, decimals, text):
    assert format_units(value, decimals) == text


def test_symbol_specs_have_plausible_prices_and_assets():
    btc, eth, other = symbol_spec("BTCUSDT"), symbol_spec("ETHUSDT"), symbol_spec("ADAFDUSD")
    assert (btc.base_asset, btc.quote_asset, btc.tick_size) == ("BTC", "USDT", "0.01000000")
    assert 50_000 < btc.start_tick / 100 < 70_000
    assert 2_000 < eth.start_tick / 100 < 4_000
    assert (other.base_asset, other.quote_asset) == ("ADA", "FDUSD")
    assert 50 <= other.start_tick / 100 <= 200


@pytest.mark.parametrize("symbols,levels", [((), 10), (("BTCUSDT", "BTCUSDT"), 10),
                                            (("btcusdt",), 10), (("BTCUSDT",), 0)])
def test_bad_arguments_are_rejected(symbols, levels):
    with pytest.raises(ValueError):
        Market(symbols, seed=1, levels=levels)
