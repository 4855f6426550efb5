"""The one connection loop of an ingest process.  Names no venue.

For each StreamGroup of the adapter it holds one WebSocket connection open:
connect, dispatch frames, watch it, reconnect with capped jittered backoff.  REST
snapshots are fetched by a small pool of workers under the venue's weight budget,
while frames keep flowing into the sync buffer (never awaited inside a frame
handler).  All tasks live in one TaskGroup, so none outlives the runner and an
error in any of them reaches ``run()``.

Runtime streams (DESIGN.md contract 9): each held connection is a ``Held`` record whose
symbols can change.  ``add_symbols`` puts new symbols on a connection of their kind that
has room, subscribing them on the live socket where the venue allows it
(``Adapter.live_subscribe``), and opens a new connection only for what is left;
``remove_symbols`` unsubscribes them and ends a connection left with none.  A
connection asks the adapter for its URL and subscribe frames again at every reconnect,
so it comes back with its symbols of now.

Failure sorting (``classify``): network errors, handshake refusals, timeouts and
closes are *retry* (reconnect); bad frames are counted and skipped; a bug raises.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque

import aiohttp

from ingest.capture import CaptureWriter
from ingest.events import (DepthConnected, DepthDisconnected, DepthOpen, DepthSilent, Malformed, SnapshotOverdue,
                           SnapshotRequest, StreamGroup, TradesBackfill, TradesWanted, VenueNotice)
from ingest.feed import P, FeedBooks
from ingest.health import Health, describe_failure
from ingest.sync import Action
from ingest.retry import WeightBudget, backoff
from ingest.wsclient import HandshakeFailed, WsConnection, open_connection
from pipeline.errors import MalformedFrame, SnapshotError
from pipeline.lag import LagWindow

log = logging.getLogger(__name__)

SNAPSHOT_WORKERS = 2
SNAPSHOT_TIMEOUT = 10.0
STREAM_SNAPSHOT_TIMEOUT = 10.0  # in-stream venues: no snapshot this long after (re)subscribing -> reconnect
MAX_RESUBSCRIBES = 100  # per connection (OKX allows 480 subscribe requests an hour); then reconnect
QUIET_SNAPSHOT_AFTER = 2.0  # fetch a snapshot even if a quiet symbol sent no diff yet
STATS_INTERVAL = 0.25
SYMBOLS_CHANGED = "symbols changed"  # a reconnect (at once) that takes up the connection's new symbols
RETRY_ERRORS = (OSError, HandshakeFailed, asyncio.TimeoutError, ConnectionError)
# A REST answer larger than this is refused unread (the largest real one, a 5000-level Binance
# depth, is ~0.3 MB; a 50 MB body used to be read whole into memory)
MAX_REST_BYTES = 16 * 2**20
BACKFILL_ATTEMPTS = 4  # REST failures in a row before a trade-id gap's backfill gives up (what it has goes out)
BACKFILL_GAPS_MAX = 1000  # gaps waiting for a backfill; past it the oldest give up at once (a storm of gaps)


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The response body, or None when it is (or announces itself) larger than ``limit``."""
    if resp.content_length is not None and resp.content_length > limit:
        return None
    body = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class Held:
    """One connection the runner holds: its kind, the symbols it should carry (``want``), the
    symbols subscribed on the socket now (``active``) and the StreamGroup of its last attempt.
    Duck-types a StreamGroup (kind, url, symbols, subscribe) for health records and adapters."""

    def __init__(self, group: StreamGroup):
        self.group = group
        self.kind = group.kind
        self.want: list[str] = list(group.symbols)
        self.active: set[str] = set()

    @property
    def url(self) -> str:
        return self.group.url

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self.want)

    @property
    def subscribe(self) -> tuple[str, ...]:
        return self.group.subscribe


class Runner:
    """Connections, snapshots and timers of one exchange."""

    def __init__(self, exchange_config, adapter, feed: FeedBooks, stop: asyncio.Event,
                 rng: random.Random | None = None, capture: CaptureWriter | None = None):
        self.config = exchange_config
        self.adapter = adapter
        self.feed = feed
        self.stop = stop
        self.rng = rng or random.Random()
        self.header = feed.writer.header
        self.traits = adapter.traits
        self.budget = WeightBudget(self.traits.rest_weight_limit)
        self._snap_queue: deque[str] = deque()
        # symbol -> the depth connection (generation, _connects) a queued or running fetch is for
        self._snap_pending: dict[str, int] = {}
        self._connects: dict[str, int] = {}  # symbol -> depth connections it was subscribed on so far
        self._snap_event = asyncio.Event()
        self._gap_queue: deque[TradesWanted] = deque()  # trade-id gaps to backfill over REST, oldest first
        self._gap_event = asyncio.Event()
        self._logged_kinds: set[str] = set()
        self.connections: dict[Held, WsConnection] = {}
        self.held: list[Held] = []
        self._tg: asyncio.TaskGroup | None = None
        self.session: aiohttp.ClientSession | None = None
        self.in_stream = self.traits.in_stream
        self.app_ping = self.traits.app_ping
        self.app_pong = self.traits.app_pong
        self._depth_group: dict[str, Held] = {}
        self._resubscribes: dict[Held, int] = {}
        self._frames = [0]  # frames received, copied to the shm header by the stats loop
        self._last_data: dict[Held, list[int]] = {}  # per connection: receive time of its last message
        self.stale_after_ns = feed.stale_after_ms * 1_000_000  # 0: no bound watched by change (FeedBooks)
        self.health = Health(feed.writer)  # failure counts and last errors, for `pipeline status`
        self.capture = capture  # raw recording ([sinks.raw], ingest/capture.py), or None

    # ---------------------------------------------------------------- frames
    def _frame_handler(self, group: Held):
        parse = self.feed.parse_frame   # the adapter's, with bad frames as events
        receive = self.feed.receive
        carry_out = self._carry_out
        counts = self._frames  # [frames]: a list cell is cheaper than a shm word per frame
        last = self._last_data.setdefault(group, [0])

        def on_frame(data: bytes, recv_ns: int) -> None:
            counts[0] += 1
            last[0] = recv_ns
            out = receive(parse(data, recv_ns))
            if out:
                carry_out(out, group)

        if self.capture is None:
            return on_frame
        record, url = self.capture.append, group.url

        def on_frame_recorded(data: bytes, recv_ns: int) -> None:
            record((recv_ns, "ws", url, data))  # a reference: the frame's bytes are not copied
            counts[0] += 1
            out = receive(parse(data, recv_ns))
            if out:
                carry_out(out, group)

        return on_frame_recorded

    def _carry_out(self, requests, group: Held | None = None) -> None:
        """What the feed asked for: snapshots (REST fetch or resubscribe) and the venue's
        notices about the connection ``group`` (None: outside any connection)."""
        for req in requests:
            if type(req) is VenueNotice:
                if group is not None:
                    self._on_notice(group, req)
            elif type(req) is TradesWanted:
                self._gap_queue.append(req)
                if len(self._gap_queue) > BACKFILL_GAPS_MAX:
                    old = self._gap_queue.popleft()
                    self._carry_out(self.feed.receive(TradesBackfill(old.symbol, old.first_id, old.last_id, [],
                                                                     time.time_ns(), "too many gaps waiting")) or ())
                self._gap_event.set()
            elif req.action is Action.FETCH_SNAPSHOT:
                self._queue_snapshot(req.symbol)
            elif req.action is Action.RESUBSCRIBE:
                self._resubscribe(req.symbol)
            else:
                raise AssertionError(f"unknown request {req!r}")

    def _on_notice(self, group: Held, ev: VenueNotice) -> None:
        if ev.kind == "server_shutdown":
            log.info("%s: venue announced shutdown; reconnecting early", group.kind)
            conn = self.connections.get(group)
            if conn is not None:
                conn.close(1000, "server shutdown notice")
        elif ev.kind == "ping" and self.app_pong:
            conn = self.connections.get(group)
            if conn is not None:
                conn.send_text(self.app_pong)
        elif ev.kind == "error":
            self._log_once(f"venue-error:{ev.detail}", "%s: venue error reply: %s", group.kind, ev.detail)

    def _log_once(self, kind: str, fmt: str, *args) -> None:
        if kind not in self._logged_kinds and len(self._logged_kinds) < 1000:
            self._logged_kinds.add(kind)
            log.warning(fmt, *args)

    # ----------------------------------------------------------- connections
    async def _hold(self, held: Held) -> None:
        """Keep one connection open while the runner runs and the connection has symbols."""
        delays = backoff(rng=self.rng)
        handler = self._frame_handler(held)
        attempt = 0
        self.health.add_connection(held)
        while not self.stop.is_set() and held.want:
            attempt += 1
            conn = None
            reason = "?"
            if held.group.symbols != tuple(held.want):  # symbols changed since the last attempt
                held.group = self.adapter.stream_group(held.kind, tuple(held.want))
            group = held.group
            held.active = set(group.symbols)
            self.health.connecting(held)
            self.adapter.connection_opened(group)
            self._resubscribes[held] = 0
            if group.kind == "depth":
                # buffering starts before the handshake: frames that arrive in the same
                # read as the server's 101 response are dispatched at once
                self._depth_connected(group.symbols, held, opening=True)
            try:
                conn = await open_connection(group.url, handler, priority=(group.kind == "trades"))
                self._last_data[held][0] = time.time_ns()  # the stall clock starts at the open
                installs = self.feed.installs
                self.connections[held] = conn
                self.header[P["connections"]] += 1
                self.health.connection_opened(held)
                if group.kind == "depth":  # status says "connected" from now on, not during the handshake
                    self.feed.receive(DepthOpen(group.symbols))
                if attempt > 1:
                    self.header[P["reconnects"]] += 1
                log.info("%s connection open (%d symbols): %s", group.kind, len(group.symbols), group.url[:120])
                if tuple(held.want) != group.symbols:
                    # symbols added or removed during the handshake: connect again at once with them
                    # (the feed heard DepthConnected for this attempt's symbols only)
                    reason = SYMBOLS_CHANGED
                else:
                    self._subscribe(conn, group.subscribe)
                    if group.kind == "depth":
                        if self.in_stream:  # (paced subscribes take longer to all be sent)
                            pacing = len(group.subscribe) * self.traits.subscribe_interval_s
                            self._expect_stream_snapshots(held, conn, group.symbols, pacing)
                        else:
                            asyncio.get_running_loop().call_later(QUIET_SNAPSHOT_AFTER, self._quiet_snapshots, held,
                                                                  group.symbols)
                    opened_at = time.monotonic()
                    reason = await self._watch(conn)
                    # The backoff starts over once a connection proved healthy: messages flowed and,
                    # on a depth connection, a book went live on it (or it simply lasted 30 s).  A
                    # venue that accepts and drops at once keeps backing off (issue 19: resetting only
                    # after 30 s left feeds live 19.5% of the time under a disconnect every 2 s).
                    if time.monotonic() - opened_at > 30 or (
                            conn.frames and (group.kind != "depth" or self.feed.installs > installs)):
                        delays = backoff(rng=self.rng)
            except RETRY_ERRORS as exc:
                reason = self.health.connect_failed(held, exc) if conn is None else describe_failure(exc)
            finally:
                if conn is not None:
                    conn._queue.clear()
                    conn.abort()
                    self.connections.pop(held, None)
                if group.kind == "depth":
                    gone = tuple(held.active)
                    self._carry_out(self.feed.receive(DepthDisconnected(gone, reason, time.time_ns())) or ())
                held.active = set()
            if self.stop.is_set() or not held.want:
                break
            if conn is not None and reason not in ("max age", SYMBOLS_CHANGED):
                self.health.connection_lost(held, reason)
            delay = 0.0 if reason in ("max age", SYMBOLS_CHANGED) else next(delays)
            log.warning("%s connection down (%s); reconnecting in %.2fs", group.kind, reason, delay)
            try:
                await asyncio.wait_for(self.stop.wait(), delay)
            except asyncio.TimeoutError:
                pass
        if held in self.held and not held.want:
            self.held.remove(held)
            log.info("%s connection closed: no symbols left", held.kind)

    # ------------------------------------------------------- runtime streams
    def _sync_held(self, held: Held, conn: WsConnection) -> None:
        """Bring the open connection's subscriptions to ``held.want``: unsubscribe what went,
        subscribe what came (the feed hears DepthConnected first, so their diffs buffer)."""
        drop = tuple(s for s in held.active if s not in held.want)
        add = tuple(s for s in held.want if s not in held.active)
        if not drop and not add:
            return
        if not held.want:
            conn.close(1000, "no symbols left")
            return
        if drop:
            frames = self.adapter.live_subscribe(held.kind, drop, subscribe=False)
            held.active.difference_update(drop)
            if not frames:  # the venue cannot: the connection comes back without them
                conn.close(1000, "symbols removed")
                return
            self._subscribe(conn, frames)
        if add:
            frames = self.adapter.live_subscribe(held.kind, add, subscribe=True)
            if not frames:
                conn.close(1000, "symbols added")
                return
            if held.kind == "depth":
                self._depth_connected(add, held)
            held.active.update(add)
            self._subscribe(conn, frames)
            if held.kind == "depth":
                if self.in_stream:
                    self._expect_stream_snapshots(held, conn, add, len(frames) * self.traits.subscribe_interval_s)
                else:
                    asyncio.get_running_loop().call_later(QUIET_SNAPSHOT_AFTER, self._quiet_snapshots, held, add)

    def add_symbols(self, symbols: tuple[str, ...]) -> None:
        """Connect symbols the feed has just added: onto connections with room where the venue
        subscribes live, on new connections otherwise."""
        live = self.adapter.supports_live_subscribe
        for kind in self.adapter.stream_kinds():
            per = self.adapter.symbols_per_connection(kind)
            left = list(symbols)
            if live:
                for held in self.held:
                    if held.kind != kind or not left or len(held.want) >= per:
                        continue
                    take, left = left[:per - len(held.want)], left[per - len(held.want):]
                    held.want.extend(take)
                    conn = self.connections.get(held)
                    if conn is not None:
                        self._sync_held(held, conn)
            for i in range(0, len(left), per):
                held = Held(self.adapter.stream_group(kind, tuple(left[i:i + per])))
                self.held.append(held)
                self._tg.create_task(self._hold(held), name=f"ws-{kind}")

    def remove_symbols(self, symbols: tuple[str, ...]) -> None:
        """Unsubscribe symbols the feed has just removed; a connection left with none closes."""
        gone = set(symbols)
        for held in list(self.held):
            if not gone.intersection(held.want):
                continue
            held.want = [s for s in held.want if s not in gone]
            conn = self.connections.get(held)
            if conn is not None:
                self._sync_held(held, conn)
        for s in symbols:
            self._depth_group.pop(s, None)
            self._snap_pending.pop(s, None)

    async def instrument_listed(self, symbol: str) -> bool | None:
        """Whether the venue lists ``symbol`` (its instrument list; True when it has none to
        ask); None when the venue could not be asked (network error, throttled)."""
        req = self.adapter.instrument_request(symbol)
        if req is None:
            return True
        if self.session is None:
            return None
        self.header[P["rest_requests"]] += 1
        self.budget.spend(req.weight, time.monotonic())
        try:
            async with self.session.request(req.method, req.url, data=req.body,
                                            timeout=aiohttp.ClientTimeout(total=SNAPSHOT_TIMEOUT)) as resp:
                body = await resp.read()
                if resp.status == 200 and self.capture is not None and req.method == "GET":
                    self.capture.rest(req.url, body, time.time_ns())
                if resp.status in (429, 418) or resp.status >= 500:
                    return None
                return self.adapter.instrument_listed(symbol, resp.status, body)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning("instrument list for %s: %s: %s", symbol, type(exc).__name__, exc)
            return None

    def _subscribe(self, conn: WsConnection, frames) -> None:
        """Send subscribe frames, spaced by the adapter's ``traits.subscribe_interval_s`` where the
        venue limits client messages (Lighter: 200 a minute, 50 unacknowledged)."""
        gap = self.traits.subscribe_interval_s
        if not gap:
            for frame in frames:
                self._send(conn, frame)
            return
        loop = asyncio.get_running_loop()
        for i, frame in enumerate(frames):
            loop.call_later(i * gap, lambda f=frame: conn.transport is not None and not conn.transport.is_closing()
                            and self._send(conn, f))

    def _send(self, conn: WsConnection, text: str) -> None:
        """A (re)subscribe frame to the venue, recorded when recording."""
        conn.send_text(text)
        if self.capture is not None:
            self.capture.ws_out(conn.url, text)

    async def _watch(self, conn: WsConnection) -> str:
        """Wait until the connection ends; ping it, and cut it when dead, idle or old."""
        cfg = self.config
        born = time.monotonic()
        pinged_ns = 0
        stop_wait = asyncio.ensure_future(self.stop.wait())
        try:
            while True:
                done, _ = await asyncio.wait({conn.closed, stop_wait}, timeout=cfg.ping_interval_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                if conn.closed in done:
                    return conn.closed.result()
                if stop_wait in done:
                    conn.close(1000, "shutting down")
                    return "shutdown"
                now_ns = time.time_ns()
                if pinged_ns and conn.last_frame_ns < pinged_ns:
                    # nothing at all (not even the pong) since our last ping
                    return f"no reply to ping within {cfg.ping_interval_s:g}s"
                if (now_ns - conn.last_frame_ns) / 1e9 > cfg.idle_timeout_s:
                    return f"idle for {cfg.idle_timeout_s:g}s"
                if time.monotonic() - born > cfg.max_connection_age_s:
                    conn.close(1000, "max age")
                    return "max age"
                pinged_ns = now_ns
                if self.app_ping:
                    conn.send_text(self.app_ping)  # the venue's keepalive (OKX "ping", Bybit op ping, ...)
                else:
                    conn.ping()
        finally:
            stop_wait.cancel()

    def _quiet_snapshots(self, held: Held, symbols: tuple[str, ...]) -> None:
        symbols = tuple(s for s in symbols if s in held.active)
        if symbols:
            self._carry_out(self.feed.receive(SnapshotOverdue(symbols)) or (), held)

    # -------------------------------------------------------------- snapshots
    def _depth_connected(self, symbols, group: Held, opening: bool = False) -> None:
        """The feed hears that ``symbols`` are (re)subscribed on a depth connection (``opening``: its
        handshake is still under way): a REST answer asked for before this is moot (``_fetch_snapshot``)."""
        for s in symbols:
            self._connects[s] = self._connects.get(s, 0) + 1
        self._carry_out(self.feed.receive(DepthConnected(tuple(symbols), open=not opening)) or (), group)

    def _queue_snapshot(self, symbol: str) -> None:
        """A fetch for the symbol's current connection, once however often it is asked; a fetch
        still under way for an earlier connection does not count (its answer will be dropped)."""
        gen = self._connects.get(symbol, 0)
        if self._snap_pending.get(symbol) == gen:
            return
        self._snap_pending[symbol] = gen
        if symbol not in self._snap_queue:
            self._snap_queue.append(symbol)
            self._snap_event.set()

    def _resubscribe(self, symbol: str) -> None:
        """In-stream venues resync a symbol by subscribing again (a fresh snapshot follows);
        a venue without that, a connection that used up its budget, or a snapshot that
        does not come within STREAM_SNAPSHOT_TIMEOUT: reconnect."""
        group = self._depth_group.get(symbol)
        conn = self.connections.get(group) if group is not None else None
        if conn is None:
            return  # not connected: the next connection subscribes afresh
        frames = self.adapter.resubscribe(symbol)
        count = self._resubscribes.get(group, 0) + 1
        self._resubscribes[group] = count
        if not frames or count > MAX_RESUBSCRIBES:
            log.warning("%s: resync by reconnecting (%s)", symbol,
                        "no resubscribe for this venue" if not frames else f"{count} resubscribes on this connection")
            conn.close(1000, "resync")
            return
        for frame in frames:
            self._send(conn, frame)
        self._expect_stream_snapshots(group, conn, (symbol,))

    def _expect_stream_snapshots(self, group: Held, conn: WsConnection, symbols, extra_s: float = 0.0) -> None:
        for sym in symbols:
            self._depth_group[sym] = group

        def check() -> None:
            if self.connections.get(group) is not conn:
                return
            late = [s for s in symbols if s in group.active and self.feed.waiting(s)]
            if late:
                log.warning("no snapshot for %s within %.0fs of subscribing; reconnecting",
                            ", ".join(late[:5]), STREAM_SNAPSHOT_TIMEOUT)
                conn.close(1000, "no snapshot")

        asyncio.get_running_loop().call_later(STREAM_SNAPSHOT_TIMEOUT + extra_s, check)

    async def _snapshot_worker(self, session: aiohttp.ClientSession) -> None:
        fails = backoff(initial=0.5, cap=30.0, rng=self.rng)
        while not self.stop.is_set():
            if not self._snap_queue:
                self._snap_event.clear()
                await self._snap_event.wait()
                continue
            symbol = self._snap_queue.popleft()
            req = self.adapter.snapshot_request(symbol)
            wait = self.budget.delay(req.weight, time.monotonic())
            if wait > 0:
                self.header[P["rest_throttled"]] += 1
                self._snap_queue.appendleft(symbol)
                await asyncio.sleep(min(wait, 5.0))
                continue
            self.budget.spend(req.weight, time.monotonic())
            self.header[P["rest_requests"]] += 1
            ok = await self._fetch_snapshot(session, symbol, req, self._connects.get(symbol, 0))
            if ok:  # (the feed may have asked again already: _fetch_snapshot cleared pending first)
                fails = backoff(initial=0.5, cap=30.0, rng=self.rng)
            else:
                self._snap_queue.append(symbol)
                await asyncio.sleep(next(fails))

    async def _fetch_snapshot(self, session: aiohttp.ClientSession, symbol: str, req: SnapshotRequest,
                              gen: int = 0) -> bool:
        """Fetch one snapshot for the symbol's depth connection ``gen`` and hand it to the feed.
        False means: try again later."""
        body = await self._rest(session, req, symbol)
        if self._connects.get(symbol, 0) != gen:
            # the connection was replaced while the request was under way: the answer may predate
            # the new stream, and with nothing buffered yet it would be installed as a live book
            # and then break at the first diff (a counted gap); the new connection asks anew
            if self._snap_pending.get(symbol) == gen:
                del self._snap_pending[symbol]
            log.info("snapshot %s: asked before its connection was replaced; dropped", symbol)
            return True
        if body is None:
            return False
        recv_ns = time.time_ns()
        try:
            snap = self.adapter.parse_snapshot(symbol, body, recv_ns)
        except MalformedFrame as exc:
            self.health.rest_failed(symbol, f"unusable snapshot: {exc}")
            log.warning("snapshot %s unusable: %s", symbol, exc)
            return False
        if not snap.bids and not snap.asks:
            # a venue's REST book of a listed symbol is never empty: installing it would read live
            # until the BBO check rejected it (issue 19)
            self.health.rest_failed(symbol, "unusable snapshot: empty book")
            log.warning("snapshot %s unusable: empty book", symbol)
            return False
        # the feed may ask for another (too old): _queue_snapshot re-queues it
        self._snap_pending.pop(symbol, None)
        self._carry_out(self.feed.receive(snap) or ())
        return True

    async def _backfill_worker(self, session: aiohttp.ClientSession) -> None:
        """Trade-id gaps (``TradesWanted``), oldest first: the missing trades over REST, a page at a
        time within the weight budget and after the book snapshots waiting (books come first), then
        handed to the feed as one ``TradesBackfill`` (what came, and why it stopped short if it did)."""
        while not self.stop.is_set():
            if not self._gap_queue:
                self._gap_event.clear()
                await self._gap_event.wait()
                continue
            want = self._gap_queue.popleft()
            trades: list = []
            error = ""
            next_id, fails = want.first_id, 0
            delays = backoff(initial=0.5, cap=10.0, rng=self.rng)
            while next_id <= want.last_id and not self.stop.is_set():
                req = self.adapter.trades_request(want.symbol, next_id, want.last_id - next_id + 1)
                if req is None:
                    error = "the venue lists no trades by id"
                    break
                wait = self.budget.delay(req.weight, time.monotonic())
                if wait > 0 or self._snap_queue:
                    if wait > 0:
                        self.header[P["rest_throttled"]] += 1
                    await asyncio.sleep(min(max(wait, 0.05), 5.0))
                    continue
                self.budget.spend(req.weight, time.monotonic())
                self.header[P["rest_requests"]] += 1
                body = await self._rest(session, req, want.symbol)  # (a failure counts on that feed)
                page = None
                if body is not None:
                    try:
                        page = self.adapter.parse_trades(want.symbol, body, time.time_ns())
                    except MalformedFrame as exc:
                        self.health.rest_failed(want.symbol, f"unusable trades: {exc}")
                        log.warning("REST trades %s unusable: %s", want.symbol, exc)
                if page is None:
                    fails += 1
                    if fails >= BACKFILL_ATTEMPTS:
                        error = f"REST failed {fails} times"
                        break
                    await asyncio.sleep(next(delays))
                    continue
                fails = 0
                ids = [int(t.trade_id) for t in page if t.trade_id.isdigit()]
                trades.extend(page)
                if not ids or max(ids) < next_id:
                    error = f"the venue has no trades from id {next_id}"  # (too old for it, or never made)
                    break
                next_id = max(ids) + 1
            self._carry_out(self.feed.receive(TradesBackfill(want.symbol, want.first_id, want.last_id, trades,
                                                             time.time_ns(), error)) or ())

    async def _rest(self, session: aiohttp.ClientSession, req: SnapshotRequest, what: str) -> bytes | None:
        """One REST request (GET, or POST with a JSON body) under the venue's rules:
        weight header, 429/418 + Retry-After.  The body, or None (counted, logged)."""
        header = self.header
        weight_header = self.traits.used_weight_header
        try:
            async with session.request(req.method, req.url, data=req.body,
                                       headers={"Content-Type": "application/json"} if req.body else None,
                                       timeout=aiohttp.ClientTimeout(total=SNAPSHOT_TIMEOUT)) as resp:
                used = resp.headers.get(weight_header) if weight_header else None
                if used is not None and used.isdigit():
                    self.budget.observe_used(int(used), time.monotonic())
                    header[P["rest_weight_used"]] = int(used)
                if resp.status in (429, 418):
                    retry_after = resp.headers.get("Retry-After", "")
                    secs = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else 60.0
                    self.budget.penalize(secs, time.monotonic())
                    header[P["rest_throttled"]] += 1
                    self.health.rest_failed(what, f"HTTP {resp.status}, retry after {secs:g}s")
                    log.warning("REST %s: HTTP %d, backing off %.1fs (Retry-After)", what, resp.status, secs)
                    return None
                body = await _read_bounded(resp, MAX_REST_BYTES)
                if body is None:
                    self.health.rest_failed(what, f"body over {MAX_REST_BYTES >> 20} MiB: refused")
                    log.warning("REST %s: body over %d bytes, refused", what, MAX_REST_BYTES)
                    return None
                if resp.status == 200 and self.capture is not None and req.method == "GET":
                    # capture-format.md has GET bodies only: a POST's (Hyperliquid /info) is not kept
                    self.capture.rest(req.url, body, time.time_ns())
                if resp.status != 200:
                    self.health.rest_failed(what, f"HTTP {resp.status}: {body[:60].decode('utf-8', 'replace')}")
                    log.warning("REST %s: HTTP %d: %s", what, resp.status, body[:200])
                    return None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            self.health.rest_failed(what, describe_failure(exc))
            log.warning("REST %s failed: %s: %s", what, type(exc).__name__, exc)
            return None
        return body

    async def _discover(self, session: aiohttp.ClientSession) -> None:
        """Venue metadata the adapter needs before subscribing (Lighter market ids),
        retried with backoff until it arrives or the runner stops."""
        req = self.adapter.discovery_request()
        if req is None:
            return
        delays = backoff(initial=0.5, cap=30.0, rng=self.rng)
        while not self.stop.is_set():
            self.header[P["rest_requests"]] += 1
            body = await self._rest(session, req, "discovery")
            if body is not None:
                try:
                    self.adapter.apply_discovery(body)  # a ConfigError (unknown symbol) stops the process
                except (MalformedFrame, SnapshotError) as exc:
                    self.health.rest_failed(what="discovery", text=f"unusable answer: {exc}")
                    log.warning("discovery answer unusable, retrying: %s", exc)
                else:
                    self.feed.refresh_instruments()  # names known only now (Lighter spot markets)
                    return
            try:
                await asyncio.wait_for(self.stop.wait(), next(delays))
            except asyncio.TimeoutError:
                pass

    # ------------------------------------------------------------------ timers
    async def _stats_loop(self) -> None:
        """Heartbeat, event-loop lag, the feed's counters and publish-lag figures into shared
        memory (lags: p50, p99 and max over the last minute, pipeline/lag.py)."""
        header = self.header
        loop_lag = LagWindow()
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(self.stop.wait(), STATS_INTERVAL)
            except asyncio.TimeoutError:
                pass
            loop_lag.samples.append(max(0, int((time.monotonic() - t0 - STATS_INTERVAL) * 1e6)))
            loop_lag.roll()
            header[P["frames"]] = self._frames[0]
            header[P["loop_lag_us"]], header[P["loop_lag_p99_us"]], header[P["loop_lag_max_us"]] = loop_lag.figures()
            self.feed.writer.heartbeat()
            if self.stale_after_ns:
                self._check_stalls(time.time_ns())
            self.feed.copy_stats()
            self.feed.tick(time.time_ns())  # closes the bars of quiet symbols
            if self.capture is not None:
                self.capture.trim()  # bounded even when its writer thread is stuck on a disk

    async def _poll_loop(self, session: aiohttp.ClientSession) -> None:
        """REST values no stream carries (Binance USD-M open interest), every
        ``open_interest_interval_s``, after book snapshots in the weight budget: a request that
        would exceed it waits for the next round."""
        polls = self.adapter.poll_requests()
        interval = self.config.open_interest_interval_s
        while polls and not self.stop.is_set():
            for symbol, req in polls:
                if self.stop.is_set() or self.budget.delay(req.weight, time.monotonic()) > 0 or self._snap_queue:
                    break
                self.budget.spend(req.weight, time.monotonic())
                self.header[P["rest_requests"]] += 1
                body = await self._rest(session, req, f"{symbol} poll")
                if body is None:
                    continue
                try:
                    ev = self.adapter.parse_poll(symbol, body, time.time_ns())
                except MalformedFrame as exc:
                    ev = Malformed(symbol, f"polled: {exc}")
                self._carry_out(self.feed.receive(ev) or ())
            try:
                await asyncio.wait_for(self.stop.wait(), interval)
            except asyncio.TimeoutError:
                pass

    async def _staleness_loop(self, limit_s: float) -> None:
        """Cadence streams watched by push (``traits.stale_watch``): a live book with no depth
        frame for ``limit_s`` is marked stale and resubscribed (checked four times per limit)."""
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), limit_s / 4)
            except asyncio.TimeoutError:
                now_ns = time.time_ns()
                silent = self.feed.silent_books(limit_s, now_ns)
                if silent:
                    self._carry_out(self.feed.receive(DepthSilent(silent, limit_s, now_ns)) or ())

    def _check_stalls(self, now_ns: int) -> None:
        """The cadence watchdog (every stats tick, when the venue has a cadence bound): a depth
        connection with no message for ``stale_after_s`` has stalled and is reconnected (its
        books go stale at once); a live book with no change for that long is stale and resyncs
        (FeedBooks.check_ages).  Pings alone took 10-20 s to find a stall (issue 19)."""
        limit = self.stale_after_ns
        for held, conn in list(self.connections.items()):
            if held.kind != "depth" or conn.closed.done():
                continue
            silent = now_ns - self._last_data[held][0]
            if silent > limit:
                for sym in held.active:
                    if sym in self.feed.feeds:
                        self.feed.feeds[sym].counts.stalls += 1
                conn.closed.set_result(f"stalled: no message for {silent / 1e9:.1f}s "
                                       f"(stale_after_s {limit / 1e9:g})")
                conn.abort()
        out = self.feed.check_ages(now_ns)
        if out:
            self._carry_out(out)

    async def _republish_loop(self) -> None:
        """Periodic bus snapshots, for consumers that cannot read shared memory."""
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), self.config.snapshot_interval_s)
            except asyncio.TimeoutError:
                self.feed.republish_all()

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=SNAPSHOT_WORKERS * 2)
        async with aiohttp.ClientSession(connector=connector) as session:
            self.session = session
            await self._discover(session)
            if self.stop.is_set():
                return
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                groups = self.adapter.stream_groups()
                # trades first: their connections open before the depth ones
                for group in sorted(groups, key=lambda g: g.kind != "trades"):
                    held = Held(group)
                    self.held.append(held)
                    tg.create_task(self._hold(held), name=f"ws-{group.kind}")
                for _ in range(SNAPSHOT_WORKERS):
                    tg.create_task(self._snapshot_worker(session), name="snapshots")
                tg.create_task(self._stats_loop(), name="stats")
                tg.create_task(self._republish_loop(), name="republish")
                tg.create_task(self._poll_loop(session), name="poll")
                if self.feed.trade_backfill_max:
                    tg.create_task(self._backfill_worker(session), name="trade-backfill")

                if self.feed.push_stale_after_s:
                    tg.create_task(self._staleness_loop(self.feed.push_stale_after_s), name="staleness")
                await self.stop.wait()
                self._snap_event.set()
                self._gap_event.set()
