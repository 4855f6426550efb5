"""``pipeline sim`` server: the seeded market over Binance spot WebSocket + REST on one port.

What a Binance spot adapter sees (exchange-protocols.md §1; docs/sim.md has the full list):

- WebSocket ``/stream?streams=a/b/c`` (frames wrapped ``{"stream":..,"data":..}``), ``/ws/<stream>``
  and ``/ws`` (raw frames), live ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` /
  ``SET_PROPERTY`` / ``GET_PROPERTY`` with Binance's ``{"error":{"code":N,"msg":..},"id":..}``
  replies, a server ping every ``ping_interval`` (Binance: 20 s) and pongs to client pings.
- Streams per symbol: ``@depth`` (1000 ms), ``@depth@100ms``, ``@depth@0ms`` (one event per
  update), ``@depth5|10|20[@100ms]``, ``@trade``, ``@aggTrade``, ``@bookTicker``.
- REST ``/api/v3/depth``, ``/api/v3/exchangeInfo``, ``/api/v3/ping``, ``/api/v3/time`` with
  request weights, ``X-MBX-USED-WEIGHT-1M`` and 429 + ``Retry-After`` over the budget.
- Control: ``/sim/fault`` (fault switches) and ``/sim/state`` (counters), on the same port.

Design
------
One event loop. A generator task wakes every ``_TICK`` seconds, runs as many
``Market.step()`` calls as the wall clock and ``rate`` say are due, and turns each update
into frames; so the sequence of updates depends only on the seed while the timing follows
the rate. Each frame is encoded once as complete WebSocket frame bytes (RFC 6455 §5.2,
unmasked as servers send) and the same bytes are appended to the outgoing list of every
subscriber. At the end of the tick each connection gets one ``transport.write`` of its list.
``transport.write`` never blocks, so a slow client cannot stall generation or other clients;
a client whose kernel-side backlog passes ``_MAX_WRITE_BUFFER`` is dropped, as Binance drops
clients that do not keep up. Replies and pongs go through the same list, so they stay in
order with the stream frames; aiohttp only does the handshake, reads client frames and
closes connections (its writer writes whole uncompressed frames synchronously, so the
two writers never interleave inside a frame).

Limits: no ``timeUnit=MICROSECOND``, no per-connection limit on incoming messages
(Binance: 5/s) and no ``serverShutdown`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import struct
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from pipeline.sim.market import Market, Update

__all__ = ["SimOptions", "SimServer", "run", "serve", "ws_frame"]

log = logging.getLogger(__name__)

_TICK = 0.002  # generator period, seconds
_MAX_BATCH_S = 0.05  # at most this much schedule is run in one tick; the rest is given up
_MAX_BATCH = 2000  # and at most this many steps, so reads and writes get the loop often
_MAX_WRITE_BUFFER = 8 * 1024 * 1024  # bytes queued in the transport before a client is dropped
_MAX_STALLED_FRAMES = 2_000_000  # frames held for one connection during a stall
_MAX_STREAMS = 1024  # per connection, as on Binance (§1 limits)
_CLOSE_TIMEOUT = 2.0  # seconds to wait for the client's close frame
_MAX_LIMIT = 5000  # REST depth limit (§1)

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


@dataclass
class SimOptions:
    """Options of the simulated exchange (docs/sim.md)."""

    host: str = "127.0.0.1"
    port: int = 9100  # 0 = pick a free port (logged and written to ready_file)
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    seed: int = 1
    rate: float = 200.0  # total book updates per second across all symbols
    levels: int = 400  # price levels per side at start
    ping_interval: float = 20.0  # server WS ping interval (Binance: 20 s)
    disconnect_every: float = 0  # if > 0, close every WS connection every N seconds
    weight_limit: int = 6000  # REST request weight per minute; over it -> 429
    ready_file: str | None = None  # if set, the bound port is written here once listening


def ws_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, unmasked WebSocket frame as a server sends it (RFC 6455 §5.2, §5.3)."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


# -- streams -----------------------------------------------------------------------

# Stream name suffix (after "<symbol>@") -> channel kind. "@depth" is the 1000 ms diff
# stream, the partial book streams default to 1000 ms too (§1 streams).
_SUFFIX_KIND = {
    "depth": "depth@1000ms", "depth@1000ms": "depth@1000ms",
    "depth@100ms": "depth@100ms", "depth@0ms": "depth@0ms",
    "trade": "trade", "aggTrade": "aggTrade", "bookTicker": "bookTicker",
}
for _n in (5, 10, 20):
    _SUFFIX_KIND[f"depth{_n}"] = _SUFFIX_KIND[f"depth{_n}@1000ms"] = f"depth{_n}@1000ms"
    _SUFFIX_KIND[f"depth{_n}@100ms"] = f"depth{_n}@100ms"
_KINDS = tuple(dict.fromkeys(_SUFFIX_KIND.values()))
_MALFORMED_KINDS = {"depth": ("depth",), "trade": ("trade", "aggTrade"), "any": ("",)}
_MALFORMED_EVENT = {"trade": "trade", "aggTrade": "aggTrade", "bookTicker": "bookTicker"}


class _Connection:
    """One client WebSocket: its streams and the frames waiting to be written."""

    __slots__ = ("ws", "transport", "combined", "streams", "out", "last_pong", "closing", "peer")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport, combined: bool,
                 now: float, peer: str):
        self.ws = ws
        self.transport = transport
        self.combined = combined  # frames wrapped as {"stream":..,"data":..}
        self.streams: dict[str, _Channel] = {}  # stream name as the client wrote it -> channel
        self.out: list[bytes] = []
        self.last_pong = now
        self.closing = False
        self.peer = peer


class _Channel:
    """One (symbol, kind) feed and its subscribers, by the stream name each one used."""

    __slots__ = ("kind", "names")

    def __init__(self, kind: str):
        self.kind = kind
        self.names: dict[str, set[_Connection]] = {}

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
        self.windows = {"100ms": _DiffWindow(), "1000ms": _DiffWindow()}
        self.window_on = {"100ms": False, "1000ms": False}
        self.w100 = self.windows["100ms"]
        self.w1000 = self.windows["1000ms"]
        self.on100 = self.on1000 = False
        self.active = False  # any subscriber at all
        self.drop: set[str] = set()  # depth speeds ("0ms", "100ms", "1000ms") whose next diff is dropped

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


class _BadFault(ValueError):
    """A /sim/fault request that names an unknown fault or has bad arguments."""


def _arg(params: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    value = params.get(name, default)
    if value is None:
        raise _BadFault(f"fault needs {name!r}")
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise _BadFault(f"{name}: expected {kind.__name__}, got {value!r}") from None
    if isinstance(value, (int, float)) and (value < 0 or not math.isfinite(value)):
        raise _BadFault(f"{name}: expected a finite value >= 0, got {value!r}")
    return value


# -- REST helpers --------------------------------------------------------------------


def _depth_weight(limit: int) -> int:
    """REST depth weight by limit: <=100: 5, <=500: 25, <=1000: 50, <=5000: 250 (§1 endpoints)."""
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def _binance_error(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=_dumps({"code": code, "msg": msg}),
                        content_type="application/json", headers=headers)


# Status -> (code, msg) of the Binance-style body a rest_status fault answers with.
_FAULT_BODIES = {
    429: (-1003, "Too many requests; current request rate exceeds the limit (sim fault)."),
    418: (-1003, "Way too many requests; IP banned (sim fault)."),
    500: (-1001, "Internal error; unable to process your request. Please try again (sim fault)."),
    503: (-1008, "Server is currently overloaded with other requests. Please try again (sim fault)."),
}


# -- the server ----------------------------------------------------------------------


class SimServer:
    """The simulated exchange: market generator, stream fan-out, REST and control endpoints."""

    def __init__(self, options: SimOptions):
        if options.rate <= 0 or not math.isfinite(options.rate):
            raise ValueError(f"rate: expected a positive number, got {options.rate!r}")
        if options.ping_interval <= 0:
            raise ValueError(f"ping_interval: expected a positive number, got {options.ping_interval!r}")
        if options.weight_limit <= 0:
            raise ValueError(f"weight_limit: expected a positive integer, got {options.weight_limit!r}")
        self.options = options
        self.market = Market(tuple(options.symbols), options.seed, options.levels)
        self.feeds = {s: _SymbolFeed(s) for s in self.market.symbols}
        self._by_stream_symbol = {f.stream_symbol: f for f in self.feeds.values()}
        self.connections: set[_Connection] = set()
        self.port = 0
        self.rest_faults = _RestFaults()
        self.disconnect_every = float(options.disconnect_every)
        self._every_changed = asyncio.Event()
        self._stall_until = 0.0
        self._stall_handle: asyncio.TimerHandle | None = None
        self._weight_minute = 0
        self._weight_used = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._started = time.monotonic()
        self._rate_mark = (time.monotonic(), 0)
        self.measured_rate = 0.0
        self.counters = {
            "updates": 0, "frames_queued": 0, "bytes_written": 0, "diffs_dropped": 0,
            "schedule_skipped": 0, "connections_opened": 0, "slow_clients_dropped": 0,
            "disconnects": 0, "rest_429": 0, "rest_faulted": 0, "ws_messages": 0, "ws_errors": 0,
        }
        self.requests = {"depth": 0, "exchangeInfo": 0, "ping": 0, "time": 0, "fault": 0, "state": 0}

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> int:
        """Bind, start the generator and timers; returns the bound port."""
        app = web.Application()
        app.router.add_get("/stream", self._ws_handler)
        app.router.add_get("/ws", self._ws_handler)
        app.router.add_get("/ws/{streams:.*}", self._ws_handler)
        app.router.add_get("/api/v3/depth", self._rest_depth)
        app.router.add_get("/api/v3/exchangeInfo", self._rest_exchange_info)
        app.router.add_get("/api/v3/ping", self._rest_ping)
        app.router.add_get("/api/v3/time", self._rest_time)
        app.router.add_route("*", "/sim/fault", self._sim_fault)
        app.router.add_get("/sim/state", self._sim_state)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.options.host, self.options.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._tasks = [asyncio.create_task(coro) for coro in
                       (self._generate(), self._ping_clients(), self._disconnect_periodically())]
        log.info("sim listening on %s:%d", self.options.host, self.port)
        if self.options.ready_file:
            tmp = self.options.ready_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{self.port}\n")
            os.replace(tmp, self.options.ready_file)  # readers never see a half-written file
        return self.port

    async def stop(self) -> None:
        """Stop generating, close every WebSocket with 1001 (going away), release the port."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._stall_handle is not None:
            self._stall_handle.cancel()
        self._stall_until = 0.0
        self.disconnect_all(reason="sim shutting down")
        if self._closers:
            await asyncio.wait(set(self._closers), timeout=_CLOSE_TIMEOUT + 1)
        if self._runner is not None:
            await self._runner.cleanup()
        log.info("sim stopped")

    # -- generation ----------------------------------------------------------------

    async def _generate(self) -> None:
        """Step the market at ``rate`` updates/s by the wall clock and fan the frames out."""
        loop = asyncio.get_running_loop()
        rate = self.options.rate
        max_batch = max(1, min(_MAX_BATCH, int(rate * _MAX_BATCH_S)))
        start = loop.time()
        done = 0
        next100 = start + 0.1
        next1000 = start + 1.0
        next_rate = start + 1.0
        step = self.market.step
        feeds = self.feeds
        counters = self.counters
        while True:
            await asyncio.sleep(_TICK)
            now = loop.time()
            due = int((now - start) * rate) - done
            if due > max_batch:  # behind schedule: run what fits, give up the rest
                counters["schedule_skipped"] += due - max_batch
                start += (due - max_batch) / rate
                due = max_batch
            event_ms = int(time.time() * 1000)
            if due > 0:
                for _ in range(due):
                    update = step()
                    feed = feeds[update.symbol]
                    if feed.active:
                        self._fan_out(feed, update, event_ms)
                done += due
                counters["updates"] += due
            if now >= next100:
                self._emit_windows("100ms", event_ms)
                next100 = max(next100 + 0.1, now)
            if now >= next1000:
                self._emit_windows("1000ms", event_ms)
                next1000 = max(next1000 + 1.0, now)
            if now >= next_rate:
                t0, n0 = self._rate_mark
                self.measured_rate = (counters["updates"] - n0) / (now - t0) if now > t0 else 0.0
                self._rate_mark = (now, counters["updates"])
                next_rate = now + 1.0
            self._write_all()

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
        if t is not None:
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
                    channel.publish(_dumps({"lastUpdateId": last_id, "bids": bids, "asks": asks}))

    # -- writing ---------------------------------------------------------------------

    @property
    def stalled(self) -> bool:
        return self._stall_until > 0 and asyncio.get_running_loop().time() < self._stall_until

    def _write_all(self) -> None:
        stalled = self.stalled
        for conn in list(self.connections):
            if conn.out:
                self._write(conn, stalled)

    def _write(self, conn: _Connection, stalled: bool | None = None) -> None:
        """Write what ``conn`` has queued in one call; hold it during a stall; drop a slow client."""
        if conn.closing or conn.transport.is_closing():
            conn.out.clear()
            return
        if stalled is None:
            stalled = self.stalled
        if stalled:
            if len(conn.out) > _MAX_STALLED_FRAMES:
                self._drop_slow(conn, "too many frames held during a stall")
            return
        # What is still unsent from earlier writes is the client's backlog.
        if conn.transport.get_write_buffer_size() > _MAX_WRITE_BUFFER:
            self._drop_slow(conn, "over %d bytes not taken by the client" % _MAX_WRITE_BUFFER)
            return
        data = b"".join(conn.out)
        self.counters["frames_queued"] += len(conn.out)
        self.counters["bytes_written"] += len(data)
        conn.out.clear()
        conn.transport.write(data)

    def _send(self, conn: _Connection, payload: bytes, opcode: int = OP_TEXT) -> None:
        """Send one frame to ``conn`` now (after what it has queued), or after a stall."""
        conn.out.append(ws_frame(payload, opcode))
        self._write(conn)

    def _drop_slow(self, conn: _Connection, why: str) -> None:
        log.warning("dropping slow client %s: %s", conn.peer, why)
        self.counters["slow_clients_dropped"] += 1
        conn.closing = True
        conn.out.clear()
        conn.transport.abort()

    # -- WebSocket -------------------------------------------------------------------

    def _parse_stream(self, name: str) -> _Channel | None:
        symbol, _, suffix = name.partition("@")
        feed = self._by_stream_symbol.get(symbol)
        kind = _SUFFIX_KIND.get(suffix)
        if feed is None or kind is None:
            return None
        return feed.channels[kind]

    def _subscribe(self, conn: _Connection, name: str, channel: _Channel) -> None:
        if name in conn.streams:
            return
        conn.streams[name] = channel
        channel.names.setdefault(name, set()).add(conn)

    def _unsubscribe(self, conn: _Connection, name: str) -> None:
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
        if request.path == "/stream":
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
        ws = web.WebSocketResponse(autoping=False, compress=False, timeout=_CLOSE_TIMEOUT,
                                   max_msg_size=1 << 20)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        transport = request.transport
        assert transport is not None
        peer = "%s:%s" % (request.remote, (transport.get_extra_info("peername") or ("", ""))[1])
        conn = _Connection(ws, transport, combined, loop.time(), peer)
        for name, channel in zip(names, channels):
            self._subscribe(conn, name, channel)
        self.connections.add(conn)
        self.counters["connections_opened"] += 1
        self._refresh_feeds()
        log.debug("client %s connected to %s", peer, request.path_qs)
        try:
            async for msg in ws:
                if self.stalled:  # a stuck server reads nothing, answers no ping
                    await self._wait_unstalled()
                if conn.closing:
                    break
                if msg.type == WSMsgType.TEXT:
                    self.counters["ws_messages"] += 1
                    reply = self._answer(conn, msg.data)
                    self._send(conn, _dumps(reply).encode())
                elif msg.type == WSMsgType.PING:
                    self._send(conn, msg.data, OP_PONG)
                elif msg.type == WSMsgType.PONG:
                    conn.last_pong = loop.time()
                elif msg.type == WSMsgType.BINARY:
                    self.counters["ws_errors"] += 1
                    self._send(conn, _dumps(self._error(3, "Invalid JSON: binary frame", None)).encode())
        finally:
            conn.closing = True
            self.connections.discard(conn)
            for name in list(conn.streams):
                self._unsubscribe(conn, name)
            self._refresh_feeds()
            log.debug("client %s disconnected", peer)
        return ws

    async def _wait_unstalled(self) -> None:
        loop = asyncio.get_running_loop()
        while self._stall_until and loop.time() < self._stall_until:
            await asyncio.sleep(self._stall_until - loop.time())

    @staticmethod
    def _error(code: int, msg: str, request_id: Any) -> dict[str, Any]:
        """Binance market-stream error reply: codes 0 unknown property, 1 bad value type,
        2 invalid request, 3 invalid JSON."""
        return {"error": {"code": code, "msg": msg}, "id": request_id}

    def _answer(self, conn: _Connection, text: str) -> dict[str, Any]:
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

    async def _ping_clients(self) -> None:
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
                    self._close(conn, 1008, "pong timeout")
                else:
                    self._send(conn, payload, OP_PING)

    def _close(self, conn: _Connection, code: int, reason: str) -> None:
        conn.closing = True
        conn.out.clear()
        task = asyncio.create_task(conn.ws.close(code=code, message=reason.encode()))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def disconnect_all(self, reason: str = "sim disconnect") -> int:
        """Close every client WebSocket with 1001 (going away); returns how many."""
        conns = [c for c in self.connections if not c.closing]
        for conn in conns:
            self._close(conn, 1001, reason)
        if conns:
            self.counters["disconnects"] += len(conns)
            log.info("closing %d client connection(s): %s", len(conns), reason)
        return len(conns)

    async def _disconnect_periodically(self) -> None:
        """The ``disconnect_every`` fault switch: close all connections every N seconds."""
        while True:
            every = self.disconnect_every
            self._every_changed.clear()
            if every > 0:
                try:
                    await asyncio.wait_for(self._every_changed.wait(), every)
                except TimeoutError:
                    self.disconnect_all(reason=f"disconnect_every {every:g} s")
            else:
                await self._every_changed.wait()

    # -- faults ------------------------------------------------------------------------

    def stall(self, seconds: float) -> None:
        """Stop writing to and reading from every WebSocket for ``seconds``; frames are held."""
        loop = asyncio.get_running_loop()
        self._stall_until = loop.time() + seconds
        if self._stall_handle is not None:
            self._stall_handle.cancel()
        self._stall_handle = loop.call_at(self._stall_until, self._end_stall)
        log.info("stalling every WebSocket for %g s", seconds)

    def _end_stall(self) -> None:
        self._stall_until = 0.0
        self._stall_handle = None
        log.info("stall over")
        now = asyncio.get_running_loop().time()
        for conn in self.connections:  # their pongs could not be read during the stall
            conn.last_pong = now
        self._write_all()

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
            self._send(conn, text.encode())
            count += 1
        return count

    def apply_fault(self, params: dict[str, Any]) -> dict[str, Any]:
        """Switch one fault on (docs/sim.md, "Fault switches"). Raises _BadFault."""
        name = params.get("name")
        if name == "drop_diff":
            symbol = params.get("symbol")
            if symbol is not None and symbol not in self.feeds:
                raise _BadFault(f"unknown symbol {symbol!r}")
            for feed in (self.feeds.values() if symbol is None else (self.feeds[symbol],)):
                feed.drop |= {k.split("@", 1)[1] for k, ch in feed.channels.items()
                              if k.startswith("depth@") and ch.names}
        elif name == "disconnect":
            self.disconnect_all(reason="fault disconnect")
        elif name == "disconnect_every":
            self.disconnect_every = _arg(params, "seconds", float)
            self._every_changed.set()
        elif name == "stall":
            self.stall(_arg(params, "seconds", float))
        elif name == "malformed":
            kind = params.get("kind", "any")
            if kind not in _MALFORMED_KINDS:
                raise _BadFault(f"kind: expected one of {sorted(_MALFORMED_KINDS)}, got {kind!r}")
            return {"ok": True, "connections": self.send_malformed(kind)}
        elif name == "rest_status":
            status = _arg(params, "status", int)
            if not 400 <= status <= 599:
                raise _BadFault(f"status: expected 400..599, got {status}")
            self.rest_faults.status = status
            self.rest_faults.status_left = _arg(params, "count", int, 1)
        elif name == "rest_delay":
            self.rest_faults.delay = _arg(params, "seconds", float)
            self.rest_faults.delay_left = _arg(params, "count", int, 1)
        elif name == "clear":
            self.rest_faults = _RestFaults()
            for feed in self.feeds.values():
                feed.drop.clear()
            if self._stall_handle is not None:
                self._stall_handle.cancel()
                self._end_stall()
            self.disconnect_every = float(self.options.disconnect_every)
            self._every_changed.set()
        else:
            raise _BadFault(f"unknown fault {name!r}")
        log.info("fault %s set: %s", name, params)
        return {"ok": True}

    async def _sim_fault(self, request: web.Request) -> web.Response:
        self.requests["fault"] += 1
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"ok": False, "error": "body is not JSON"}, status=400)
            if not isinstance(body, dict):
                return web.json_response({"ok": False, "error": "body must be a JSON object"}, status=400)
            params.update(body)
        elif request.method not in ("GET", "POST"):
            return web.json_response({"ok": False, "error": "use GET or POST"}, status=405)
        try:
            return web.json_response(self.apply_fault(params))
        except _BadFault as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)

    async def _sim_state(self, request: web.Request) -> web.Response:
        self.requests["state"] += 1
        symbols = {}
        for s in self.market.symbols:
            st = self.market.stats(s)
            symbols[s] = {
                "last_update_id": st.last_update_id, "last_trade_id": st.last_trade_id,
                "updates": st.updates, "trades": st.trades,
                "bid_levels": st.bid_levels, "ask_levels": st.ask_levels,
                "best_bid": st.best_bid, "best_bid_qty": st.best_bid_qty,
                "best_ask": st.best_ask, "best_ask_qty": st.best_ask_qty,
            }
        return web.json_response({
            "symbols": symbols,
            "connections": len(self.connections),
            "rate": self.options.rate,
            "measured_rate": round(self.measured_rate, 1),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "stalled": self.stalled,
            "disconnect_every": self.disconnect_every,
            "rest_weight_used": self._used_weight(),
            "rest_faults": vars(self.rest_faults),
            "requests": dict(self.requests),
            "counters": dict(self.counters),
        })

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
        return web.Response(text=_dumps(body), content_type="application/json",
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
        if faults.delay_left > 0:
            faults.delay_left -= 1
            self.counters["rest_faulted"] += 1
            await asyncio.sleep(faults.delay)  # the snapshot was taken on arrival, as if slow in transit
        return self._json({"lastUpdateId": last_id, "bids": bids, "asks": asks})

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
    loop = asyncio.get_running_loop()
    own_signals = stop is None
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    server = SimServer(options)
    try:
        await server.start()
        await stop.wait()
    finally:
        await server.stop()
        if own_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def run(options: SimOptions) -> None:
    """Blocking: run the sim under uvloop until SIGINT/SIGTERM, then close cleanly (exit 0)."""
    import uvloop

    uvloop.run(serve(options))
