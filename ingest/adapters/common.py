"""Pieces every adapter shares: decode errors, the MalformedFrame constructor, trade
de-duplication, and the uncrossed-snapshot check (docs/adapters.md)."""

from __future__ import annotations

from collections import deque
from typing import Annotated

import msgspec

from ingest.events import TradeEvent
from pipeline.errors import ConfigError, MalformedFrame

# msgspec raises UnicodeDecodeError for invalid UTF-8 inside a JSON string, and RecursionError
# past its nesting bound (~1000 levels: a 2 KB frame of brackets); both are malformed frames,
# counted, and the connection is kept (issue 19)
DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)


_SETTINGS = ("ws_url", "rest_url", "rest_depth_path", "depth_stream", "trade_stream", "snapshot_limit",
             "rest_weight_limit", "streams_per_connection")


def configure(adapter, config) -> None:
    """The settings every adapter has: the config's value, else the adapter's DEFAULTS
    (every URL and limit lives in config, exchange-protocols.md preamble)."""
    d = adapter.DEFAULTS
    adapter.config = config
    adapter.symbols = config.symbols
    for key in _SETTINGS:
        if key in d:
            setattr(adapter, key, getattr(config, key) or d[key])
    adapter.rest_url = adapter.rest_url.rstrip("/")
    cap = getattr(adapter, "MAX_SNAPSHOT_LIMIT", None)
    if cap is not None and "snapshot_limit" in d:
        adapter.snapshot_limit = min(adapter.snapshot_limit, cap)
    adapter.channels = channels(adapter, config)


def channels(adapter, config) -> frozenset[str]:
    """The channels to subscribe to: the config's ``channels`` (each one the venue must offer:
    ``adapter.CHANNELS``), else every channel the venue offers."""
    offered = adapter.CHANNELS
    chosen = getattr(config, "channels", None)
    if chosen is None:
        return frozenset(offered)
    missing = [c for c in chosen if c not in offered]
    if missing:
        raise ConfigError(f"exchanges.{config.name}.channels",
                          f"{adapter.name} offers no {', '.join(missing)} channel (it offers: {', '.join(offered)})")
    return frozenset(chosen)


def malformed(message: str, symbol: str | None) -> MalformedFrame:
    """A MalformedFrame that names its symbol when it was readable (counted per symbol)."""
    exc = MalformedFrame(message)
    exc.symbol = symbol
    return exc


_INF = float("inf")

# Wire level types checked by msgspec in C while decoding (no Python loop per level):
# a price is positive and finite, a size finite and not negative (0 deletes).  NaN fails
# both comparisons; "inf" and overflowing exponents fail the upper bound.
Price = Annotated[float, msgspec.Meta(gt=0.0, lt=1e300)]
Size = Annotated[float, msgspec.Meta(ge=0.0, lt=1e300)]
WireLevel = tuple[Price, Size]
# Ids and times end up in int64 fields (shared memory, the trade ring, the bus), so a value
# that does not fit is a malformed frame, caught while decoding.  A time in ms times 1000
# (µs) must still fit: < 2**53 ms is the year 287,000.
Id = Annotated[int, msgspec.Meta(ge=-1, le=2**63 - 1)]
Millis = Annotated[int, msgspec.Meta(ge=0, lt=2**53)]
Micros = Annotated[int, msgspec.Meta(ge=0, lt=2**62)]


def check_levels(levels: list[tuple[float, float]]) -> None:
    """Diff levels: price positive and finite, size finite and not negative (0 deletes)."""
    for p, q in levels:
        if not (0.0 < p < _INF and 0.0 <= q < _INF):
            raise MalformedFrame(f"bad level [{p!r}, {q!r}]")


def trade(symbol: str, price: float, amount: float, side: str | None, venue_side, trade_id: str,
          ts_exchange_us: int, recv_ns: int) -> TradeEvent:
    """A checked TradeEvent: ``side`` is the normalized taker side (None: the venue's
    ``venue_side`` was not understood), price and amount positive and finite, an id."""
    if side is None:
        raise MalformedFrame(f"trade side {venue_side!r}")
    if not (0.0 < price < _INF and 0.0 < amount < _INF):
        raise MalformedFrame(f"bad trade price/amount {price!r}/{amount!r}")
    if not trade_id:
        raise MalformedFrame("trade without an id")
    return TradeEvent(symbol, price, amount, side, trade_id, ts_exchange_us, recv_ns)


def check_uncrossed(bids, asks, symbol: str | None) -> None:
    """A full snapshot whose best bid is not below its best ask cannot be a real book."""
    if bids and asks:
        bb = max(p for p, _ in bids)
        ba = min(p for p, _ in asks)
        if bb >= ba:
            raise malformed(f"crossed snapshot: best bid {bb!r} >= best ask {ba!r}", symbol)


class RecentKeys:
    """Bounded memory of recently seen keys (trade de-duplication).

    Keeps the last ``size`` keys in arrival order; older ones are forgotten.  A venue's
    replayed backlog (tens of trades) is far smaller than ``size``, so a repeat is always
    still remembered."""

    __slots__ = ("size", "_order", "_set")

    def __init__(self, size: int):
        self.size = size
        self._order: deque = deque()
        self._set: set = set()

    def add(self, key) -> bool:
        """Remember ``key``; False if it was already known (a duplicate)."""
        if key in self._set:
            return False
        self._set.add(key)
        self._order.append(key)
        if len(self._order) > self.size:
            self._set.discard(self._order.popleft())
        return True

    def __len__(self) -> int:
        return len(self._order)
