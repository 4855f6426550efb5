"""``pipeline sim`` server: the seeded market over Binance spot WebSocket + REST on one port.

What a Binance spot adapter sees (exchange-protocols.md §1; docs/sim.md has the full list):

- WebSocket ``/stream?streams=a/b/c`` (frames wrapped ``{"stream":..,"data":..}``), ``/ws/<stream>``
  and ``/ws`` (raw frames), live ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` /
  ``SET_PROPERTY`` / ``GET_PROPERTY`` with Binance's ``{"error":{"code":N,"msg":..},"id":..}``
  replies, a server ping every ``ping_interval`` (Binance: 20 s) and pongs to client pings.
- Streams per symbol: ``@depth`` (1000 ms), ``@depth@100ms``, ``@depth@0ms`` (one event per
  update), ``@depth5|10|20[@100ms]``, ``@trade``, ``@aggTrade``, ``@bookTicker``, and the USD-M
  futures' ``@markPrice@1s`` (mark = the mid, index a little off it, a funding rate and the next
  8-hourly funding time) and ``@forceOrder`` (every 25th taker order is reported as a
  liquidation of its side, at most one per symbol per second as on Binance).
- The USD-M routes too: WebSocket ``/public/stream`` and ``/market/stream`` (the routed roots of
  2026), REST ``/fapi/v1/depth`` and ``/fapi/v1/openInterest``, so a ``binance_futures`` exchange
  can point its ``ws_url = "ws://HOST:PORT/{route}"`` and ``rest_url`` at the sim.
- REST ``/api/v3/depth``, ``/api/v3/exchangeInfo``, ``/api/v3/ping``, ``/api/v3/time`` with
  request weights, ``X-MBX-USED-WEIGHT-1M`` and 429 + ``Retry-After`` over the budget; the
  trades by id a trade-id gap is backfilled from: ``/api/v3/historicalTrades`` (``@trade`` ids),
  ``/api/v3/aggTrades`` and ``/fapi/v1/aggTrades`` (``@aggTrade`` ids), from the sim's own
  history of the last TRADE_HISTORY taker orders per symbol (sent or not).
- Control: ``/sim/fault`` (fault switches) and ``/sim/state`` (counters), on the same port.

Design
------
The generator, the pre-encoded frame fan-out, WebSocket sessions, the generic fault switches
and ``/sim/state`` are in pipeline/sim/base.py (shared with the other venues' protocols in
pipeline/sim/venues.py). This module turns each market update into Binance frames: the
unthrottled ``@depth@0ms`` diff, trades and bookTicker at once, and the 100 ms / 1000 ms diff
windows and partial books at the end of a generator tick.

Limits: no ``timeUnit=MICROSECOND``, no per-connection limit on incoming messages
(Binance: 5/s) and no ``serverShutdown`` event.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from pipeline.sim.base import BadFault, BaseServer, Connection, SimOptions, arg, dumps, serve_server, ws_frame
from pipeline.sim.market import Update
from pipeline.wsframe import OP_PING

__all__ = ["SimOptions", "SimServer", "run", "serve", "ws_frame"]

log = logging.getLogger(__name__)

_MAX_STREAMS = 1024  # per connection, as on Binance (§1 limits)
_MAX_LIMIT = 5000  # REST depth limit (§1)
TRADE_HISTORY = 50_000  # taker orders per symbol the trades endpoints can still list (1-3 trades each)
_TRADES_LIMIT = 1000  # most trades per historicalTrades / aggTrades request (§1)


# -- streams -----------------------------------------------------------------------

# Stream name suffix (after "<symbol>@") -> channel kind. "@depth" is the 1000 ms diff
# stream, the partial book streams default to 1000 ms too (§1 streams).
_SUFFIX_KIND = {
    "depth": "depth@1000ms", "depth@1000ms": "depth@1000ms",
    "depth@100ms": "depth@100ms", "depth@0ms": "depth@0ms",
    "trade": "trade", "aggTrade": "aggTrade", "bookTicker": "bookTicker",
    "markPrice": "markPrice", "markPrice@1s": "markPrice", "forceOrder": "forceOrder",
}
_EIGHT_HOURS_MS = 8 * 3600 * 1000
_LIQUIDATION_EVERY = 25  # taker orders
for _n in (5, 10, 20):
    _SUFFIX_KIND[f"depth{_n}"] = _SUFFIX_KIND[f"depth{_n}@1000ms"] = f"depth{_n}@1000ms"
    _SUFFIX_KIND[f"depth{_n}@100ms"] = f"depth{_n}@100ms"
_KINDS = tuple(dict.fromkeys(_SUFFIX_KIND.values()))
_MALFORMED_KINDS = {"depth": ("depth",), "trade": ("trade", "aggTrade"), "any": ("",)}
_MALFORMED_EVENT = {"trade": "trade", "aggTrade": "aggTrade", "bookTicker": "bookTicker"}


class _Channel:
    """One (symbol, kind) feed and its subscribers, by the stream name each one used."""

    __slots__ = ("kind", "names")

    def __init__(self, kind: str):
        self.kind = kind
        self.names: dict[str, set[Connection]] = {}

    def publish(self, payload: str) -> None:
        """Queue ``payload`` to every subscriber: raw, or wrapped with the name it subscribed to."""
        raw = None
        for name, conns in self.names.items():
            wrapped = None
            for c in conns:
                if c.combined:
                    if wrapped is None:
                        wrapped = ws_frame(('{"stream":"' + name + '","data":' + payload + "}").encode())
                    c.out.append(wrapped)
                else:
                    if raw is None:
                        raw = ws_frame(payload.encode())
                    c.out.append(raw)


class _DiffWindow:
    """Changes of one symbol since the last diff event of one speed: ids ``first..last``.

    Each level keeps its final absolute size in the window, so the event says ``U = first``,
    ``u = last`` and the next event of the speed starts at ``u + 1`` (§1 diff depth).
    """

    __slots__ = ("first", "last", "bids", "asks")

    def __init__(self) -> None:
        self.first = 0
        self.last = 0
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}

    def add(self, update: Update) -> None:
        if not self.first:
            self.first = update.update_id
        self.last = update.update_id
        for side, price, size in update.changes:
            (self.bids if side == "b" else self.asks)[price] = size

    def reset(self) -> None:
        self.first = 0
        self.bids = {}
        self.asks = {}


def _levels_json(levels: dict[str, str]) -> str:
    return ",".join(['["' + p + '","' + q + '"]' for p, q in levels.items()])


class _SymbolFeed:
    """Everything the server keeps per symbol: channels, diff windows, pending drops."""

    def __init__(self, symbol: str):
        self.symbol = symbol
        self.stream_symbol = symbol.lower()  # stream names use lower-case symbols (§1)
        self.channels = {kind: _Channel(kind) for kind in _KINDS}
        self.diff0 = self.channels["depth@0ms"]
        self.trade = self.channels["trade"]
        self.agg_trade = self.channels["aggTrade"]
        self.book_ticker = self.channels["bookTicker"]
        self.mark_price = self.channels["markPrice"]
        self.force_order = self.channels["forceOrder"]
        self.takers = 0
        self.last_liquidation_ms = 0
        self.windows = {"100ms": _DiffWindow(), "1000ms": _DiffWindow()}
        self.window_on = {"100ms": False, "1000ms": False}
        self.w100 = self.windows["100ms"]
        self.w1000 = self.windows["1000ms"]
        self.on100 = self.on1000 = False
        self.active = False  # any subscriber at all
        self.drop: set[str] = set()  # depth speeds ("0ms", "100ms", "1000ms") whose next diff is dropped
        self.drop_trades = 0  # taker orders whose trade frames are not sent (their ids are used up)
        self.history: list = []  # market.Trade of the last TRADE_HISTORY taker orders, oldest first

    def refresh(self) -> None:
        """Recompute the hot-path flags after a (un)subscribe; a window restarts when it turns on."""
        for speed, window in self.windows.items():
            on = bool(self.channels["depth@" + speed].names)
            if on != self.window_on[speed]:
                window.reset()
                self.window_on[speed] = on
        self.on100 = self.window_on["100ms"]
        self.on1000 = self.window_on["1000ms"]
        self.active = any(ch.names for ch in self.channels.values())
        self.drop &= {k.split("@", 1)[1] for k, ch in self.channels.items()
                      if k.startswith("depth@") and ch.names}


# -- faults ------------------------------------------------------------------------


@dataclass
class _RestFaults:
    """Pending REST depth faults: the next ``status_left`` requests get ``status``, etc."""

    status: int = 0
    status_left: int = 0
    delay: float = 0.0
    delay_left: int = 0
    ahead: int = 0
    ahead_left: int = 0
    empty_left: int = 0
    oversize_left: int = 0


# -- REST helpers --------------------------------------------------------------------


def _depth_weight(limit: int) -> int:
    """REST depth weight by limit: <=100: 5, <=500: 25, <=1000: 50, <=5000: 250 (§1 endpoints)."""
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def _binance_error(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=dumps({"code": code, "msg": msg}),
                        content_type="application/json", headers=headers)


# Status -> (code, msg) of the Binance-style body a rest_status fault answers with.
_FAULT_BODIES = {
    429: (-1003, "Too many requests; current request rate exceeds the limit (sim fault)."),
    418: (-1003, "Way too many requests; IP banned (sim fault)."),
    500: (-1001, "Internal error; unable to process your request. Please try again (sim fault)."),
    503: (-1008, "Server is currently overloaded with other requests. Please try again (sim fault)."),
}


# -- the server ----------------------------------------------------------------------


class SimServer(BaseServer):
    """The simulated Binance spot exchange: stream fan-out, REST and control endpoints."""

    def __init__(self, options: SimOptions):
        super().__init__(options)
        self.feeds = {s: _SymbolFeed(s) for s in self.market.symbols}
        self._by_stream_symbol = {f.stream_symbol: f for f in self.feeds.values()}
        self.rest_faults = _RestFaults()
        self._weight_minute = 0
        self._weight_used = 0
        self.requests.update({"depth": 0, "exchangeInfo": 0, "ping": 0, "time": 0, "trades": 0})
        self.counters["trades_dropped"] = 0
        self._next100 = self._next1000 = 0.0

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/stream", self._ws_handler)
        app.router.add_get("/ws", self._ws_handler)
        app.router.add_get("/ws/{streams:.*}", self._ws_handler)
        app.router.add_get("/api/v3/depth", self._rest_depth)
        app.router.add_get("/api/v3/exchangeInfo", self._rest_exchange_info)
        app.router.add_get("/api/v3/ping", self._rest_ping)
        app.router.add_get("/api/v3/time", self._rest_time)
        for route in ("public", "market"):  # USD-M routed roots
            app.router.add_get(f"/{route}/stream", self._ws_handler)
            app.router.add_get(f"/{route}/ws", self._ws_handler)
            app.router.add_get(f"/{route}/ws/{{streams:.*}}", self._ws_handler)
        app.router.add_get("/fapi/v1/depth", self._rest_depth)
        app.router.add_get("/fapi/v1/openInterest", self._rest_open_interest)
        app.router.add_get("/api/v3/historicalTrades", self._rest_trades)
        app.router.add_get("/api/v3/aggTrades", self._rest_agg_trades)
        app.router.add_get("/fapi/v1/aggTrades", self._rest_agg_trades)

    # -- generation ----------------------------------------------------------------

    def on_update(self, update: Update, event_ms: int) -> None:
        feed = self.feeds[update.symbol]
        if update.trade is not None:  # the REST trades endpoints' history, whoever listens
            history = feed.history
            history.append((update.trade, event_ms))
            if len(history) > 2 * TRADE_HISTORY:
                del history[:TRADE_HISTORY]
        if feed.active:
            self._fan_out(feed, update, event_ms)

    def on_tick(self, now: float, event_ms: int) -> None:
        if not self._next100:
            self._next100, self._next1000 = now + 0.1, now + 1.0
        if now >= self._next100:
            self._emit_windows("100ms", event_ms)
            self._next100 = max(self._next100 + 0.1, now)
        if now >= self._next1000:
            self._emit_windows("1000ms", event_ms)
            self._emit_mark_prices(event_ms)
            self._next1000 = max(self._next1000 + 1.0, now)

    def _fan_out(self, feed: _SymbolFeed, u: Update, event_ms: int) -> None:
        """Turn one update into the frames of every stream that has subscribers (§1 streams)."""
        symbol = feed.symbol
        if feed.diff0.names:
            if "0ms" in feed.drop:
                feed.drop.discard("0ms")
                self.counters["diffs_dropped"] += 1
            else:
                bids = ",".join(['["' + p + '","' + q + '"]' for s, p, q in u.changes if s == "b"])
                asks = ",".join(['["' + p + '","' + q + '"]' for s, p, q in u.changes if s == "a"])
                feed.diff0.publish('{"e":"depthUpdate","E":%d,"s":"%s","U":%d,"u":%d,"b":[%s],"a":[%s]}'
                                   % (event_ms, symbol, u.update_id, u.update_id, bids, asks))
        if feed.on100:
            feed.w100.add(u)
        if feed.on1000:
            feed.w1000.add(u)
        t = u.trade
        if t is not None and feed.drop_trades and (feed.trade.names or feed.agg_trade.names):
            feed.drop_trades -= 1
            self.counters["trades_dropped"] += 1
        elif t is not None:
            m = "true" if t.buyer_is_maker else "false"
            if feed.trade.names:
                for i, qty in enumerate(t.quantities):
                    feed.trade.publish(
                        '{"e":"trade","E":%d,"s":"%s","t":%d,"p":"%s","q":"%s","T":%d,"m":%s,"M":true}'
                        % (event_ms, symbol, t.first_id + i, t.price, qty, event_ms, m))
            if feed.agg_trade.names:
                feed.agg_trade.publish(
                    '{"e":"aggTrade","E":%d,"s":"%s","a":%d,"p":"%s","q":"%s","f":%d,"l":%d,"T":%d,'
                    '"m":%s,"M":true}' % (event_ms, symbol, t.agg_id, t.price, t.quantity,
                                          t.first_id, t.last_id, event_ms, m))
        if t is not None and feed.force_order.names:
            feed.takers += 1
            if feed.takers % _LIQUIDATION_EVERY == 0 and event_ms - feed.last_liquidation_ms >= 1000:
                feed.last_liquidation_ms = event_ms
                side = "SELL" if t.buyer_is_maker else "BUY"  # the taker's side: the liquidated order
                feed.force_order.publish(
                    '{"e":"forceOrder","E":%d,"o":{"s":"%s","S":"%s","o":"LIMIT","f":"IOC","q":"%s","p":"%s",'
                    '"ap":"%s","X":"FILLED","l":"%s","z":"%s","T":%d}}'
                    % (event_ms, symbol, side, t.quantity, t.price, t.price, t.quantity, t.quantity, event_ms))
        if u.bbo is not None and feed.book_ticker.names:
            b, bq, a, aq = u.bbo
            feed.book_ticker.publish('{"u":%d,"s":"%s","b":"%s","B":"%s","a":"%s","A":"%s"}'
                                     % (u.update_id, symbol, b, bq, a, aq))

    def _emit_windows(self, speed: str, event_ms: int) -> None:
        """Close the ``speed`` window of every symbol: one aggregated diff, and partial books."""
        for feed in self.feeds.values():
            if not feed.active:
                continue
            window = feed.windows[speed]
            if feed.window_on[speed] and window.first:  # no event for a window without changes
                if speed in feed.drop:
                    feed.drop.discard(speed)
                    self.counters["diffs_dropped"] += 1
                else:
                    feed.channels["depth@" + speed].publish(
                        '{"e":"depthUpdate","E":%d,"s":"%s","U":%d,"u":%d,"b":[%s],"a":[%s]}'
                        % (event_ms, feed.symbol, window.first, window.last,
                           _levels_json(window.bids), _levels_json(window.asks)))
                window.reset()
            for n in (5, 10, 20):
                channel = feed.channels[f"depth{n}@{speed}"]
                if channel.names:
                    last_id, bids, asks = self.market.snapshot(feed.symbol, n)
                    channel.publish(dumps({"lastUpdateId": last_id, "bids": bids, "asks": asks}))

    def _emit_mark_prices(self, event_ms: int) -> None:
        """``@markPrice@1s`` of every subscribed symbol: mark = mid, index = mid - 0.01%."""
        next_funding = (event_ms // _EIGHT_HOURS_MS + 1) * _EIGHT_HOURS_MS
        for feed in self.feeds.values():
            if not feed.mark_price.names:
                continue
            b, _, a, _ = self.market.bbo(feed.symbol)
            mid = (float(b) + float(a)) / 2
            feed.mark_price.publish(
                '{"e":"markPriceUpdate","E":%d,"s":"%s","p":"%.8f","i":"%.8f","P":"%.8f","r":"0.00010000","T":%d}'
                % (event_ms, feed.symbol, mid, mid * 0.9999, mid, next_funding))

    async def _rest_open_interest(self, request: web.Request) -> web.Response:
        """``GET /fapi/v1/openInterest?symbol=X`` (weight 1): trades so far, as contracts."""
        self.requests["openInterest"] = self.requests.get("openInterest", 0) + 1
        symbol = request.query.get("symbol")
        if symbol not in self.feeds:
            return _binance_error(400, -1121, "Invalid symbol.", self._weight_headers())
        rejected = self._charge(1)
        if rejected is not None:
            return rejected
        return self._json({"openInterest": f"{1000 + self.market.trade_count(symbol):.3f}", "symbol": symbol,
                           "time": int(time.time() * 1000)})

    # -- WebSocket -------------------------------------------------------------------

    def _parse_stream(self, name: str) -> _Channel | None:
        symbol, _, suffix = name.partition("@")
        feed = self._by_stream_symbol.get(symbol)
        kind = _SUFFIX_KIND.get(suffix)
        if feed is None or kind is None:
            return None
        return feed.channels[kind]

    def _subscribe(self, conn: Connection, name: str, channel: _Channel) -> None:
        if name in conn.streams:
            return
        conn.streams[name] = channel
        channel.names.setdefault(name, set()).add(conn)

    def _unsubscribe(self, conn: Connection, name: str) -> None:
        channel = conn.streams.pop(name, None)
        if channel is None:
            return
        conns = channel.names.get(name)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del channel.names[name]

    def _refresh_feeds(self) -> None:
        for feed in self.feeds.values():
            feed.refresh()

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        """Open a client WebSocket: ``/stream?streams=a/b`` (combined) or ``/ws[/a/b]`` (raw)."""
        if request.path in ("/stream", "/public/stream", "/market/stream"):
            combined = True
            names = [n for n in request.query.get("streams", "").split("/") if n]
        else:
            combined = False
            names = [n for n in request.match_info.get("streams", "").split("/") if n]
        channels = []
        for name in names:
            channel = self._parse_stream(name)
            if channel is None:
                return _binance_error(400, -1121, f"Invalid stream name {name!r}.")
            channels.append(channel)
        if len(names) > _MAX_STREAMS:
            return _binance_error(400, -1101, f"Too many streams; at most {_MAX_STREAMS}.")

        def on_open(conn: Connection) -> None:
            for name, channel in zip(names, channels):
                self._subscribe(conn, name, channel)
            self._refresh_feeds()

        return await self.ws_session(request, combined, on_open)

    def on_text(self, conn: Connection, text: str) -> None:
        self.send_json(conn, self._answer(conn, text))

    def on_binary(self, conn: Connection) -> None:
        self.send_json(conn, self._error(3, "Invalid JSON: binary frame", None))

    def on_closed(self, conn: Connection) -> None:
        for name in list(conn.streams):
            self._unsubscribe(conn, name)
        self._refresh_feeds()

    @staticmethod
    def _error(code: int, msg: str, request_id: Any) -> dict[str, Any]:
        """Binance market-stream error reply: codes 0 unknown property, 1 bad value type,
        2 invalid request, 3 invalid JSON."""
        return {"error": {"code": code, "msg": msg}, "id": request_id}

    def _answer(self, conn: Connection, text: str) -> dict[str, Any]:
        """The reply to one method message (§1 live (un)subscribe)."""
        try:
            req = json.loads(text)
        except ValueError as exc:
            self.counters["ws_errors"] += 1
            return self._error(3, f"Invalid JSON: {exc}", None)
        if not isinstance(req, dict):
            self.counters["ws_errors"] += 1
            return self._error(2, "Invalid request: expected a JSON object", None)
        rid = req.get("id")
        if not (rid is None or (isinstance(rid, int) and not isinstance(rid, bool) and rid >= 0)
                or (isinstance(rid, str) and len(rid) <= 36 and rid.isalnum())):
            self.counters["ws_errors"] += 1
            return self._error(2, "Invalid request: request ID must be an unsigned integer", None)
        method = req.get("method")
        params = req.get("params", [])
        if not isinstance(params, list):
            self.counters["ws_errors"] += 1
            return self._error(2, "Invalid request: params must be an array", rid)
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            channels = []
            for name in params:
                channel = self._parse_stream(name) if isinstance(name, str) else None
                if channel is None:
                    self.counters["ws_errors"] += 1
                    return self._error(2, f"Invalid request: invalid stream name {name!r}", rid)
                channels.append(channel)
            if method == "SUBSCRIBE":
                if len(set(conn.streams) | set(params)) > _MAX_STREAMS:
                    self.counters["ws_errors"] += 1
                    return self._error(2, f"Invalid request: at most {_MAX_STREAMS} streams", rid)
                for name, channel in zip(params, channels):
                    self._subscribe(conn, name, channel)
            else:
                for name in params:
                    self._unsubscribe(conn, name)
            self._refresh_feeds()
            return {"result": None, "id": rid}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(conn.streams), "id": rid}
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            if not params or params[0] != "combined":
                self.counters["ws_errors"] += 1
                return self._error(0, "Unknown property", rid)
            if method == "GET_PROPERTY":
                return {"result": conn.combined, "id": rid}
            if len(params) != 2 or not isinstance(params[1], bool):
                self.counters["ws_errors"] += 1
                return self._error(1, "Invalid value type: expected Boolean", rid)
            conn.combined = params[1]
            return {"result": None, "id": rid}
        self.counters["ws_errors"] += 1
        return self._error(2, f"Invalid request: unknown method {method!r}", rid)

    async def heartbeat(self) -> None:
        """Ping every client each ``ping_interval``; drop one silent for 3 intervals (§1 heartbeat:
        20 s pings, dropped without a pong within a minute)."""
        loop = asyncio.get_running_loop()
        interval = self.options.ping_interval
        while True:
            await asyncio.sleep(interval)
            if self.stalled:
                continue
            now = loop.time()
            payload = str(int(time.time() * 1000)).encode()
            for conn in list(self.connections):
                if conn.closing:
                    continue
                if now - conn.last_pong > 3 * interval:
                    log.info("closing client %s: no pong for %.0f s", conn.peer, now - conn.last_pong)
                    self.close(conn, 1008, "pong timeout")
                else:
                    self.send(conn, payload, OP_PING)

    # -- faults ------------------------------------------------------------------------

    def send_malformed(self, kind: str) -> int:
        """Send one truncated JSON frame to every connection carrying ``kind`` streams."""
        prefixes = _MALFORMED_KINDS[kind]
        count = 0
        for conn in list(self.connections):
            name = next((n for n, ch in conn.streams.items()
                         if any(ch.kind.startswith(p) for p in prefixes)), None)
            if name is None and kind == "any":
                name = next(iter(self.feeds.values())).stream_symbol + "@depth@100ms"
            if name is None or conn.closing:
                continue
            # A frame cut short mid-string, as if the sender died half-way through it.
            symbol = name.split("@")[0].upper()
            channel = conn.streams.get(name)
            event = _MALFORMED_EVENT.get(channel.kind if channel else "", "depthUpdate")
            body = '{"e":"%s","E":%d,"s":"%s' % (event, int(time.time() * 1000), symbol[: len(symbol) // 2])
            text = '{"stream":"%s","data":%s' % (name, body) if conn.combined else body
            self.send(conn, text.encode())
            count += 1
        return count

    def venue_fault(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The Binance fault switches (docs/sim.md, "Fault switches"). Raises BadFault."""
        if name == "drop_diff":
            symbol = params.get("symbol")
            if symbol is not None and symbol not in self.feeds:
                raise BadFault(f"unknown symbol {symbol!r}")
            for feed in (self.feeds.values() if symbol is None else (self.feeds[symbol],)):
                feed.drop |= {k.split("@", 1)[1] for k, ch in feed.channels.items()
                              if k.startswith("depth@") and ch.names}
        elif name == "drop_trades":
            symbol = params.get("symbol")
            if symbol is not None and symbol not in self.feeds:
                raise BadFault(f"unknown symbol {symbol!r}")
            for feed in (self.feeds.values() if symbol is None else (self.feeds[symbol],)):
                feed.drop_trades = arg(params, "count", int, 1)
        elif name == "malformed":
            kind = params.get("kind", "any")
            if kind not in _MALFORMED_KINDS:
                raise BadFault(f"kind: expected one of {sorted(_MALFORMED_KINDS)}, got {kind!r}")
            return {"ok": True, "connections": self.send_malformed(kind)}
        elif name == "rest_status":
            status = arg(params, "status", int)
            if not 400 <= status <= 599:
                raise BadFault(f"status: expected 400..599, got {status}")
            self.rest_faults.status = status
            self.rest_faults.status_left = arg(params, "count", int, 1)
        elif name == "rest_delay":
            self.rest_faults.delay = arg(params, "seconds", float)
            self.rest_faults.delay_left = arg(params, "count", int, 1)
        elif name == "rest_empty":
            self.rest_faults.empty_left = arg(params, "count", int, 1)
        elif name == "rest_oversize":
            self.rest_faults.oversize_left = arg(params, "count", int, 1)
        elif name == "rest_ahead":
            ahead = arg(params, "ids", int, 1_000_000)
            if ahead < 1:
                raise BadFault(f"ids: expected at least 1, got {ahead}")
            self.rest_faults.ahead = ahead
            self.rest_faults.ahead_left = arg(params, "count", int, 1)
        else:
            raise BadFault(f"unknown fault {name!r}")
        return None

    def clear_faults(self) -> None:
        self.rest_faults = _RestFaults()
        for feed in self.feeds.values():
            feed.drop.clear()
            feed.drop_trades = 0

    def state_extra(self) -> dict[str, Any]:
        return {"rest_weight_used": self._used_weight(), "rest_faults": vars(self.rest_faults)}

    # -- REST ----------------------------------------------------------------------------

    def _used_weight(self) -> int:
        minute = int(time.time() // 60)
        if minute != self._weight_minute:
            self._weight_minute = minute
            self._weight_used = 0
        return self._weight_used

    def _charge(self, weight: int) -> web.Response | None:
        """Count ``weight`` against the per-minute budget, or return the 429 (§1: Retry-After)."""
        used = self._used_weight()
        if used + weight > self.options.weight_limit:
            self.counters["rest_429"] += 1
            retry = max(1, math.ceil(60 - time.time() % 60))
            return _binance_error(
                429, -1003, f"Too much request weight used; current limit is "
                f"{self.options.weight_limit} request weight per 1 MINUTE.",
                {"Retry-After": str(retry), "X-MBX-USED-WEIGHT-1M": str(used)})
        self._weight_used = used + weight
        return None

    def _json(self, body: Any) -> web.Response:
        return web.Response(text=dumps(body), content_type="application/json",
                            headers={"X-MBX-USED-WEIGHT-1M": str(self._used_weight())})

    def _weight_headers(self) -> dict[str, str]:
        return {"X-MBX-USED-WEIGHT-1M": str(self._used_weight())}

    async def _rest_depth(self, request: web.Request) -> web.Response:
        """``GET /api/v3/depth?symbol=X&limit=N``: the book, best first, with ``lastUpdateId``
        the id of the last update in it (§1 sync rule)."""
        self.requests["depth"] += 1
        symbol = request.query.get("symbol")
        if not symbol:
            return _binance_error(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, "
                                  "or malformed.", self._weight_headers())
        if symbol not in self.feeds:
            return _binance_error(400, -1121, "Invalid symbol.", self._weight_headers())
        raw_limit = request.query.get("limit", "100")
        try:
            limit = int(raw_limit)
        except ValueError:
            return _binance_error(400, -1100, "Illegal characters found in parameter 'limit'; "
                                  "legal range is '^[0-9]{1,20}$'.", self._weight_headers())
        if not 1 <= limit <= _MAX_LIMIT:
            return _binance_error(400, -1130, f"Invalid data sent for a parameter: limit must be "
                                  f"1..{_MAX_LIMIT}.", self._weight_headers())
        faults = self.rest_faults
        if faults.status_left > 0:
            faults.status_left -= 1
            self.counters["rest_faulted"] += 1
            code, msg = _FAULT_BODIES.get(faults.status, (-1000, "An unknown error occurred (sim fault)."))
            headers = self._weight_headers()
            if faults.status in (429, 418):
                headers["Retry-After"] = "1"
            return _binance_error(faults.status, code, msg, headers)
        rejected = self._charge(_depth_weight(limit))
        if rejected is not None:
            return rejected
        last_id, bids, asks = self.market.snapshot(symbol, limit)
        if faults.ahead_left > 0:  # a snapshot the stream will not reach for a long time: every diff skipped
            faults.ahead_left -= 1
            self.counters["rest_faulted"] += 1
            last_id += faults.ahead
        if faults.oversize_left > 0:  # the book padded past 20 MB (valid JSON: an unknown field)
            faults.oversize_left -= 1
            self.counters["rest_faulted"] += 1
            return self._json({"lastUpdateId": last_id, "bids": bids, "asks": asks, "pad": "x" * (20 << 20)})
        if faults.empty_left > 0:  # a book with no levels at all
            faults.empty_left -= 1
            self.counters["rest_faulted"] += 1
            bids, asks = [], []
        if faults.delay_left > 0:
            faults.delay_left -= 1
            self.counters["rest_faulted"] += 1
            await asyncio.sleep(faults.delay)  # the snapshot was taken on arrival, as if slow in transit
        return self._json({"lastUpdateId": last_id, "bids": bids, "asks": asks})

    def _trades_query(self, request: web.Request) -> tuple[_SymbolFeed | None, int | None, int, web.Response | None]:
        """symbol, fromId (None: the most recent), limit of a trades request, or the error to answer."""
        self.requests["trades"] += 1
        symbol = request.query.get("symbol")
        if not symbol or symbol not in self.feeds:
            return None, None, 0, _binance_error(400, -1121, "Invalid symbol.", self._weight_headers())
        try:
            limit = int(request.query.get("limit", "500"))
            from_id = int(request.query["fromId"]) if "fromId" in request.query else None
        except ValueError:
            return None, None, 0, _binance_error(400, -1100, "Illegal characters found in a parameter.",
                                                 self._weight_headers())
        if not 1 <= limit <= _TRADES_LIMIT:
            return None, None, 0, _binance_error(400, -1130, f"Invalid data sent for a parameter: limit must be "
                                                 f"1..{_TRADES_LIMIT}.", self._weight_headers())
        return self.feeds[symbol], from_id, limit, None

    async def _rest_trades(self, request: web.Request) -> web.Response:
        """``GET /api/v3/historicalTrades?symbol=&fromId=&limit=`` (weight 25): the trades (``@trade``
        ids) from ``fromId`` on, oldest first, as far as the history reaches."""
        feed, from_id, limit, error = self._trades_query(request)
        if error is not None:
            return error
        rejected = self._charge(25)
        if rejected is not None:
            return rejected
        out: list[dict[str, Any]] = []
        history = feed.history
        if from_id is None:  # the most recent
            from_id = history[-1][0].last_id - limit + 1 if history else 0
        start = bisect.bisect_left(history, from_id, key=lambda h: h[0].last_id)
        for t, event_ms in history[start:]:
            for i, qty in enumerate(t.quantities):
                tid = t.first_id + i
                if tid >= from_id and len(out) < limit:
                    out.append({"id": tid, "price": t.price, "qty": qty, "quoteQty": f"{float(t.price) * float(qty):.8f}",
                                "time": event_ms, "isBuyerMaker": t.buyer_is_maker, "isBestMatch": True})
            if len(out) >= limit:
                break
        return self._json(out)

    async def _rest_agg_trades(self, request: web.Request) -> web.Response:
        """``GET /api/v3/aggTrades`` (weight 4) and ``/fapi/v1/aggTrades`` (weight 20) by ``fromId``:
        one aggregate trade per taker order (``@aggTrade`` ids)."""
        feed, from_id, limit, error = self._trades_query(request)
        if error is not None:
            return error
        rejected = self._charge(20 if request.path.startswith("/fapi/") else 4)
        if rejected is not None:
            return rejected
        history = feed.history
        if from_id is None:
            from_id = history[-1][0].agg_id - limit + 1 if history else 0
        start = bisect.bisect_left(history, from_id, key=lambda h: h[0].agg_id)
        return self._json([{"a": t.agg_id, "p": t.price, "q": t.quantity, "f": t.first_id, "l": t.last_id,
                            "T": event_ms, "m": t.buyer_is_maker, "M": True} for t, event_ms in history[start:start + limit]])

    async def _rest_exchange_info(self, request: web.Request) -> web.Response:
        """``GET /api/v3/exchangeInfo``: rate limits and symbol filters (tickSize, stepSize)."""
        self.requests["exchangeInfo"] += 1
        rejected = self._charge(20)
        if rejected is not None:
            return rejected
        wanted = request.query.get("symbol")
        if wanted is not None and wanted not in self.feeds:
            return _binance_error(400, -1121, "Invalid symbol.", self._weight_headers())
        symbols = []
        for spec in self.market.specs:
            if wanted is not None and spec.symbol != wanted:
                continue
            symbols.append({
                "symbol": spec.symbol, "status": "TRADING",
                "baseAsset": spec.base_asset, "baseAssetPrecision": 8,
                "quoteAsset": spec.quote_asset, "quotePrecision": 8, "quoteAssetPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": spec.tick_size,
                     "maxPrice": "1000000.00000000", "tickSize": spec.tick_size},
                    {"filterType": "LOT_SIZE", "minQty": spec.step_size,
                     "maxQty": "9000000.00000000", "stepSize": spec.step_size},
                ],
                "permissions": [], "permissionSets": [["SPOT"]],
            })
        return self._json({
            "timezone": "UTC", "serverTime": int(time.time() * 1000),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": self.options.weight_limit},
            ],
            "exchangeFilters": [], "symbols": symbols,
        })

    async def _rest_ping(self, request: web.Request) -> web.Response:
        self.requests["ping"] += 1
        rejected = self._charge(1)
        return rejected if rejected is not None else self._json({})

    async def _rest_time(self, request: web.Request) -> web.Response:
        self.requests["time"] += 1
        rejected = self._charge(1)
        return rejected if rejected is not None else self._json({"serverTime": int(time.time() * 1000)})


async def serve(options: SimOptions, stop: asyncio.Event | None = None) -> None:
    """Run the sim on the current loop until ``stop`` is set (or SIGINT/SIGTERM when None)."""
    await serve_server(SimServer(options), stop)


def run(options: SimOptions) -> None:
    """Blocking: run the sim under uvloop until SIGINT/SIGTERM, then close cleanly (exit 0)."""
    import uvloop

    uvloop.run(serve(options))
