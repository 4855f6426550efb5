"""Seeded market generator behind ``pipeline sim``: full L2 books, trades and update ids.

Pure: no I/O and no clock. ``Market(symbols, seed, levels)`` followed by the same number
of ``step()`` calls gives the same sequence of updates, whatever the wall-clock timing
of the calls; the server decides *when* to step, this module decides *what* happens.

Model
-----
Prices are integer ticks and sizes integer lots (multiples of the LOT_SIZE stepSize), so
book arithmetic is exact. Text is made at this boundary, in Binance spot's form: strings
with 8 decimals such as ``"61837.63000000"`` (exchange-protocols.md §1, REST depth and
diff depth carry prices and quantities as strings).

Each side keeps its keys sorted best first (ask key = tick, bid key = -tick) and a dict
key -> (lots, size text). A step picks a symbol and changes exactly one level, taking
the next update id of that symbol, so ids are contiguous per symbol and a diff event
that aggregates steps ``U..u`` is followed by one that starts at ``u + 1`` (the spot sync
rule of §1). The actions:

- add: a new level or more size at a price a geometric number of ticks behind the best,
  or, when the spread is wider than one tick, a new best price inside the spread;
- cancel: removes a level a geometric number of levels from the best;
- modify: gives such a level a new size;
- trade (about 7% of steps): a taker order hits the best level of the passive side; it
  fills against 1-3 resting orders at that one price (one ``trade`` each, one
  ``aggTrade`` for all) and reduces or removes that level. A taker buy hits the ask,
  so the buyer is the taker and ``m`` (buyer is maker) is false (§1 taker side rule).

Depth is held near ``levels`` per side by trimming the deepest level when a side grows
past it and refilling beyond the deepest level when it shrinks. The mid walks randomly:
the taker side of trades is drawn with a mild pull back toward the start price. Adds
never cross the book and no level ever has a size of zero lots.

Limits: one taker order never sweeps more than one level, and there is no hidden or
iceberg liquidity.
"""

from __future__ import annotations

import bisect
import math
import random
import zlib
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Market", "MarketStats", "SymbolSpec", "Trade", "Update", "format_units", "symbol_spec"]

ZERO = "0.00000000"  # the size text of a deleted level
_PAD = tuple("0" * (8 - d) for d in range(9))

# Action mix of one step (cumulative thresholds on a uniform draw).
_TRADE_P = 0.07
_ADD_P = _TRADE_P + 0.45
_CANCEL_P = _ADD_P + 0.25  # the rest are modifies
_INSIDE_SPREAD_P = 0.35  # share of adds that improve the best price when the spread allows (before the pull)
_WHOLE_LEVEL_P = 0.3  # share of trades that take the whole best level
_PULL = 100.0  # strength of the pull toward the start price (per unit of relative drift)
_TABLE_BITS = 12  # pre-drawn tables of 4096 samples, indexed by getrandbits


def format_units(value: int, decimals: int) -> str:
    """Text of ``value`` units of 10**-decimals with 8 decimals: (6183763, 2) -> '61837.63000000'."""
    s = str(value)
    if decimals == 0:
        return s + ".00000000"
    if len(s) <= decimals:
        s = s.rjust(decimals + 1, "0")
    return s[:-decimals] + "." + s[-decimals:] + _PAD[decimals]


@dataclass(frozen=True)
class SymbolSpec:
    """What the sim knows about one symbol: assets, tick and lot sizes, start price."""

    symbol: str
    base_asset: str
    quote_asset: str
    start_tick: int  # start price in ticks
    tick_decimals: int  # PRICE_FILTER tickSize = 10**-tick_decimals
    step_decimals: int  # LOT_SIZE stepSize = 10**-step_decimals
    level_gap: int  # typical spacing of resting levels, in ticks
    size_lots: int  # median size of a resting level, in lots

    @property
    def tick_size(self) -> str:
        return format_units(1, self.tick_decimals)

    @property
    def step_size(self) -> str:
        return format_units(1, self.step_decimals)


# symbol: (start price in ticks, tick decimals, step decimals, level gap, median lots)
_KNOWN = {
    "BTCUSDT": (60_000_00, 2, 5, 2, 5_000),
    "ETHUSDT": (3_000_00, 2, 4, 2, 5_000),
    "SOLUSDT": (150_00, 2, 3, 1, 5_000),
    "BNBUSDT": (600_00, 2, 3, 1, 1_000),
}
_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")


_NATIVE_QUOTES = {"USD": "USDT", "USDC": "USDT"}  # dollar quotes share the USDT specs


def _split_native(symbol: str) -> tuple[str, str, bool] | None:
    """Base, quote and swap flag of a venue-native name, or None for a Binance-style name.

    ``BTC-USDT`` / ``BTC-USDT-SWAP`` (OKX), ``ETH/USDC`` (Lighter spot, Hyperliquid spot), and a bare
    coin such as ``BTC`` (Hyperliquid, Lighter perps: quoted in USD(C)) are understood.
    """
    swap = symbol.endswith("-SWAP")
    name = symbol[: -len("-SWAP")] if swap else symbol
    for sep in ("-", "/"):
        if sep in name:
            base, _, quote = name.partition(sep)
            return base, quote, swap
    if not any(name.endswith(q) and len(name) > len(q) for q in _QUOTES):
        return name, "USDC", swap  # a bare coin
    return None


def symbol_spec(symbol: str) -> SymbolSpec:
    """The spec of ``symbol``: fixed for well-known ones, else a price near 100 from its name.

    Venue-native names map to the Binance-style key of the same pair, so ``BTC-USDT``, ``BTC``
    and ``BTCUSDT`` all start near 60000; an OKX ``-SWAP`` trades whole contracts (step 1).
    """
    native = _split_native(symbol)
    if native is not None:
        base, quote, swap = native
        key = base + _NATIVE_QUOTES.get(quote, quote)
    else:
        key = symbol
        base, quote = symbol[:-3], symbol[-3:]
        for q in _QUOTES:
            if symbol.endswith(q) and len(symbol) > len(q):
                base, quote = symbol[: -len(q)], q
                break
        swap = False
    known = _KNOWN.get(key)
    if known is None:
        # crc32, not hash(): the spec must not depend on PYTHONHASHSEED.
        known = ((50 + zlib.crc32(key.encode()) % 151) * 100, 2, 2, 1, 2_000)
    start, tick_dec, step_dec, gap, lots = known
    if swap:  # sizes in contracts
        step_dec, lots = 0, 50
    return SymbolSpec(symbol, base, quote, start, tick_dec, step_dec, gap, lots)


class Trade(NamedTuple):
    """One taker order's fills at one price: trades ``first_id..last_id``, aggTrade ``agg_id``."""

    agg_id: int
    first_id: int
    last_id: int
    price: str
    quantities: tuple[str, ...]  # one per trade id, in id order
    quantity: str  # their sum, the aggTrade quantity
    buyer_is_maker: bool  # Binance ``m``: true when the taker sold


class Update:
    """One book update: one changed level, the trade that caused it if any, the new BBO.

    ``changes`` holds ``(side, price, size)`` with side ``"b"`` or ``"a"`` and the level's new
    absolute size (``ZERO`` deletes it). ``bbo`` is ``(bid, bid_qty, ask, ask_qty)`` when the
    best bid or ask price or size changed, else None.
    """

    __slots__ = ("symbol", "update_id", "changes", "trade", "bbo")

    def __init__(self, symbol: str, update_id: int, changes: tuple[tuple[str, str, str], ...],
                 trade: Trade | None, bbo: tuple[str, str, str, str] | None):
        self.symbol = symbol
        self.update_id = update_id
        self.changes = changes
        self.trade = trade
        self.bbo = bbo

    def __repr__(self) -> str:
        return (f"Update({self.symbol!r}, {self.update_id}, {self.changes!r}, "
                f"trade={self.trade!r}, bbo={self.bbo!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Update):
            return NotImplemented
        return (self.symbol, self.update_id, self.changes, self.trade, self.bbo) == (
            other.symbol, other.update_id, other.changes, other.trade, other.bbo)


@dataclass(frozen=True)
class MarketStats:
    """Counters and top of book of one symbol, for ``/sim/state``."""

    symbol: str
    last_update_id: int
    last_trade_id: int
    updates: int
    trades: int
    bid_levels: int
    ask_levels: int
    best_bid: str
    best_bid_qty: str
    best_ask: str
    best_ask_qty: str


class _Book:
    """The full book of one symbol and the actions that change it."""

    def __init__(self, spec: SymbolSpec, levels: int, rng: random.Random,
                 offsets: list[int], depths: list[int], sizes: list[int]):
        self.spec = spec
        self.symbol = spec.symbol
        self.low = max(1, levels - max(1, levels // 20))
        self.high = levels + max(1, levels // 20)
        self.offsets = offsets  # ticks behind the best for an add
        self.depths = depths  # levels from the best for a cancel or modify
        self.sizes = sizes  # lots of a new or modified level
        self.price_text: dict[int, str] = {}
        # Ids start high and symbol-specific, as on a venue that has run for years.
        crc = zlib.crc32(spec.symbol.encode())
        self.last_update_id = 1_000_000_000 + crc % 1_000_000_000
        self.last_trade_id = 100_000_000 + crc % 100_000_000
        self.last_agg_id = 10_000_000 + crc % 10_000_000
        self.updates = 0
        self.trades = 0
        self.bid_keys: list[int] = []
        self.ask_keys: list[int] = []
        self.bids: dict[int, tuple[int, str]] = {}
        self.asks: dict[int, tuple[int, str]] = {}
        gap = spec.level_gap
        tick = spec.start_tick
        for _ in range(levels):  # bids from the start price down
            if tick < 1:
                break
            self.bid_keys.append(-tick)
            self.bids[-tick] = self._level(sizes[rng.getrandbits(_TABLE_BITS)])
            tick -= 1 + int(rng.random() * (2 * gap - 1))
        tick = spec.start_tick + 1 + int(rng.random() * gap)
        for _ in range(levels):
            self.ask_keys.append(tick)
            self.asks[tick] = self._level(sizes[rng.getrandbits(_TABLE_BITS)])
            tick += 1 + int(rng.random() * (2 * gap - 1))

    # -- text --------------------------------------------------------------------

    def price(self, tick: int) -> str:
        s = self.price_text.get(tick)
        if s is None:
            if len(self.price_text) > 1_000_000:  # a very long walk: start the cache over
                self.price_text.clear()
            s = self.price_text[tick] = format_units(tick, self.spec.tick_decimals)
        return s

    def _level(self, lots: int) -> tuple[int, str]:
        return lots, format_units(lots, self.spec.step_decimals)

    def bbo(self) -> tuple[str, str, str, str]:
        bk = self.bid_keys[0]
        ak = self.ask_keys[0]
        return self.price(-bk), self.bids[bk][1], self.price(ak), self.asks[ak][1]

    # -- one step ----------------------------------------------------------------

    def step(self, rng: random.Random) -> Update:
        x = rng.random()
        if x < _TRADE_P:
            return self._trade(rng)
        is_bid = rng.random() < 0.5
        n = len(self.bid_keys if is_bid else self.ask_keys)
        if n > self.high:
            return self._remove(is_bid, n - 1)
        if n < self.low:
            return self._add_deep(is_bid, rng)
        if x < _ADD_P:
            return self._add_near(is_bid, rng)
        depth = self.depths[rng.getrandbits(_TABLE_BITS)]
        if depth >= n:
            depth = n - 1
        if x < _CANCEL_P and n > 1:
            return self._remove(is_bid, depth)
        return self._modify(is_bid, depth, self.sizes[rng.getrandbits(_TABLE_BITS)])

    def _emit(self, is_bid: bool, tick: int, size: str, at_best: bool,
              trade: Trade | None = None) -> Update:
        self.last_update_id += 1
        self.updates += 1
        return Update(self.symbol, self.last_update_id,
                      (("b" if is_bid else "a", self.price(tick), size),),
                      trade, self.bbo() if at_best else None)

    def _remove(self, is_bid: bool, index: int) -> Update:
        keys, levels = (self.bid_keys, self.bids) if is_bid else (self.ask_keys, self.asks)
        key = keys.pop(index)
        del levels[key]
        return self._emit(is_bid, -key if is_bid else key, ZERO, index == 0)

    def _modify(self, is_bid: bool, index: int, lots: int) -> Update:
        keys, levels = (self.bid_keys, self.bids) if is_bid else (self.ask_keys, self.asks)
        key = keys[index]
        if levels[key][0] == lots:
            lots += 1  # a modify always changes the size
        level = levels[key] = self._level(lots)
        return self._emit(is_bid, -key if is_bid else key, level[1], index == 0)

    def _put(self, is_bid: bool, tick: int, lots: int) -> Update:
        """Add ``lots`` at ``tick``: a new level, or more size on an existing one."""
        keys, levels = (self.bid_keys, self.bids) if is_bid else (self.ask_keys, self.asks)
        key = -tick if is_bid else tick
        old = levels.get(key)
        if old is None:
            index = bisect.bisect_left(keys, key)
            keys.insert(index, key)
            at_best = index == 0
        else:
            lots += old[0]
            at_best = key == keys[0]
        level = levels[key] = self._level(lots)
        return self._emit(is_bid, tick, level[1], at_best)

    def _pull(self, best_bid: int, best_ask: int) -> float:
        """How far the mid is above the start price, scaled into [-0.9, 0.9]."""
        start = self.spec.start_tick
        pull = _PULL * (best_bid + best_ask - 2 * start) / (2 * start)
        return min(0.9, max(-0.9, pull))

    def _add_near(self, is_bid: bool, rng: random.Random) -> Update:
        best_bid = -self.bid_keys[0]
        best_ask = self.ask_keys[0]
        lots = self.sizes[rng.getrandbits(_TABLE_BITS)]
        inside = best_ask - best_bid - 1  # free ticks strictly inside the spread
        # Above the start price, asks improve more often than bids, and the other way round.
        pull = self._pull(best_bid, best_ask)
        if inside > 0 and rng.random() < _INSIDE_SPREAD_P * (1.0 - pull if is_bid else 1.0 + pull):
            step = 1 + int(rng.random() * inside)
            return self._put(is_bid, best_bid + step if is_bid else best_ask - step, lots)
        offset = self.offsets[rng.getrandbits(_TABLE_BITS)]
        if is_bid:
            tick = best_bid - offset
            if tick < 1:
                tick = best_bid
            return self._put(True, tick, lots)
        return self._put(False, best_ask + offset, lots)

    def _add_deep(self, is_bid: bool, rng: random.Random) -> Update:
        gap = 1 + int(rng.random() * (2 * self.spec.level_gap - 1))
        lots = self.sizes[rng.getrandbits(_TABLE_BITS)]
        if is_bid:
            tick = -self.bid_keys[-1] - gap
            if tick < 1:  # no room below: thicken the deepest bid instead
                tick = -self.bid_keys[-1]
            return self._put(True, tick, lots)
        return self._put(False, self.ask_keys[-1] + gap, lots)

    def _trade(self, rng: random.Random) -> Update:
        best_bid = -self.bid_keys[0]
        best_ask = self.ask_keys[0]
        taker_buy = rng.random() < 0.5 * (1.0 - self._pull(best_bid, best_ask))
        is_bid = not taker_buy  # the passive side: a taker buy hits the ask
        keys, levels = (self.bid_keys, self.bids) if is_bid else (self.ask_keys, self.asks)
        key = keys[0]
        lots = levels[key][0]
        can_empty = len(keys) > 1
        if lots == 1 and not can_empty:
            return self._put(is_bid, -key if is_bid else key, self.sizes[rng.getrandbits(_TABLE_BITS)])
        if (can_empty and rng.random() < _WHOLE_LEVEL_P) or lots == 1:
            qty = lots
        else:
            qty = min(lots - 1, 1 + self.sizes[rng.getrandbits(_TABLE_BITS)] // 2)
        y = rng.random()
        fills = min(qty, 3 if y < 0.1 else 2 if y < 0.3 else 1)
        part = qty // fills
        step_dec = self.spec.step_decimals
        parts = [part] * fills
        parts[0] += qty - part * fills
        first = self.last_trade_id + 1
        self.last_trade_id += fills
        self.last_agg_id += 1
        self.trades += fills
        tick = -key if is_bid else key
        trade = Trade(self.last_agg_id, first, self.last_trade_id, self.price(tick),
                      tuple(format_units(p, step_dec) for p in parts),
                      format_units(qty, step_dec), not taker_buy)
        if qty == lots:
            keys.pop(0)
            del levels[key]
            return self._emit(is_bid, tick, ZERO, True, trade)
        level = levels[key] = self._level(lots - qty)
        return self._emit(is_bid, tick, level[1], True, trade)

    # -- reads -------------------------------------------------------------------

    def snapshot(self, limit: int) -> tuple[int, list[list[str]], list[list[str]]]:
        price, bids, asks = self.price, self.bids, self.asks
        return (self.last_update_id,
                [[price(-k), bids[k][1]] for k in self.bid_keys[:limit]],
                [[price(k), asks[k][1]] for k in self.ask_keys[:limit]])

    def stats(self) -> MarketStats:
        bid, bid_qty, ask, ask_qty = self.bbo()
        return MarketStats(self.symbol, self.last_update_id, self.last_trade_id, self.updates,
                           self.trades, len(self.bid_keys), len(self.ask_keys),
                           bid, bid_qty, ask, ask_qty)


def _geometric_table(rng: random.Random, mean: float) -> list[int]:
    """4096 draws of a geometric variable (0, 1, 2, ...) with the given mean."""
    q = mean / (1.0 + mean)  # P(X >= k + 1 | X >= k)
    log_q = math.log(q)
    return [int(math.log(1.0 - rng.random()) / log_q) for _ in range(1 << _TABLE_BITS)]


def _size_table(rng: random.Random, median_lots: int) -> list[int]:
    """4096 log-normal level sizes in lots, at least 1."""
    return [max(1, int(median_lots * math.exp(rng.gauss(0.0, 1.2))))
            for _ in range(1 << _TABLE_BITS)]


class Market:
    """Seeded books for several symbols; ``step()`` makes the next update of one of them.

    Args:
        symbols: exchange-native names such as ``"BTCUSDT"``, ``"BTC-USDT"``, ``"BTC"`` or ``"ETH/USDC"``
            (upper case, distinct).
        seed: the whole sequence of updates depends only on it and the other arguments.
        levels: price levels per side at start; depth stays near it.
    """

    def __init__(self, symbols: tuple[str, ...] | list[str], seed: int = 1, levels: int = 400):
        symbols = tuple(symbols)
        if not symbols:
            raise ValueError("at least one symbol is needed")
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"duplicate symbols in {symbols!r}")
        for s in symbols:
            if not s or s.upper() != s or not s.replace("-", "").replace("/", "").isalnum():
                raise ValueError(f"symbol {s!r}: expected upper-case letters and digits ('-', '/' inside)")
        if levels < 1:
            raise ValueError(f"levels: expected a positive integer, got {levels!r}")
        self._rng = random.Random(seed)
        self.specs = tuple(symbol_spec(s) for s in symbols)
        self._books = []
        for spec in self.specs:
            offsets = _geometric_table(self._rng, 3.0 * spec.level_gap)
            depths = _geometric_table(self._rng, 4.0)
            sizes = _size_table(self._rng, spec.size_lots)
            self._books.append(_Book(spec, levels, self._rng, offsets, depths, sizes))
        self._by_symbol = {b.symbol: b for b in self._books}
        self._count = len(self._books)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(b.symbol for b in self._books)

    def step(self) -> Update:
        """Make one update of one symbol (chosen at random) and return it."""
        rng = self._rng
        return self._books[int(rng.random() * self._count)].step(rng)

    def snapshot(self, symbol: str, limit: int = 100) -> tuple[int, list[list[str]], list[list[str]]]:
        """``(last_update_id, bids, asks)``, best first, at most ``limit`` levels a side.

        The id is that of the last update applied to the book, as in Binance's REST
        depth ``lastUpdateId`` (§1 sync rule, step 4). Raises KeyError for an unknown symbol.
        """
        return self._by_symbol[symbol].snapshot(limit)

    def bbo(self, symbol: str) -> tuple[str, str, str, str]:
        """``(bid, bid_qty, ask, ask_qty)`` of ``symbol`` now."""
        return self._by_symbol[symbol].bbo()

    def trade_count(self, symbol: str) -> int:
        """Trades of ``symbol`` so far (the sim's stand-in for open interest)."""
        return self._by_symbol[symbol].trades

    def last_update_id(self, symbol: str) -> int:
        return self._by_symbol[symbol].last_update_id

    def stats(self, symbol: str) -> MarketStats:
        return self._by_symbol[symbol].stats()
