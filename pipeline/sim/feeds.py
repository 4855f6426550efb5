"""The part of the venue protocols (Bybit, OKX, Hyperliquid, Lighter) that they all share.

Those venues send a book snapshot on subscribe and then throttled changes (or, for
Hyperliquid, more snapshots) per subscription topic (exchange-protocols.md §4-§7). So a
:class:`BookFeed` keeps, per topic, the top-N book *as a client holds it* (the "view", in the
venue's own text) and the sequence number of that view. Every ``interval`` the feed
compares the market's top N with its view and the protocol turns the difference into one
frame; a new subscriber gets the view as a snapshot, so snapshot + later deltas always
rebuild the venue's book exactly. Topics are shared by all their subscribers and frames
are encoded once (:class:`pipeline.sim.base.Topic`).

:class:`VenueServer` adds to :class:`pipeline.sim.base.BaseServer` the subscription
bookkeeping, the flush schedule, a ring of recent fills per symbol (the trade backlog some
venues send on subscribe), the per-topic faults (``drop_diff``, ``reorder``, ``malformed``)
and the idle-connection rules. A protocol module subclasses it with its paths, message
parsing and frame shapes.

The other kinds (issue 13) come from the same market, through three hooks a protocol fills in
when it serves the venue's channels: :meth:`VenueServer.quote_frames` after every update that
changed the best bid or ask, :meth:`VenueServer.ticker_frames` once a second, and
:meth:`VenueServer.liquidation_frames` for every ``LIQUIDATION_EVERY``-th taker order of a symbol
(reported as the liquidation of the taker's side). They run only while some connection holds
one of those subscriptions (:attr:`VenueServer.other_topics`). The ticker's values are the
market's (:func:`ticker_values`), the same for every venue: mark = the mid, index 0.01% under it,
funding rate 0.0001, open interest 1000 + the symbol's trades so far.
"""

from __future__ import annotations

import asyncio
import functools
import time
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from aiohttp import web

from pipeline.sim.base import BadFault, BaseServer, Connection, SimOptions, Topic, arg, dumps, ws_frame
from pipeline.sim.market import ZERO, Update, symbol_spec

__all__ = ["BookFeed", "Fill", "LIQUIDATION_EVERY", "TextFormat", "TickerValues", "VenueServer", "fixed_text",
           "hyperliquid_text", "level_changes", "order_count", "stripped_text", "ticker_values"]

_RING = 64  # recent fills kept per symbol for trade backlogs
LIQUIDATION_EVERY = 25  # every Nth taker order of a symbol is reported as a liquidation
TICKER_INTERVAL = 1.0  # seconds between ticker pushes
FUNDING_RATE = 0.0001


# -- text --------------------------------------------------------------------------
# The market makes Binance's 8-decimal text; each venue writes numbers its own way.


def stripped_text(s: str) -> str:
    """'61837.63000000' -> '61837.63', '60000.00000000' -> '60000' (Bybit spot, OKX)."""
    s = s.rstrip("0")
    return s[:-1] if s.endswith(".") else s


def hyperliquid_text(s: str) -> str:
    """'60000.00000000' -> '60000.0', '0.14280000' -> '0.1428' (Hyperliquid keeps one decimal)."""
    s = s.rstrip("0")
    return s + "0" if s.endswith(".") else s


def fixed_text(decimals: int) -> Callable[[str], str]:
    """'2325.00000000' -> '2325.00' for 2 decimals (Bybit linear, Lighter: tick/step precision)."""
    cut = 8 - decimals + (1 if decimals == 0 else 0)
    return lambda s: s[:-cut] if cut else s


class TextFormat:
    """A cached text conversion (most prices and sizes recur)."""

    __slots__ = ("convert", "cache")

    def __init__(self, convert: Callable[[str], str]):
        self.convert = convert
        self.cache: dict[str, str] = {}

    def __call__(self, s: str) -> str:
        t = self.cache.get(s)
        if t is None:
            if len(self.cache) > 200_000:
                self.cache.clear()
            t = self.cache[s] = self.convert(s)
        return t


@functools.lru_cache(maxsize=65536)
def order_count(size: str) -> int:
    """A stable number of resting orders for a level of ``size`` (OKX numOrders, Hyperliquid n)."""
    return 1 + zlib.crc32(size.encode()) % 9


class Fill(NamedTuple):
    """One fill of a taker order, as the market made it (Binance text)."""

    trade_id: int
    price: str
    qty: str
    taker_buy: bool
    ms: int
    update_id: int  # the book update that the taker order caused


def fills_of(update: Update, ms: int) -> list[Fill]:
    t = update.trade
    assert t is not None
    return [Fill(t.first_id + i, t.price, q, not t.buyer_is_maker, ms, update.update_id)
            for i, q in enumerate(t.quantities)]


class TickerValues(NamedTuple):
    """What a derivative ticker of the sim states (floats; each protocol writes its own text)."""

    mark: float
    index: float
    last: float | None  # the last trade's price (None before the first trade)
    open_interest: float
    funding_rate: float


def ticker_values(market: Any, symbol: str, last: str | None) -> TickerValues:
    b, _, a, _ = market.bbo(symbol)
    mid = (float(b) + float(a)) / 2
    tick = symbol_spec(symbol).tick_decimals  # the mark may fall between two ticks, the index is on one
    return TickerValues(round(mid, tick + 1), round(mid * 0.9999, tick), float(last) if last is not None else None,
                        float(1000 + market.trade_count(symbol)), FUNDING_RATE)


def number_text(x: float) -> str:
    """A float as venue text: plain decimals, no trailing zeros ('60000.5', '0.0001')."""
    return stripped_text(f"{x:.8f}")


# -- book feeds -----------------------------------------------------------------------


class BookFeed:
    """One book topic: subscribers, the view they hold (venue text), its sequence, the schedule."""

    __slots__ = ("key", "symbol", "depth", "interval", "price", "size", "zero", "topic", "bids", "asks",
                 "window", "seq", "offset", "next_flush", "last_publish", "drop", "reorder", "held",
                 "active", "extra")

    def __init__(self, key: Any, symbol: str, depth: int, interval: float, price: TextFormat,
                 size: TextFormat, zero: str = "0", extra: Any = None):
        self.key = key
        self.symbol = symbol
        self.depth = depth
        self.interval = interval
        self.price = price
        self.size = size
        self.zero = zero  # the size text of a deleted level
        self.topic = Topic()
        self.bids: dict[str, str] = {}  # the view, best first
        self.asks: dict[str, str] = {}
        self.window: dict[tuple[str, str], bool] = {}  # (side, venue price) -> deleted, since the last flush
        self.seq = 0  # the venue's sequence number of the view
        self.offset = 0  # a second counter some venues carry (Lighter offset)
        self.next_flush = 0.0
        self.last_publish = 0.0
        self.drop = 0  # book frames to drop (their sequence numbers are used up)
        self.reorder = False  # hold the next book frame and send it after the one that follows
        self.held: str | None = None
        self.active = False
        self.extra = extra  # protocol data (e.g. Bybit category)

    def top(self, market: Any) -> tuple[dict[str, str], dict[str, str]]:
        """The market's top ``depth`` levels now, in venue text, best first."""
        _, bids, asks = market.snapshot(self.symbol, self.depth)
        price, size = self.price, self.size
        return {price(p): size(q) for p, q in bids}, {price(p): size(q) for p, q in asks}


def level_changes(old: dict[str, str], new: dict[str, str], deleted: dict[tuple[str, str], bool],
                  side: str, zero: str, delete_fallouts: bool) -> list[list[str]]:
    """``[[price, size], ...]`` that turn view ``old`` into ``new``.

    Levels of ``old`` that are missing from ``new`` get ``zero`` when ``delete_fallouts``, else
    only when they were really deleted (Bybit: a level that just fell out of the top N gets no
    delete, §4 sync rule 6).
    """
    out = [[p, s] for p, s in new.items() if old.get(p) != s]
    for p in old:
        if p not in new and (delete_fallouts or deleted.get((side, p))):
            out.append([p, zero])
    return out


class VenueServer(BaseServer):
    """Subscriptions, book feeds, trades, idle rules and topic faults of a venue protocol."""

    name = "venue"
    delete_fallouts = True  # does a level that leaves the top N get an explicit delete?
    idle_in = 0.0  # close a connection that sent nothing for this long (0 = never)
    idle_out = 0.0  # close a connection that was sent nothing for this long (0 = never)
    idle_close_code = 1000

    def __init__(self, options: SimOptions):
        super().__init__(options)
        self.book_feeds: dict[Any, BookFeed] = {}
        self.trade_topics: dict[Any, Topic] = {}
        self.active: dict[str, list[BookFeed]] = {}  # symbol -> feeds with subscribers
        self.trades_on: set[str] = set()  # symbols with any trade subscriber
        self.recent: dict[str, deque[Fill]] = {s: deque(maxlen=_RING) for s in self.market.symbols}
        # quote, ticker and liquidation topics (issue 13), by a key of the protocol's choosing
        self.other_topics: dict[Any, Topic] = {}
        self.other_on = False  # any connection subscribed to one of them
        self.takers: dict[str, int] = dict.fromkeys(self.market.symbols, 0)
        self.last_trade: dict[str, str] = {}  # symbol -> the last trade's price (market text)
        self.next_ticker = 0.0
        self.counters.update({"book_frames": 0, "snapshots": 0, "trade_frames": 0, "heartbeats": 0,
                              "frames_reordered": 0, "idle_closed": 0, "other_frames": 0})
        if options.idle_timeout > 0:
            if self.idle_in:
                self.idle_in = options.idle_timeout
            if self.idle_out:
                self.idle_out = options.idle_timeout

    async def ws_handler(self, request: web.Request) -> web.StreamResponse:
        """A venue WebSocket path: upgrade, then answer messages with :meth:`on_text`."""
        return await self.ws_session(request)

    # -- what a protocol fills in ------------------------------------------------------

    def init_view(self, feed: BookFeed) -> None:
        """Set the sequence fields of a feed whose view was just (re)built from the market."""

    def snapshot_frame(self, feed: BookFeed, conn: Connection | None, event_ms: int) -> str:
        raise NotImplementedError

    def delta_frame(self, feed: BookFeed, bids: list[list[str]], asks: list[list[str]], event_ms: int) -> str:
        """The frame of one flush with changes; advances the feed's sequence."""
        raise NotImplementedError

    def quiet(self, feed: BookFeed, now: float, event_ms: int) -> None:
        """A flush without changes (OKX heartbeats)."""

    def trade_frames(self, update: Update, fills: list[Fill], event_ms: int) -> None:
        """Publish the trade frames of one taker order to the symbol's trade topics."""

    def malformed_text(self) -> str:
        return '{"topic":"orderbook.50.'

    def quote_frames(self, update: Update, event_ms: int) -> None:
        """Publish the quote frames of an update that changed the BBO (``update.bbo``)."""

    def ticker_frames(self, event_ms: int) -> None:
        """Publish the derivative ticker frames (once a second)."""

    def liquidation_frames(self, symbol: str, fills: list[Fill], event_ms: int) -> None:
        """Publish one taker order as the liquidation of the taker's side."""

    def other_topic(self, key: Any) -> Topic:
        """The quote / ticker / liquidation topic ``key`` (made on first use)."""
        topic = self.other_topics.get(key)
        if topic is None:
            topic = self.other_topics[key] = Topic()
        return topic

    def ticker(self, symbol: str) -> TickerValues:
        return ticker_values(self.market, symbol, self.last_trade.get(symbol))

    # -- generation ----------------------------------------------------------------------

    def on_update(self, update: Update, event_ms: int) -> None:
        symbol = update.symbol
        feeds = self.active.get(symbol)
        if feeds:
            for feed in feeds:
                price = feed.price
                for side, p, q in update.changes:
                    feed.window[(side, price(p))] = q == ZERO
        if update.trade is not None:
            fills = fills_of(update, event_ms)
            self.recent[symbol].extend(fills)
            self.last_trade[symbol] = fills[0].price
            if symbol in self.trades_on:
                self.trade_frames(update, fills, event_ms)
            if self.other_on:
                n = self.takers[symbol] = self.takers[symbol] + 1
                if n % LIQUIDATION_EVERY == 0:
                    self.liquidation_frames(symbol, fills, event_ms)
        if update.bbo is not None and self.other_on:
            self.quote_frames(update, event_ms)

    def on_tick(self, now: float, event_ms: int) -> None:
        if self.other_on and now >= self.next_ticker:
            self.next_ticker = max(self.next_ticker + TICKER_INTERVAL, now)
            self.ticker_frames(event_ms)
        for feeds in self.active.values():
            for feed in feeds:
                if now >= feed.next_flush:
                    feed.next_flush = max(feed.next_flush + feed.interval, now)
                    if feed.window:
                        self.flush(feed, now, event_ms)
                    else:
                        self.quiet(feed, now, event_ms)

    def flush(self, feed: BookFeed, now: float, event_ms: int) -> None:
        """Publish the difference between the market's top N and the feed's view."""
        bids, asks = feed.top(self.market)
        window, zero, fallouts = feed.window, feed.zero, self.delete_fallouts
        changed_bids = level_changes(feed.bids, bids, window, "b", zero, fallouts)
        changed_asks = level_changes(feed.asks, asks, window, "a", zero, fallouts)
        feed.window = {}
        if not changed_bids and not changed_asks:
            return
        feed.bids, feed.asks = bids, asks
        self.publish_book(feed, self.delta_frame(feed, changed_bids, changed_asks, event_ms), now)

    def publish_book(self, feed: BookFeed, payload: str, now: float) -> None:
        """Queue one book frame to the topic, unless a drop or reorder fault takes it."""
        if feed.drop:
            feed.drop -= 1
            self.counters["diffs_dropped"] += 1
            return
        if feed.reorder:
            feed.reorder = False
            feed.held = payload
            return
        feed.last_publish = now
        feed.topic.publish(payload)
        self.counters["book_frames"] += 1
        if feed.held is not None:
            feed.topic.publish(feed.held)
            feed.held = None
            self.counters["frames_reordered"] += 1

    # -- subscriptions ---------------------------------------------------------------------

    def book_feed(self, key: Any, make: Callable[[], BookFeed]) -> BookFeed:
        feed = self.book_feeds.get(key)
        if feed is None:
            feed = self.book_feeds[key] = make()
        return feed

    def subscribe_book(self, conn: Connection, feed: BookFeed, stream_key: Any = None) -> None:
        """Add ``conn`` to ``feed`` and send it the view as a snapshot (a resubscribe gets a fresh one)."""
        loop_now = asyncio.get_running_loop().time()
        if not feed.active:  # (re)build the view from the market now
            feed.bids, feed.asks = feed.top(self.market)
            feed.window = {}
            feed.held = None
            feed.active = True
            feed.next_flush = loop_now + feed.interval
            feed.last_publish = loop_now
            self.init_view(feed)
        conn.streams[stream_key if stream_key is not None else feed.key] = feed.topic
        feed.topic.conns.add(conn)
        self._refresh()
        self.counters["snapshots"] += 1
        conn.out.append(_frame(self.snapshot_frame(feed, conn, _now_ms())))
        self._write(conn)

    def subscribe_topic(self, conn: Connection, key: Any, topic: Topic) -> None:
        conn.streams[key] = topic
        topic.conns.add(conn)
        self._refresh()

    def unsubscribe(self, conn: Connection, key: Any) -> bool:
        topic = conn.streams.pop(key, None)
        if topic is None:
            return False
        topic.conns.discard(conn)
        self._refresh()
        return True

    def _refresh(self) -> None:
        active: dict[str, list[BookFeed]] = {}
        for feed in self.book_feeds.values():
            if feed.topic.conns:
                active.setdefault(feed.symbol, []).append(feed)
            elif feed.active:
                feed.active = False
                feed.window = {}
        self.active = active
        self.trades_on = {key_symbol(k) for k, t in self.trade_topics.items() if t.conns}
        self.other_on = any(t.conns for t in self.other_topics.values())

    def on_closed(self, conn: Connection) -> None:
        for topic in conn.streams.values():
            topic.conns.discard(conn)
        conn.streams.clear()
        self._refresh()

    # -- keep-alive ----------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Close connections idle past ``idle_in`` (nothing received) or ``idle_out`` (nothing sent)."""
        limits = [t for t in (self.idle_in, self.idle_out) if t > 0]
        if not limits:
            return
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, min(limits) / 4))
            if self.stalled:
                continue
            now = loop.time()
            for conn in list(self.connections):
                if conn.closing:
                    continue
                if self.idle_in and now - conn.last_in > self.idle_in:
                    why = "no message from the client for %g s" % self.idle_in
                elif self.idle_out and now - conn.last_out > self.idle_out:
                    why = "nothing sent for %g s" % self.idle_out
                else:
                    continue
                self.counters["idle_closed"] += 1
                self.close(conn, self.idle_close_code, why)

    # -- faults --------------------------------------------------------------------------

    def venue_fault(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        if name in ("drop_diff", "reorder") or name in self.extra_faults():
            symbol = params.get("symbol")
            if symbol is not None and symbol not in self.recent:
                raise BadFault(f"unknown symbol {symbol!r}")
            count = arg(params, "count", int, 1)  # drop_diff: how many book frames in a row
            feeds = [f for f in self.book_feeds.values() if f.active and symbol in (None, f.symbol)]
            for feed in feeds:
                if name == "drop_diff":
                    feed.drop += count
                elif name == "reorder":
                    feed.reorder = True
                else:
                    self.feed_fault(name, feed)
            return {"ok": True, "feeds": len(feeds)}
        if name == "malformed":
            count = 0
            for conn in list(self.connections):
                if not conn.closing:
                    self.send(conn, self.malformed_text().encode())
                    count += 1
            return {"ok": True, "connections": count}
        raise BadFault(f"unknown fault {name!r}")

    def extra_faults(self) -> tuple[str, ...]:
        return ()

    def feed_fault(self, name: str, feed: BookFeed) -> None:
        """Arm protocol fault ``name`` on one feed."""

    def clear_faults(self) -> None:
        for feed in self.book_feeds.values():
            feed.drop = 0
            feed.reorder = False

    def state_extra(self) -> dict[str, Any]:
        return {"protocol": self.name, "topics": {
            str(k): {"subscribers": len(f.topic.conns), "seq": f.seq} for k, f in self.book_feeds.items()
            if f.topic.conns}}

    # -- REST helpers ---------------------------------------------------------------------

    def json_response(self, body: Any, status: int = 200) -> web.Response:
        return web.Response(text=dumps(body), status=status, content_type="application/json")


def key_symbol(key: Any) -> str:
    """The symbol of a trade topic key ``(..., symbol)`` or ``symbol``."""
    return key[-1] if isinstance(key, tuple) else key


def _frame(payload: str) -> bytes:
    return ws_frame(payload.encode())


def _now_ms() -> int:
    return int(time.time() * 1000)
