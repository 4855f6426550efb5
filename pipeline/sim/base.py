"""What every ``pipeline sim`` protocol server shares: options, the tick generator, frame fan-out,
WebSocket sessions, fault switches and ``/sim/state``.

A protocol server (Binance in pipeline/sim/server.py, the others in pipeline/sim/venues.py)
subclasses :class:`BaseServer` and fills in the venue's part: its routes, what one market
update or one generator tick turns into, how a client's text message is answered, and its
own fault switches. The rest is here, once:

- The generator task wakes every ``TICK`` seconds and runs as many ``Market.step()`` calls as
  the wall clock and ``rate`` say are due, so the sequence of updates depends only on the
  seed while the timing follows the rate (docs/sim.md, "The market").
- Frames are encoded once as complete WebSocket frame bytes (RFC 6455 §5.2, unmasked as
  servers send) and the same bytes are appended to the outgoing list of every subscriber
  (:class:`Topic`). At the end of a tick each connection gets one ``transport.write`` of its
  list. ``transport.write`` never blocks, so a slow client cannot stall generation; a client
  whose kernel-side backlog passes ``MAX_WRITE_BUFFER`` is dropped. Replies and pongs go
  through the same list, so they stay in order with stream frames; aiohttp only does the
  handshake, reads client frames and closes connections.
- Generic fault switches: ``disconnect``, ``disconnect_every``, ``stall``, ``pause`` /
  ``resume`` (stop and restart the market, so a client can compare its book with REST at
  rest) and ``clear``; a protocol adds its own through :meth:`BaseServer.venue_fault`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from pipeline.sim.market import Market, Update
from pipeline.wsframe import OP_PONG, OP_TEXT, server_frame

__all__ = ["BadFault", "BaseServer", "Connection", "SimOptions", "Topic", "arg", "dumps", "serve_server",
           "ws_frame"]

log = logging.getLogger("pipeline.sim.server")

TICK = 0.002  # generator period, seconds
MAX_BATCH_S = 0.05  # at most this much schedule is run in one tick; the rest is given up
MAX_BATCH = 2000  # and at most this many steps, so reads and writes get the loop often
MAX_WRITE_BUFFER = 8 * 1024 * 1024  # bytes queued in the transport before a client is dropped
MAX_STALLED_FRAMES = 2_000_000  # frames held for one connection during a stall
CLOSE_TIMEOUT = 2.0  # seconds to wait for the client's close frame

ws_frame = server_frame  # one final, unmasked frame as a server sends it (pipeline/wsframe.py)


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
    # Venue protocols (pipeline/sim/venues.py); 0 = the venue's own value (docs/sim.md).
    book_interval: float = 0.0  # Hyperliquid plain l2Book push interval (venue: 5 s; fast: 0.5 s)
    out: str | None = None  # hyperliquid_node: the node data directory the hourly files are written to
    book_speedup: float = 1.0  # Hyperliquid: both l2Book cadences divided by this (tests: 10 -> 0.5 s / 0.05 s)
    idle_timeout: float = 0.0  # OKX: 30 s without a client message; Hyperliquid: 60 s without a frame sent
    quiet_heartbeat: float = 0.0  # OKX books heartbeat update after this long without a change (venue: ~60 s)


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class BadFault(ValueError):
    """A /sim/fault request that names an unknown fault or has bad arguments."""


def arg(params: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    """Argument ``name`` of a fault request as ``kind``, finite and >= 0; raises BadFault."""
    value = params.get(name, default)
    if value is None:
        raise BadFault(f"fault needs {name!r}")
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise BadFault(f"{name}: expected {kind.__name__}, got {value!r}") from None
    if isinstance(value, (int, float)) and (value < 0 or not math.isfinite(value)):
        raise BadFault(f"{name}: expected a finite value >= 0, got {value!r}")
    return value


class Connection:
    """One client WebSocket: what it subscribed to and the frames waiting to be written."""

    __slots__ = ("ws", "transport", "combined", "streams", "out", "last_pong", "last_in", "last_out",
                 "closing", "peer", "path", "conn_id")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport, combined: bool,
                 now: float, peer: str, path: str = ""):
        self.ws = ws
        self.path = path  # the request path it connected to (a venue may serve several)
        self.conn_id = "%012x" % (id(self) & 0xFFFFFFFFFFFF)  # what venues call connId / conn_id
        self.transport = transport
        self.combined = combined  # Binance: frames wrapped as {"stream":..,"data":..}
        self.streams: dict[Any, Any] = {}  # subscription key -> what the protocol keeps for it
        self.out: list[bytes] = []
        self.last_pong = now
        self.last_in = now  # loop time of the last message from the client
        self.last_out = now  # loop time of the last write to the client
        self.closing = False
        self.peer = peer


class Topic:
    """One stream's subscribers; a payload is encoded once and queued to each of them."""

    __slots__ = ("conns",)

    def __init__(self) -> None:
        self.conns: set[Connection] = set()

    def publish(self, payload: str) -> None:
        if self.conns:
            frame = ws_frame(payload.encode())
            for c in self.conns:
                c.out.append(frame)


class BaseServer:
    """A simulated exchange on one port: generator, fan-out, WebSocket sessions, faults, state.

    Subclasses define :meth:`routes`, :meth:`on_update` and may override :meth:`on_tick`,
    :meth:`on_text`, :meth:`on_closed`, :meth:`heartbeat`, :meth:`venue_fault`,
    :meth:`clear_faults` and :meth:`state_extra`.
    """

    def __init__(self, options: SimOptions, market: Market | None = None):
        if options.rate <= 0 or not math.isfinite(options.rate):
            raise ValueError(f"rate: expected a positive number, got {options.rate!r}")
        if options.ping_interval <= 0:
            raise ValueError(f"ping_interval: expected a positive number, got {options.ping_interval!r}")
        if options.weight_limit <= 0:
            raise ValueError(f"weight_limit: expected a positive integer, got {options.weight_limit!r}")
        self.options = options
        self.market = market or Market(tuple(options.symbols), options.seed, options.levels)
        self.connections: set[Connection] = set()
        self.port = 0
        self.disconnect_every = float(options.disconnect_every)
        self._every_changed = asyncio.Event()
        self._stall_until = 0.0
        self._stall_handle: asyncio.TimerHandle | None = None
        self.paused = False
        self._pause_handle: asyncio.TimerHandle | None = None
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
        self.requests: dict[str, int] = {"fault": 0, "state": 0}

    # -- what a protocol fills in ----------------------------------------------------

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def on_update(self, update: Update, event_ms: int) -> None:
        """One market update (called for every step, subscribed or not)."""
        raise NotImplementedError

    def on_tick(self, now: float, event_ms: int) -> None:
        """End of one generator tick (``now`` is loop time): flush throttled streams."""

    def on_text(self, conn: Connection, text: str) -> None:
        """A text message from the client."""

    def on_binary(self, conn: Connection) -> None:
        """A binary message from the client (already counted as a ws error)."""

    def on_closed(self, conn: Connection) -> None:
        """The connection is gone: drop its subscriptions."""

    async def heartbeat(self) -> None:
        """A background task for the protocol's keep-alive rules (none by default)."""

    def venue_fault(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """Apply a protocol fault; return a reply or None for ``{"ok": true}``; raise BadFault."""
        raise BadFault(f"unknown fault {name!r}")

    def clear_faults(self) -> None:
        """Reset the protocol's faults (the ``clear`` switch)."""

    def state_extra(self) -> dict[str, Any]:
        """Protocol fields of ``/sim/state``."""
        return {}

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> int:
        """Bind, start the generator and timers; returns the bound port."""
        app = web.Application()
        self.routes(app)
        app.router.add_route("*", "/sim/fault", self._sim_fault)
        app.router.add_get("/sim/state", self._sim_state)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.options.host, self.options.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._tasks = [asyncio.create_task(coro) for coro in
                       (self._generate(), self.heartbeat(), self._disconnect_periodically())]
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
        for handle in (self._stall_handle, self._pause_handle):
            if handle is not None:
                handle.cancel()
        self._stall_until = 0.0
        self.disconnect_all(reason="sim shutting down")
        if self._closers:
            await asyncio.wait(set(self._closers), timeout=CLOSE_TIMEOUT + 1)
        if self._runner is not None:
            await self._runner.cleanup()
        log.info("sim stopped")

    # -- generation ----------------------------------------------------------------

    async def _generate(self) -> None:
        """Step the market at ``rate`` updates/s by the wall clock and fan the frames out."""
        loop = asyncio.get_running_loop()
        rate = self.options.rate
        max_batch = max(1, min(MAX_BATCH, int(rate * MAX_BATCH_S)))
        start = loop.time()
        done = 0
        next_rate = start + 1.0
        step = self.market.step
        on_update = self.on_update
        counters = self.counters
        while True:
            await asyncio.sleep(TICK)
            now = loop.time()
            due = int((now - start) * rate) - done
            if self.paused:  # the schedule moves on without steps
                start += due / rate
                due = 0
            if due > max_batch:  # behind schedule: run what fits, give up the rest
                counters["schedule_skipped"] += due - max_batch
                start += (due - max_batch) / rate
                due = max_batch
            event_ms = int(time.time() * 1000)
            if due > 0:
                for _ in range(due):
                    on_update(step(), event_ms)
                done += due
                counters["updates"] += due
            self.on_tick(now, event_ms)
            if now >= next_rate:
                t0, n0 = self._rate_mark
                self.measured_rate = (counters["updates"] - n0) / (now - t0) if now > t0 else 0.0
                self._rate_mark = (now, counters["updates"])
                next_rate = now + 1.0
            self._write_all()

    # -- writing ---------------------------------------------------------------------

    @property
    def stalled(self) -> bool:
        return self._stall_until > 0 and asyncio.get_running_loop().time() < self._stall_until

    def _write_all(self) -> None:
        stalled = self.stalled
        for conn in list(self.connections):
            if conn.out:
                self._write(conn, stalled)

    def _write(self, conn: Connection, stalled: bool | None = None) -> None:
        """Write what ``conn`` has queued in one call; hold it during a stall; drop a slow client."""
        if conn.closing or conn.transport.is_closing():
            conn.out.clear()
            return
        if stalled is None:
            stalled = self.stalled
        if stalled:
            if len(conn.out) > MAX_STALLED_FRAMES:
                self._drop_slow(conn, "too many frames held during a stall")
            return
        # What is still unsent from earlier writes is the client's backlog.
        if conn.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self._drop_slow(conn, "over %d bytes not taken by the client" % MAX_WRITE_BUFFER)
            return
        data = b"".join(conn.out)
        self.counters["frames_queued"] += len(conn.out)
        self.counters["bytes_written"] += len(data)
        conn.out.clear()
        conn.last_out = asyncio.get_running_loop().time()
        conn.transport.write(data)

    def send(self, conn: Connection, payload: bytes, opcode: int = OP_TEXT) -> None:
        """Send one frame to ``conn`` now (after what it has queued), or after a stall."""
        conn.out.append(ws_frame(payload, opcode))
        self._write(conn)

    def send_json(self, conn: Connection, obj: Any) -> None:
        self.send(conn, dumps(obj).encode())

    def _drop_slow(self, conn: Connection, why: str) -> None:
        log.warning("dropping slow client %s: %s", conn.peer, why)
        self.counters["slow_clients_dropped"] += 1
        conn.closing = True
        conn.out.clear()
        conn.transport.abort()

    def close(self, conn: Connection, code: int, reason: str) -> None:
        conn.closing = True
        conn.out.clear()
        task = asyncio.create_task(conn.ws.close(code=code, message=reason.encode()))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def disconnect_all(self, reason: str = "sim disconnect") -> int:
        """Close every client WebSocket with 1001 (going away); returns how many."""
        conns = [c for c in self.connections if not c.closing]
        for conn in conns:
            self.close(conn, 1001, reason)
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

    # -- WebSocket sessions ------------------------------------------------------------

    async def ws_session(self, request: web.Request, combined: bool = False,
                         on_open: Callable[[Connection], None] | None = None) -> web.WebSocketResponse:
        """Upgrade ``request``, then read client messages until it closes."""
        ws = web.WebSocketResponse(autoping=False, compress=False, timeout=CLOSE_TIMEOUT,
                                   max_msg_size=1 << 20)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        transport = request.transport
        assert transport is not None
        peer = "%s:%s" % (request.remote, (transport.get_extra_info("peername") or ("", ""))[1])
        conn = Connection(ws, transport, combined, loop.time(), peer, request.path)
        if on_open is not None:
            on_open(conn)
        self.connections.add(conn)
        self.counters["connections_opened"] += 1
        log.debug("client %s connected to %s", peer, request.path_qs)
        try:
            async for msg in ws:
                if self.stalled:  # a stuck server reads nothing, answers no ping
                    await self._wait_unstalled()
                if conn.closing:
                    break
                conn.last_in = loop.time()
                if msg.type == WSMsgType.TEXT:
                    self.counters["ws_messages"] += 1
                    self.on_text(conn, msg.data)
                elif msg.type == WSMsgType.PING:
                    self.send(conn, msg.data, OP_PONG)
                elif msg.type == WSMsgType.PONG:
                    conn.last_pong = loop.time()
                elif msg.type == WSMsgType.BINARY:
                    self.counters["ws_errors"] += 1
                    self.on_binary(conn)
        finally:
            conn.closing = True
            self.connections.discard(conn)
            self.on_closed(conn)
            log.debug("client %s disconnected", peer)
        return ws

    async def _wait_unstalled(self) -> None:
        loop = asyncio.get_running_loop()
        while self._stall_until and loop.time() < self._stall_until:
            await asyncio.sleep(self._stall_until - loop.time())

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
        for conn in self.connections:  # their pongs and messages could not be read during the stall
            conn.last_pong = conn.last_in = now
        self._write_all()

    def pause(self, seconds: float) -> None:
        """Stop stepping the market (for ``seconds``, or until resume/clear when 0)."""
        self.paused = True
        if self._pause_handle is not None:
            self._pause_handle.cancel()
            self._pause_handle = None
        if seconds > 0:
            self._pause_handle = asyncio.get_running_loop().call_later(seconds, self.resume)
        log.info("market paused")

    def resume(self) -> None:
        self.paused = False
        if self._pause_handle is not None:
            self._pause_handle.cancel()
            self._pause_handle = None

    def apply_fault(self, params: dict[str, Any]) -> dict[str, Any]:
        """Switch one fault on (docs/sim.md, "Fault switches"). Raises BadFault."""
        name = params.get("name")
        reply: dict[str, Any] | None = None
        if name == "disconnect":
            self.disconnect_all(reason="fault disconnect")
        elif name == "disconnect_every":
            self.disconnect_every = arg(params, "seconds", float)
            self._every_changed.set()
        elif name == "stall":
            self.stall(arg(params, "seconds", float))
        elif name == "pause":
            self.pause(arg(params, "seconds", float, 0.0))
        elif name == "resume":
            self.resume()
        elif name == "clear":
            self.clear_faults()
            if self._stall_handle is not None:
                self._stall_handle.cancel()
                self._end_stall()
            self.resume()
            self.disconnect_every = float(self.options.disconnect_every)
            self._every_changed.set()
        else:
            reply = self.venue_fault(str(name), params)
        log.info("fault %s set: %s", name, params)
        return reply or {"ok": True}

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
        except BadFault as exc:
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
        body = {
            "symbols": symbols,
            "connections": len(self.connections),
            "rate": self.options.rate,
            "measured_rate": round(self.measured_rate, 1),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "stalled": self.stalled,
            "paused": self.paused,
            "disconnect_every": self.disconnect_every,
        }
        body.update(self.state_extra())
        body["requests"] = dict(self.requests)
        body["counters"] = dict(self.counters)
        return web.json_response(body)


async def serve_server(server: BaseServer, stop: asyncio.Event | None = None) -> None:
    """Run ``server`` on the current loop until ``stop`` is set (or SIGINT/SIGTERM when None)."""
    loop = asyncio.get_running_loop()
    own_signals = stop is None
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        await stop.wait()
    finally:
        await server.stop()
        if own_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
