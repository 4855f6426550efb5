"""The gRPC fan-out: bus messages in, each stream's outbox filled with serialized messages.

The WebSocket hub (publisher/hub.py) for typed clients, built from the same pure parts:
``BookMirror`` (the publisher's own books, per-depth view diffs, snapshots from shared
memory), ``BookSub`` (publisher/session.py: the delta verdicts of the Clone pattern and the
snapshot throttle phases) and ``Outbox`` (publisher/outbox.py: trades never conflated, the
delta backlog conflated into snapshot marks).  What differs is small and is here: a gRPC
call subscribes once, in its request, so there is no request grammar, no session and no
control lane; messages are protobuf (l2pipeline/v1, docs/grpc.md) instead of JSON.  That is
why this is a second hub of ~250 lines rather than a parameter of the first: the WebSocket
hub's rendering, welcome and status events run through every method of it.

No sockets, no event loop: the server (publisher/grpc_server.py) calls ``open_books`` /
``open_trades`` / ``next_frame`` / ``close``, the bus reader calls ``on_trade`` / ``on_l2``,
timers go through ``call_later``.  Nothing here waits for a client: a slow stream only grows
its own outbox, whose delta lane conflates and whose trade lane, when full, ends that stream
(RESOURCE_EXHAUSTED, with the reason).  Each trade and each delta is serialized once and the
same bytes go to every stream that takes it; a snapshot is serialized when the stream is
ready for it, from the latest view (shared between streams while the view has not moved).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from l2pipeline.v1 import marketdata_pb2 as pb
from pipeline import schema
from publisher.grpc_settings import GrpcConfig
from publisher.mirror import BookMirror, Step
from publisher.outbox import Outbox
from publisher.render import now_us
from publisher.requests import Mode
from publisher.session import BookSub, Phase, Verdict
from publisher.settings import Settings

log = logging.getLogger(__name__)

Key = tuple[str, str]

STATES = {"syncing": pb.BOOK_STATE_SYNCING, "live": pb.BOOK_STATE_LIVE, "stale": pb.BOOK_STATE_STALE,
          "down": pb.BOOK_STATE_DOWN, "removed": pb.BOOK_STATE_REMOVED}
SIDES = {"buy": pb.Trade.BUY, "sell": pb.Trade.SELL}
MODES = {pb.SubscribeBooksRequest.DELTAS: Mode.DELTAS, pb.SubscribeBooksRequest.SNAPSHOTS: Mode.SNAPSHOTS}


class Refused(Exception):
    """A request the server answers with a status code (``code``: a grpc.StatusCode name)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def set_time(ts: Any, us: int) -> None:
    """Fill a google.protobuf.Timestamp from microseconds since the epoch (0: left unset)."""
    if us:
        ts.seconds, rem = divmod(us, 1_000_000)
        ts.nanos = rem * 1000


def book_message(exchange: str, symbol: str, epoch: int, seq: int, snapshot: bool, state: str, bids, asks,
                 ts_exchange: int, ts_received: int) -> bytes:
    """A serialized BookMessage (bids/asks: (price, size) pairs)."""
    m = pb.BookMessage(exchange=exchange, symbol=symbol, epoch=epoch, seq=seq, is_snapshot=snapshot,
                       state=STATES.get(state, pb.BOOK_STATE_UNSPECIFIED))
    add = m.bids.add
    for p, s in bids:
        add(price=p, size=s)
    add = m.asks.add
    for p, s in asks:
        add(price=p, size=s)
    set_time(m.time_exchange, ts_exchange)
    set_time(m.time_received, ts_received)
    return m.SerializeToString()


def trade_message(t: Any) -> bytes:
    """A serialized Trade from a bus trade (pipeline.schema.Trade)."""
    m = pb.Trade(exchange=t.exchange, symbol=t.symbol, epoch=t.epoch, seq=t.seq, trade_id=t.trade_id,
                 price=t.price, size=t.amount, side=SIDES.get(t.side, pb.Trade.SIDE_UNKNOWN),
                 liquidation=getattr(t, "liquidation", False))
    set_time(m.time_exchange, t.ts_exchange)
    set_time(m.time_received, t.ts_received)
    return m.SerializeToString()


def _opt(m: Any, fields: tuple[str, ...], msg: Any, names: tuple[str, ...] | None = None) -> None:
    """Set the proto3 ``optional`` fields whose bus value is stated (None stays unset, never 0)."""
    for f, n in zip(fields, names or fields):
        v = getattr(msg, n)
        if v is not None:
            setattr(m, f, v)


def quote_message(q: Any) -> bytes:
    """A serialized Quote from a bus quote (pipeline.schema.Quote)."""
    m = pb.Quote(exchange=q.exchange, symbol=q.symbol, epoch=q.epoch, seq=q.seq, update_id=q.update_id or 0)
    _opt(m, ("bid_price", "bid_size", "ask_price", "ask_size"), q, ("bid_price", "bid_amount", "ask_price",
                                                                      "ask_amount"))
    set_time(m.time_exchange, q.ts_exchange)
    set_time(m.time_received, q.ts_received)
    return m.SerializeToString()


def ticker_message(t: Any) -> bytes:
    """A serialized DerivativeTicker from a bus derivative_ticker (pipeline.schema.DerivativeTicker)."""
    m = pb.DerivativeTicker(exchange=t.exchange, symbol=t.symbol, epoch=t.epoch, seq=t.seq)
    _opt(m, ("mark_price", "index_price", "last_price", "funding_rate", "predicted_funding_rate", "open_interest"), t)
    if t.funding_timestamp:
        set_time(m.funding_time, t.funding_timestamp)
    set_time(m.time_exchange, t.ts_exchange)
    set_time(m.time_received, t.ts_received)
    return m.SerializeToString()


LIQUIDATION_SIDES = {"buy": pb.Liquidation.BUY, "sell": pb.Liquidation.SELL}


def liquidation_message(q: Any) -> bytes:
    """A serialized Liquidation from a bus liquidation (pipeline.schema.Liquidation)."""
    m = pb.Liquidation(exchange=q.exchange, symbol=q.symbol, epoch=q.epoch, seq=q.seq,
                       liquidation_id=q.liquidation_id, price=q.price, size=q.amount,
                       side=LIQUIDATION_SIDES.get(q.side, pb.Liquidation.SIDE_UNKNOWN))
    set_time(m.time_exchange, q.ts_exchange)
    set_time(m.time_received, q.ts_received)
    return m.SerializeToString()


@dataclass(frozen=True)
class EventRpc:
    """A streaming RPC of one event kind other than books: its bus kind and how a message is serialized.
    Conflatable kinds go to a slow stream's latest lane (the latest per symbol); the others are
    queued like trades, never conflated."""

    rpc: str
    kind: schema.EventKind
    serialize: Callable[[Any], bytes]


EVENT_RPCS: dict[str, EventRpc] = {r.rpc: r for r in (
    EventRpc("trades", schema.TRADE, trade_message),
    EventRpc("quotes", schema.QUOTE, quote_message),
    EventRpc("derivative_tickers", schema.DERIVATIVE_TICKER, ticker_message),
    EventRpc("liquidations", schema.LIQUIDATION, liquidation_message),
)}


@dataclass(frozen=True)
class BooksRequest:
    """A checked SubscribeBooks request."""

    exchange: str
    symbols: tuple[str, ...]
    depth: int
    mode: Mode
    interval_ms: int
    all_symbols: bool = False  # the request named none: symbols added at runtime join the stream


class Stream:
    """One SubscribeBooks, SubscribeTrades (or other event kind's) call; the server owns the call behind ``wake``."""

    __slots__ = ("id", "peer", "rpc", "exchange", "symbols", "subs", "outbox", "wake", "closing", "connected_us",
                 "depth", "mode", "interval_ms", "all_symbols")

    def __init__(self, stream_id: int, peer: str, rpc: str, exchange: str, symbols: tuple[str, ...],
                 outbox: Outbox, wake: Callable[[], None], connected_us: int):
        self.id = stream_id
        self.peer = peer
        self.rpc = rpc  # "books" or an EVENT_RPCS name ("trades", "quotes", ...)
        self.exchange = exchange
        self.symbols = symbols
        self.subs: dict[Key, BookSub] = {}
        self.outbox = outbox
        self.wake = wake
        self.closing: str | None = None  # why the hub ended it (RESOURCE_EXHAUSTED)
        self.connected_us = connected_us
        self.depth = 0
        self.mode: Mode | None = None
        self.interval_ms = 0
        self.all_symbols = False  # subscribed to every symbol of the exchange, those added at runtime too

    def __repr__(self) -> str:
        return f"<stream {self.id} {self.rpc} {self.peer}>"


class GrpcHub:
    def __init__(self, settings: Settings, limits: GrpcConfig, mirror: BookMirror, call_later: Callable[..., Any],
                 clock: Callable[[], int] = now_us):
        self.settings = settings
        self.limits = limits
        self.mirror = mirror
        self.call_later = call_later
        self.clock = clock
        self.streams: dict[int, Stream] = {}
        self._next_id = 1
        # rpc name (EVENT_RPCS) -> (exchange, symbol) -> the streams of that kind following it
        self.event_index: dict[str, dict[Key, set[Stream]]] = {name: {} for name in EVENT_RPCS}
        self.trade_index = self.event_index["trades"]
        self.delta_index: dict[Key, dict[int, dict[Stream, BookSub]]] = {}
        self.waiting: dict[Key, dict[Stream, BookSub]] = {}  # SNAPSHOTS subs waiting for a change
        self.counts: Counter[str] = Counter()
        self.disconnects: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._closed_conflations = 0
        self._closed_dropped = 0
        self._snapshots: dict[tuple[Key, int], tuple[tuple, bytes]] = {}
        self.poll_trades: Callable[[], object] = lambda: None  # the bus reader's trade drain (publisher/main.py)

    # ------------------------------------------------------------------ requests
    def refuse(self, code: str, message: str) -> Refused:
        self.refused[code] += 1
        return Refused(code, message)

    def check_symbols(self, exchange: str, symbols: list[str] | tuple[str, ...]) -> tuple[str, ...]:
        """The symbols of a request (empty: all of the exchange). Raises Refused NOT_FOUND."""
        feed = self.settings.feeds.get(exchange)
        if feed is None:
            known = ", ".join(self.settings.feeds) or "none"
            raise self.refuse("NOT_FOUND", f"unknown exchange {exchange!r} (served: {known})")
        if not symbols:
            return feed.symbols
        unknown = [s for s in symbols if s not in feed.symbols]
        if unknown:
            raise self.refuse("NOT_FOUND", f"unknown symbol {unknown[0]!r} on {exchange} (served: "
                                           f"{', '.join(feed.symbols)})")
        return tuple(dict.fromkeys(symbols))

    def check_depth(self, exchange: str, depth: int) -> int:
        """A requested depth (0: the whole view) -> levels per side. Raises Refused INVALID_ARGUMENT."""
        view = self.settings.feeds[exchange].depth
        if depth > view:
            raise self.refuse("INVALID_ARGUMENT", f"depth {depth} is deeper than {exchange}'s view of {view} "
                                                  f"levels (0: the whole view)")
        return depth or view

    def check_books(self, exchange: str, symbols: list[str], depth: int, mode: int, interval_ms: int) -> BooksRequest:
        """A SubscribeBooks request, checked. Raises Refused (NOT_FOUND, INVALID_ARGUMENT)."""
        syms = self.check_symbols(exchange, symbols)
        levels = self.check_depth(exchange, depth)
        m = MODES.get(mode)
        if m is None:
            raise self.refuse("INVALID_ARGUMENT", f"mode must be DELTAS or SNAPSHOTS (got {mode})")
        if m is Mode.SNAPSHOTS:
            if interval_ms == 0:
                interval_ms = self.settings.feeds[exchange].throttle_ms
            elif interval_ms < self.limits.min_interval_ms:
                raise self.refuse("INVALID_ARGUMENT", f"interval_ms {interval_ms} is below the server's minimum "
                                                      f"of {self.limits.min_interval_ms}")
        elif interval_ms:
            raise self.refuse("INVALID_ARGUMENT", "interval_ms applies to SNAPSHOTS mode only")
        return BooksRequest(exchange, syms, levels, m, interval_ms, all_symbols=not symbols)

    def _admit(self) -> None:
        if len(self.streams) >= self.limits.max_streams:
            raise self.refuse("RESOURCE_EXHAUSTED", f"server full: {len(self.streams)} streams open "
                                                    f"(limit {self.limits.max_streams})")

    # ------------------------------------------------------------------- streams
    def _new_stream(self, peer: str, rpc: str, exchange: str, symbols: tuple[str, ...],
                    wake: Callable[[], None]) -> Stream:
        self._admit()
        lim = self.limits
        s = Stream(self._next_id, peer, rpc, exchange, symbols,
                   Outbox(lim.client_queue, lim.client_l2_queue, lim.client_max_lag_s), wake, self.clock())
        self._next_id += 1
        self.streams[s.id] = s
        self.counts["streams"] += 1
        return s

    def open_books(self, peer: str, req: BooksRequest, wake: Callable[[], None]) -> Stream:
        """A SubscribeBooks call starts: a snapshot of every symbol is due. Raises Refused when full."""
        s = self._new_stream(peer, "books", req.exchange, req.symbols, wake)
        s.depth, s.mode, s.interval_ms, s.all_symbols = req.depth, req.mode, req.interval_ms, req.all_symbols
        for sym in req.symbols:
            self._follow_book(s, sym)
        log.info("stream %d (%s): books %s %s depth %d %s", s.id, peer, req.exchange, ",".join(req.symbols),
                 req.depth, req.mode.value)
        return s

    def _follow_book(self, s: Stream, sym: str) -> None:
        key = (s.exchange, sym)
        sub = BookSub(s.mode, s.depth, s.interval_ms)
        s.subs[key] = sub
        if s.mode is Mode.DELTAS:
            self.delta_index.setdefault(key, {}).setdefault(s.depth, {})[s] = sub
            self.mirror.track(key, s.depth)
        s.outbox.want_snapshot(key)

    def open_trades(self, peer: str, exchange: str, symbols: tuple[str, ...], wake: Callable[[], None],
                    all_symbols: bool = False) -> Stream:
        """A SubscribeTrades call starts (``all_symbols``: it named none). Raises Refused when full."""
        return self.open_events("trades", peer, exchange, symbols, wake, all_symbols)

    def open_events(self, rpc: str, peer: str, exchange: str, symbols: tuple[str, ...], wake: Callable[[], None],
                    all_symbols: bool = False) -> Stream:
        """A SubscribeTrades / SubscribeQuotes / ... call starts (``rpc``: an EVENT_RPCS name;
        ``all_symbols``: it named none). Raises Refused when full."""
        s = self._new_stream(peer, rpc, exchange, symbols, wake)
        s.all_symbols = all_symbols
        index = self.event_index[rpc]
        for sym in symbols:
            index.setdefault((exchange, sym), set()).add(s)
        log.info("stream %d (%s): %s %s %s", s.id, peer, rpc, exchange, ",".join(symbols))
        return s

    def add_symbol(self, exchange: str, symbol: str) -> int:
        """A symbol added at runtime (docs/streams.md): streams of every symbol of ``exchange`` follow it
        from now on (books: a snapshot first); returns how many streams took it."""
        n = 0
        for s in list(self.streams.values()):
            if not s.all_symbols or s.exchange != exchange or s.closing is not None or symbol in s.symbols:
                continue
            s.symbols = s.symbols + (symbol,)
            if s.rpc == "books":
                self._follow_book(s, symbol)
            else:
                self.event_index[s.rpc].setdefault((exchange, symbol), set()).add(s)
            s.wake()
            n += 1
        return n

    def close(self, s: Stream, reason: str = "client") -> None:
        """The call ended (the client left, or the server ended it): forget the stream."""
        if self.streams.pop(s.id, None) is None:
            return
        self._unindex(s)
        if s.closing is None:
            self.disconnects[reason] += 1
        self._closed_conflations += s.outbox.conflations
        self._closed_dropped += s.outbox.dropped
        log.info("stream %d ended (%s) after %.1f s, %d sent, %d conflations", s.id, s.closing or reason,
                 (self.clock() - s.connected_us) / 1e6, s.outbox.sent, s.outbox.conflations)

    def _end_slow(self, s: Stream, reason: str) -> None:
        """End a stream that cannot keep even its trades (the server sends RESOURCE_EXHAUSTED)."""
        if s.closing is not None:
            return
        s.closing = reason
        self.disconnects["slow"] += 1
        self.counts["undelivered_trades"] += len(s.outbox.trades)
        self._unindex(s)
        s.outbox.trades.clear()
        log.warning("ending stream %d (%s): %s", s.id, s.peer, reason)
        s.wake()

    def _unindex(self, s: Stream) -> None:
        index = self.event_index.get(s.rpc)
        for sym in s.symbols:
            key = (s.exchange, sym)
            t = index.get(key) if index is not None else None
            if t is not None:
                t.discard(s)
            sub = s.subs.get(key)
            if sub is None:
                continue
            sub.cancel_timer()
            by_depth = self.delta_index.get(key, {})
            subs = by_depth.get(sub.depth)
            if subs is not None and subs.pop(s, None) is not None:
                self.mirror.untrack(key, sub.depth)
                if not subs:
                    del by_depth[sub.depth]
            w = self.waiting.get(key)
            if w is not None:
                w.pop(s, None)
        s.subs = {}

    # ----------------------------------------------------------------- bus input
    def on_trade(self, payload: bytes) -> None:
        t = self.mirror.decode_trade(payload)
        self.counts["trades_in"] += 1
        streams = self.trade_index.get((t.exchange, t.symbol))
        if not streams:
            return
        self._queue_never_conflated(streams, trade_message(t), t.ts_received)

    def _queue_never_conflated(self, streams: set[Stream], frame: bytes, received_us: int) -> None:
        """A trade or liquidation to every stream of it; a stream that cannot keep it is ended."""
        now = self.clock()
        slow = None
        for s in streams:
            reason = s.outbox.push_trade(frame, received_us, now)
            if reason is None:
                s.wake()
            else:
                slow = slow or []
                slow.append((s, reason))
        for s, reason in slow or ():
            self._end_slow(s, reason)

    def on_event(self, rpc: EventRpc, topic: bytes, payload: bytes) -> None:
        """A quote, derivative ticker or liquidation from the bus, to the streams of its kind:
        serialized once; conflatable kinds into each stream's latest lane (a slow stream gets the
        latest per symbol), the others queued like trades (a stream too slow for them is ended).
        The topic names the stream, so a message no stream wants is not decoded."""
        self.counts[rpc.rpc + "_in"] += 1
        _, exchange, symbol = schema.parse_topic(topic)
        streams = self.event_index[rpc.rpc].get((exchange, symbol))
        if not streams:
            return
        msg = schema.decoder(rpc.kind)(payload)
        frame = rpc.serialize(msg)
        key = (msg.exchange, msg.symbol)
        if rpc.kind.conflatable:
            for s in streams:
                s.outbox.push_latest(rpc.rpc, key, frame, msg.ts_received)
                s.wake()
            return
        self._queue_never_conflated(streams, frame, msg.ts_received)

    def on_l2(self, topic: bytes, payload: bytes) -> None:
        self.counts["l2_in"] += 1
        step = self.mirror.apply_l2(topic, payload)
        if step is None:
            return
        by_depth = self.delta_index.get(step.key)
        if by_depth:
            self._send_deltas(step, by_depth)
        waiting = self.waiting.get(step.key)
        if waiting:
            self._book_changed(step.key, waiting, self.clock())

    def _send_deltas(self, step: Step, by_depth: dict[int, dict[Stream, BookSub]]) -> None:
        key, book = step.key, step.book
        for depth, subs in by_depth.items():
            diff = step.diffs.get(depth)
            frame = None
            for s, sub in subs.items():
                verdict = sub.delta(book.epoch, book.seq, diff is not None)
                if verdict is Verdict.SEND:
                    if frame is None:
                        frame = book_message(key[0], key[1], book.epoch, book.seq, False, book.state, diff[0],
                                             diff[1], book.ts_exchange, book.ts_received)
                    for k in s.outbox.push_delta(key, frame, book.ts_received):
                        conflated = s.subs.get(k)  # the backlog became snapshot marks
                        if conflated is not None:
                            conflated.resync()
                    s.wake()
                elif verdict is Verdict.RESYNC:
                    s.outbox.want_snapshot(key)
                    s.wake()

    def _book_changed(self, key: Key, waiting: dict[Stream, BookSub], now: int) -> None:
        for s, sub in waiting.items():
            due = sub.book_changed(now)
            if due is None:
                continue
            if due == 0:
                s.outbox.want_snapshot(key)
                s.wake()
            else:
                sub.timer = self.call_later((due - now) / 1e6, self._interval_due, s, key, sub)
        waiting.clear()

    def _interval_due(self, s: Stream, key: Key, sub: BookSub) -> None:
        if s.closing is not None or s.subs.get(key) is not sub:
            return
        early_us = sub.last_sent_us + sub.throttle_us - self.clock()
        if early_us > 0:  # event-loop timers round to milliseconds: never send before the interval ends
            sub.timer = self.call_later(early_us / 1e6, self._interval_due, s, key, sub)
            return
        if sub.timer_fired():
            s.outbox.want_snapshot(key)
            s.wake()

    # ------------------------------------------------------------------- sending
    def next_frame(self, s: Stream) -> bytes | None:
        """The next serialized message for the stream's writer, or None when nothing is queued
        (then ``s.closing``, when set, is why the server must end the call)."""
        if s.closing is not None:
            return None
        outbox = s.outbox
        while True:
            item = outbox.pop()
            if item is None:
                return None
            payload, kind, _ = item
            if kind != "snapshot":
                outbox.sent += 1
                self.counts["sent_" + (kind if s.rpc == "books" else s.rpc)] += 1  # (books: "l2" deltas)
                return payload  # type: ignore[return-value]
            key = payload
            sub = s.subs.get(key)  # type: ignore[call-overload]
            if sub is None or sub.phase is not Phase.PENDING:
                continue
            # serializing a snapshot is L2 work on the loop: trades waiting on the bus go first
            self.poll_trades()
            if s.closing is not None:
                return None
            now = self.clock()
            frame, epoch, seq = self._snapshot(key, sub.depth)
            sub.snapshot_sent(now, epoch, seq)
            if sub.mode is Mode.SNAPSHOTS:
                self.waiting.setdefault(key, {})[s] = sub
            outbox.sent += 1
            self.counts["sent_snapshot"] += 1
            return frame

    def _snapshot(self, key: Key, depth: int) -> tuple[bytes, int, int]:
        """(serialized snapshot, epoch, seq) of the latest view of ``key``, shared while it has not moved."""
        view = self.mirror.snapshot(key, depth)
        mark = (view.epoch, view.seq, view.state)
        cached = self._snapshots.get((key, depth))
        if cached is not None and cached[0] == mark:
            return cached[1], view.epoch, view.seq
        frame = book_message(key[0], key[1], view.epoch, view.seq, True, view.state, view.bids, view.asks,
                             view.ts_exchange, view.ts_received)
        self._snapshots[(key, depth)] = (mark, frame)
        return frame, view.epoch, view.seq

    def get_book(self, exchange: str, symbol: str, depth: int) -> bytes:
        """GetBook: the serialized Book of the view now. Raises Refused (NOT_FOUND, INVALID_ARGUMENT)."""
        self.check_symbols(exchange, [symbol])
        levels = self.check_depth(exchange, depth)
        self.counts["get_book"] += 1
        view = self.mirror.snapshot((exchange, symbol), levels)
        m = pb.Book(exchange=exchange, symbol=symbol, epoch=view.epoch, seq=view.seq,
                    state=STATES.get(view.state, pb.BOOK_STATE_UNSPECIFIED))
        for p, s in view.bids:
            m.bids.add(price=p, size=s)
        for p, s in view.asks:
            m.asks.add(price=p, size=s)
        set_time(m.time_exchange, view.ts_exchange)
        set_time(m.time_received, view.ts_received)
        return m.SerializeToString()

    # ---------------------------------------------------------------- statistics
    def statistics(self) -> dict:
        """The ``grpc`` section of `pipeline status --json` (docs/grpc.md "Status")."""
        now = self.clock()
        streams = []
        for s in self.streams.values():
            ob = s.outbox
            streams.append({"id": s.id, "peer": s.peer, "rpc": s.rpc, "exchange": s.exchange,
                            "symbols": len(s.symbols), "mode": s.mode.value if s.mode else None,
                            "depth": s.depth or None, "connected_s": round((now - s.connected_us) / 1e6, 1),
                            "queued": len(ob), "queues": ob.depths(), "queue_peak": ob.peak, "sent": ob.sent,
                            "conflated": ob.conflations, "dropped": ob.dropped, "closing": s.closing})
        depths = [s["queued"] for s in streams]
        return {
            "clients": len(self.streams),
            "streams_total": self.counts["streams"],
            "subscriptions": sum(s["symbols"] for s in streams),
            "refused": dict(self.refused),
            "disconnected": dict(self.disconnects),
            "disconnected_total": sum(self.disconnects.values()),
            "conflated": self._closed_conflations + sum(s["conflated"] for s in streams),
            "dropped": self._closed_dropped + sum(s["dropped"] for s in streams),
            "undelivered_trades": self.counts["undelivered_trades"],
            "queue_depth": sum(depths),
            "queue_depth_max": max(depths, default=0),
            "trades_in": self.counts["trades_in"],
            "l2_in": self.counts["l2_in"],
            "get_book": self.counts["get_book"],
            "sent": {"trades": self.counts["sent_trades"], "deltas": self.counts["sent_l2"],
                     "snapshots": self.counts["sent_snapshot"],
                     **{r: self.counts["sent_" + r] for r in EVENT_RPCS if r != "trades"}},
            "events_in": {r: self.counts[r + "_in"] for r in EVENT_RPCS if r != "trades"},
            "stream_list": streams,
        }
