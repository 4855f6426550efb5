"""What the CSV sink writes for each bus message: book and trade streams.  No I/O.

Books (Clone pattern, DESIGN.md; the recovery is ``pipeline.consumer.BookTracker``):
a ``BookStream`` applies each L2 message to its tracker.  A delta applied in seq
order becomes delta rows.  Whenever the tracker has to (re)load the book -- the
first message after the sink starts, a seq gap (the sink was slow and ZeroMQ
dropped messages), a new epoch (the ingest restarted) -- it takes the view from
shared memory (the snapshot source), and the stream writes a snapshot block of
the whole book instead.  A bus snapshot that changes the book (a venue resync)
is written as a block too; one that repeats the book (periodic, or "stale") is
not.  So a file read from its top always rebuilds exactly the view the pipeline
had, and a new file (a new day) starts with a block of the current book.

Only a book we trust is written as a block: live and not crossed.  A "stale"
snapshot that changes the book (the ingest gave up on it), or a crossed view, is
held back: the file waits for the next live book, which comes as a block
(issue 19 item 10).  And a stream's ``local_timestamp`` never decreases: a block
reloaded from shared memory may carry an older receive time than the rows before
it (the strict tardis checker rejected such files), so each row's receive time is
at least the previous row's.

Trades: a ``TradeStream`` writes every trade once, in seq order.  A seq gap, or a
restart of the sink, is filled from the ingest's shared-memory trade ring
(pipeline/trade_ring.py) by seq; a trade already written (seq not newer) is
dropped.  Trades the ring no longer holds are counted as lost.

Trades the *venue* skipped (``trade_gap`` markers, issue 19 item 5; the file has no column
for it, DESIGN.md contract 6) are counted, and where the ingest backfills them over REST
the stream holds its trades back from the "missing" marker until the backfilled trades
came (at most HOLD_S, HOLD_ROWS), then writes them all in trade-id order: the file ends
with every id in place.  A backfilled trade's ``local_timestamp`` is then the one of the
first live trade after it in the file (the time the gap was seen), so the column never
decreases; its own receive time (the REST answer's) is on the bus.  A backfill that comes
after the hold ended is written where it arrives (counted in ``backfill_late``).

Each method returns the rows to append (whole rows, whole messages) and counts
what it did in a ``SinkCounters``: CSV text from a ``RowWriter``, or lists of tuples
from a ``TupleRows`` (the Parquet sink); either way "" or an empty list when there is
nothing, and the writer's ``join`` puts pieces together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from pipeline import schema
from pipeline.consumer import Applied, BookTracker
from pipeline.shm import BookSnapshot
from sinks.tardis import RowWriter, TupleRows

_SIDES = {"buy": "buy", "sell": "sell"}
HOLD_S = 30.0  # longest a trades stream waits for the REST backfill of a venue's trade-id gap
HOLD_ROWS = 200_000  # most trades held back meanwhile


@dataclass
class SinkCounters:
    """Counters of what the streams did (the sink adds file counters)."""

    book_rows: int = 0
    trade_rows: int = 0
    snapshots: int = 0        # snapshot blocks written
    book_resyncs: int = 0     # books reloaded from shared memory after a gap or a new epoch
    book_gaps: int = 0        # L2 seq gaps seen on the bus
    blocks_withheld: int = 0  # books not written as a block: stale or crossed (the next live one is)
    epochs: int = 0           # ingest restarts seen (a newer epoch of an exchange we had seen)
    gaps_filled: int = 0      # trades recovered from the trade ring
    trades_lost: int = 0      # trades missed that the ring no longer held
    trade_gaps: int = 0       # trade seq gaps seen (filled or not)
    duplicates: int = 0       # trades dropped as already written
    trade_id_gaps: int = 0    # venue trade-id gaps announced (trade_gap "missing" markers)
    trades_missed: int = 0    # venue trade ids skipped in them: trades lost upstream of the pipeline
    trades_backfilled: int = 0  # of those, trades the ingest fetched over REST that were written
    backfill_late: int = 0    # backfilled trades that came after their hold ended: written out of id order
    # (exchange, symbol) -> the ingest process (unit) that writes it: a sharded exchange has one
    # epoch per process (pipeline/shards.py), so restarts are counted per unit.  None: per exchange
    unit_of: Callable[[str, str], str] | None = field(default=None, repr=False)
    _epoch_of: dict[str, int] = field(default_factory=dict, repr=False)

    def note_epoch(self, exchange: str, epoch: int, symbol: str | None = None) -> None:
        """Count each ingest restart once, whichever stream shows it first."""
        key = self.unit_of(exchange, symbol) if self.unit_of is not None and symbol is not None else exchange
        known = self._epoch_of.get(key)
        if known is None or epoch > known:
            if known is not None:
                self.epochs += 1
            self._epoch_of[key] = epoch


SnapshotSource = Callable[[str, str, int], "BookSnapshot | None"]


class TradeRing(Protocol):
    epoch: int

    def head(self, symbol: str) -> int: ...
    def oldest(self, symbol: str) -> int: ...
    def read(self, symbol: str, seq: int) -> schema.Trade | None: ...
    def find(self, symbol: str, trade_id: str, ts_received: int | None = None) -> int | None: ...


RingSource = Callable[[str, int | None], "TradeRing | None"]


class BookStream:
    """The incremental_book_L2 rows of one (exchange, symbol)."""

    def __init__(self, exchange: str, symbol: str, rows: RowWriter | TupleRows, snapshots: SnapshotSource,
                 counters: SinkCounters):
        self.exchange, self.symbol = exchange, symbol
        self.rows = rows
        self.snapshots = snapshots
        self.counters = counters
        self.tracker = BookTracker(exchange, symbol)
        self.in_file = False  # the current file rebuilds the tracker's book
        self.floor = 0  # the latest local_timestamp written: no row goes below it
        self._withheld = False  # the book is held back from a block until it is live again
        self._shm_seen: tuple[int, int] | None = None  # (epoch, seq) of the view at the previous check

    def load(self, snap: BookSnapshot) -> str:
        """Start from a shared-memory view (sink start); a block, or "" when it has no levels."""
        if not len(snap.bids) and not len(snap.asks):
            return ""
        self.counters.note_epoch(self.exchange, snap.epoch, self.symbol)
        self.tracker.load_shm(snap)
        return self._block()

    def catch_up(self, snap: BookSnapshot | None) -> str:
        """Periodic check against the shared-memory view (``snap``, any epoch).

        A message lost at the end of a burst, or a snapshot published before the
        sink's subscription was up, shows no gap until the next message, which a
        quiet book may not send for long.  So: a book the bus has not brought up to
        where shared memory was at the previous check is reloaded, and a book never
        loaded takes the view as soon as there is one.
        """
        seen, self._shm_seen = self._shm_seen, (snap.epoch, snap.seq) if snap is not None else None
        if snap is None:
            return ""
        tr = self.tracker
        if not tr.synced:
            return self.load(snap)
        b = tr.book
        if seen is None or (b.epoch, b.seq) >= seen:
            return "" if self.in_file else self._block()  # e.g. after rows were lost: restate the book
        self.counters.note_epoch(self.exchange, snap.epoch, self.symbol)
        if b.epoch == seen[0]:
            self.counters.book_gaps += 1
        self.counters.book_resyncs += 1
        tr.load_shm(snap)
        return self._block()

    def new_file(self) -> str:
        """A new file was opened: a block of the current book (if there is one yet)."""
        self.in_file = False
        return self._block() if self.tracker.synced else ""

    def file_lost_rows(self) -> None:
        """Rows of this stream never reached the file: the next rows start with a block."""
        self.in_file = False

    def on_l2(self, msg: schema.L2Update) -> str:
        tr = self.tracker
        book = tr.book
        if self.in_file and not msg.snapshot and tr.synced and msg.epoch == book.epoch and msg.seq == book.seq + 1:
            # the common case, first: the next delta of a book the file already holds
            tr.apply(msg)
            self.counters.book_rows += len(msg.bids) + len(msg.asks)
            ts = msg.ts_received
            if ts < self.floor:
                ts = self.floor
            else:
                self.floor = ts
            return self.rows.delta(msg.ts_exchange, ts, msg.bids, msg.asks)
        was_synced, old_epoch = tr.synced, book.epoch
        old_bids, old_asks = book.bids, book.asks
        result = tr.apply(msg)
        if result is Applied.RESYNC:
            c = self.counters
            c.note_epoch(msg.exchange, msg.epoch, msg.symbol)
            if was_synced and msg.epoch == old_epoch:
                c.book_gaps += 1
            snap = self.snapshots(msg.exchange, msg.symbol, msg.epoch)
            if snap is None or snap.seq < msg.seq - 1:
                self.in_file = False
                return ""  # no view of this epoch yet: wait for shared memory or a bus snapshot
            tr.load_shm(snap)
            if was_synced:
                c.book_resyncs += 1
            result = tr.apply(msg)
            if result is Applied.RESYNC:
                self.in_file = False
                return ""
            return self._block()
        if result is Applied.OLD:
            return ""
        if msg.snapshot:
            if self.in_file and was_synced and msg.epoch == old_epoch and old_bids == book.bids \
                    and old_asks == book.asks:
                return ""  # a repeat of the book we have (periodic, or marked stale)
            self.counters.note_epoch(msg.exchange, msg.epoch, msg.symbol)
            return self._block()
        if not self.in_file:
            return self._block()
        self.counters.book_rows += len(msg.bids) + len(msg.asks)
        ts = max(msg.ts_received, self.floor)
        self.floor = ts
        return self.rows.delta(msg.ts_exchange, ts, msg.bids, msg.asks)

    def _block(self) -> str:
        b = self.tracker.book
        if b.state != "live" or (b.bids and b.asks and max(b.bids) >= min(b.asks)):
            # not a book to restate (stale, or crossed): wait for the next live one
            self.in_file = False
            if not self._withheld:  # once per book held back, not at every periodic check
                self._withheld = True
                self.counters.blocks_withheld += 1
            return ""
        self._withheld = False
        ts = max(b.ts_received, self.floor)
        self.floor = ts
        text = self.rows.snapshot(b.ts_exchange, ts, b.bids.items(), b.asks.items())
        if text:
            self.in_file = True
            self.counters.snapshots += 1
            self.counters.book_rows += len(b.bids) + len(b.asks) + 1
        return text


class TradeStream:
    """The trades rows of one (exchange, symbol): each trade once, gaps filled from the ring."""

    def __init__(self, exchange: str, symbol: str, rows: RowWriter | TupleRows, rings: RingSource,
                 counters: SinkCounters, since_us: int = 0, clock: Callable[[], float] = time.monotonic):
        self.exchange, self.symbol = exchange, symbol
        self.clock = clock  # (monotonic seconds) how long a hold lasted
        # trades held back while a venue gap's REST backfill is awaited: (id, seq, row fields), or None
        self._held: list | None = None
        self._held_since = 0.0
        self._held_epoch = 0  # the epoch of the marker that started the hold
        self._held_floor = -1  # the last trade id written before the hold: a backfilled one up to it is a repeat
        self._waiting: set[tuple[int, int]] = set()  # gaps (first_id, last_id) whose backfill is awaited
        self._told: list[tuple[int, int, int]] = []  # (epoch, first_id, last_id) of the last "missing" markers
        self._rest: list[tuple[int, int, int]] = []  # (epoch, first_seq, last_seq) of backfilled trades
        self.since_us = since_us  # when the sink started: an epoch (ingest start) after it is recorded whole
        self.rows = rows
        self.rings = rings
        self.counters = counters
        self.epoch: int | None = None
        self.seq = 0  # last seq written in ``epoch``
        self._resume_from: tuple | None = None  # what was written before the sink started, until resumed
        self.last_id: str | None = None  # id and receive time of the last trade written
        self.last_received: int | None = None
        self._ring_seen: tuple[int, int] | None = None  # (epoch, head) of the ring at the previous check
        self.origin: tuple[int, int] | None = None  # where this run began recording (saved for a restart)

    @property
    def position(self) -> tuple[int | None, int]:
        return self.epoch, self.seq

    @property
    def last_written(self) -> tuple[str | None, int | None]:
        return self.last_id, self.last_received

    def rewind(self, mark: tuple) -> None:
        """Rows after ``mark`` (position + last_written) never reached the file: the next
        trade finds a gap and refetches them from the ring."""
        self.epoch, self.seq, self.last_id, self.last_received = mark

    def resume(self, last_id: str | None, last_received: int | None,
               position: tuple[int, int] | None = None) -> str:
        """After a sink start: the ring's trades newer than the last one written before.

        ``last_id``/``last_received``: the last trade in the file (or saved state);
        ``position``: the (epoch, seq) recording had reached or started from, when
        no trade was written yet (``last_received`` alone: when recording began).
        The last trade is found in the ring by id and
        receive time; failing that, a position of the ring's epoch is used as it is;
        a position of an older epoch means the ingest restarted after recording
        began, so its trades are all new; otherwise every ring trade received after
        the last one is new.  With nothing known, recording starts with the bus.
        """
        if last_id is None and last_received is None and position is None:
            return ""
        self._resume_from = (last_id, last_received, position)
        ring = self.rings(self.exchange, None)
        return self._resume(ring) if ring is not None else ""

    def _resume(self, ring: TradeRing) -> str:
        last_id, last_received, position = self._resume_from
        self._resume_from = None
        head = ring.head(self.symbol)
        seq = ring.find(self.symbol, last_id, last_received) if last_id is not None else None
        if seq is None and position is not None and position[0] == ring.epoch:
            seq = min(position[1], head)
        elif seq is None and last_id is None and position is not None and ring.epoch > position[0]:
            seq = 0
        elif seq is None:
            seq = head
            oldest = ring.oldest(self.symbol)
            while seq >= oldest:
                t = ring.read(self.symbol, seq)
                if t is None or t.ts_received <= (last_received or 0):
                    break
                seq -= 1
            if seq < oldest and oldest > 1:
                self.counters.trade_gaps += 1  # the ring wrapped: trades before ``oldest`` may be lost
        self._start(ring.epoch, seq)
        self.last_id, self.last_received = last_id, last_received
        return self._backfill(ring, head)

    def _start(self, epoch: int, seq: int) -> None:
        """Record ``epoch`` from after ``seq``; the first such position is the stream's origin."""
        self.epoch, self.seq = epoch, seq
        if self.origin is None:
            self.origin = (epoch, seq)

    def catch_up(self, final: bool = False) -> str:
        """Periodic check against the trade ring (``_catch_up``), then a hold that lasted too long
        (or any, when ``final``) is written."""
        text = self._catch_up(final)
        if self._held is None:
            return text
        return self.rows.join((text, self.expire_hold(final)))

    def _catch_up(self, final: bool = False) -> str:
        """Periodic check against the trade ring: trades the bus did not bring.

        A trade lost at the end of a burst (or published before the subscription was
        up) shows no gap until the next trade.  Trades the ring had at the previous
        check and the bus has not delivered since are fetched from the ring; trades
        of an ingest that started after the sink are recorded from its first.
        ``final`` (the sink is stopping, the bus read to its end): nothing more will
        come from the bus, so every trade the ring holds past the stream is fetched now.
        """
        ring = self.rings(self.exchange, None)
        if ring is None:
            return ""
        if self._resume_from is not None:
            return self._resume(ring)
        head = ring.head(self.symbol)
        seen, self._ring_seen = self._ring_seen, (ring.epoch, head)
        if self.epoch is None:
            if not 0 < self.since_us <= ring.epoch:
                self._start(ring.epoch, head)  # running before the sink: record from now on
                return ""
            self._start(ring.epoch, 0)
        elif ring.epoch != self.epoch and (final or (seen is not None and seen[0] == ring.epoch)):
            self.counters.note_epoch(self.exchange, ring.epoch, self.symbol)  # a new ingest whose trades never came on the bus
            self._start(ring.epoch, 0)
        due = (ring.epoch, head) if final else seen
        if due is None or due[0] != self.epoch or due[1] <= self.seq:
            return ""
        self.counters.trade_gaps += 1
        return self._backfill(ring, due[1])

    def on_trade(self, msg: schema.Trade) -> str:
        text = ""
        if self._resume_from is not None:  # the ring was not there when the sink started
            ring = self.rings(self.exchange, msg.epoch)
            if ring is not None:
                text = self._resume(ring)
            self._resume_from = None
        if self._held is not None and msg.epoch != self._held_epoch:
            text = self.rows.join((text, self._release()))  # a new ingest: its trades start afresh
        if msg.epoch == self.epoch:
            if msg.seq <= self.seq:
                self.counters.duplicates += 1
                return text
            missing = msg.seq - self.seq - 1
        else:
            self.counters.note_epoch(msg.exchange, msg.epoch, msg.symbol)
            if self.epoch is not None:
                missing = msg.seq - 1  # the new epoch starts at 1
            elif 0 < self.since_us <= msg.epoch:
                missing = msg.seq - 1  # the ingest started after the sink: record its epoch whole
            else:
                missing = 0  # the first trade since the sink started with nothing to resume
            self._start(msg.epoch, 0 if missing else msg.seq - 1)
        if missing:
            self.counters.trade_gaps += 1
            ring = self.rings(self.exchange, msg.epoch)
            if ring is not None:
                text = self.rows.join((text, self._backfill(ring, msg.seq - 1)))
            lost = msg.seq - 1 - self.seq
            if lost > 0:
                self.counters.trades_lost += lost
        self.seq = msg.seq
        self.last_id, self.last_received = msg.trade_id, msg.ts_received
        self.counters.trade_rows += 1
        if (self._held is not None or self._rest) and self._hold(msg.epoch, msg.seq, msg):
            if self._hold_done():
                return self.rows.join((text, self._release()))
            return text
        row = self.rows.trade(msg.ts_exchange, msg.ts_received, msg.trade_id, _SIDES.get(msg.side, "unknown"),
                              msg.price, msg.amount)
        return self.rows.join((text, row)) if text else row

    def _backfill(self, ring: TradeRing, last: int) -> str:
        """Rows of the ring's trades ``self.seq + 1 .. last``; those it no longer holds are counted lost."""
        out = []
        first = self.seq + 1
        start = max(first, ring.oldest(self.symbol))
        skipped = start - first if start <= last else max(0, last - first + 1)
        rows, symbol = self.rows, self.symbol
        for seq in range(start, last + 1):
            t = ring.read(symbol, seq)
            if t is None:
                skipped += 1
                continue
            if (self._held is not None or self._rest) and self._hold(self.epoch, seq, t):
                self.last_id, self.last_received = t.trade_id, t.ts_received
                self.counters.gaps_filled += 1
                self.counters.trade_rows += 1
                continue
            out.append(rows.trade(t.ts_exchange, t.ts_received, t.trade_id, _SIDES.get(t.side, "unknown"),
                                  t.price, t.amount))
            self.last_id, self.last_received = t.trade_id, t.ts_received
        if last >= first:
            self.seq = last
        self.counters.trades_lost += skipped
        self.counters.gaps_filled += len(out)
        self.counters.trade_rows += len(out)
        if self._held is not None and self._hold_done():
            out.append(self._release())
        return rows.join(out)

    # -------------------------------------------------- venue trade-id gaps (issue 19 item 5)
    def on_gap(self, msg: schema.TradeGap) -> str:
        """A ``trade_gap`` marker: counted; "missing" with a backfill to come starts a hold, its
        "backfilled" follow-up says which seqs bring the trades (none: the hold ends now)."""
        c = self.counters
        key = (msg.first_id, msg.last_id)
        if msg.state == schema.GAP_MISSING:
            c.trade_id_gaps += 1
            c.trades_missed += msg.count
            self._told.append((msg.epoch, *key))
            del self._told[:-64]
            if msg.backfill:
                if self._held is not None and self._held_epoch != msg.epoch:
                    text = self._release()  # a hold of the previous ingest run: written now
                    self._held, self._held_since, self._held_epoch = [], self.clock(), msg.epoch
                    self._held_floor = self._last_int_id()
                    self._waiting.add(key)
                    return text
                self._waiting.add(key)
                if self._held is None:
                    self._held, self._held_since, self._held_epoch = [], self.clock(), msg.epoch
                    self._held_floor = self._last_int_id()
            return ""
        self._waiting.discard(key)
        if (msg.epoch, *key) not in self._told:  # its "missing" marker was lost (a subscriber still
            c.trade_id_gaps += 1                 # reconnecting to a restarted ingest): counted now
            c.trades_missed += msg.count
        if msg.backfilled:
            self._rest.append((msg.epoch, msg.first_seq, msg.last_seq))
            del self._rest[:-64]
            if self.epoch == msg.epoch and self.seq >= msg.last_seq:
                return self._release()  # (its trades came first: they were refilled from the ring)
            return ""
        return self._release() if not self._waiting else ""

    def _last_int_id(self) -> int:
        tid = self.last_id
        return int(tid) if tid is not None and tid.isdigit() else -1

    def _from_rest(self, epoch: int, seq: int) -> bool:
        """Whether trade ``seq`` is a backfilled one (announced ranges already passed are forgotten)."""
        self._rest = rest = [r for r in self._rest if r[0] == epoch and r[2] >= seq]
        return any(first <= seq for _, first, _ in rest)

    def _hold(self, epoch: int, seq: int, msg) -> bool:
        """Whether a trade (a bus Trade or a ring trade) is held back; counts a backfilled one.
        False: write it now."""
        rest = bool(self._rest) and self._from_rest(epoch, seq)
        if rest:
            self.counters.trades_backfilled += 1
        held = self._held
        if held is None:
            if rest:
                self.counters.backfill_late += 1  # (written where it arrives, after the live trades)
            return False
        tid = msg.trade_id
        held.append((int(tid) if tid.isdigit() else -1, rest, msg.ts_exchange, msg.ts_received, tid,
                     _SIDES.get(msg.side, "unknown"), msg.price, msg.amount))
        return True

    def _hold_done(self) -> bool:
        """The hold ends: every awaited gap was answered and its trades came, or it lasted too long."""
        held = self._held
        if held is None:
            return False
        if len(held) >= HOLD_ROWS or self.clock() - self._held_since >= HOLD_S:
            return True
        if self._waiting:
            return False
        return not any(e == self.epoch and last > self.seq for e, _, last in self._rest)

    def _release(self) -> str:
        """Write the held trades in trade-id order (ids the venue gives as decimals; others keep
        their place at the end); a backfilled trade takes the local time of the first live trade
        after it, so ``local_timestamp`` never decreases."""
        held, self._held = self._held, None
        self._waiting.clear()
        if not held:
            return ""
        floor = self._held_floor
        if floor >= 0:  # (a gap across an ingest restart may reach back into what the last run published)
            kept = [h for h in held if not (h[1] and 0 <= h[0] <= floor)]
            self.counters.duplicates += len(held) - len(kept)
            held = kept
            if not held:
                return ""
        held.sort(key=lambda h: (h[0] < 0, h[0]))
        floor = None
        for i in range(len(held) - 1, -1, -1):
            h = held[i]
            if h[1] and floor is not None and h[3] > floor:
                held[i] = h = (*h[:3], floor, *h[4:])
            floor = h[3] if floor is None else min(floor, h[3])
        rows = self.rows
        out = [rows.trade(h[2], h[3], h[4], h[5], h[6], h[7]) for h in held]
        last = max(held, key=lambda h: h[0])  # (the file's last row: where a restart resumes)
        self.last_id, self.last_received = last[4], last[3]
        return rows.join(out)

    def expire_hold(self, final: bool = False) -> str:
        """The periodic check (the sinks' catch_up): a hold past HOLD_S, or any at a stop, is written."""
        if self._held is not None and (final or self._hold_done()):
            return self._release()
        return ""
