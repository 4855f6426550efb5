"""Consumer library: always-correct books and trades for any ZeroMQ SUB consumer.

A few lines give a strategy (on this host or another) the pipeline's books::

    from pipeline.config import load_config
    from pipeline.consumer import Book, Consumer, Trade

    with Consumer(load_config(None), symbols=["BTCUSDT"]) as c:
        for event in c.events(timeout=1.0):
            if isinstance(event, Trade):
                print(event.symbol, event.side, event.price, event.amount)
            else:                      # a Book, updated in place
                print(event.symbol, event.best_bid(), event.best_ask(), event.mid())

The other kinds (quotes, derivative tickers, liquidations, CVD, trade bars) come when asked
for with ``kinds=["quote", ...]``; the consumer keeps the latest quote and ticker per symbol
(``quote(exchange, symbol)``, ``ticker(exchange, symbol)``).

Events are typed (``Event = Trade | Book | Quote | ...``), so a type checker follows user code; ``symbols=``
and ``exchanges=`` choose whole names (``BTCUSD`` does not get ``BTCUSDT``).  docs/bus.md
documents the API: ``poll``, ``events``, ``run(on_trade, on_book, until)``, ``async with
AsyncConsumer(...)``.

How books stay correct (the ZeroMQ guide's Clone pattern, DESIGN.md): the consumer
subscribes first, then for each (exchange, symbol) takes a snapshot -- from shared
memory under the seqlock when it is reachable, else the next snapshot message on
the bus (published after every resync and periodically) -- and applies only deltas
whose seq is newer.  A seq gap or a new epoch (ingest restart) sends that one book
back to the snapshot.  No sleep is needed to wait out ZeroMQ's slow-joiner race.

``BookTracker`` is the pure part (messages in, book out), used by ``Consumer``
(blocking poll) and ``AsyncConsumer`` (``async for``).  Both read the bus with the core's
reader (pipeline/bus.py ``Reader``): trades are always read before L2 when both are waiting.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import inspect
from typing import Any, Callable, Iterable, Iterator, Union

import time

import zmq

from pipeline import bus, schema, shards
from pipeline.config import Config
from pipeline.curve import ClientKeys
from pipeline.errors import SharedMemoryError
from pipeline.schema import Cvd, DerivativeTicker, Instrument, Liquidation, Quote, Trade, TradeBar, TradeGap
from pipeline.shm import BookReader, BookSnapshot
from pipeline.natsbus import NatsReader
from pipeline.snapshots import SnapshotClient, SnapshotUnavailable

__all__ = ["Applied", "AsyncConsumer", "Book", "BookTracker", "ClientKeys", "Consumer", "Cvd", "DerivativeTicker",
           "Event", "Instrument", "Liquidation", "Quote", "TRANSPORTS", "Trade", "TradeBar", "TradeGap", "OTHER_KINDS"]

# the kinds a consumer reads when asked (``kinds=``), beside trades and books
OTHER_KINDS = tuple(k.name for k in schema.KINDS.values() if k not in (schema.TRADE, schema.L2))

# local: ipc + shared memory; tcp: another host (CURVE, snapshot service); nats: NATS JetStream (any site)
TRANSPORTS = ("local", "tcp", "nats")
SNAPSHOT_RETRY_S = 1.0  # after the snapshot service failed to answer, wait this long before asking again


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
        """(price, size) of the best bid, or None when the side is empty."""
        return max(self.bids.items()) if self.bids else None

    def best_ask(self) -> tuple[float, float] | None:
        """(price, size) of the best ask, or None when the side is empty."""
        return min(self.asks.items()) if self.asks else None

    def mid(self) -> float | None:
        """(best bid + best ask) / 2, or None when a side is empty."""
        bid, ask = self.best_bid(), self.best_ask()
        if bid is None or ask is None:
            return None
        return (bid[0] + ask[0]) / 2

    def spread(self) -> float | None:
        """best ask - best bid (in price units), or None when a side is empty."""
        bid, ask = self.best_bid(), self.best_ask()
        if bid is None or ask is None:
            return None
        return ask[0] - bid[0]

    def microprice(self) -> float | None:
        """The top of book's prices weighted by the opposite side's size, or None when a side is empty.

        ``(bid * ask_size + ask * bid_size) / (bid_size + ask_size)``: it leans toward the ask when
        the bid is the larger queue (the price is more likely to tick up), and equals the mid when
        both sizes are equal.
        """
        bid, ask = self.best_bid(), self.best_ask()
        if bid is None or ask is None:
            return None
        (bp, bs), (ap, as_) = bid, ask
        return (bp * as_ + ap * bs) / (bs + as_)

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
    def __init__(self, config: Config, exchanges: Iterable[str] | None = None, symbols: Iterable[str] | None = None,
                 trades: bool = True, books: bool = True, use_shm: bool = True):
        self.config = config
        self.quotes: dict[tuple[str, str], Quote] = {}     # latest quote per (exchange, symbol)
        self.tickers: dict[tuple[str, str], DerivativeTicker] = {}  # latest ticker state
        self.stream_seq: dict[tuple[str, str, str], tuple[int, int]] = {}  # (kind, ex, sym) -> (epoch, seq)
        self.gaps: dict[str, int] = {}  # per other kind: messages missed (seq gaps)
        self.exchanges = list(exchanges) if exchanges is not None else list(config.exchanges)
        self.symbols = set(symbols) if symbols is not None else None
        self.want_trades, self.want_books, self.use_shm = trades, books, use_shm
        self.trackers: dict[tuple[str, str], BookTracker] = {}
        self.trade_seq: dict[tuple[str, str], tuple[int, int]] = {}
        self.trade_gaps = 0
        self.trades_refilled = 0  # missed trades fetched again from the ingest's trade ring (tcp)
        self.trades_lost = 0  # missed trades the ring no longer had: counted, told, gone
        self._readers: dict[str, BookReader] = {}
        # per ingest process (transport "tcp"): the exchange's name, or NAME.K per shard (pipeline/shards.py)
        self._snapshots: dict[str, SnapshotClient] = {}
        self._snapshot_failed: dict[str, float] = {}  # unit -> monotonic time of the last failure
        self._refill: list[Trade] = []  # trades fetched again, handed out before the trade that showed the gap
        self._nats: NatsReader | None = None  # transport "nats": books from the KV bucket
        self._kv_asked: dict[tuple[str, str], float] = {}  # book -> monotonic time of its last KV request

    # ------------------------------------------------------------ snapshot service (other hosts)
    def _ask(self, exchange: str) -> SnapshotClient | None:
        """The exchange's snapshot client, unless it failed less than SNAPSHOT_RETRY_S ago."""
        client = self._snapshots.get(exchange)
        failed = self._snapshot_failed.get(exchange)
        if client is None or (failed is not None and time.monotonic() - failed < SNAPSHOT_RETRY_S):
            return None
        return client

    def _service_books(self, exchange: str, symbols: list[str] | None) -> list[schema.L2Update]:
        """Snapshots from the snapshot service of each ingest process that follows ``symbols`` (all: None)."""
        ex = self.config.exchange(exchange)
        if symbols is None:
            parts: list[tuple[str, list[str] | None]] = [(sx.unit, None) for sx in shards.shard_configs(ex)]
        else:
            parts = [(shards.shard_config(ex, k).unit, syms) for k, syms in shards.split(ex, symbols).items()]
        out: list[schema.L2Update] = []
        for unit, syms in parts:
            client = self._ask(unit)
            if client is None:
                continue
            try:
                books, end = client.books(syms)
            except SnapshotUnavailable:
                self._snapshot_failed[unit] = time.monotonic()
                continue
            self._snapshot_failed.pop(unit, None)
            out += books
        return out

    def _remote_book(self, exchange: str, symbol: str) -> list[schema.L2Update]:
        """One book's snapshot from the snapshot service (tcp) or the KV bucket (nats, at most once a
        SNAPSHOT_RETRY_S per book: the bridge writes it every kv_interval_s)."""
        if self._nats is None:
            return self._service_books(exchange, [symbol])
        now, key = time.monotonic(), (exchange, symbol)
        if now - self._kv_asked.get(key, -SNAPSHOT_RETRY_S) < SNAPSHOT_RETRY_S:
            return []
        self._kv_asked[key] = now
        # the KV state, then the book's messages in the stream after it (pipeline/natsbus.py)
        return [schema.decode_l2(p) for p in self._nats.catch_up(schema.L2.topic(exchange, symbol))]

    def _load_books(self) -> list["Book"]:
        """Start: every wanted book from the snapshot services (a round trip, no periodic wait)."""
        loaded = []
        for exchange in self.exchanges:
            syms = sorted(self.symbols) if self.symbols is not None else None
            for msg in self._service_books(exchange, syms):
                key = (msg.exchange, msg.symbol)
                tr = self.trackers.get(key)
                if tr is None:
                    tr = self.trackers[key] = BookTracker(msg.exchange, msg.symbol)
                if tr.apply(msg) is Applied.APPLIED:
                    loaded.append(tr.book)
        return loaded

    def _refill_trades(self, t: Trade, first: int) -> None:
        """Fetch trades ``first..t.seq-1`` of t's stream from the ingest's ring (tcp transport)."""
        unit = shards.unit_of(self.config, t.exchange, t.symbol)
        client = self._ask(unit)
        missing = t.seq - first
        if client is None:
            self.trades_lost += missing
            return
        try:
            got, end = client.trades(t.symbol, first, t.seq - 1)
        except SnapshotUnavailable:
            self._snapshot_failed[unit] = time.monotonic()
            self.trades_lost += missing
            return
        got = [g for g in got if g.epoch == t.epoch]  # a restart between the gap and the answer: not these
        self.trades_refilled += len(got)
        self.trades_lost += missing - len(got)
        self._refill.extend(got)

    def _shm_snapshot(self, exchange: str, symbol: str, epoch: int) -> BookSnapshot | None:
        if not self.use_shm:
            return None
        unit = shards.unit_of(self.config, exchange, symbol)  # the symbol's ingest process's segment
        reader = self._readers.get(unit)
        try:
            if reader is None or reader.epoch != epoch:
                if reader is not None:
                    reader.close()
                    self._readers.pop(unit, None)
                reader = BookReader.open(self.config.shm_prefix, unit)
                self._readers[unit] = reader
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
        if result is Applied.RESYNC and self._nats is not None:
            caught_up = self._remote_book(msg.exchange, msg.symbol)  # KV state + the stream after it
            if not caught_up or caught_up[0].epoch != msg.epoch:
                return None  # nothing there yet, or of another epoch: the next snapshot in the stream
            for m in caught_up:
                tr.apply(m)
            tr.apply(msg)  # OLD when the stream read already had it
            return tr.book if tr.synced and tr.book.epoch == msg.epoch and tr.book.seq >= msg.seq else None
        if result is Applied.RESYNC and self._snapshots:
            for snap_msg in self._remote_book(msg.exchange, msg.symbol):  # another host: the ingest's service
                if snap_msg.epoch == msg.epoch and snap_msg.seq >= msg.seq - 1:
                    tr.apply(snap_msg)
                    result = tr.apply(msg)
                    return tr.book if result is not Applied.RESYNC else None
            return None  # the service is down or behind: the next snapshot message on the bus
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

    def _on_trade(self, payload: bytes) -> schema.Trade | None:
        t = schema.decode_trade(payload)
        key = (t.exchange, t.symbol)
        last = self.trade_seq.get(key)
        if last is not None and last[0] == t.epoch and t.seq != last[1] + 1:
            if t.seq <= last[1]:
                return None  # already handed out (fetched again from the ring after a gap)
            self.trade_gaps += 1
            if self._snapshots:
                self._refill_trades(t, last[1] + 1)
        elif last is not None and last[0] != t.epoch and t.seq > 1 and self._snapshots:
            self._refill_trades(t, 1)  # the ingest restarted: this epoch's first trades
        self.trade_seq[key] = (t.epoch, t.seq)
        return t

    def _on_other(self, kind: schema.EventKind, decode: Callable[[bytes], Any], payload: bytes):
        msg = decode(payload)
        key = (kind.name, msg.exchange, msg.symbol)
        last = self.stream_seq.get(key)
        if last is not None and last[0] == msg.epoch and msg.seq != last[1] + 1:
            self.gaps[kind.name] = self.gaps.get(kind.name, 0) + 1
        self.stream_seq[key] = (msg.epoch, msg.seq)
        if kind is schema.QUOTE:
            self.quotes[(msg.exchange, msg.symbol)] = msg
        elif kind is schema.DERIVATIVE_TICKER:
            self.tickers[(msg.exchange, msg.symbol)] = msg
        return msg

    def book(self, exchange: str, symbol: str) -> Book | None:
        tr = self.trackers.get((exchange, symbol))
        return tr.book if tr is not None and tr.synced else None

    def quote(self, exchange: str, symbol: str) -> Quote | None:
        """The latest quote of (exchange, symbol), once one came (``kinds`` must include "quote")."""
        return self.quotes.get((exchange, symbol))

    def ticker(self, exchange: str, symbol: str) -> DerivativeTicker | None:
        """The latest derivative ticker state (``kinds`` must include "derivative_ticker")."""
        return self.tickers.get((exchange, symbol))

    def _close_readers(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()
        for c in self._snapshots.values():
            c.close()
        self._snapshots.clear()


Event = Union[Trade, Book, Quote, DerivativeTicker, Liquidation, Cvd, TradeBar, TradeGap]
"""What a consumer hands out: a Trade (pipeline.schema), the Book that changed (updated in place),
or, when asked for with ``kinds=``, a Quote, DerivativeTicker, Liquidation, Cvd, TradeBar or TradeGap."""

OnTrade = Callable[[Trade], object]
OnBook = Callable[[Book], object]
_CALLBACKS = {Quote: "on_quote", DerivativeTicker: "on_ticker", Liquidation: "on_liquidation", Cvd: "on_cvd",
              TradeBar: "on_bar", TradeGap: "on_trade_gap"}


class _Reading(_Base):
    """The bus reader of a consumer and the events it collects (blocking and asyncio alike)."""

    def __init__(self, config: Config, exchanges: Iterable[str] | None, symbols: Iterable[str] | None,
                 trades: bool, books: bool, use_shm: bool, ctx: zmq.Context | None, kinds: Iterable[str] = (),
                 transport: str = "local", keys: ClientKeys | None = None, snapshot_timeout: float = 2.0):
        for name, value in (("exchanges", exchanges), ("symbols", symbols), ("kinds", kinds)):
            if isinstance(value, (str, bytes)):
                raise TypeError(f"{name} must be a list of names, e.g. [{value!r}], not a string")
        others = list(dict.fromkeys(kinds))
        for name in others:
            if name not in OTHER_KINDS:
                raise ValueError(f"kinds: {name!r} is not one of {', '.join(OTHER_KINDS)}")
        if not trades and not books and not others:
            raise ValueError("a consumer needs trades=True, books=True or some kinds")
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        remote = transport == "tcp"
        super().__init__(config, exchanges, symbols, trades, books, use_shm and transport == "local")
        self.transport = transport
        self.ctx = ctx or zmq.Context.instance()
        if remote and keys is None:
            keys = ClientKeys.from_config(config)  # [bus] curve_client_secret_key / curve_server_public_key
        curve = keys.apply if keys is not None else None
        wanted = ([schema.TRADE] if trades else []) + ([schema.L2] if books else []) + [
            schema.KINDS[name] for name in others]
        syms = sorted(self.symbols) if self.symbols is not None else None
        self.reader: bus.Reader | NatsReader
        if transport == "nats":  # KV snapshots, then the stream (pipeline/natsbus.py)
            self.reader = self._nats = NatsReader(config, self.exchanges, syms, wanted, snapshot_timeout)
        else:
            self.reader = bus.Reader.for_config(self.ctx, config, self.exchanges, syms, kinds=wanted, remote=remote,
                                                curve=curve)
        self._events: collections.deque[Event] = collections.deque()
        handlers: dict[schema.EventKind, bus.OnMessage] = {schema.TRADE: self._trade_received,
                                                           schema.L2: self._l2_received}
        for name in others:
            handlers[schema.KINDS[name]] = self._other_received(schema.KINDS[name])
        self.reader.on_kinds({k: h for k, h in handlers.items() if k in wanted})
        if remote:  # subscribed first, then the snapshots (Clone pattern): no delta falls between them
            for name in self.exchanges:
                for sx in shards.shard_configs(config.exchange(name)):  # one service per ingest process
                    self._snapshots[sx.unit] = SnapshotClient(self.ctx, bus.snapshot_endpoint(config, sx, remote=True),
                                                              curve, snapshot_timeout)
            if books:
                self._events.extend(self._load_books())

    def _other_received(self, kind: schema.EventKind) -> Callable[[bytes, bytes], None]:
        decode, on_other, events = schema.decoder(kind), self._on_other, self._events

        def received(topic: bytes, payload: bytes) -> None:
            events.append(on_other(kind, decode, payload))
            self._wake()
        return received

    def _wake(self) -> None:
        """asyncio: an event is waiting (the blocking consumer needs no wake-up)."""

    def _trade_received(self, topic: bytes, payload: bytes) -> None:
        t = self._on_trade(payload)
        if self._refill:
            self._events.extend(self._refill)
            self._refill.clear()
        if t is not None:
            self._events.append(t)

    def _l2_received(self, topic: bytes, payload: bytes) -> None:
        book = self._on_l2(topic, payload)
        if book is not None:
            self._events.append(book)

    def close(self) -> None:
        """Close the sockets and the shared-memory readers (idempotent)."""
        self.reader.close()
        self._close_readers()


class Consumer(_Reading):
    """Blocking consumer: ``poll``, ``events`` and ``run`` hand out Trades and Books, trades first.

    Args:
        config: the pipeline's config (endpoints and shared-memory names come from it).
        exchanges: config names of the exchanges to read (None: all). Unknown names raise ConfigError.
        symbols: whole venue-native symbols to read, on every chosen exchange (None: all).
        trades, books: whether to read trades and books.
        use_shm: take book snapshots from shared memory when it is reachable (this host).
        ctx: a ZeroMQ context (default: the process's shared instance).
        kinds: other kinds to read, by registry name: "quote", "derivative_ticker", "liquidation",
            "cvd", "trade_bar", "trade_gap" (default none, so code written for trades and books gets only them).
        transport: "local" (ipc sockets and shared memory of this host), "tcp" (another host: the
            exchanges' tcp endpoints, books from the snapshot service at start and after a gap or a
            new epoch, missed trades fetched again from the trade ring) or "nats" (any site: the
            KV bucket's states, then the JetStream stream, as `pipeline bridge nats` writes them;
            ``[bridges.nats] url`` of ``config``); docs/remote.md.
        keys: the CURVE key pair for tcp endpoints that use CURVE (default: ``[bus]`` of ``config``).
        snapshot_timeout: how long a snapshot request (tcp) or the NATS connection (nats) may take, s.
    """

    def __init__(self, config: Config, exchanges: Iterable[str] | None = None, symbols: Iterable[str] | None = None,
                 trades: bool = True, books: bool = True, use_shm: bool = True, ctx: zmq.Context | None = None,
                 kinds: Iterable[str] = (), transport: str = "local", keys: ClientKeys | None = None,
                 snapshot_timeout: float = 2.0):
        super().__init__(config, exchanges, symbols, trades, books, use_shm, ctx, kinds, transport, keys,
                         snapshot_timeout)

    def poll(self, timeout: float = 1.0, max_batch: int = 256) -> list[Event]:
        """Wait up to ``timeout`` s; return what arrived (about ``max_batch`` messages at most), trades first."""
        events = self._events
        if not events and not self.reader.wait(timeout):
            return []
        read = self.reader.read
        while len(events) < max_batch and read():
            pass
        out = list(events)
        events.clear()
        return out

    def events(self, timeout: float = 1.0) -> Iterator[Event]:
        """Yield events forever (each poll waits up to ``timeout`` s)."""
        while True:
            yield from self.poll(timeout)

    def run(self, on_trade: OnTrade | None = None, on_book: OnBook | None = None,
            until: Callable[[], bool] | None = None, **on_kind: Callable[[Any], object]) -> None:
        """Call ``on_trade(trade)`` / ``on_book(book)`` for each event until ``until()`` is true.

        The other kinds go to ``on_quote``, ``on_ticker``, ``on_liquidation``, ``on_cvd``, ``on_bar``,
        ``on_trade_gap``.
        ``until`` is checked between polls (at least every 0.2 s); None runs forever.
        """
        callbacks = _callbacks(on_trade, on_book, on_kind)
        while until is None or not until():
            for event in self.poll(0.2):
                callback = callbacks.get(type(event))
                if callback is not None:
                    callback(event)

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncConsumer(_Reading):
    """asyncio consumer: ``async with AsyncConsumer(config) as c: async for event in c: ...``

    The arguments are those of ``Consumer``.  The reader runs on the running loop (started by
    ``async with``, or by the first ``async for``); events are Trades and Books, trades first.
    """

    def __init__(self, config: Config, exchanges: Iterable[str] | None = None, symbols: Iterable[str] | None = None,
                 trades: bool = True, books: bool = True, use_shm: bool = True, ctx: zmq.Context | None = None,
                 kinds: Iterable[str] = (), transport: str = "local", keys: ClientKeys | None = None,
                 snapshot_timeout: float = 2.0):
        super().__init__(config, exchanges, symbols, trades, books, use_shm, ctx, kinds, transport, keys,
                         snapshot_timeout)
        self._ready: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self.reader.on(on_error=self._fail)

    def _start(self) -> asyncio.Event:
        if self._ready is None:
            self._ready = asyncio.Event()
            self.reader.start(asyncio.get_running_loop())
        return self._ready

    def _trade_received(self, topic: bytes, payload: bytes) -> None:
        super()._trade_received(topic, payload)
        if self._ready is not None:
            self._ready.set()

    def _l2_received(self, topic: bytes, payload: bytes) -> None:
        super()._l2_received(topic, payload)
        if self._ready is not None and self._events:
            self._ready.set()

    def _wake(self) -> None:
        if self._ready is not None:
            self._ready.set()

    def _fail(self, exc: BaseException) -> None:
        self._failure = exc
        if self._ready is not None:
            self._ready.set()

    def __aiter__(self) -> "AsyncConsumer":
        return self

    async def __anext__(self) -> Event:
        ready = self._start()
        while not self._events:
            if self._failure is not None:
                raise self._failure
            ready.clear()
            await ready.wait()
        return self._events.popleft()

    async def run(self, on_trade: Callable[[Trade], Any] | None = None, on_book: Callable[[Book], Any] | None = None,
                  until: Callable[[], bool] | None = None, **on_kind: Callable[[Any], Any]) -> None:
        """As ``Consumer.run``; a callback may also be a coroutine function (it is awaited)."""
        callbacks = _callbacks(on_trade, on_book, on_kind)
        ready = self._start()
        while until is None or not until():
            if not self._events:
                if self._failure is not None:
                    raise self._failure
                ready.clear()
                try:
                    await asyncio.wait_for(ready.wait(), 0.2)
                except TimeoutError:
                    continue
            while self._events:
                event = self._events.popleft()
                callback = callbacks.get(type(event))
                result = callback(event) if callback is not None else None
                if inspect.isawaitable(result):
                    await result

    async def __aenter__(self) -> "AsyncConsumer":
        self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _callbacks(on_trade, on_book, on_kind: dict) -> dict[type, Callable[[Any], Any]]:
    """Event type -> its callback, for ``run``; an unknown ``on_...`` name is a TypeError."""
    names = {name: t for t, name in _CALLBACKS.items()}
    unknown = set(on_kind) - set(names)
    if unknown:
        raise TypeError(f"run() got unknown callbacks {sorted(unknown)}; expected some of {sorted(names)}")
    out: dict[type, Callable[[Any], Any]] = {names[n]: cb for n, cb in on_kind.items() if cb is not None}
    if on_trade is not None:
        out[Trade] = on_trade
    if on_book is not None:
        out[Book] = on_book
    return out
