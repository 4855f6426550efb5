"""The publisher's own copy of every book, kept by the consumer library, and per-depth view diffs.

BookMirror is a consumer (pipeline/consumer.py) without sockets: the publisher's bus
reader hands it the frames.  It reuses the library's Clone pattern as is -- BookTracker
per book, the shared-memory snapshot on a gap or a new epoch -- and adds two things the
publisher needs on top:

- ``apply_l2`` reports each change as a Step: the book, the (epoch, seq, state) it had
  before, and whether it advanced by exactly one seq (``continuous``).  Anything else
  (a reload after a gap, a new epoch) is not a delta any client can apply.
- For each depth that delta-mode clients asked for, the exact difference of the top-N
  view between the previous seq and this one (the bus rule of DESIGN.md applied to the
  client's N): every level whose size changed inside the view, and size 0 for each
  level that left it.  Computed once per depth, shared by all clients of that depth.

``snapshot`` gives the latest view of a book at a depth for a client: read from shared
memory under the seqlock (it may be a few seqs ahead of the bus), else the mirror's book.

Levels are mirrored only where delta-mode clients need them.  A book no delta client follows
is kept *light* while its exchange's shared memory is readable: each L2 message is decoded
for its header only (epoch, seq, state, times: ``L2Head``, the levels are skipped without
building a Python object), which is all that snapshot clients' throttling and the status
announcements use; their snapshots come from shared memory, the source of truth.  When a
delta client subscribes, the book is loaded from shared memory and mirrored from then on
(the Clone pattern); when the last one leaves, it goes light again.  Where shared memory
cannot be read (the bus from another host), every book is mirrored as before.

Once an exchange's shared memory is readable the WebSocket hub stops taking its L2 messages for
books no delta client follows (hub.py ``L2Topics``) and calls ``poll`` once per throttle interval:
the view headers (``BookReader.read_head``) drive those light books instead, as Steps.  A delta
client's book whose bus subscription begins late is tracked with ``join``: loaded from shared
memory at its first message (or ``load`` for a quiet one), so nothing the subscription missed is
needed.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

import msgspec

from pipeline import schema, shards
from pipeline.config import Config
from pipeline.consumer import Book, BookTracker, _Base
from pipeline.errors import SharedMemoryError
from pipeline.shm import BookReader, BookSnapshot, BookState

Key = tuple[str, str]
Level = tuple[float, float]
STALE_READER_S = 5.0  # a segment whose writer stopped beating this long may have been replaced
SHM_RETRY_S = 0.2  # after a failed open of an exchange's segment, snapshots come from the mirror this long


class L2Head(msgspec.Struct, tag="l2", tag_field="kind", kw_only=True):
    """An L2 bus message (schema.L2Update) without its levels: msgspec skips ``bids``/``asks``."""

    epoch: int
    seq: int
    ts_exchange: int
    ts_received: int
    snapshot: bool
    state: str
    update_id: int = 0
    depth: int
    instrument: schema.Instrument | None = None


_head_decoder = msgspec.msgpack.Decoder(L2Head)
_STATES = {int(s): s.name.lower() for s in BookState}


def top(book: Book, depth: int) -> tuple[list[Level], list[Level]]:
    """The best ``depth`` levels per side, best first."""
    return heapq.nlargest(depth, book.bids.items()), heapq.nsmallest(depth, book.asks.items())


def view_diff(before: list[Level], after: list[Level]) -> list[Level]:
    """Levels of ``after`` that are new or changed, then (price, 0.0) for each level that left."""
    old = dict(before)
    new = dict(after)
    out = [(p, s) for p, s in after if old.get(p) != s]
    out += [(p, 0.0) for p in old if p not in new]
    return out


@dataclass(frozen=True)
class View:
    """The view of one book at one depth, as a client gets it in a snapshot."""

    epoch: int
    seq: int
    state: str
    ts_exchange: int
    ts_received: int
    bids: list
    asks: list


@dataclass
class Step:
    """One change of a book, as ``apply_l2`` reports it."""

    key: Key
    book: Book
    prev_epoch: int
    prev_seq: int
    prev_state: str | None
    continuous: bool
    diffs: dict[int, tuple[list[Level], list[Level]] | None]  # depth -> (bids, asks); None: not a delta


class _TrackedView:
    __slots__ = ("refs", "epoch", "seq", "bids", "asks")

    def __init__(self) -> None:
        self.refs = 0
        self.epoch = self.seq = 0
        self.bids: list[Level] = []
        self.asks: list[Level] = []


class BookMirror(_Base):
    """Books of every configured exchange, rebuilt from bus frames the caller passes in."""

    def __init__(self, config: Config):
        super().__init__(config, use_shm=True)
        self._views: dict[Key, dict[int, _TrackedView]] = {}
        self._light: dict[Key, Book] = {}  # books kept without levels (module docstring)
        self.light_messages = 0  # L2 messages taken by their header only
        self._keys: dict[bytes, Key] = {}  # topic -> (exchange, symbol), parsed once per topic
        self._shm_failed: dict[str, float] = {}  # unit (exchange or shard) -> monotonic time of the last failed open

    # ------------------------------------------------------------------ bus input
    def decode_trade(self, payload: bytes) -> schema.Trade:
        """Decode a trade and count seq gaps (``trade_gaps``)."""
        return self._on_trade(payload)

    def apply_l2(self, topic: bytes, payload: bytes) -> Step | None:
        """Apply one L2 bus message. Returns the Step, or None when no book changed."""
        key = self._keys.get(topic)
        if key is None:
            _, exchange, symbol = schema.parse_topic(topic)
            if len(self._keys) >= 4096:  # only configured topics are expected; stay bounded anyway
                self._keys.clear()
            key = self._keys[topic] = (exchange, symbol)
        if key not in self._views and self._shm_readable(shards.unit_of(self.config, *key)):
            return self._apply_head(key, payload)
        tr = self.trackers.get(key)
        if tr is not None and tr.synced:
            prev_epoch, prev_seq, prev_state = tr.book.epoch, tr.book.seq, tr.book.state
        else:
            prev_epoch, prev_seq, prev_state = 0, 0, None
        book = self._on_l2(topic, payload)
        if book is None or (book.epoch == prev_epoch and book.seq == prev_seq):
            return None
        if prev_state is None and key in self._light:  # joined (track(join=True)): the levels are here now
            light = self._light.pop(key)
            if book.instrument is None:
                book.instrument = light.instrument
        continuous = book.epoch == prev_epoch and book.seq == prev_seq + 1
        diffs: dict[int, tuple[list[Level], list[Level]] | None] = {}
        for depth, view in self._views.get(key, {}).items():
            bids, asks = top(book, depth)
            if continuous and view.epoch == prev_epoch and view.seq == prev_seq:
                diffs[depth] = (view_diff(view.bids, bids), view_diff(view.asks, asks))
            else:
                diffs[depth] = None
            view.epoch, view.seq, view.bids, view.asks = book.epoch, book.seq, bids, asks
        return Step(key, book, prev_epoch, prev_seq, prev_state, continuous, diffs)

    def _apply_head(self, key: Key, payload: bytes) -> Step | None:
        """A light book: the message's header only (module docstring)."""
        head = _head_decoder.decode(payload)
        self.light_messages += 1
        return self._light_step(key, head.epoch, head.seq, head.state, head.ts_exchange, head.ts_received,
                                head.update_id, head.depth, head.instrument, False)

    def _light_step(self, key: Key, epoch: int, seq: int, state: str, ts_exchange: int, ts_received: int,
                    update_id: int, depth: int, instrument: schema.Instrument | None, polled: bool) -> Step | None:
        book = self._light.get(key)
        if book is None:
            book = self._light[key] = Book(*key)
            tr = self.trackers.pop(key, None)  # it was mirrored: go on from where it was
            if tr is not None and tr.synced:
                b = tr.book
                book.epoch, book.seq, book.state, book.instrument = b.epoch, b.seq, b.state, b.instrument
                prev_state = b.state
            else:
                prev_state = None
        else:
            prev_state = book.state
        prev_epoch, prev_seq = book.epoch, book.seq
        if epoch == prev_epoch and seq <= prev_seq and not (polled and seq == prev_seq and state != prev_state):
            return None  # (a poll also reports a state change without a new seq: a book marked stale)
        book.epoch, book.seq, book.state, book.update_id = epoch, seq, state, update_id
        if depth:
            book.depth = depth
        book.ts_exchange, book.ts_received = ts_exchange, ts_received
        if instrument is not None:
            book.instrument = instrument
        # a poll sees the view every interval, many seqs apart: no resync, just the latest view
        continuous = prev_state is not None and epoch == prev_epoch and (polled or seq == prev_seq + 1)
        return Step(key, book, prev_epoch, prev_seq, prev_state, continuous, {})

    # ------------------------------------------------------- polling shared memory
    def shm_ready(self, exchange: str) -> bool:
        """Whether every ingest process of ``exchange`` has a segment this mirror can read (opened now if
        need be): then its books can be followed from shared memory without the bus (``poll``)."""
        units = {sx.unit for sx in shards.shard_configs(self.config.exchange(exchange))}
        return all(self._shm_readable(u) for u in units)

    def poll(self, exchange: str, symbols) -> list[Step]:
        """The books of ``symbols`` that no delta client follows, read from shared memory (view headers
        only): a Step for each that changed since the last poll (or since its last bus message).

        A segment whose name now leads to another one (the ingest restarted: a new epoch) is
        reopened; one that is gone is closed (the ingest stopped: ``health`` says so)."""
        readers: dict[str, BookReader | None] = {}
        steps = []
        unit_of = shards.unit_of
        for sym in symbols:
            key = (exchange, sym)
            if key in self._views:
                continue  # the bus drives it (delta clients)
            unit = unit_of(self.config, exchange, sym)
            reader = readers.get(unit, False)
            if reader is False:
                reader = readers[unit] = self._current_reader(unit)
            if reader is None:
                continue
            try:
                epoch, seq, state, ts_ex, ts_recv, update_id = reader.read_head(sym)
            except SharedMemoryError:
                continue  # not (yet) in the segment: a symbol being added
            step = self._light_step(key, epoch, seq, _STATES[state], ts_ex, ts_recv, update_id, 0, None, True)
            if step is not None:
                steps.append(step)
        return steps

    def _current_reader(self, unit: str) -> BookReader | None:
        reader = self._readers.get(unit)
        if reader is not None and reader.replaced():
            reader.close()
            del self._readers[unit]
            reader = None
        if reader is None and self._shm_readable(unit):
            reader = self._readers[unit]
        return reader

    def _shm_readable(self, unit: str) -> bool:
        """Whether the shared memory of an exchange (of its ingest process ``unit``: pipeline/shards.py)
        is open here (opened now if need be)."""
        if unit in self._readers:
            return True
        failed = self._shm_failed.get(unit)
        if failed is not None and time.monotonic() - failed < SHM_RETRY_S:
            return False
        try:
            self._readers[unit] = BookReader.open(self.config.shm_prefix, unit)
        except SharedMemoryError:
            self._shm_failed[unit] = time.monotonic()
            return False
        self._shm_failed.pop(unit, None)
        return True

    def book(self, exchange: str, symbol: str) -> Book | None:
        """The mirror's book, or a light book (header fields only, no levels)."""
        got = super().book(exchange, symbol)
        return got if got is not None else self._light.get((exchange, symbol))

    def mirrored(self, key: Key) -> bool:
        """Whether ``key``'s levels are mirrored (a delta client follows it)."""
        return key in self._views

    # -------------------------------------------------------- depths of delta clients
    def _load_from_shm(self, key: Key) -> None:
        """A light book that delta clients now follow: start its mirror from shared memory."""
        light = self._light.pop(key, None)
        if light is None:
            return
        snap = self._shm_latest(*key)
        tr = self.trackers[key] = BookTracker(*key)
        if snap is not None:
            tr.load_shm(snap)
            tr.book.instrument = light.instrument
        # else: not synced; the next L2 message resyncs it from shared memory or a snapshot

    def track(self, key: Key, depth: int, join: bool = False) -> None:
        """Compute view diffs at ``depth`` for ``key`` from now on (reference counted).

        ``join``: the bus subscription to ``key`` begins only now (the publisher follows the book
        from shared memory while no delta client does), so messages before it may be missing: the
        book is not loaded here but at its first message, from shared memory then (the Clone
        pattern's resync, which applies only what is newer), or by ``load`` when none comes."""
        views = self._views.get(key)
        if views is None:
            views = self._views[key] = {}
            if join:
                old = self.trackers.pop(key, None)
                if old is not None and old.synced and key not in self._light:  # keep its header fields
                    light = self._light[key] = Book(*key)
                    b = old.book
                    light.epoch, light.seq, light.state, light.instrument = b.epoch, b.seq, b.state, b.instrument
                self.trackers[key] = BookTracker(*key)  # unsynced until its first message (or ``load``)
        if not join:
            self._load_from_shm(key)
        view = views.get(depth)
        if view is None:
            view = views[depth] = _TrackedView()
            tr = self.trackers.get(key)
            book = tr.book if tr is not None and tr.synced else None
            if book is not None:
                view.epoch, view.seq = book.epoch, book.seq
                view.bids, view.asks = top(book, depth)
        view.refs += 1

    def shm_mark(self, key: Key) -> tuple[int, int] | None:
        """(epoch, seq) of ``key``'s view in shared memory now, or None when it cannot be read."""
        reader = self._current_reader(shards.unit_of(self.config, *key))
        if reader is None:
            return None
        try:
            return reader.read_head(key[1])[:2]
        except SharedMemoryError:
            return None

    def joined(self, key: Key) -> bool:
        """Whether the mirror holds ``key``'s levels (after ``track(join=True)``: its first message came)."""
        tr = self.trackers.get(key)
        return tr is not None and tr.synced

    def load(self, key: Key) -> bool:
        """A joining book whose first message has not come: load it from shared memory now (a quiet
        book; a message the subscription missed shows later as a gap and resyncs).  False: no view."""
        if self.joined(key) or key not in self._views:
            return self.joined(key)
        snap = self._shm_latest(*key)
        if snap is None:
            return False
        tr = self.trackers[key] = BookTracker(*key)
        tr.load_shm(snap)
        light = self._light.pop(key, None)
        if light is not None:
            tr.book.instrument = light.instrument
        for depth, view in self._views[key].items():
            view.epoch, view.seq = tr.book.epoch, tr.book.seq
            view.bids, view.asks = top(tr.book, depth)
        return True

    def untrack(self, key: Key, depth: int) -> None:
        views = self._views.get(key, {})
        view = views.get(depth)
        if view is None:
            return
        view.refs -= 1
        if view.refs <= 0:
            del views[depth]
            if not views:
                del self._views[key]  # no delta client: the book goes light at its next message

    def tracked_depths(self, key: Key) -> list[int]:
        return list(self._views.get(key, {}))

    # ------------------------------------------------------------------ snapshots
    def _shm_snapshot(self, exchange: str, symbol: str, epoch: int) -> BookSnapshot | None:
        # An exchange without a segment (ingest down, bus from another host) would otherwise be
        # opened again for every snapshot of every client: seconds of CPU at a few thousand/s.
        unit = shards.unit_of(self.config, exchange, symbol)
        failed = self._shm_failed.get(unit)
        if failed is not None and time.monotonic() - failed < SHM_RETRY_S:
            return None
        snap = super()._shm_snapshot(exchange, symbol, epoch)
        if self.use_shm and unit not in self._readers:  # the open failed
            self._shm_failed[unit] = time.monotonic()
        else:
            self._shm_failed.pop(unit, None)
        return snap

    def snapshot(self, key: Key, depth: int) -> View:
        """The latest view of ``key`` at ``depth``: shared memory first, else the mirror's book."""
        exchange, symbol = key
        book = self.book(exchange, symbol)
        if book is not None:
            snap = self._shm_snapshot(exchange, symbol, book.epoch)
            if snap is not None and snap.seq >= book.seq:
                return _view_of(snap, depth)
            if key in self._light:  # no levels here: shared memory's latest (a new epoch's) or nothing
                snap = self._shm_latest(exchange, symbol)
                if snap is not None:
                    return _view_of(snap, depth)
            bids, asks = top(book, depth)
            return View(book.epoch, book.seq, book.state, book.ts_exchange, book.ts_received, bids, asks)
        snap = self._shm_latest(exchange, symbol)
        if snap is not None:
            return _view_of(snap, depth)
        return View(0, 0, "down", 0, 0, [], [])

    def _shm_latest(self, exchange: str, symbol: str) -> BookSnapshot | None:
        """Shared memory of an exchange the bus has not shown a book of yet."""
        unit = shards.unit_of(self.config, exchange, symbol)
        reader = self._readers.get(unit)
        try:
            if reader is not None and time.time_ns() - reader.heartbeat_ns > STALE_READER_S * 1e9:
                reader.close()  # the ingest may have restarted into a new segment
                self._readers.pop(unit, None)
                reader = None
            if reader is None:
                reader = self._readers[unit] = BookReader.open(self.config.shm_prefix, unit)
            return reader.read(symbol)
        except SharedMemoryError:
            return None

    def close(self) -> None:
        self._close_readers()


def _view_of(snap: BookSnapshot, depth: int) -> View:
    return View(snap.epoch, snap.seq, snap.state.name.lower(), snap.ts_exchange_us, snap.ts_received_us,
                snap.bids[:depth].tolist(), snap.asks[:depth].tolist())
