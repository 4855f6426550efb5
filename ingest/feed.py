"""Books of one exchange: sync -> full book -> shared-memory view -> bus.

FeedBooks glues the pure parts together for the runner: it owns, per symbol, the
BookSync state machine, the ViewBook, the shared-memory slot and the bus seq
counters.  It never touches the network; the runner calls it with parsed events
and gives it a ``request_snapshot(symbol)`` callback.

Order of a book update: apply to the full book -> exact view delta -> write the
view to shared memory with seq N (seqlock) -> send the delta with seq N.  So a
consumer that reads shared memory at seq S and then applies bus deltas with
seq > S rebuilds exactly the view (Clone pattern, DESIGN.md).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
import zmq

from ingest.events import BboEvent, DepthDiff, DepthSnapshot, TradeEvent
from ingest.sync import BookSync, IllegalTransition, SnapshotTooOld, SyncState
from pipeline import bus, schema
from pipeline.book import ViewBook
from pipeline.lag import MAX_INTERVAL_SAMPLES, LagWindow
from pipeline.errors import SequenceGap
from pipeline.shm import FEED_STATS, H_PROCESS_STATS, PROCESS_STATS, BookState, BookWriter
from pipeline.trade_ring import TradeRingWriter

log = logging.getLogger(__name__)
LAST_SECOND = 4  # stats intervals of 0.25 s (ingest/runner.py STATS_INTERVAL): publish_lag_1s_us

_S = {name: i for i, name in enumerate(FEED_STATS)}
S_UPDATES, S_TRADES, S_GAPS, S_RESYNCS = _S["updates"], _S["trades"], _S["gaps"], _S["resyncs"]
S_MALFORMED, S_CK_OK, S_CK_FAILED = _S["malformed"], _S["checksum_ok"], _S["checksum_failed"]
S_LAST_UPDATE, S_LAST_TRADE, S_TRADE_SEQ, S_L2_SEQ = (_S["last_update_ns"], _S["last_trade_ns"],
                                                      _S["trade_seq"], _S["l2_seq"])
S_BUFFERED, S_CONNECTED, S_STALE_SINCE, S_DROPPED = (_S["buffered"], _S["connected"], _S["stale_since_ns"],
                                                     _S["dropped"])
P = {name: H_PROCESS_STATS + i for i, name in enumerate(PROCESS_STATS)}

_STATE_NAMES = {BookState.SYNCING: "syncing", BookState.LIVE: "live", BookState.STALE: "stale"}


class BusPublisher:
    """Encodes and sends bus messages on an exchange's two PUB sockets.

    Trades are sent at once.  With ``batch`` set, L2 messages are queued; ``flush_l2``
    encodes and sends the queue back to back (FeedBooks.flush, once per batch of
    depth frames).  A burst of sends keeps ZeroMQ's pipe to its I/O thread non-empty, so
    the I/O thread is woken once per batch instead of once per message: spaced-out sends
    cost 8-15 us each here, back-to-back ones ~2.4 us.
    """

    def __init__(self, trades_sock: zmq.Socket | None, l2_sock: zmq.Socket | None, batch: bool = False):
        self.trades_sock = trades_sock
        self.l2_sock = l2_sock
        self.batch = batch
        self._l2_pending: list[tuple[bytes, bytes]] = []

    def send_trade(self, topic: bytes, msg: schema.Trade) -> None:
        msg.ts_published = time.time_ns() // 1000
        if self.trades_sock is not None:
            bus.send(self.trades_sock, topic, schema.encode(msg))

    def send_l2(self, topic: bytes, msg: schema.L2Update) -> None:
        if self.l2_sock is None:
            return
        if self.batch:
            self._l2_pending.append((topic, msg))
        else:
            msg.ts_published = time.time_ns() // 1000
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


class SymbolFeed:
    __slots__ = ("index", "symbol", "sync", "book", "state", "l2_seq", "trade_seq", "stats",
                 "pending_bbo", "l2_topic", "trade_topic", "ts_exchange_us", "ts_received_us",
                 "ever_live", "snapshot_wanted", "instrument", "view_update_id", "dirty", "bid_floor",
                 "ask_ceiling", "updates", "last_update_ns")

    def __init__(self, index: int, symbol: str, sync: BookSync, depth: int, stats: np.ndarray, exchange: str,
                 instrument: schema.Instrument | None = None):
        self.index = index
        self.symbol = symbol
        self.sync = sync
        self.book = ViewBook(depth)
        self.state = BookState.SYNCING
        self.l2_seq = 0
        self.trade_seq = 0
        self.stats = stats
        self.pending_bbo: BboEvent | None = None
        self.l2_topic = schema.L2.topic(exchange, symbol)
        self.trade_topic = schema.TRADE.topic(exchange, symbol)
        self.ts_exchange_us = 0
        self.ts_received_us = 0
        self.ever_live = False
        self.snapshot_wanted = False
        self.instrument = instrument
        self.view_update_id = 0   # venue update id of the view as last published
        # counted here, copied to the shm stats by _sync_counts (per batch in batch mode)
        self.updates = 0
        self.last_update_ns = 0
        # A REST snapshot cut at its limit covers prices down to bid_floor / up to
        # ask_ceiling; beyond them the venue's levels are unknown until they change.
        self.bid_floor: float | None = None
        self.ask_ceiling: float | None = None
        self.dirty = False        # published on the bus queue, not yet written to shm (batch mode)


class FeedBooks:
    """All books of one exchange inside the ingest process."""

    def __init__(self, exchange: str, adapter, writer: BookWriter, publisher: BusPublisher, epoch: int,
                 request_snapshot: Callable[[str], None] | None = None, trade_ring: TradeRingWriter | None = None,
                 loop=None):
        self.exchange = exchange
        self.trade_ring = trade_ring  # recent trades by seq, for consumers' backfill (pipeline/trade_ring.py)
        self.adapter = adapter
        self.writer = writer
        self.publisher = publisher
        self.epoch = epoch
        self.depth = writer.depth
        self.request_snapshot = request_snapshot or (lambda symbol: None)
        traits = adapter.traits  # docs/adapters.md: snapshot source, book cap, checksums, BBO checks
        self.verify_bbo = traits.verify_bbo
        self.in_stream = traits.in_stream
        self.book_cap = traits.book_cap
        self.checksum = adapter.checksum if traits.checksum else None
        limit = 0 if self.in_stream else traits.snapshot_limit
        if limit and limit < self.depth:
            log.warning("%s: snapshot_limit %d < depth %d: the deeper part of the view is only as good as the "
                        "diffs that touched it", exchange, limit, self.depth)
            limit = 0
        self.snapshot_limit = limit
        self.feeds: dict[str, SymbolFeed] = {}
        for i, sym in enumerate(writer.symbols):
            sync = BookSync(sym, adapter.check, adapter.snapshot_usable)
            self.feeds[sym] = SymbolFeed(i, sym, sync, self.depth, writer.slots[i].stats, exchange,
                                         _instrument(adapter, sym))
        self.header = writer.header
        # Batch mode (publisher.batch): a book change is queued on the bus and its symbol
        # marked dirty; flush() writes each dirty view to shm once, then sends the queue.
        # The ingest flushes once per event-loop turn (``loop``); callers without a loop
        # (benchmarks) call flush() themselves.
        self.loop = loop
        self._batch = getattr(publisher, "batch", False)
        self._dirty: list[SymbolFeed] = []
        self._lag_n = 0
        self.publish_lag = LagWindow()  # receive -> publish, p50/p99/max over the last minute
        self._lag_samples = self.publish_lag.samples

    def refresh_instruments(self) -> None:
        """Ask the adapter again (after venue metadata arrived: Lighter market kinds)."""
        for f in self.feeds.values():
            f.instrument = _instrument(self.adapter, f.symbol)

    # ------------------------------------------------------------ connection events
    def depth_connected(self, symbols) -> None:
        """A depth connection opened: its symbols buffer and wait for snapshots."""
        for sym in symbols:
            f = self.feeds[sym]
            if f.sync.state is not SyncState.DISCONNECTED:
                f.sync.disconnected()
            f.sync.connected()
            f.stats[S_CONNECTED] = 1
            f.snapshot_wanted = not self.in_stream  # in-stream venues send one after subscribing

    def depth_disconnected(self, symbols, reason: str) -> None:
        for sym in symbols:
            f = self.feeds[sym]
            f.sync.disconnected()
            f.stats[S_CONNECTED] = 0
            f.snapshot_wanted = False
            self._mark_stale(f, f"connection lost: {reason}")

    # ------------------------------------------------------------------ events
    def on_diff(self, ev: DepthDiff) -> None:
        f = self.feeds[ev.symbol]
        try:
            apply = f.sync.diff_received(ev)
        except SequenceGap as exc:
            f.stats[S_GAPS] += 1
            log.warning("%s %s: sequence gap, resyncing: %s", self.exchange, f.symbol, exc)
            self._mark_stale(f, "gap")
            self._want_snapshot(f)
            return
        except IllegalTransition:
            # a frame that was in flight when the connection was declared dead
            return
        if not apply:
            if f.sync.state is SyncState.BUFFERING:
                f.stats[S_BUFFERED] = len(f.sync.buffer)
                if f.snapshot_wanted:
                    self._want_snapshot(f)
            else:
                f.stats[S_DROPPED] += 1
            return
        f.updates += 1
        f.last_update_ns = ev.recv_ns
        if not self._batch:
            self._sync_counts(f)
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

    def on_snapshot(self, snap: DepthSnapshot) -> None:
        """A snapshot arrived for ``snap.symbol``: from REST, or in the stream."""
        f = self.feeds[snap.symbol]
        if self.in_stream and f.sync.state is SyncState.LIVE:
            self._replace(f, snap)
            return
        if f.sync.state is not SyncState.BUFFERING:
            return  # connection died meanwhile, or already live: this snapshot is moot
        try:
            to_apply = f.sync.snapshot_received(snap, self.in_stream)
        except SnapshotTooOld as exc:
            log.info("%s %s: %s; fetching again", self.exchange, f.symbol, exc)
            self._want_snapshot(f)
            return
        except SequenceGap as exc:
            f.stats[S_GAPS] += 1
            log.warning("%s %s: %s; fetching again", self.exchange, f.symbol, exc)
            self._want_snapshot(f)
            return
        book = f.book
        book.clear()
        book.load_snapshot(snap.bids, snap.asks)
        limit = self.snapshot_limit  # a cut REST snapshot: remember how far it reaches
        f.bid_floor = min(p for p, _ in snap.bids) if limit and len(snap.bids) >= limit else None
        f.ask_ceiling = max(p for p, _ in snap.asks) if limit and len(snap.asks) >= limit else None
        if self.book_cap:
            book.trim(self.book_cap)
        checksum = snap.checksum
        ts_ex, ts_rx = snap.ts_exchange_us, snap.recv_ns // 1000
        for ev in to_apply:
            book.apply(ev.bids, ev.asks)
            if self.book_cap:
                book.trim(self.book_cap)
            f.updates += 1
            ts_ex, ts_rx = ev.ts_exchange_us, ev.recv_ns // 1000
            checksum = ev.checksum
        if checksum and not self._checksum_ok(f, checksum):
            return
        if book.is_crossed():
            self._integrity_failed(f, "crossed book after snapshot")
            return
        f.ts_exchange_us, f.ts_received_us = ts_ex, ts_rx
        f.last_update_ns = time.time_ns()
        self._sync_counts(f)
        f.stats[S_BUFFERED] = 0
        f.stats[S_STALE_SINCE] = 0
        if f.ever_live:
            f.stats[S_RESYNCS] += 1
        f.ever_live = True
        f.snapshot_wanted = False
        f.state = BookState.LIVE
        self._publish_snapshot(f)
        log.info("%s %s: live at update id %d (snapshot %d + %d buffered)", self.exchange, f.symbol,
                 f.sync.book_id, snap.last_id, len(to_apply))
        if f.pending_bbo is not None:
            self._verify_bbo(f)

    def _replace(self, f: SymbolFeed, snap: DepthSnapshot) -> None:
        """A live book replaced by an in-stream snapshot: publish the exact view delta."""
        f.sync.replaced(snap.last_id)
        book = f.book
        db, da = book.replace(snap.bids, snap.asks)
        if self.book_cap:
            tb, ta = book.trim(self.book_cap)
            db, da = db + tb, da + ta
        f.updates += 1
        f.last_update_ns = snap.recv_ns
        self._sync_counts(f)
        self._publish_checked(f, db, da, snap.checksum, snap.last_id, snap.ts_exchange_us, snap.recv_ns)

    def _publish_checked(self, f: SymbolFeed, db, da, checksum: int, update_id: int, ts_exchange_us: int,
                         recv_ns: int) -> bool:
        """Integrity checks of the updated book, then the view delta to shm and the bus.
        False (nothing published, the symbol resyncs) when the book is wrong."""
        if checksum and not self._checksum_ok(f, checksum):
            return False
        book = f.book
        if book.is_crossed():
            self._integrity_failed(f, "crossed book")
            return False
        if (f.bid_floor is not None or f.ask_ceiling is not None) and not self._within_snapshot(f, book):
            return False
        f.ts_exchange_us = ts_exchange_us
        f.ts_received_us = recv_ns // 1000
        if db or da:
            self._publish_delta(f, db, da, update_id)
            self._note_lag(recv_ns)
        return True

    def _within_snapshot(self, f: SymbolFeed, book) -> bool:
        """The view must lie inside the range the last REST snapshot covered (section 1
        step 7: publish only the top N you trust).  When the market has moved so far that
        the view reaches past it (or the known levels inside it run short), levels the
        venue has there may be missing: resync from a fresh snapshot before publishing."""
        n = self.depth
        bp, ap = book._view_px
        floor, ceiling = f.bid_floor, f.ask_ceiling
        if floor is not None and (len(bp) < n or bp[-1] < floor):
            why = "bids"
        elif ceiling is not None and (len(ap) < n or ap[-1] > ceiling):
            why = "asks"
        else:
            return True
        log.info("%s %s: the %s view reaches past the last snapshot's range; resyncing", self.exchange,
                 f.symbol, why)
        f.sync.invalidate()
        self._mark_stale(f, f"view past the snapshot's {why}")
        self._want_snapshot(f)
        return False

    def _checksum_ok(self, f: SymbolFeed, expected: int) -> bool:
        """The venue's checksum of the book after an event (OKX CRC32) against ours."""
        if self.checksum is not None and self.checksum(f.symbol, f.book) == expected:
            f.stats[S_CK_OK] += 1
            return True
        self._integrity_failed(f, f"checksum mismatch (venue {expected})")
        return False

    def _integrity_failed(self, f: SymbolFeed, why: str) -> None:
        """The book disagrees with the venue (checksum, BBO) or with itself (crossed):
        never publish it as live; count, mark stale, resync."""
        f.stats[S_CK_FAILED] += 1
        log.warning("%s %s: %s at update id %d; resyncing", self.exchange, f.symbol, why, f.sync.book_id)
        if f.sync.state is not SyncState.DISCONNECTED:
            f.sync.invalidate()
        self._mark_stale(f, why)
        self._want_snapshot(f)

    def on_trade(self, ev: TradeEvent) -> None:
        f = self.feeds[ev.symbol]
        f.trade_seq += 1
        msg = schema.Trade(exchange=self.exchange, symbol=ev.symbol, epoch=self.epoch, seq=f.trade_seq,
                           ts_exchange=ev.ts_exchange_us, ts_received=ev.recv_ns // 1000, price=ev.price,
                           amount=ev.amount, side=ev.side, trade_id=ev.trade_id, instrument=f.instrument)
        if self.trade_ring is not None:  # ring first, then bus: whatever a consumer sees is in the ring
            self.trade_ring.append(f.index, f.trade_seq, ev.ts_exchange_us, msg.ts_received, ev.price, ev.amount,
                                   ev.side, ev.trade_id)
        self.publisher.send_trade(f.trade_topic, msg)
        st = f.stats
        st[S_TRADES] += 1
        st[S_TRADE_SEQ] = f.trade_seq
        st[S_LAST_TRADE] = ev.recv_ns

    def on_bbo(self, ev: BboEvent) -> None:
        if not self.verify_bbo:
            return
        f = self.feeds[ev.symbol]
        if f.state is not BookState.LIVE or ev.update_id < f.sync.book_id:
            return  # cannot compare: the book is past this id, or not live
        f.pending_bbo = ev
        self._verify_bbo(f)

    def on_malformed(self, symbol: str | None) -> None:
        if symbol in self.feeds:
            self.feeds[symbol].stats[S_MALFORMED] += 1
        else:
            self.header[P["malformed_frames"]] += 1

    # ---------------------------------------------------------------- internals
    def _verify_bbo(self, f: SymbolFeed) -> None:
        """Venue BBO at the same update id must equal our top of book (section 1)."""
        bbo = f.pending_bbo
        book_id = f.sync.book_id
        if bbo.update_id > book_id:
            return
        f.pending_bbo = None
        if bbo.update_id < book_id or f.state is not BookState.LIVE:
            return
        bb, ba = f.book.best_bid(), f.book.best_ask()
        ok = (bb is not None and ba is not None and bb[0] == bbo.bid_price and bb[1] == bbo.bid_size
              and ba[0] == bbo.ask_price and ba[1] == bbo.ask_size)
        if ok:
            f.stats[S_CK_OK] += 1
            return
        self._integrity_failed(f, f"book top {bb}/{ba} differs from venue BBO {(bbo.bid_price, bbo.bid_size)}/"
                                  f"{(bbo.ask_price, bbo.ask_size)}")

    def _want_snapshot(self, f: SymbolFeed) -> None:
        f.snapshot_wanted = False
        self.request_snapshot(f.symbol)

    def _mark_stale(self, f: SymbolFeed, reason: str) -> None:
        if f.state is BookState.STALE or not f.ever_live:
            if not f.ever_live and f.state is not BookState.SYNCING:
                f.state = BookState.SYNCING
            return
        f.state = BookState.STALE
        f.pending_bbo = None
        f.stats[S_STALE_SINCE] = time.time_ns()
        self._publish_snapshot(f)  # state "stale", last levels: consumers stop trusting it
        log.info("%s %s: book stale (%s)", self.exchange, f.symbol, reason)

    def _write_view(self, f: SymbolFeed) -> None:
        bp, bs, ap, as_ = f.book.view_arrays()
        self.writer.write_view(f.index, f.l2_seq, f.state, f.ts_exchange_us, f.ts_received_us, f.view_update_id,
                               bp, bs, ap, as_)
        f.stats[S_L2_SEQ] = f.l2_seq

    def _view_changed(self, f: SymbolFeed, update_id: int) -> None:
        """The view (or its state) changed with seq f.l2_seq: write it to shm now, or in
        batch mode at the next flush (shm is always written before the bus messages it
        covers are sent, so a consumer reading shm at seq S drops bus seqs <= S)."""
        f.view_update_id = update_id
        if not self._batch:
            self._write_view(f)
        elif not f.dirty:
            f.dirty = True
            if not self._dirty and self.loop is not None:
                self.loop.call_soon(self.flush)
            self._dirty.append(f)

    def flush(self) -> None:
        """Batch mode: write every changed view to shm once, then send the queued L2 messages."""
        dirty, self._dirty = self._dirty, []
        for f in dirty:
            f.dirty = False
            self._write_view(f)
            self._sync_counts(f)
        self.publisher.flush_l2()

    @staticmethod
    def _sync_counts(f: SymbolFeed) -> None:
        st = f.stats
        st[S_UPDATES] = f.updates
        st[S_LAST_UPDATE] = f.last_update_ns

    def _publish_delta(self, f: SymbolFeed, bids, asks, update_id: int) -> None:
        f.l2_seq += 1
        self._view_changed(f, update_id)
        self.publisher.send_l2(f.l2_topic, schema.L2Update(
            exchange=self.exchange, symbol=f.symbol, epoch=self.epoch, seq=f.l2_seq,
            ts_exchange=f.ts_exchange_us, ts_received=f.ts_received_us, snapshot=False, state="live",
            update_id=update_id, depth=self.depth, bids=bids, asks=asks, instrument=f.instrument))

    def _publish_snapshot(self, f: SymbolFeed) -> None:
        f.l2_seq += 1
        update_id = max(f.sync.book_id, 0)
        self._view_changed(f, update_id)
        bids, asks = f.book.view()
        self.publisher.send_l2(f.l2_topic, schema.L2Update(
            exchange=self.exchange, symbol=f.symbol, epoch=self.epoch, seq=f.l2_seq,
            ts_exchange=f.ts_exchange_us, ts_received=f.ts_received_us, snapshot=True,
            state=_STATE_NAMES[f.state], update_id=update_id, depth=self.depth, bids=bids, asks=asks,
            instrument=f.instrument))

    def _note_lag(self, recv_ns: int) -> None:
        self._lag_n += 1
        if self._lag_n & 7:
            return  # every 8th update is plenty for percentiles over a minute
        samples = self._lag_samples
        samples.append((time.time_ns() - recv_ns) // 1000)  # figures: the stats loop (pipeline/lag.py)
        if not self._lag_n & 0xFFFF and len(samples) > MAX_INTERVAL_SAMPLES:
            del samples[:-MAX_INTERVAL_SAMPLES]  # nothing rolls them (a benchmark without the runner)

    def flush_lag_stats(self) -> None:
        """Copy lag figures into the process header and every feed's counts into its stats
        (called periodically: counts of updates that did not change a view get there too)."""
        for f in self.feeds.values():
            self._sync_counts(f)
        self._flush_lag()

    def _flush_lag(self) -> None:
        """Close the lag interval and copy p50/p99/max over the last minute into the process
        header (called once per stats interval)."""
        self.publish_lag.roll()
        h = self.header
        h[P["publish_lag_us"]], h[P["publish_lag_p99_us"]], h[P["publish_lag_max_us"]] = self.publish_lag.figures()
        h[P["publish_lag_1s_us"]] = self.publish_lag.percentile(0.5, last=LAST_SECOND)

    def republish_all(self) -> None:
        """Publish a snapshot of every live book (e.g. for late joiners without shm)."""
        for f in self.feeds.values():
            if f.ever_live:
                self._publish_snapshot(f)


def _instrument(adapter, symbol: str) -> schema.Instrument | None:
    """The bus ``instrument`` of a native symbol, from the adapter (None if it cannot say)."""
    describe = getattr(adapter, "instrument", None)
    if describe is None:
        return None
    try:
        return describe(symbol)
    except (KeyError, ValueError):
        return None
