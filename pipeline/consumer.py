"""Consumer library: always-correct books and trades for any ZeroMQ SUB consumer.

A few lines give a strategy (on this host or another) the pipeline's books::

    from pipeline.config import load_config
    from pipeline.consumer import Consumer

    with Consumer(load_config(None)) as c:
        for kind, item in c.events(timeout=1.0):
            if kind == "trade":
                print(item.symbol, item.side, item.price, item.amount)
            else:                      # "book": a Book, updated in place
                print(item.symbol, item.best_bid(), item.best_ask())

How books stay correct (the ZeroMQ guide's Clone pattern, DESIGN.md): the consumer
subscribes first, then for each (exchange, symbol) takes a snapshot -- from shared
memory under the seqlock when it is reachable, else the next snapshot message on
the bus (published after every resync and periodically) -- and applies only deltas
whose seq is newer.  A seq gap or a new epoch (ingest restart) sends that one book
back to the snapshot.  No sleep is needed to wait out ZeroMQ's slow-joiner race.

``BookTracker`` is the pure part (messages in, book out), used by ``Consumer``
(blocking poll) and ``AsyncConsumer`` (``async for``).  Trades are always read
before L2 when both are waiting.
"""

from __future__ import annotations

import enum
from typing import Iterator

import zmq
import zmq.asyncio

from pipeline import bus, schema
from pipeline.config import Config
from pipeline.errors import SharedMemoryError
from pipeline.shm import BookReader, BookSnapshot


class Applied(enum.Enum):
    APPLIED = "applied"      # the book changed
    OLD = "old"              # seq already covered: dropped
    RESYNC = "resync"        # gap / new epoch / no snapshot yet: the book needs a snapshot


class Book:
    """One (exchange, symbol) book as a consumer sees it: price -> size maps."""

    __slots__ = ("exchange", "symbol", "epoch", "seq", "state", "bids", "asks", "update_id",
                 "ts_exchange", "ts_received", "depth", "instrument")

    def __init__(self, exchange: str, symbol: str):
        self.exchange, self.symbol = exchange, symbol
        self.epoch = self.seq = self.update_id = 0
        self.state = "syncing"
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.ts_exchange = self.ts_received = 0
        self.depth = 0
        self.instrument: schema.Instrument | None = None  # base/quote/kind, from the bus

    def top(self, n: int | None = None) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """(bids, asks) best first."""
        bids = sorted(self.bids.items(), reverse=True)
        asks = sorted(self.asks.items())
        return (bids[:n], asks[:n]) if n is not None else (bids, asks)

    def best_bid(self) -> tuple[float, float] | None:
        return max(self.bids.items()) if self.bids else None

    def best_ask(self) -> tuple[float, float] | None:
        return min(self.asks.items()) if self.asks else None

    @property
    def live(self) -> bool:
        return self.state == "live"


class BookTracker:
    """Pure: apply bus L2 messages and snapshots to one Book, detecting gaps and restarts."""

    def __init__(self, exchange: str, symbol: str):
        self.book = Book(exchange, symbol)
        self.synced = False
        self.resyncs = 0
        self.gaps = 0

    def load_shm(self, snap: BookSnapshot) -> None:
        b = self.book
        b.epoch, b.seq, b.update_id = snap.epoch, snap.seq, snap.update_id
        b.state = snap.state.name.lower()
        b.bids = {p: s for p, s in snap.bids.tolist()}
        b.asks = {p: s for p, s in snap.asks.tolist()}
        b.ts_exchange, b.ts_received = snap.ts_exchange_us, snap.ts_received_us
        self.synced = True
        self.resyncs += 1

    def apply(self, msg: schema.L2Update) -> Applied:
        b = self.book
        if msg.snapshot and (not self.synced or msg.epoch != b.epoch or msg.seq > b.seq):
            if not self.synced or msg.epoch != b.epoch:
                self.resyncs += 1  # (re)loaded: first book, after a gap, or a new epoch
            b.epoch, b.seq = msg.epoch, msg.seq
            b.bids = {p: s for p, s in msg.bids}
            b.asks = {p: s for p, s in msg.asks}
            self._stamp(msg)
            self.synced = True
            return Applied.APPLIED
        if not self.synced:
            return Applied.RESYNC
        if msg.epoch != b.epoch:
            self.synced = False
            return Applied.RESYNC
        if msg.seq <= b.seq:
            return Applied.OLD
        if msg.seq != b.seq + 1:
            self.gaps += 1
            self.synced = False
            return Applied.RESYNC
        bids, asks = b.bids, b.asks
        for p, s in msg.bids:
            if s > 0.0:
                bids[p] = s
            else:
                bids.pop(p, None)
        for p, s in msg.asks:
            if s > 0.0:
                asks[p] = s
            else:
                asks.pop(p, None)
        b.seq = msg.seq
        self._stamp(msg)
        return Applied.APPLIED

    def _stamp(self, msg: schema.L2Update) -> None:
        b = self.book
        b.state, b.update_id, b.depth = msg.state, msg.update_id, msg.depth
        b.ts_exchange, b.ts_received = msg.ts_exchange, msg.ts_received
        if msg.instrument is not None:
            b.instrument = msg.instrument


class _Base:
    def __init__(self, config: Config, exchanges: list[str] | None = None, symbols: list[str] | None = None,
                 trades: bool = True, books: bool = True, use_shm: bool = True):
        self.config = config
        self.exchanges = list(exchanges or config.exchanges)
        self.symbols = set(symbols) if symbols else None
        self.want_trades, self.want_books, self.use_shm = trades, books, use_shm
        self.trackers: dict[tuple[str, str], BookTracker] = {}
        self.trade_seq: dict[tuple[str, str], tuple[int, int]] = {}
        self.trade_gaps = 0
        self._readers: dict[str, BookReader] = {}

    def _topics(self, prefix: str) -> list[bytes]:
        topics = []
        for ex in self.exchanges:
            syms = self.symbols or [None]
            for s in syms:
                topics.append(f"{prefix}.{ex}.{s}".encode() if s else f"{prefix}.{ex}.".encode())
        return topics

    def _endpoints(self) -> tuple[list[str], list[str]]:
        t, l2 = [], []
        for ex in self.exchanges:
            te, le = bus.endpoints(self.config, ex)
            t.append(te)
            l2.append(le)
        return t, l2

    def _shm_snapshot(self, exchange: str, symbol: str, epoch: int) -> BookSnapshot | None:
        if not self.use_shm:
            return None
        reader = self._readers.get(exchange)
        try:
            if reader is None or reader.epoch != epoch:
                if reader is not None:
                    reader.close()
                    self._readers.pop(exchange, None)
                reader = BookReader.open(self.config.shm_prefix, exchange)
                self._readers[exchange] = reader
            snap = reader.read(symbol)
        except SharedMemoryError:
            return None
        return snap if snap.epoch == epoch else None

    def _on_l2(self, topic: bytes, payload: bytes) -> Book | None:
        msg = schema.decode_l2(payload)
        key = (msg.exchange, msg.symbol)
        tr = self.trackers.get(key)
        if tr is None:
            tr = self.trackers[key] = BookTracker(msg.exchange, msg.symbol)
        result = tr.apply(msg)
        if result is Applied.RESYNC:
            snap = self._shm_snapshot(msg.exchange, msg.symbol, msg.epoch)
            if snap is None or snap.seq < msg.seq - 1:
                return None  # wait for shm to catch up, or for the next snapshot message
            tr.load_shm(snap)
            result = tr.apply(msg)
            if result is Applied.RESYNC:
                return None
            if result is Applied.OLD:
                return tr.book
        return tr.book if result is Applied.APPLIED else None

    def _on_trade(self, payload: bytes) -> schema.Trade:
        t = schema.decode_trade(payload)
        key = (t.exchange, t.symbol)
        last = self.trade_seq.get(key)
        if last is not None and last[0] == t.epoch and t.seq != last[1] + 1:
            self.trade_gaps += 1
        self.trade_seq[key] = (t.epoch, t.seq)
        return t

    def book(self, exchange: str, symbol: str) -> Book | None:
        tr = self.trackers.get((exchange, symbol))
        return tr.book if tr is not None and tr.synced else None

    def _close_readers(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()


class Consumer(_Base):
    """Blocking consumer. ``events(timeout)`` yields ("trade", Trade) and ("book", Book)."""

    def __init__(self, config: Config, exchanges: list[str] | None = None, symbols: list[str] | None = None,
                 trades: bool = True, books: bool = True, use_shm: bool = True, ctx: zmq.Context | None = None):
        super().__init__(config, exchanges, symbols, trades, books, use_shm)
        self.ctx = ctx or zmq.Context.instance()
        t_eps, l2_eps = self._endpoints()
        self.trades_sock = bus.make_sub(self.ctx, t_eps, self._topics("trade")) if trades else None
        self.l2_sock = bus.make_sub(self.ctx, l2_eps, self._topics("l2")) if books else None
        self.poller = zmq.Poller()
        for s in (self.trades_sock, self.l2_sock):
            if s is not None:
                self.poller.register(s, zmq.POLLIN)

    def poll(self, timeout: float = 1.0, max_batch: int = 256) -> list[tuple[str, object]]:
        """Wait up to ``timeout`` s; return what arrived, trades first."""
        out: list[tuple[str, object]] = []
        ready = dict(self.poller.poll(int(timeout * 1000)))
        if not ready:
            return out
        ts, ls = self.trades_sock, self.l2_sock
        for _ in range(max_batch):
            got = False
            if ts is not None:
                while True:  # trades first, all of them
                    try:
                        ts.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    out.append(("trade", self._on_trade(ts.recv())))
                    got = True
            if ls is not None:
                try:
                    topic = ls.recv(zmq.NOBLOCK)
                except zmq.Again:
                    topic = None
                if topic is not None:
                    got = True
                    book = self._on_l2(topic, ls.recv())
                    if book is not None:
                        out.append(("book", book))
            if not got:
                break
        return out

    def events(self, timeout: float = 1.0) -> Iterator[tuple[str, object]]:
        """Yield events forever (each poll waits up to ``timeout`` s)."""
        while True:
            yield from self.poll(timeout)

    def run(self, on_trade=None, on_book=None, until=None) -> None:
        """Call ``on_trade(trade)`` / ``on_book(book)`` until ``until()`` is true."""
        while until is None or not until():
            for kind, item in self.poll(0.2):
                if kind == "trade" and on_trade:
                    on_trade(item)
                elif kind == "book" and on_book:
                    on_book(item)

    def close(self) -> None:
        for s in (self.trades_sock, self.l2_sock):
            if s is not None:
                s.close(linger=0)
        self._close_readers()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncConsumer(_Base):
    """asyncio consumer: ``async for kind, item in consumer`` (trades before L2)."""

    def __init__(self, config: Config, exchanges: list[str] | None = None, symbols: list[str] | None = None,
                 trades: bool = True, books: bool = True, use_shm: bool = True):
        super().__init__(config, exchanges, symbols, trades, books, use_shm)
        self.ctx = zmq.asyncio.Context.instance()
        t_eps, l2_eps = self._endpoints()
        self.trades_sock = bus.make_sub(self.ctx, t_eps, self._topics("trade")) if trades else None
        self.l2_sock = bus.make_sub(self.ctx, l2_eps, self._topics("l2")) if books else None
        self.poller = zmq.asyncio.Poller()
        for s in (self.trades_sock, self.l2_sock):
            if s is not None:
                self.poller.register(s, zmq.POLLIN)
        self._pending: list[tuple[str, object]] = []

    def __aiter__(self):
        return self

    async def __anext__(self) -> tuple[str, object]:
        while not self._pending:
            await self.poller.poll()
            ts, ls = self.trades_sock, self.l2_sock
            if ts is not None:
                while True:
                    try:
                        await ts.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._pending.append(("trade", self._on_trade(await ts.recv())))
            if ls is not None:
                for _ in range(64):
                    try:
                        topic = await ls.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    book = self._on_l2(topic, await ls.recv())
                    if book is not None:
                        self._pending.append(("book", book))
        return self._pending.pop(0)

    def close(self) -> None:
        for s in (self.trades_sock, self.l2_sock):
            if s is not None:
                s.close(linger=0)
        self._close_readers()
