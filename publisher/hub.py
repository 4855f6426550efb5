"""The fan-out: bus messages in, each client's outbox filled according to its session.

No sockets and no event loop of its own: the bus reader calls ``on_trade`` / ``on_l2``,
the server calls ``connect`` / ``receive`` / ``next_frame`` / ``disconnect``, and timers
go through the ``call_later`` it is given.  So the routing is tested without a network.

Isolation (DESIGN.md failure model): nothing here ever waits for a client.  Pushing
to an outbox is O(1) and wakes that client's sender; a client that is slow only grows
its own outbox, whose L2 lane conflates and whose trade lane, when full, gets the
client closed (1013) -- never a wait, never a dropped trade that the client is not
told about.  Trades are rendered once and the same bytes go to every subscriber; a
delta is rendered once per depth; a snapshot is rendered when a client is ready for
it, from the latest view, with that moment as its ``time_published``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import Any, Callable

from publisher import render
from publisher.mirror import BookMirror, Step
from publisher.outbox import MAX_CONTROL, Frame, Outbox
from pipeline import schema
from publisher.requests import OTHER_CHANNELS, Mode, Ping, RequestError, Subscribe, parse_request
from publisher.session import BookSub, Change, Phase, Session, Sub, Verdict
from publisher.settings import Settings

log = logging.getLogger(__name__)

Key = tuple[str, str]

CLOSE_POLICY = 1008  # RFC 6455 7.4.1: policy violation (request flood)
# A rendered snapshot is shared while the book has not moved, for at most this long: its
# time_published is that of the first rendering, so the window bounds how early a stamp can
# be (1 ms: clients whose throttle timers fire together still share one rendering).
SNAPSHOT_REUSE_US = 1_000
CLOSE_TRY_AGAIN = 1013  # RFC 6455 / IANA registry: try again later (too slow for its trades)
# A delta client's book whose bus subscription just began: its snapshot waits for the first message
# (the subscription is then in effect: nothing after the snapshot can be missing) at most this long;
# a quiet book is then loaded from shared memory (a message missed meanwhile shows as a gap: resync).
JOIN_WAIT_S = 0.25
JOIN_MAX_S = 5.0  # ... or, while shared memory shows the book moving (messages are due), up to this long


class NoMetrics:
    """Latency observers the hub calls; publisher.metrics provides the Prometheus one."""

    def bus_delay(self, kind: str, exchange: str, seconds: float) -> None:
        pass


class Client:
    """The hub's record of one connection; the server owns the socket behind ``wake``/``close``/``try_send``.

    ``try_send(frame, kind, received_us)`` writes a frame at once when the client's socket
    takes it without waiting (False otherwise); the hub uses it only when nothing is queued
    ahead of the frame, so order is kept and a fast client costs no task switch per frame.
    """

    __slots__ = ("id", "peer", "session", "outbox", "wake", "close", "try_send", "connected_us", "closing",
                 "unread_pongs", "holding")

    def __init__(self, client_id: int, peer: str, session: Session, outbox: Outbox, wake: Callable[[], None],
                 close: Callable[[int, str], None], connected_us: int,
                 try_send: Callable[[bytes, str, int], bool] | None = None):
        self.id = client_id
        self.peer = peer
        self.session = session
        self.outbox = outbox
        self.wake = wake
        self.close = close
        self.try_send = try_send
        self.connected_us = connected_us
        self.closing: str | None = None  # why the hub closed it: "slow", "flood"
        self.unread_pongs = 0  # pongs written while its socket was over the write limit (not reading)
        # its sender holds frames taken from the outbox, not yet written (a batch): nothing may be
        # written to its socket ahead of them, so the bus path queues instead of writing directly
        self.holding = False

    def __repr__(self) -> str:
        return f"<client {self.id} {self.peer}>"


class L2Topics:
    """Which L2 topics the publisher's bus reader takes (docs/websocket.md "How the publisher reads").

    An exchange starts *whole*: its ``l2.EX.`` prefix, as the reader subscribed it.  Once its shared
    memory can be read (``to_shm``), the prefix is dropped and only exact topics ``l2.EX.SYMBOL`` are
    taken, each for reasons: ``deltas`` (a delta client follows the book) and ``learn`` (no message of
    the book was seen yet: its first one gives the instrument).  A topic goes when its last reason
    does.  ZeroMQ counts subscriptions, so each topic is subscribed once here whatever its reasons.
    The socket calls are the reader's (``subscribe``/``unsubscribe``); none is made for an exchange
    still read whole."""

    def __init__(self, exchanges, subscribe: Callable[[bytes], None], unsubscribe: Callable[[bytes], None]):
        self.whole: set[str] = set(exchanges)
        self._sub, self._unsub = subscribe, unsubscribe
        self.reasons: dict[Key, set[str]] = {}
        self.learning: dict[bytes, Key] = {}  # topic -> key, while "learn" is a reason
        self.changes = 0  # subscribe + unsubscribe calls made

    def want(self, key: Key, reason: str) -> bool:
        """Add a reason; True when this subscribed the topic now (its messages start some time later)."""
        reasons = self.reasons.setdefault(key, set())
        new = not reasons
        reasons.add(reason)
        topic = schema.L2.topic(*key)
        if reason == "learn":
            self.learning[topic] = key
        if new and key[0] not in self.whole:
            self._sub(topic)
            self.changes += 1
            return True
        return False

    def drop(self, key: Key, reason: str) -> None:
        reasons = self.reasons.get(key)
        if reasons is None or reason not in reasons:
            return
        reasons.discard(reason)
        topic = schema.L2.topic(*key)
        if reason == "learn":
            self.learning.pop(topic, None)
        if not reasons:
            del self.reasons[key]
            if key[0] not in self.whole:
                self._unsub(topic)
                self.changes += 1

    def to_shm(self, exchange: str) -> None:
        """Read ``exchange`` by exact topics from now on: subscribe them, then drop the prefix (in this
        order, so a followed book misses nothing)."""
        if exchange not in self.whole:
            return
        self.whole.discard(exchange)
        for key, reasons in self.reasons.items():
            if key[0] == exchange and reasons:
                self._sub(schema.L2.topic(*key))
                self.changes += 1
        self._unsub(schema.L2.subscription(exchange))
        self.changes += 1

    def summary(self) -> dict:
        exact = [k for k, r in self.reasons.items() if r and k[0] not in self.whole]
        return {"whole": sorted(self.whole), "exact": len(exact), "learning": len(self.learning),
                "changes": self.changes}


class Hub:
    def __init__(self, settings: Settings, mirror: BookMirror, call_later: Callable[..., Any],
                 clock: Callable[[], int] = render.now_us, version: str = "0", metrics: Any = None):
        self.settings = settings
        self.limits = settings.limits
        self.mirror = mirror
        self.call_later = call_later
        self.clock = clock
        self.version = version
        self.metrics = metrics or NoMetrics()
        self.clients: dict[int, Client] = {}
        self._next_id = 1
        self.trade_index: dict[Key, set[Client]] = {}
        # the other channels (quotes, derivative_ticker, liquidations, cvd, trade_bars): channel -> key -> clients
        self.other_index: dict[str, dict[Key, set[Client]]] = {c: {} for c in OTHER_CHANNELS}
        self.delta_index: dict[Key, dict[int, dict[Client, BookSub]]] = {}
        self.waiting: dict[Key, dict[Client, BookSub]] = {}  # snapshot-mode subs waiting for a change
        self.feed_states: dict[Key, str] = {}  # last state announced to clients
        self.counts: Counter[str] = Counter()  # connections, trades_in, l2_in, sent_*, bad_requests, ...
        self.disconnects: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._closed_conflations = 0
        self._closed_dropped = 0
        self._snapshots: dict[tuple[Key, int], tuple[tuple, int, tuple[bytes, int, int, int]]] = {}
        # Set by the process to the bus reader's trade drain: called before L2 work done
        # outside the bus pump (snapshot rendering), so no trade waits behind it.
        self.poll_trades: Callable[[], object] = lambda: None
        # L2 from shared memory (``read_l2``): None = every L2 message comes from the bus (tests, gRPC)
        self.l2: L2Topics | None = None
        self._joining: dict[Key, set[Client]] = {}  # delta clients' snapshots waiting for the book's first message
        self._snap_throttles: dict[str, Counter[int]] = {}  # exchange -> throttle_us of its snapshot subs
        self.polls = 0

    # ------------------------------------------------------------------ clients
    def connect(self, peer: str, wake: Callable[[], None], close: Callable[[int, str], None],
                try_send: Callable[[bytes, str, int], bool] | None = None) -> Client:
        now = self.clock()
        cid = self._next_id
        self._next_id += 1
        lim = self.limits
        client = Client(cid, peer, Session(cid, self.settings),
                        Outbox(lim.client_queue, lim.client_l2_queue, lim.client_max_lag_s), wake, close, now,
                        try_send)
        self.clients[cid] = client
        self.counts["connections"] += 1
        feeds = {ex: {"symbols": list(f.symbols), "depth": f.depth, "throttle_ms": f.throttle_ms}
                 for ex, f in self.settings.feeds.items()}
        limits = {"max_request_bytes": lim.max_request_bytes, "max_requests_per_s": lim.max_requests_per_s,
                  "max_subscriptions": lim.max_subscriptions, "min_throttle_ms": lim.min_throttle_ms,
                  "client_queue": lim.client_queue, "client_l2_queue": lim.client_l2_queue,
                  "client_max_lag_s": lim.client_max_lag_s}
        client.outbox.push_control(render.welcome(client_id=cid, version=self.version, feeds=feeds,
                                                  default=client.session.default_summary(), limits=limits,
                                                  published_us=now))
        self._apply(client, [(k, None, s) for k, s in client.session.subs.items()])
        log.info("client %d connected from %s (%d clients)", cid, peer, len(self.clients))
        client.wake()
        return client

    def disconnect(self, client: Client, reason: str = "client") -> None:
        """The connection is gone: forget the client."""
        if self.clients.pop(client.id, None) is None:
            return
        why = client.closing or reason
        self._unindex_all(client)
        if client.closing is None:
            self.disconnects[why] += 1  # (closes the hub decided were counted then)
        self._closed_conflations += client.outbox.conflations
        self._closed_dropped += client.outbox.dropped
        log.info("client %d disconnected (%s) after %.1f s, %d sent, %d conflations (%d clients)", client.id, why,
                 (self.clock() - client.connected_us) / 1e6, client.outbox.sent, client.outbox.conflations,
                 len(self.clients))

    def close_client(self, client: Client, code: int, reason: str, why: str) -> None:
        """Close a client the hub gave up on (the server sends the close frame)."""
        if client.closing is not None:
            return
        client.closing = why
        self.disconnects[why] += 1
        if why == "slow":
            self.counts["undelivered_trades"] += len(client.outbox.trades)
        self._unindex_all(client)
        log.warning("closing client %d (%s): %s", client.id, client.peer, reason)
        client.close(code, reason)

    def _unindex_all(self, client: Client) -> None:
        self._apply(client, [(k, s, None) for k, s in client.session.subs.items()])

    # ----------------------------------------------------------------- requests
    def receive(self, client: Client, frame: str | bytes) -> None:
        """One frame from a client: answer it; a bad one gets an error and the connection stays."""
        if client.closing is not None:
            return
        now = self.clock()
        session = client.session
        if not session.admit(now):
            if session.flooding():
                self.close_client(client, CLOSE_POLICY, "request rate limit exceeded", "flood")
                return
            self.counts["rate_limited"] += 1
            self._control(client, render.error(
                f"rate limit: at most {self.limits.max_requests_per_s:g} requests per second", None, now))
            return
        try:
            req = parse_request(frame, self.settings)
            if isinstance(req, Ping):
                self._control(client, render.reply("pong", req.id, now))
                return
            if isinstance(req, Subscribe):
                changes = session.subscribe(req)
                self._control(client, render.reply("subscribed", req.id, now, **req.summary()))
            else:
                changes = session.unsubscribe(req)
                self._control(client, render.reply("unsubscribed", req.id, now, **req.summary()))
        except RequestError as exc:
            self.counts["bad_requests"] += 1
            self._control(client, render.error(str(exc), exc.request_id, now))
            return
        self._apply(client, changes)

    def ping_received(self, client: Client, backlogged: bool) -> None:
        """A WebSocket ping (control frame) from the client; websockets has already written its pong.

        It counts like a request against the client's rate, and while the client's socket is
        backlogged (``backlogged``: over its write limit, the client is not reading) each pong
        counts against its control lane's bound with the replies queued there.  Over either
        limit the client is closed 1008 (and no longer read), never buffered for."""
        if client.closing is not None:
            return
        self.counts["pings"] += 1
        client.unread_pongs = client.unread_pongs + 1 if backlogged else 0
        if client.unread_pongs + len(client.outbox.control) > MAX_CONTROL:
            self.close_client(client, CLOSE_POLICY, "too many replies unread (pings while not reading)", "flood")
            return
        session = client.session
        if not session.admit(self.clock()):
            self.counts["rate_limited"] += 1
            if session.flooding():
                self.close_client(client, CLOSE_POLICY, "request rate limit exceeded (pings count as requests)",
                                  "flood")

    def _control(self, client: Client, frame: bytes) -> None:
        if client.outbox.push_control(frame):
            client.wake()
        else:
            self.close_client(client, CLOSE_POLICY, "too many requests unanswered", "flood")

    # ------------------------------------------------------------ subscriptions
    def _apply(self, client: Client, changes: list[Change]) -> None:
        """Re-index the client after its subscriptions changed from old to new."""
        for key, old, new in changes:
            if old is not None and old is not new:
                old.cancel_quote_timer()
            had = old is not None and old.trades
            has = new is not None and new.trades
            if had and not has:
                s = self.trade_index.get(key)
                if s is not None:
                    s.discard(client)
            elif has and not had and client.closing is None:
                self.trade_index.setdefault(key, set()).add(client)
            old_others = old.others if old is not None else frozenset()
            new_others = new.others if new is not None and client.closing is None else frozenset()
            if old_others != new_others:
                for channel in old_others - new_others:
                    s = self.other_index[channel].get(key)
                    if s is not None:
                        s.discard(client)
                    client.outbox.drop_latest(channel, key)
                for channel in new_others - old_others:
                    self.other_index[channel].setdefault(key, set()).add(client)
            old_book = old.book if old is not None else None
            new_book = new.book if new is not None else None
            if old_book is new_book:
                continue
            if old_book is not None:
                self._unindex_book(client, key, old_book)
            if new_book is not None and client.closing is None:
                self._index_book(client, key, new_book)

    def _index_book(self, client: Client, key: Key, sub: BookSub) -> None:
        if sub.mode is Mode.DELTAS:
            self.delta_index.setdefault(key, {}).setdefault(sub.depth, {})[client] = sub
            join = self.l2 is not None and self.l2.want(key, "deltas")
            self.mirror.track(key, sub.depth, join=join)
            if join:
                self._joining.setdefault(key, set())
                self.call_later(JOIN_WAIT_S, self._join_timeout, key, self.mirror.shm_mark(key), JOIN_WAIT_S)
        else:
            self._snap_throttles.setdefault(key[0], Counter())[sub.throttle_us] += 1
        sub.phase = Phase.PENDING
        client.outbox.want_snapshot(key)  # every book subscription starts with a snapshot
        client.wake()

    def _unindex_book(self, client: Client, key: Key, sub: BookSub) -> None:
        sub.cancel_timer()
        if sub.mode is Mode.DELTAS:
            by_depth = self.delta_index.get(key, {})
            subs = by_depth.get(sub.depth)
            if subs is not None and subs.pop(client, None) is not None:
                self.mirror.untrack(key, sub.depth)
                if not subs:
                    del by_depth[sub.depth]
                if not self.mirror.mirrored(key):
                    if not by_depth:
                        self.delta_index.pop(key, None)
                    self._joining.pop(key, None)
                    if self.l2 is not None:
                        self.l2.drop(key, "deltas")  # the last delta client of the book left
        else:
            throttles = self._snap_throttles.get(key[0])
            if throttles is not None:
                throttles[sub.throttle_us] -= 1
                if throttles[sub.throttle_us] <= 0:
                    del throttles[sub.throttle_us]
        w = self.waiting.get(key)
        if w is not None:
            w.pop(client, None)
        client.outbox.drop(key)

    # --------------------------------------------------------------- bus input
    def on_trade(self, payload: bytes) -> None:
        t = self.mirror.decode_trade(payload)
        now = self.clock()
        self.counts["trades_in"] += 1
        self.metrics.bus_delay("trade", t.exchange, (now - t.ts_received) / 1e6)
        clients = self.trade_index.get((t.exchange, t.symbol))
        if not clients:
            return
        frame = render.trade(t, now)
        slow = None
        direct = 0
        for c in clients:
            ob = c.outbox
            # nothing that goes before a trade is queued: write it now if the socket takes it
            if (not ob.control and not ob.trades and not c.holding and c.try_send is not None
                    and c.try_send(frame, "trade", t.ts_received)):
                ob.sent += 1
                direct += 1
                continue
            reason = ob.push_trade(frame, t.ts_received, now)
            if reason is None:
                c.wake()
            else:
                slow = slow or []
                slow.append((c, reason))
        self.counts["sent_trade"] += direct
        for c, reason in slow or ():
            self.close_client(c, CLOSE_TRY_AGAIN, reason, "slow")

    def on_other(self, channel: str, kind: schema.EventKind, payload: bytes) -> None:
        """A quote, ticker, liquidation, CVD or trade bar from the bus, to the clients of its channel:
        conflatable kinds into each client's latest lane (a slow client gets the latest state),
        the others (liquidations, bars) with the trades (never conflated)."""
        msg = schema.decoder(kind)(payload)
        now = self.clock()
        self.counts[f"{channel}_in"] += 1
        clients = self.other_index[channel].get((msg.exchange, msg.symbol))
        if not clients:
            return
        frame = render.other(msg, kind.ws_kinds[0], now)
        key = (msg.exchange, msg.symbol)
        slow = None
        for c in clients:
            ob = c.outbox
            if kind.conflatable:
                if channel == "quotes":
                    sub = c.session.subs.get(key)
                    if sub is not None and sub.quote_throttle_us and not self._quote_due(c, key, sub, now):
                        sub.quote_held = (frame, msg.ts_received)  # the latest, sent when the interval ends
                        continue
                ob.push_latest(channel, key, frame, msg.ts_received)
                c.wake()
                continue
            reason = ob.push_trade(frame, msg.ts_received, now)
            if reason is None:
                c.wake()
            else:
                slow = slow or []
                slow.append((c, reason))
        for c, reason in slow or ():
            self.close_client(c, CLOSE_TRY_AGAIN, reason, "slow")

    def on_l2(self, topic: bytes, payload: bytes) -> None:
        self.counts["l2_in"] += 1
        step = self.mirror.apply_l2(topic, payload)
        l2 = self.l2
        if l2 is not None and l2.learning and topic in l2.learning:
            l2.drop(l2.learning[topic], "learn")  # its instrument (if any) is known now
        if step is None:
            return
        now = self.clock()
        book = step.book
        self.metrics.bus_delay("l2", book.exchange, (now - book.ts_received) / 1e6 if book.ts_received else 0.0)
        self._announce_step(step, now)
        by_depth = self.delta_index.get(step.key)
        if by_depth:
            self._send_deltas(step, by_depth)
            if self._joining and step.key in self._joining:
                self._release(step.key)  # the subscription is in effect and the book loaded
        waiting = self.waiting.get(step.key)
        if waiting:
            self._book_changed(step.key, waiting, now)

    # ------------------------------------------------------ L2 from shared memory
    def read_l2(self, subscribe: Callable[[bytes], None], unsubscribe: Callable[[bytes], None]) -> None:
        """Take L2 from the bus only for books delta clients follow; follow the others in shared
        memory, polled once per throttle interval (docs/websocket.md "How the publisher reads").
        ``subscribe``/``unsubscribe`` change the bus reader's L2 subscriptions; the reader starts
        subscribed to every exchange's ``l2.EX.`` prefix."""
        self.l2 = L2Topics(self.settings.feeds, subscribe, unsubscribe)
        for exchange in self.settings.feeds:
            self._poll(exchange)

    def _poll(self, exchange: str) -> None:
        feed = self.settings.feeds.get(exchange)
        l2 = self.l2
        if feed is None or l2 is None:
            return
        if exchange in l2.whole and self.mirror.shm_ready(exchange):
            for sym in feed.symbols:
                key = (exchange, sym)
                if self.mirror.book(*key) is None:
                    l2.want(key, "learn")  # no message seen yet: its first gives the instrument
            l2.to_shm(exchange)
            log.info("%s: L2 from shared memory; the bus only for books delta clients follow", exchange)
        if exchange not in l2.whole:
            self.polls += 1
            self.poll_trades()  # trades waiting on the bus go first
            now = self.clock()
            for step in self.mirror.poll(exchange, feed.symbols):
                self._announce_step(step, now)
                waiting = self.waiting.get(step.key)
                if waiting:
                    self._book_changed(step.key, waiting, now)
        # once per throttle interval: the exchange's, or the shortest a snapshot client asked for
        interval_us = min(self._snap_throttles.get(exchange) or (), default=feed.throttle_ms * 1000)
        self.call_later(min(interval_us, feed.throttle_ms * 1000) / 1e6, self._poll, exchange)

    def _join_timeout(self, key: Key, mark: tuple | None, waited_s: float) -> None:
        if key not in self._joining:
            return
        now_mark = self.mirror.shm_mark(key)
        if now_mark != mark and waited_s < JOIN_MAX_S:
            # the book moves, so messages are due: the subscription has not taken effect yet
            self.call_later(JOIN_WAIT_S, self._join_timeout, key, now_mark, waited_s + JOIN_WAIT_S)
            return
        self.mirror.load(key)  # a quiet book: no message came; shared memory has it
        self._release(key)

    def _release(self, key: Key) -> None:
        """The delta clients' snapshots of a joined book go out now."""
        for c in self._joining.pop(key, ()):
            sub = c.session.book_sub(key)
            if c.closing is None and c.id in self.clients and sub is not None and sub.phase is Phase.PENDING:
                c.outbox.want_snapshot(key)
                c.wake()

    def _send_deltas(self, step: Step, by_depth: dict[int, dict[Client, BookSub]]) -> None:
        key, book = step.key, step.book
        for depth, subs in by_depth.items():
            diff = step.diffs.get(depth)
            continuous = diff is not None
            frame = None
            for c, sub in subs.items():
                verdict = sub.delta(book.epoch, book.seq, continuous)
                if verdict is Verdict.SEND:
                    if frame is None:
                        frame = render.book(key[0], key[1], epoch=book.epoch, seq=book.seq, state=book.state,
                                            depth=depth, bids=diff[0], asks=diff[1], ts_exchange=book.ts_exchange,
                                            ts_received=book.ts_received, published_us=self.clock(), update=True,
                                            instrument=book.instrument)
                    ob = c.outbox
                    if not len(ob) and not c.holding and c.try_send is not None and c.try_send(frame, "l2",
                                                                                           book.ts_received):
                        ob.sent += 1
                        self.counts["sent_l2"] += 1
                        continue
                    for k in ob.push_delta(key, frame, book.ts_received):
                        conflated = c.session.book_sub(k)  # the backlog became snapshot marks
                        if conflated is not None:
                            conflated.resync()
                    c.wake()
                elif verdict is Verdict.RESYNC:
                    c.outbox.want_snapshot(key)
                    c.wake()

    def _book_changed(self, key: Key, waiting: dict[Client, BookSub], now: int) -> None:
        for c, sub in waiting.items():
            due = sub.book_changed(now)
            if due is None:
                continue
            if due == 0:
                c.outbox.want_snapshot(key)
                c.wake()
            else:
                sub.timer = self.call_later((due - now) / 1e6, self._throttle_due, c, key, sub)
        waiting.clear()

    def _throttle_due(self, client: Client, key: Key, sub: BookSub) -> None:
        if client.closing is not None or client.session.book_sub(key) is not sub:
            return
        early_us = sub.last_sent_us + sub.throttle_us - self.clock()
        if early_us > 0:  # event-loop timers round to milliseconds: never send before the interval ends
            sub.timer = self.call_later(early_us / 1e6, self._throttle_due, client, key, sub)
            return
        if sub.timer_fired():
            client.outbox.want_snapshot(key)
            client.wake()

    def _quote_due(self, client: Client, key: Key, sub: Sub, now: int) -> bool:
        """May a quote of ``key`` go to ``client`` now (throttled like L2)? If not, a timer sends
        the held one when the interval ends."""
        due = sub.quote_sent_us + sub.quote_throttle_us
        if now >= due and sub.quote_timer is None:
            sub.quote_sent_us = now
            return True
        if sub.quote_timer is None:
            sub.quote_timer = self.call_later((due - now) / 1e6, self._quote_timer, client, key, sub)
        return False

    def _quote_timer(self, client: Client, key: Key, sub: Sub) -> None:
        sub.quote_timer = None
        if client.closing is not None or client.session.subs.get(key) is not sub or sub.quote_held is None:
            return
        now = self.clock()
        early_us = sub.quote_sent_us + sub.quote_throttle_us - now
        if early_us > 0:  # event-loop timers round to milliseconds: never send before the interval ends
            sub.quote_timer = self.call_later(early_us / 1e6, self._quote_timer, client, key, sub)
            return
        frame, received = sub.quote_held
        sub.quote_held = None
        sub.quote_sent_us = now
        client.outbox.push_latest("quotes", key, frame, received)
        client.wake()

    # ---------------------------------------------------------------- new symbols
    def add_symbols(self, exchange: str, symbols, state: str = "syncing") -> list[str]:
        """Symbols the ingest began to follow while the publisher runs (``pipeline subscribe``,
        docs/streams.md): served from now on (welcome frames, subscription checks), given to every
        client on the default subscription, and announced with a ``status`` event.  The new ones."""
        feed = self.settings.feeds.get(exchange)
        if feed is None:
            return []
        new = [s for s in dict.fromkeys(symbols) if s not in feed.symbols]
        if not new:
            return []
        self.settings.feeds[exchange] = dataclasses.replace(feed, symbols=feed.symbols + tuple(new))
        for c in list(self.clients.values()):
            if c.closing is None:
                changes = c.session.follow(exchange, new)
                if changes:
                    self._apply(c, changes)
                    c.wake()
        for sym in new:
            if self.l2 is not None and self.mirror.book(exchange, sym) is None:
                self.l2.want((exchange, sym), "learn")
            self.announce((exchange, sym), state, "symbol added", force=True)
        return new

    # ---------------------------------------------------------------- feed state
    def _announce_step(self, step: Step, now: int) -> None:
        book = step.book
        if step.prev_state is None:
            if step.key not in self.feed_states:
                self.feed_states[step.key] = book.state  # first sight: nothing to announce
                return
            self.announce(step.key, book.state, f"book {book.state}", now)
        elif book.epoch != step.prev_epoch:
            self.announce(step.key, book.state, "ingest restarted: new epoch, resynced", now, force=True)
        elif not step.continuous:
            self.announce(step.key, book.state, "publisher resynced from shared memory", now, force=True)
        elif book.state != step.prev_state:
            self.announce(step.key, book.state, f"book {book.state}", now)

    def announce(self, key: Key, state: str, reason: str, now: int | None = None, force: bool = False) -> None:
        """Tell every client of ``key`` that its feed's state changed (``status`` event)."""
        if not force and self.feed_states.get(key) == state:
            return
        self.feed_states[key] = state
        now = now or self.clock()
        book = self.mirror.book(*key)
        frame = render.status(key[0], key[1], state=state, reason=reason, epoch=book.epoch if book else 0,
                              seq=book.seq if book else 0, received_us=now, published_us=now)
        log.info("%s %s: %s (%s)", key[0], key[1], state, reason)
        for c in list(self.clients.values()):
            if key in c.session.subs and c.closing is None:
                self._control(c, frame)

    # ------------------------------------------------------------------ sending
    def next_frame(self, client: Client) -> Frame | None:
        """The next frame for the client's sender, or None when its outbox is empty."""
        outbox = client.outbox
        while True:
            item = outbox.pop()
            if item is None:
                return None
            payload, kind, received = item
            if kind != "snapshot":
                outbox.sent += 1
                self.counts["sent_" + kind] += 1
                return item
            key = payload
            # Rendering a snapshot is L2 work on the loop: trades waiting on the bus go first
            # (they are written to every client, this one included, before this snapshot).
            self.poll_trades()
            if client.closing is not None:
                return None
            sub = client.session.book_sub(key)
            if sub is None or sub.phase is not Phase.PENDING:
                continue  # unsubscribed or replaced meanwhile
            if key in self._joining and sub.mode is Mode.DELTAS:
                self._joining[key].add(client)  # sent when the book's first message comes (_release)
                continue
            now = self.clock()
            frame, epoch, seq, received = self._snapshot_frame(key, sub.depth, now)
            sub.snapshot_sent(now, epoch, seq)
            if sub.mode is Mode.SNAPSHOTS:
                self.waiting.setdefault(key, {})[client] = sub
            outbox.sent += 1
            self.counts["sent_l2"] += 1
            return frame, "l2", received

    def _snapshot_frame(self, key: Key, depth: int, now: int) -> tuple[bytes, int, int, int]:
        """(frame, epoch, seq, ts_received) of the latest view of ``key`` at ``depth``.

        Rendered once per view: clients whose snapshots fall due while the publisher's book
        has not moved (a quiet book, a burst of subscriptions, throttle timers that fire
        together) share the bytes, with the ``time_published`` of the first rendering (at
        most SNAPSHOT_REUSE_US old)."""
        book = self.mirror.book(*key)
        mark = (book.epoch, book.seq, book.state) if book is not None else None
        cached = self._snapshots.get((key, depth))
        if cached is not None and mark is not None and cached[0] == mark and now - cached[1] < SNAPSHOT_REUSE_US:
            return cached[2]
        view = self.mirror.snapshot(key, depth)
        frame = render.book(key[0], key[1], epoch=view.epoch, seq=view.seq, state=view.state, depth=depth,
                            bids=view.bids, asks=view.asks, ts_exchange=view.ts_exchange,
                            ts_received=view.ts_received, published_us=now,
                            instrument=book.instrument if book is not None else None)
        out = (frame, view.epoch, view.seq, view.ts_received)
        if mark is not None:
            self._snapshots[(key, depth)] = (mark, now, out)
        return out

    # ---------------------------------------------------------------- statistics
    def statistics(self) -> dict:
        """Counters and per-client queues; the ``publisher`` section of `pipeline status --json`."""
        now = self.clock()
        clients = []
        for c in self.clients.values():
            ob = c.outbox
            clients.append({"id": c.id, "peer": c.peer, "connected_s": round((now - c.connected_us) / 1e6, 1),
                            "subscriptions": len(c.session.subs), "queued": len(ob), "queues": ob.depths(),
                            "queue_peak": ob.peak, "sent": ob.sent, "conflated": ob.conflations,
                            "dropped": ob.dropped, "closing": c.closing})
        depths = [c["queued"] for c in clients]
        return {
            "clients": len(self.clients),
            "connections_total": self.counts["connections"],
            "rejected": dict(self.rejected),
            "disconnected": dict(self.disconnects),
            "disconnected_total": sum(self.disconnects.values()),
            "conflated": self._closed_conflations + sum(c["conflated"] for c in clients),
            "dropped": self._closed_dropped + sum(c["dropped"] for c in clients),
            "undelivered_trades": self.counts["undelivered_trades"],
            "queue_depth": sum(depths),
            "queue_depth_max": max(depths, default=0),
            "bad_requests": self.counts["bad_requests"],
            "rate_limited": self.counts["rate_limited"],
            "pings": self.counts["pings"],
            "trades_in": self.counts["trades_in"],
            "l2_in": self.counts["l2_in"],
            "l2_header_only": self.mirror.light_messages,  # of l2_in: books no delta client follows (mirror.py)
            # L2 topics taken from the bus (exchanges read whole; exact topics) and shared-memory polls
            "l2_subscriptions": self.l2.summary() if self.l2 is not None else None,
            "shm_polls": self.polls,
            "trade_gaps": self.mirror.trade_gaps,
            "socket_writes": self.counts["socket_writes"],  # writes to client sockets (a batch is one)
            "sent": {"trades": self.counts["sent_trade"], "l2": self.counts["sent_l2"],
                     "control": self.counts["sent_control"], "other": self.counts["sent_other"]},
            "other_in": {c: self.counts[f"{c}_in"] for c in OTHER_CHANNELS},
            "client_list": clients,
        }
