"""Books of one exchange: events in; book views, bus messages and requests out.

``FeedBooks.receive(event)`` is the one entry point, for the runner, the benchmark and
the tests alike.  Events are what the adapter parses (``parse_frame`` turns its
exceptions into ``Malformed``/``Unknown`` events) and what the runner observes
(``DepthConnected``, ``DepthDisconnected``, ``SnapshotOverdue``); each carries its
local receive time where one matters, so the feed never reads the clock.  What comes
out:

- book views, written to shared memory through the BookWriter it was given (seqlock);
- bus messages, handed to the BusPublisher it was given (which encodes and sends);
- trades, appended to the trade ring it was given;
- quotes, derivative tickers and liquidations from the venue, and CVD and trade bars derived
  from the trades (ingest/kinds.py keeps their per-symbol seqs and states);
- requests for the runner (``Request``: fetch a REST snapshot, resubscribe; and the
  venue's ``VenueNotice``s, which concern the connection), returned by ``receive``.

Per symbol the sync state machine (ingest/sync.py) decides; the feed carries out its
actions on the book.  Counters are plain records (``SymbolCounts`` per symbol,
``ProcessCounts``); the runner's stats loop copies them to shared memory with
``copy_stats`` every 0.25 s, so the hot path writes no shared-memory counter.

Order of a book update: apply to the full book -> exact view delta -> write the
view to shared memory with seq N (seqlock) -> send the delta with seq N.  So a
consumer that reads shared memory at seq S and then applies bus deltas with
seq > S rebuilds exactly the view (Clone pattern, DESIGN.md).  In batch mode the
view is written once per batch, still before the batch's messages are sent.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import zmq

from ingest.events import (BboEvent, DepthConnected, DepthDiff, DepthOpen, DepthDisconnected, DepthSilent, DepthSnapshot,
                           L4Event, LiquidationEvent, Malformed, Request, SnapshotOverdue, TickerEvent, TradeEvent,
                           TradesBackfill, TradesWanted, Unknown, VenueNotice)
from ingest.kinds import DEFAULT_BAR_INTERVALS, SymbolKinds
from ingest.sync import APPLY_DIFF, INSTALL_SNAPSHOT, REPLACE_BOOK, Action, BookSync, SyncCounts, SyncState
from pipeline import bus, schema
from pipeline.book import ViewBook
from pipeline.errors import MalformedFrame, StreamsFull, UnknownFrame
from pipeline.lag import MAX_INTERVAL_SAMPLES, LagWindow
from pipeline.shm import FEED_STATS, H_PROCESS_STATS, PROCESS_STATS, BookState, BookWriter
from pipeline.trade_ring import TradeRingWriter

log = logging.getLogger(__name__)
LAST_SECOND = 4  # stats intervals of 0.25 s (ingest/runner.py STATS_INTERVAL): publish_lag_1s_us

P = {name: H_PROCESS_STATS + i for i, name in enumerate(PROCESS_STATS)}

# the bus's spelling of the published book state (schema.L2Update.state)
_STATE_NAMES = {s: s.name.lower() for s in BookState}
_LOG_KINDS_MAX = 1000
# A venue time at or after 2100-01-01 (or negative) is absurd: a trade stamped in the year ~142,000
# was written to the CSV as it was (issue 19 item 10); a time in the wrong unit (ns or ms*1000
# read as us) lands there too.  A fixed bound, not one relative to our receive time: replays and
# tests carry receive times of their own.
MAX_TS_US = 4_102_444_800 * 1_000_000


class SymbolCounts(SyncCounts):
    """One symbol's counters, named as shm FEED_STATS (``pipeline status --json`` keys).
    The sync machine counts gaps, resyncs, buffered and dropped in the same record."""

    __slots__ = ("updates", "trades", "malformed", "checksum_ok", "checksum_failed", "last_update_ns",
                 "last_trade_ns", "trade_seq", "l2_seq", "connected", "stale_since_ns", "quotes", "last_quote_ns",
                 "tickers", "last_ticker_ns", "liquidations", "last_liquidation_ns", "stale_after_ms", "stalls",
                 "trades_missed", "trade_id_gaps", "trades_backfilled")

    def __init__(self):
        super().__init__()
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_tuple(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in FEED_STATS)


assert set(FEED_STATS) <= set(SymbolCounts.__slots__) | set(SyncCounts.__slots__)


class ProcessCounts:
    """Counters of the exchange not tied to a symbol."""

    __slots__ = ("unknown_frames", "malformed_frames")

    def __init__(self):
        self.unknown_frames = 0
        self.malformed_frames = 0   # malformed frames whose symbol could not be read


class BusPublisher:
    """Encodes and sends bus messages on an exchange's two PUB sockets.

    Trades are sent at once.  With ``batch`` set, L2 messages are queued; ``flush_l2``
    encodes and sends the queue back to back (FeedBooks.flush, once per batch of
    depth frames).  A burst of sends keeps ZeroMQ's pipe to its I/O thread non-empty, so
    the I/O thread is woken once per batch instead of once per message: spaced-out sends
    cost 8-15 us each here, back-to-back ones ~2.4 us.

    It also samples the publish lag (local receive -> sent) of every 8th L2 message into
    ``publish_lag`` (p50/p99/max over the last minute, pipeline/lag.py; the stats loop
    rolls it): the clock is read here, where messages leave, not in the feed.
    """

    def __init__(self, trades_sock: zmq.Socket | None, l2_sock: zmq.Socket | None, batch: bool = False):
        self.trades_sock = trades_sock
        self.l2_sock = l2_sock
        self.batch = batch
        self._l2_pending: list[tuple[bytes, schema.L2Update]] = []
        self._lag_n = 0
        self.publish_lag = LagWindow()
        self._lag_samples = self.publish_lag.samples

    def send_trade(self, topic: bytes, msg: schema.Trade) -> None:
        msg.ts_published = time.time_ns() // 1000
        if self.trades_sock is not None:
            bus.send(self.trades_sock, topic, schema.encode(msg))

    def send(self, kind: schema.EventKind, topic: bytes, msg) -> None:
        """Any kind's message on its socket: a hot kind at once (as a trade), an L2-socket kind
        queued with the views in batch mode (``flush_l2``)."""
        if kind.socket is schema.Socket.HOT:
            self.send_trade(topic, msg)
        else:
            self.send_l2(topic, msg)

    def send_l2(self, topic: bytes, msg: schema.L2Update) -> None:
        if self.l2_sock is None:
            return
        if self.batch:
            self._l2_pending.append((topic, msg))
        else:
            msg.ts_published = now_us = time.time_ns() // 1000
            self._lag_n += 1
            if not self._lag_n & 7:
                samples = self._lag_samples
                samples.append(now_us - msg.ts_received)
                if not self._lag_n & 0xFFFF and len(samples) > MAX_INTERVAL_SAMPLES:
                    del samples[:-MAX_INTERVAL_SAMPLES]  # nothing rolls them (a benchmark without the runner)
            bus.send(self.l2_sock, topic, schema.encode(msg))

    def flush_l2(self) -> None:
        """Encode and send the queued L2 messages, in order (ts_published: this flush)."""
        if not self._l2_pending:
            return
        pending, self._l2_pending = self._l2_pending, []
        sock, send, encode = self.l2_sock, bus.send, schema.encode
        now_us = time.time_ns() // 1000
        for topic, msg in pending:
            msg.ts_published = now_us
            send(sock, topic, encode(msg))
        # every 8th message is plenty for percentiles over a minute
        first = -self._lag_n % 8
        self._lag_n += len(pending)
        samples = self._lag_samples
        samples.extend(now_us - msg.ts_received for _, msg in pending[first::8])
        if len(samples) > MAX_INTERVAL_SAMPLES:
            del samples[:-MAX_INTERVAL_SAMPLES]  # nothing rolls them (a benchmark without the runner)


class SymbolFeed:
    __slots__ = ("index", "symbol", "sync", "book", "counts", "pending_bbo", "l2_topic", "trade_topic",
                 "ts_exchange_us", "ts_received_us", "instrument", "view_update_id", "dirty", "bid_floor",
                 "ask_ceiling", "kinds", "removed", "state_since_ns", "added_ns", "last_trade_id", "gap_seq",
                 "gaps_open", "restart_gap")

    def __init__(self, index: int, symbol: str, sync: BookSync, counts: SymbolCounts, depth: int, exchange: str,
                 instrument: schema.Instrument | None = None):
        self.index = index
        self.symbol = symbol
        self.sync = sync
        self.counts = counts
        self.book = ViewBook(depth)
        self.pending_bbo: BboEvent | None = None
        self.l2_topic = schema.L2.topic(exchange, symbol)
        self.trade_topic = schema.TRADE.topic(exchange, symbol)
        self.ts_exchange_us = 0
        self.ts_received_us = 0
        self.instrument = instrument
        self.view_update_id = 0   # venue update id of the view as last published
        # A REST snapshot cut at its limit covers prices down to bid_floor / up to
        # ask_ceiling; beyond them the venue's levels are unknown until they change.
        self.bid_floor: float | None = None
        self.ask_ceiling: float | None = None
        self.dirty = False        # published on the bus queue, not yet written to shm (batch mode)
        self.kinds: SymbolKinds | None = None  # quotes, tickers, liquidations, CVD, bars (FeedBooks)
        self.removed = False      # unsubscribed at runtime (sync REMOVED); index -1 once its slot is reused
        self.state_since_ns = 0   # when the published state (syncing/live/stale/removed) last changed
        self.added_ns = 0         # when it was added at runtime (0: from the start)
        self.last_trade_id = 0    # venues with contiguous trade ids: the highest seen (0: none yet)
        self.gap_seq = 0          # seq of its trade_gap stream
        # trade-id gaps whose REST backfill is under way: (first_id, last_id) -> (ts_exchange, ts_received)
        # of the trade that revealed it
        self.gaps_open: dict[tuple[int, int], tuple[int, int]] = {}
        self.restart_gap = False  # last_trade_id is the previous ingest run's: its first trade compares with it


def parse_frame(adapter) -> Callable[[bytes, int], object]:
    """``adapter.parse_frame`` with the venue's errors as events (Malformed, Unknown) for
    ``FeedBooks.receive``: a bad frame is counted and logged there, never raised."""
    parse = adapter.parse_frame

    def parse_frame(frame: bytes, recv_ns: int):
        try:
            return parse(frame, recv_ns)
        except MalformedFrame as exc:
            return Malformed(getattr(exc, "symbol", None), str(exc))
        except UnknownFrame as exc:
            return Unknown(str(exc))

    return parse_frame


class FeedBooks:
    """All books of one exchange inside the ingest process (module docstring)."""

    def __init__(self, exchange: str, adapter, writer: BookWriter, publisher: BusPublisher, epoch: int,
                 trade_ring: TradeRingWriter | None = None, schedule_flush: Callable[[], None] | None = None,
                 cvd: bool = True, bar_intervals: tuple[str, ...] = DEFAULT_BAR_INTERVALS,
                 stale_after_s: float | None = None, trade_backfill_max: int = 0):
        """``schedule_flush``: in batch mode (``publisher.batch``), called when a first view
        changes after a flush; the caller then calls ``flush()`` soon (the ingest: once per
        event-loop turn).  Without it the caller flushes on its own schedule (benchmarks).
        ``cvd``, ``bar_intervals``: derive the CVD and the trade bars of these intervals from the
        trades (config ``cvd``, ``bar_intervals``).
        ``stale_after_s``: the config's cadence bound, overriding ``traits.stale_after_s``.
        ``trade_backfill_max``: a trade-id gap (venues with contiguous ids) asks the runner for up to
        this many of the missing trades over REST (``TradesWanted``), where the venue lists trades by
        id (``traits.trades_page``); 0: gaps are reported on the bus, never backfilled."""
        self.exchange = exchange
        self.trade_ring = trade_ring  # recent trades by seq, for consumers' backfill (pipeline/trade_ring.py)
        self.adapter = adapter
        self.parse_frame = parse_frame(adapter)
        self.writer = writer
        self.publisher = publisher
        self.epoch = epoch
        self.depth = writer.depth
        traits = adapter.traits  # docs/adapters.md: snapshot source, book cap, checksums, BBO checks
        self.verify_bbo = traits.verify_bbo
        self.contiguous_trade_ids = traits.contiguous_trade_ids
        self.trade_backfill_max = trade_backfill_max if traits.trades_page else 0
        self._restart_backfill = False  # a gap across the restart is backfilled too (resume_trade_ids)
        self.in_stream = traits.in_stream
        self.book_cap = traits.book_cap
        self.checksum = adapter.checksum if traits.checksum else None
        limit = 0 if self.in_stream else traits.snapshot_limit
        if limit and limit < self.depth:
            log.warning("%s: snapshot_limit %d < depth %d: the deeper part of the view is only as good as the "
                        "diffs that touched it", exchange, limit, self.depth)
            limit = 0
        self.snapshot_limit = limit
        self.counts = ProcessCounts()
        self.installs = 0  # snapshots installed (books gone live), any symbol: the runner's proof of health
        # the cadence bound in force (AdapterTraits.stale_after_s, the config's overriding it),
        # shown per symbol in counts.stale_after_ms; watched by change (check_ages and the
        # runner's stalled connections) or by push (the runner's _staleness_loop, silent_books)
        stale = stale_after_s or traits.stale_after_s or 0.0
        self.stale_after_s = stale
        push = traits.stale_watch == "push"
        self.stale_after_ms = 0 if push else int(stale * 1000)  # check_ages, runner stalls
        self.push_stale_after_s = stale if push else 0.0         # runner's _staleness_loop
        self._shown_stale_ms = int(stale * 1000)
        # every symbol followed since the start: a removed one stays (REMOVED, ignoring frames still
        # in flight) after another symbol took its slot
        self.feeds: dict[str, SymbolFeed] = {}
        self._removed_order: list[str] = []   # removed symbols whose slot is still theirs, oldest first
        self.bar_intervals = bar_intervals
        started = time.time_ns()
        for i, sym in enumerate(writer.symbols):
            if sym:
                self._new_feed(i, sym).state_since_ns = started
        self.derived = cvd or bool(bar_intervals)
        self.cvd = cvd
        self._cvd_dirty: list[SymbolFeed] = []  # batch mode: symbols whose CVD goes out at the flush
        # batch mode: trades sent this batch, counted in the CVD and bars at the flush, so no trade
        # waits for the derived work of the trades before it
        self._to_derive: list[tuple[SymbolFeed, schema.Trade]] = []
        # Batch mode: a book change is queued on the bus and its symbol marked dirty;
        # flush() writes each dirty view to shm once, then sends the queue.
        self._batch = publisher.batch
        self._schedule_flush = schedule_flush
        self._dirty: list[SymbolFeed] = []
        self._out: list = []          # requests for the runner, returned by receive()
        self._l4_seq: dict[str, int] = {}  # seq of each symbol's l4 stream
        self._logged: set[str] = set()
        self._last_state: dict[str, BookState] = {}
        self._handlers = {
            DepthDiff: self._on_diff, TradeEvent: self._on_trade, DepthSnapshot: self._on_snapshot,
            BboEvent: self._on_bbo, VenueNotice: self._out.append, type(None): _ignore,
            TickerEvent: self._on_ticker, LiquidationEvent: self._on_liquidation, L4Event: self._on_l4,
            Malformed: self._on_malformed, Unknown: self._on_unknown, DepthConnected: self._on_connected,
            DepthDisconnected: self._on_disconnected, SnapshotOverdue: self._on_overdue,
            TradesBackfill: self._on_backfill,
            DepthSilent: self._on_silent, DepthOpen: self._on_open,
        }

    # ------------------------------------------------------------ the entry point
    def receive(self, ev) -> list | None:
        """Take one event (or a list of them, as one frame may carry several).

        Returns what the runner must do, in order (``Request``s and ``VenueNotice``s),
        or None.  Anything that is not an event is a bug: TypeError."""
        handler = self._handlers.get(type(ev))
        if handler is not None:
            handler(ev)
        elif type(ev) is list:
            handlers = self._handlers
            for one in ev:
                handlers[type(one)](one)
        else:
            raise TypeError(f"not a feed event: {type(ev).__name__}")
        if self._out:
            out = self._out[:]
            self._out.clear()
            return out
        return None

    def check_ages(self, now_ns: int) -> list | None:
        """The staleness watchdog (the runner, every stats tick): a live book whose last change is
        older than its ``stale_after_ms`` is stale and resyncs (trades do not keep a book fresh:
        its own age counts).  Returns the runner's requests, as ``receive`` does."""
        limit_ms = self.stale_after_ms
        for f in self.feeds.values():
            if not limit_ms or f.sync.state is not SyncState.LIVE:
                continue
            age_ns = now_ns - f.counts.last_update_ns
            if age_ns > limit_ms * 1_000_000:
                f.counts.stalls += 1
                actions = f.sync.book_invalid(f"no book change for {age_ns / 1e9:.1f}s (limit {limit_ms / 1000:g}s)")
                log.warning("%s %s: %s; resyncing", self.exchange, f.symbol, f.sync.why)
                self._carry_out(f, actions, now_ns)
        if self._out:
            out = self._out[:]
            self._out.clear()
            return out
        return None

    def live(self, symbol: str) -> bool:
        return self.feeds[symbol].sync.state is SyncState.LIVE

    def waiting(self, symbol: str) -> bool:
        """Followed and not live yet (a removed symbol waits for nothing)."""
        f = self.feeds.get(symbol)
        return f is not None and not f.removed and f.sync.state is not SyncState.LIVE

    # ------------------------------------------------------------ runtime streams
    def _new_feed(self, i: int, symbol: str, l2_seq: int = 0, trade_seq: int = 0) -> SymbolFeed:
        counts = SymbolCounts()
        counts.l2_seq, counts.trade_seq = l2_seq, trade_seq
        counts.stale_after_ms = self._shown_stale_ms
        sync = BookSync(symbol, self.adapter.check, self.adapter.snapshot_usable, self.in_stream, counts)
        f = self.feeds[symbol] = SymbolFeed(i, symbol, sync, counts, self.depth, self.exchange,
                                            _instrument(self.adapter, symbol))
        f.kinds = SymbolKinds(self.exchange, symbol, self.bar_intervals)
        return f

    def symbols(self) -> list[str]:
        """The symbols followed now (not removed), in slot order."""
        return [s for s in self.writer.symbols if s and not self.feeds[s].removed]

    def free_slots(self) -> int:
        """Slots an addition can take: free ones and those of removed symbols."""
        return self.writer.symbols.count("") + len(self._removed_order)

    def add_symbol(self, symbol: str, now_ns: int) -> SymbolFeed:
        """Follow ``symbol`` from now on (a runtime addition): a slot (a free one, else the one of
        the symbol removed longest ago), an empty SYNCING book, seqs continued when it was followed
        before in this epoch.  The runner connects it; DepthConnected starts its sync.
        Raises StreamsFull when every slot is taken (the caller checks first)."""
        old = self.feeds.get(symbol)
        if old is not None and not old.removed:
            raise ValueError(f"{symbol} is followed already")
        names = self.writer.symbols
        if old is not None and old.index >= 0:
            i = old.index  # its own slot, not reused yet
            self._removed_order.remove(symbol)
        elif "" in names:
            i = names.index("")
        elif self._removed_order:
            gone = self.feeds[self._removed_order.pop(0)]
            i, gone.index = gone.index, -1
        else:
            raise StreamsFull(f"{self.exchange}: all {len(names)} slots are taken (max_symbols)")
        l2_seq, trade_seq = (old.counts.l2_seq, old.counts.trade_seq) if old is not None else (0, 0)
        self.writer.assign(i, symbol, l2_seq)
        if self.trade_ring is not None:
            self.trade_ring.assign(i, symbol)
        f = self._new_feed(i, symbol, l2_seq, trade_seq)
        if old is not None:
            f.kinds = old.kinds  # the other kinds' seqs go on too
            f.gap_seq, f.last_trade_id = old.gap_seq, old.last_trade_id
        f.added_ns = f.state_since_ns = now_ns
        log.info("%s %s: added (slot %d)", self.exchange, symbol, i)
        return f

    def remove_symbol(self, symbol: str, now_ns: int) -> None:
        """Stop following ``symbol``: its book is published (bus and shared memory) with the final
        state "removed"; later frames for it are ignored.  Its slot is reused by a later addition."""
        f = self.feeds[symbol]
        if f.removed:
            return
        f.removed = True
        f.pending_bbo = None
        f.counts.connected = 0
        f.state_since_ns = now_ns
        self._removed_order.append(symbol)
        self._carry_out(f, f.sync.removed(), now_ns)
        if self._batch:
            # out now, not at the batch's flush: the control reply that follows says "removed",
            # and a reader of shared memory must already see it so
            self.flush()
        log.info("%s %s: removed", self.exchange, symbol)

    def refresh_instruments(self) -> None:
        """Ask the adapter again (after venue metadata arrived: Lighter market kinds)."""
        for f in self.feeds.values():
            f.instrument = _instrument(self.adapter, f.symbol)

    # ------------------------------------------------------------ connection events
    def _on_connected(self, ev: DepthConnected) -> None:
        for sym in ev.symbols:
            f = self.feeds[sym]
            self._carry_out(f, f.sync.connected(), 0)
            f.counts.connected = 1 if ev.open and not f.removed else 0

    def _on_open(self, ev: DepthOpen) -> None:
        for sym in ev.symbols:
            f = self.feeds[sym]
            f.counts.connected = 0 if f.removed else 1

    def _on_disconnected(self, ev: DepthDisconnected) -> None:
        for sym in ev.symbols:
            f = self.feeds[sym]
            f.counts.connected = 0
            if f.removed:
                continue
            f.sync.why = f"connection lost: {ev.reason}"
            self._carry_out(f, f.sync.disconnected(), ev.recv_ns)

    def _on_overdue(self, ev: SnapshotOverdue) -> None:
        for sym in ev.symbols:
            f = self.feeds[sym]
            self._carry_out(f, f.sync.snapshot_overdue(), 0)

    def _on_silent(self, ev: DepthSilent) -> None:
        """A cadence stream went quiet for these books: stop trusting them, resync."""
        for sym in ev.symbols:
            f = self.feeds[sym]
            if f.sync.state is SyncState.LIVE:
                log.warning("%s %s: no book for %.1fs; resyncing", self.exchange, sym, ev.silent_s)
                self._carry_out(f, f.sync.book_invalid(f"no book for {ev.silent_s:.1f}s"), ev.recv_ns)

    def silent_books(self, limit_s: float, now_ns: int) -> tuple[str, ...]:
        """Live books whose last update is older than ``limit_s`` (the runner's staleness timer)."""
        cutoff = now_ns - int(limit_s * 1e9)
        return tuple(f.symbol for f in self.feeds.values()
                     if f.sync.state is SyncState.LIVE and f.counts.last_update_ns < cutoff)

    # ------------------------------------------------------------------ events
    def _on_diff(self, ev: DepthDiff) -> None:
        if not -1 < ev.ts_exchange_us < MAX_TS_US:
            return self._absurd_time(ev, "diff")  # not applied: the next diff is a gap and a resync
        f = self.feeds[ev.symbol]
        actions = f.sync.diff_received(ev)
        if actions is not APPLY_DIFF:
            if actions:
                if Action.MARK_STALE in actions:
                    log.warning("%s %s: %s; resyncing", self.exchange, f.symbol, f.sync.why)
                self._carry_out(f, actions, ev.recv_ns)
            return
        c = f.counts
        c.updates += 1
        c.last_update_ns = ev.recv_ns
        book = f.book
        db, da = book.apply(ev.bids, ev.asks)
        if self.book_cap:
            tb, ta = book.trim(self.book_cap)
            if tb or ta:
                db, da = db + tb, da + ta
        if not self._publish_checked(f, db, da, ev.checksum, ev.last_id, ev.ts_exchange_us, ev.recv_ns):
            return
        if f.pending_bbo is not None:
            self._verify_bbo(f)

    def _on_snapshot(self, snap: DepthSnapshot) -> None:
        """A snapshot for ``snap.symbol``: from REST, or in the stream."""
        f = self.feeds[snap.symbol]
        actions = f.sync.snapshot_received(snap)
        if actions is INSTALL_SNAPSHOT:
            self._install(f, snap)
        elif actions is REPLACE_BOOK:
            self._replace(f, snap)
        elif actions:
            log.info("%s %s: %s; fetching again", self.exchange, f.symbol, f.sync.why)
            self._carry_out(f, actions, snap.recv_ns)

    def _install(self, f: SymbolFeed, snap: DepthSnapshot) -> None:
        """Replace the book with the snapshot, apply the buffered diffs, verify, go live."""
        book = f.book
        book.clear()
        book.load_snapshot(snap.bids, snap.asks)
        limit = self.snapshot_limit  # a cut REST snapshot: remember how far it reaches
        f.bid_floor = min(p for p, _ in snap.bids) if limit and len(snap.bids) >= limit else None
        f.ask_ceiling = max(p for p, _ in snap.asks) if limit and len(snap.asks) >= limit else None
        if self.book_cap:
            book.trim(self.book_cap)
        checksum = snap.checksum
        ts_ex, ts_rx = snap.ts_exchange_us, snap.recv_ns
        replay = f.sync.replay
        for ev in replay:
            book.apply(ev.bids, ev.asks)
            if self.book_cap:
                book.trim(self.book_cap)
            ts_ex, ts_rx = ev.ts_exchange_us, ev.recv_ns
            checksum = ev.checksum
        f.counts.updates += len(replay)
        if checksum and not self._checksum_ok(f, checksum, snap.recv_ns):
            return
        if book.is_crossed():
            self._integrity_failed(f, "crossed book after snapshot", snap.recv_ns)
            return
        f.ts_exchange_us, f.ts_received_us = ts_ex, ts_rx // 1000
        c = f.counts
        c.last_update_ns = ts_rx
        c.stale_since_ns = 0
        log.info("%s %s: live at update id %d (snapshot %d + %d buffered)", self.exchange, f.symbol,
                 f.sync.book_id, snap.last_id, len(replay))
        self.installs += 1
        self._carry_out(f, f.sync.installed(), snap.recv_ns)
        if f.pending_bbo is not None:
            self._verify_bbo(f)

    def _replace(self, f: SymbolFeed, snap: DepthSnapshot) -> None:
        """A live book replaced by an in-stream snapshot: publish the exact view delta."""
        book = f.book
        db, da = book.replace(snap.bids, snap.asks)
        if self.book_cap:
            tb, ta = book.trim(self.book_cap)
            db, da = db + tb, da + ta
        c = f.counts
        c.updates += 1
        c.last_update_ns = snap.recv_ns
        self._publish_checked(f, db, da, snap.checksum, snap.last_id, snap.ts_exchange_us, snap.recv_ns)

    def _on_trade(self, ev: TradeEvent) -> None:
        f = self.feeds[ev.symbol]
        if f.removed:
            return  # in flight when it was unsubscribed
        if not -1 < ev.ts_exchange_us < MAX_TS_US:
            return self._absurd_time(ev, "trade")
        c = f.counts
        if self.contiguous_trade_ids and ev.trade_id.isdigit():  # (such venues give decimal ids)
            tid = int(ev.trade_id)
            last = f.last_trade_id
            if tid > last:
                if last and tid > last + 1:  # ids skipped: trades the venue made that we never got
                    self._trade_gap(f, last + 1, tid - 1, ev)  # (its marker goes out before this trade)
                f.last_trade_id = tid
            if f.restart_gap:
                f.restart_gap = False  # compared once with the previous run's last trade
        c.trade_seq = seq = c.trade_seq + 1
        msg = schema.Trade(exchange=self.exchange, symbol=ev.symbol, epoch=self.epoch, seq=seq,
                           ts_exchange=ev.ts_exchange_us, ts_received=ev.recv_ns // 1000, price=ev.price,
                           amount=ev.amount, side=ev.side, trade_id=ev.trade_id, instrument=f.instrument,
                           liquidation=ev.liquidation)
        if self.trade_ring is not None:  # ring first, then bus: whatever a consumer sees is in the ring
            self.trade_ring.append(f.index, seq, ev.ts_exchange_us, msg.ts_received, ev.price, ev.amount,
                                   ev.side, ev.trade_id, ev.liquidation)
        self.publisher.send_trade(f.trade_topic, msg)
        c.trades += 1
        c.last_trade_ns = ev.recv_ns
        if self.derived:
            if not self._batch:
                self._derive(f, msg)
            else:
                if not self._to_derive and not self._dirty and self._schedule_flush is not None:
                    self._schedule_flush()
                self._to_derive.append((f, msg))

    def _trade_gap(self, f: SymbolFeed, first: int, last: int, ev: TradeEvent) -> None:
        """Venue trade ids ``first..last`` never reached us (a disconnect, or lost on a live
        connection): counted, a ``trade_gap`` "missing" marker goes out just before the trade that
        revealed it, and, where the venue lists trades by id, the runner is asked for them
        (``TradesWanted``; ``_on_backfill`` publishes what it brings)."""
        c = f.counts
        count = last - first + 1
        c.trades_missed += count
        c.trade_id_gaps += 1
        restart = f.restart_gap
        backfill = self.trade_backfill_max > 0 and (self._restart_backfill or not restart)
        self._log_once(f"trades-missed:{f.symbol}", "%s %s: trade ids %d..%d missed (lost upstream; counted in "
                       "trades_missed%s; logged once per symbol)", self.exchange, f.symbol, first, last,
                       ", backfilled over REST" if backfill else "")
        recv_us = ev.recv_ns // 1000
        self._send_gap(f, schema.GAP_MISSING, first, last, ev.ts_exchange_us, recv_us, backfill=backfill,
                       restart=restart)
        if backfill:
            f.gaps_open[(first, last)] = (ev.ts_exchange_us, recv_us)
            self._out.append(TradesWanted(f.symbol, first, min(last, first + self.trade_backfill_max - 1)))

    def _send_gap(self, f: SymbolFeed, state: str, first: int, last: int, ts_exchange: int, ts_received: int,
                  backfill: bool = False, backfilled: int = 0, first_seq: int = 0, last_seq: int = 0,
                  restart: bool = False) -> None:
        f.gap_seq += 1
        self.publisher.send(schema.TRADE_GAP, schema.TRADE_GAP.topic(self.exchange, f.symbol), schema.TradeGap(
            exchange=self.exchange, symbol=f.symbol, epoch=self.epoch, seq=f.gap_seq, ts_exchange=ts_exchange,
            ts_received=ts_received, state=state, first_id=first, last_id=last, count=last - first + 1,
            backfill=backfill, restart=restart, backfilled=backfilled, first_seq=first_seq, last_seq=last_seq,
            instrument=f.instrument))

    def trade_ids(self) -> dict[str, int]:
        """The last trade id of each symbol (venues with contiguous ids; 0s left out): what a restart
        compares its first trades with (``resume_trade_ids``)."""
        return {s: f.last_trade_id for s, f in self.feeds.items() if f.last_trade_id and not f.removed}

    def resume_trade_ids(self, ids: dict[str, int], backfill: bool) -> None:
        """The previous ingest run's last trade ids (ingest/main.py: from its trade ring after a
        crash, or the file it saved at a clean stop): each symbol's first trade compares with them, so
        trades the venue made while the ingest was down are a ``trade_gap`` too (``restart``), backfilled
        over REST when ``backfill`` (the previous run stopped recently)."""
        if not self.contiguous_trade_ids:
            return
        self._restart_backfill = backfill
        for sym, tid in ids.items():
            f = self.feeds.get(sym)
            if f is not None and not f.last_trade_id and tid > 0:
                f.last_trade_id, f.restart_gap = tid, True

    def _on_backfill(self, ev: TradesBackfill) -> None:
        """The REST answer to a ``TradesWanted``: the trades of the gap, once each in id order, go out
        as ordinary trades (next seqs, trade ring too) right after a ``trade_gap`` "backfilled" marker
        that names their seqs; those outside the gap or already published are dropped.  They are
        not in the CVD or the bars (their intervals were published already)."""
        f = self.feeds.get(ev.symbol)
        if f is None or f.removed:
            return
        gap = next(((a, b) for (a, b) in f.gaps_open if a <= ev.first_id and ev.last_id <= b), None)
        if gap is None:
            return  # not a gap of ours (an answer after the symbol was re-added): nothing to tell
        ts_ex, ts_rx = f.gaps_open.pop(gap)
        got: dict[int, TradeEvent] = {}
        for t in ev.trades:
            if type(t) is TradeEvent and t.trade_id.isdigit() and gap[0] <= int(t.trade_id) <= gap[1] \
                    and -1 < t.ts_exchange_us < MAX_TS_US:
                got.setdefault(int(t.trade_id), t)
        c = f.counts
        n = len(got)
        first_seq = c.trade_seq + 1 if n else 0
        self._send_gap(f, schema.GAP_BACKFILLED, gap[0], gap[1], ts_ex, ts_rx, backfilled=n, first_seq=first_seq,
                       last_seq=c.trade_seq + n if n else 0)
        if ev.error:
            log.warning("%s %s: trade ids %d..%d: %d of %d backfilled over REST (%s)", self.exchange, f.symbol,
                        gap[0], gap[1], n, gap[1] - gap[0] + 1, ev.error)
        for tid in sorted(got):
            t = got[tid]
            c.trade_seq = seq = c.trade_seq + 1
            msg = schema.Trade(exchange=self.exchange, symbol=f.symbol, epoch=self.epoch, seq=seq,
                               ts_exchange=t.ts_exchange_us, ts_received=t.recv_ns // 1000, price=t.price,
                               amount=t.amount, side=t.side, trade_id=t.trade_id, instrument=f.instrument)
            if self.trade_ring is not None:
                self.trade_ring.append(f.index, seq, t.ts_exchange_us, msg.ts_received, t.price, t.amount, t.side,
                                       t.trade_id)
            self.publisher.send_trade(f.trade_topic, msg)
            c.trades += 1
        c.trades_backfilled += n

    def _derive(self, f: SymbolFeed, msg: schema.Trade) -> None:
        """CVD and bars of a published trade (ingest/kinds.py says why here): closed bars go out
        now, the CVD once per batch (at once without batching)."""
        k = f.kinds
        queued = k.cvd_dirty
        closed = k.add_trade(msg.seq, msg.ts_exchange, msg.ts_received, msg.price, msg.amount, msg.side,
                             self.epoch, f.instrument)
        publisher = self.publisher
        if closed:
            for bar in closed:
                publisher.send(schema.TRADE_BAR, k.bar_topic, bar)
        if not self.cvd:
            return
        if not self._batch:
            publisher.send(schema.CVD, k.cvd_topic, k.cvd_message(self.epoch, f.instrument))
        elif not queued:
            self._cvd_dirty.append(f)  # (derived at the flush, which sends it)

    def _on_ticker(self, ev: TickerEvent) -> None:
        f = self.feeds[ev.symbol]
        if f.removed:
            return
        k = f.kinds
        msg = k.ticker_update(ev, self.epoch, f.instrument)
        c = f.counts
        c.tickers += 1
        c.last_ticker_ns = ev.recv_ns
        if msg is not None:
            self.publisher.send(schema.DERIVATIVE_TICKER, k.ticker_topic, msg)

    def _on_l4(self, ev: L4Event) -> None:
        """Order-level changes of one block, published as they are (``l4.EX.SYM``, L2 socket)."""
        f = self.feeds[ev.symbol]
        seq = self._l4_seq[ev.symbol] = self._l4_seq.get(ev.symbol, 0) + 1
        recv_us = ev.recv_ns // 1000
        self.publisher.send(schema.L4, schema.L4.topic(self.exchange, ev.symbol), schema.L4Update(
            exchange=self.exchange, symbol=ev.symbol, epoch=self.epoch, seq=seq, ts_exchange=ev.ts_exchange_us,
            ts_received=recv_us, update_id=ev.update_id, orders=ev.orders, instrument=f.instrument))

    def _on_liquidation(self, ev: LiquidationEvent) -> None:
        f = self.feeds[ev.symbol]
        if f.removed:
            return
        k = f.kinds
        self.publisher.send(schema.LIQUIDATION, k.liq_topic, k.liquidation(ev, self.epoch, f.instrument))
        c = f.counts
        c.liquidations += 1
        c.last_liquidation_ns = ev.recv_ns

    def tick(self, now_ns: int, grace_us: int = 1_000_000) -> None:
        """Close the bars whose interval ended ``grace_us`` ago by local time (the runner's stats
        loop), so a quiet symbol's last bar goes out without waiting for its next trade."""
        if not self.derived:
            return
        if self._to_derive:
            self.flush()  # the trades already sent count first
        now_us = now_ns // 1000
        for f in self.feeds.values():
            if f.removed:
                continue
            k = f.kinds
            for bar in k.close_due(now_us, grace_us, self.epoch, f.instrument):
                self.publisher.send(schema.TRADE_BAR, k.bar_topic, bar)
        if self._batch:
            self.flush()

    def _on_bbo(self, ev: BboEvent) -> None:
        f = self.feeds[ev.symbol]
        if f.removed:
            return  # in flight when it was unsubscribed
        k = f.kinds
        self.publisher.send(schema.QUOTE, k.quote_topic, k.quote(ev, self.epoch, f.instrument))
        c = f.counts
        c.quotes += 1
        c.last_quote_ns = ev.recv_ns
        if not self.verify_bbo:
            return
        if f.sync.state is not SyncState.LIVE or ev.update_id < f.sync.book_id:
            return  # cannot compare: the book is past this id, or not live
        f.pending_bbo = ev
        self._verify_bbo(f)

    def _on_malformed(self, ev: Malformed) -> None:
        if ev.symbol in self.feeds:
            self.feeds[ev.symbol].counts.malformed += 1
        else:
            self.counts.malformed_frames += 1
        self._log_once("malformed", "%s: malformed frame skipped (logged once): %s", self.exchange, ev.detail)

    def _absurd_time(self, ev, what: str) -> None:
        """An absurd venue time (MAX_TS_US): malformed, counted, never published."""
        self._on_malformed(Malformed(ev.symbol, f"{what} stamped {ev.ts_exchange_us} us by the venue "
                                                f"(not before 2100-01-01): an absurd time"))

    def _on_unknown(self, ev: Unknown) -> None:
        self.counts.unknown_frames += 1
        self._log_once(f"unknown:{ev.detail[:40]}", "%s: unknown frame skipped (logged once per kind): %s",
                       self.exchange, ev.detail)

    def _log_once(self, kind: str, fmt: str, *args) -> None:
        if kind not in self._logged and len(self._logged) < _LOG_KINDS_MAX:
            self._logged.add(kind)
            log.warning(fmt, *args)

    # ---------------------------------------------------------------- actions
    def _carry_out(self, f: SymbolFeed, actions, now_ns: int) -> None:
        """Do what the sync machine asked (the book-side actions here, the network-side
        ones queued for the runner)."""
        for action in actions:
            if action is Action.MARK_STALE:
                f.pending_bbo = None
                f.counts.stale_since_ns = now_ns
                self._publish_snapshot(f)  # state "stale", last levels: consumers stop trusting it
                log.info("%s %s: book stale (%s)", self.exchange, f.symbol, f.sync.why)
            elif action is Action.PUBLISH_SNAPSHOT:
                self._publish_snapshot(f)
            elif action is Action.FETCH_SNAPSHOT or action is Action.RESUBSCRIBE:
                self._out.append(Request(action, f.symbol))
            else:  # APPLY / INSTALL / REPLACE are handled where they are returned
                raise AssertionError(f"{f.symbol}: action {action} out of place")

    def _publish_checked(self, f: SymbolFeed, db, da, checksum: int, update_id: int, ts_exchange_us: int,
                         recv_ns: int) -> bool:
        """Integrity checks of the updated book, then the view delta to shm and the bus.
        False (nothing published, the symbol resyncs) when the book is wrong."""
        if checksum and not self._checksum_ok(f, checksum, recv_ns):
            return False
        book = f.book
        if book.is_crossed():
            self._integrity_failed(f, "crossed book", recv_ns)
            return False
        if (f.bid_floor is not None or f.ask_ceiling is not None) and not self._within_snapshot(f, book, recv_ns):
            return False
        f.ts_exchange_us = ts_exchange_us
        f.ts_received_us = recv_ns // 1000
        if db or da:
            self._publish_delta(f, db, da, update_id)
        return True

    def _within_snapshot(self, f: SymbolFeed, book, now_ns: int) -> bool:
        """The view must lie inside the range the last REST snapshot covered (section 1
        step 7: publish only the top N you trust).  When the market has moved so far that
        the view reaches past it (or the known levels inside it run short), levels the
        venue has there may be missing: resync from a fresh snapshot before publishing."""
        n = self.depth
        nb, worst_bid, na, worst_ask = book.view_edges()
        floor, ceiling = f.bid_floor, f.ask_ceiling
        if floor is not None and (nb < n or worst_bid < floor):
            why = "bids"
        elif ceiling is not None and (na < n or worst_ask > ceiling):
            why = "asks"
        else:
            return True
        log.info("%s %s: the %s view reaches past the last snapshot's range; resyncing", self.exchange,
                 f.symbol, why)
        self._carry_out(f, f.sync.book_invalid(f"view past the snapshot's {why}"), now_ns)
        return False

    def _checksum_ok(self, f: SymbolFeed, expected: int, now_ns: int) -> bool:
        """The venue's checksum of the book after an event (OKX CRC32) against ours."""
        if self.checksum is not None and self.checksum(f.symbol, f.book) == expected:
            f.counts.checksum_ok += 1
            return True
        self._integrity_failed(f, f"checksum mismatch (venue {expected})", now_ns)
        return False

    def _integrity_failed(self, f: SymbolFeed, why: str, now_ns: int) -> None:
        """The book disagrees with the venue (checksum, BBO) or with itself (crossed):
        never publish it as live; count, mark stale, resync."""
        f.counts.checksum_failed += 1
        log.warning("%s %s: %s at update id %d; resyncing", self.exchange, f.symbol, why, f.sync.book_id)
        self._carry_out(f, f.sync.book_invalid(why), now_ns)

    def _verify_bbo(self, f: SymbolFeed) -> None:
        """Venue BBO at the same update id must equal our top of book (section 1)."""
        bbo = f.pending_bbo
        book_id = f.sync.book_id
        if bbo.update_id > book_id:
            return
        f.pending_bbo = None
        if bbo.update_id < book_id or f.sync.state is not SyncState.LIVE:
            return
        bb, ba = f.book.best_bid(), f.book.best_ask()
        ok = (bb is not None and ba is not None and bb[0] == bbo.bid_price and bb[1] == bbo.bid_size
              and ba[0] == bbo.ask_price and ba[1] == bbo.ask_size)
        if ok:
            f.counts.checksum_ok += 1
            return
        self._integrity_failed(f, f"book top {bb}/{ba} differs from venue BBO {(bbo.bid_price, bbo.bid_size)}/"
                                  f"{(bbo.ask_price, bbo.ask_size)}", bbo.recv_ns)

    # ---------------------------------------------------------------- outputs
    def _write_view(self, f: SymbolFeed) -> None:
        self.writer.write_view_doubles(f.index, f.counts.l2_seq, f.sync.book_state, f.ts_exchange_us,
                                       f.ts_received_us, f.view_update_id, *f.book.view_doubles())

    def _view_changed(self, f: SymbolFeed, update_id: int) -> None:
        """The view (or its state) changed with seq l2_seq: write it to shm now, or in
        batch mode at the next flush (shm is always written before the bus messages it
        covers are sent, so a consumer reading shm at seq S drops bus seqs <= S)."""
        f.view_update_id = update_id
        if not self._batch:
            self._write_view(f)
        elif not f.dirty:
            f.dirty = True
            if not self._dirty and self._schedule_flush is not None:
                self._schedule_flush()
            self._dirty.append(f)

    def flush(self) -> None:
        """Batch mode: write every changed view to shm once, then send the queued L2 messages."""
        dirty, self._dirty = self._dirty, []
        for f in dirty:
            f.dirty = False
            self._write_view(f)
        if self._to_derive:
            to_derive, self._to_derive = self._to_derive, []
            derive = self._derive
            for f, msg in to_derive:
                derive(f, msg)
        if self._cvd_dirty:
            cvd_dirty, self._cvd_dirty = self._cvd_dirty, []
            send, epoch = self.publisher.send, self.epoch
            for f in cvd_dirty:
                send(schema.CVD, f.kinds.cvd_topic, f.kinds.cvd_message(epoch, f.instrument))
        self.publisher.flush_l2()

    def _publish_delta(self, f: SymbolFeed, bids, asks, update_id: int) -> None:
        f.counts.l2_seq = seq = f.counts.l2_seq + 1
        self._view_changed(f, update_id)
        self.publisher.send_l2(f.l2_topic, schema.L2Update(
            exchange=self.exchange, symbol=f.symbol, epoch=self.epoch, seq=seq,
            ts_exchange=f.ts_exchange_us, ts_received=f.ts_received_us, snapshot=False, state="live",
            update_id=update_id, depth=self.depth, bids=bids, asks=asks, instrument=f.instrument))

    def _publish_snapshot(self, f: SymbolFeed) -> None:
        if f.sync.book_state is not self._last_state.get(f.symbol):
            self._last_state[f.symbol] = f.sync.book_state
            f.state_since_ns = time.time_ns()  # (state changes are rare; not the hot path)
        f.counts.l2_seq = seq = f.counts.l2_seq + 1
        update_id = max(f.sync.book_id, 0)
        self._view_changed(f, update_id)
        bids, asks = f.book.view()
        self.publisher.send_l2(f.l2_topic, schema.L2Update(
            exchange=self.exchange, symbol=f.symbol, epoch=self.epoch, seq=seq,
            ts_exchange=f.ts_exchange_us, ts_received=f.ts_received_us, snapshot=True,
            state=_STATE_NAMES[f.sync.book_state], update_id=update_id, depth=self.depth, bids=bids, asks=asks,
            instrument=f.instrument))

    def republish_all(self) -> None:
        """Publish a snapshot of every book that has been live (e.g. for late joiners without shm)."""
        for f in self.feeds.values():
            if f.sync.ever_live and not f.removed:
                self._publish_snapshot(f)

    def copy_stats(self) -> None:
        """Copy every counter into shared memory (the runner's stats loop, every 0.25 s):
        each symbol's FEED_STATS words, the process counters and the publish lag."""
        n = len(FEED_STATS)
        for f in self.feeds.values():
            if f.index >= 0:
                self.writer.slots[f.index].stats[:n] = f.counts.as_tuple()
        header = self.writer.header
        header[P["unknown_frames"]] = self.counts.unknown_frames
        header[P["malformed_frames"]] = self.counts.malformed_frames
        lag = self.publisher.publish_lag
        lag.roll()
        header[P["publish_lag_us"]], header[P["publish_lag_p99_us"]], header[P["publish_lag_max_us"]] = lag.figures()
        header[P["publish_lag_1s_us"]] = lag.percentile(0.5, last=LAST_SECOND)


def _ignore(ev) -> None:
    """A frame that carried nothing for the feed (a pong, an ack)."""


def _instrument(adapter, symbol: str) -> schema.Instrument | None:
    """The bus ``instrument`` of a native symbol, from the adapter (None if it cannot say)."""
    try:
        return adapter.instrument(symbol)
    except (KeyError, ValueError):
        return None
