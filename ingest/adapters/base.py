"""The adapter contract: what every venue adapter takes, returns and asks to be sent.

An adapter is sans-I/O (STYLE.md section 2): frames and REST bodies go in with their
receive time, ``ingest.events`` records come out, and whatever must be sent (subscribe
frames, keepalives, REST requests) is returned as data for the runner to send.  The
runner and the feed are the same for every venue; everything in which venues differ
is either a method of ``Adapter`` or a field of its ``AdapterTraits``, never a probe
for an optional attribute.

- ``Adapter``: the methods (a ``typing.Protocol``; adapters subclass it to inherit
  the defaults of the optional parts: discovery, resubscribe, checksum).
- ``AdapterTraits``: a frozen record of the venue's behaviour the feed and the runner
  act on: where snapshots come from, the book cap, checksums, BBO checks, keepalive
  style, limits.  Built once per adapter instance (some follow the config: Bybit's
  book cap is its ``depth_stream``'s N).
- ``Verdict``: the answer of a venue's sequencing rule (``Adapter.check``) for one diff.

docs/adapters.md explains each part with the venues' values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ingest.events import DepthDiff, DepthSnapshot, Instrument, SnapshotRequest, StreamGroup
    from pipeline.book import ViewBook


class Verdict(enum.IntEnum):
    """What a venue's sequencing rule says about one diff, given the book's update id.

    An IntEnum: returning and comparing a member costs what a plain int does (measured
    45 vs 36-48 ns per return + compare with timeit on the 2-core box, inside the noise;
    one diff costs ~37 us end to end), and it prints as its name."""

    SKIP = 0    # already covered by the book (older or duplicate): drop it
    APPLY = 1   # chains from the book: apply it
    GAP = 2     # does not chain: something is missing, resync


SKIP, APPLY, GAP = Verdict.SKIP, Verdict.APPLY, Verdict.GAP


class SnapshotSource(enum.Enum):
    """Where a venue's book snapshots come from (exchange-protocols.md section 0 rule 4)."""

    REST = "rest"      # a REST snapshot joined to the buffered WS diffs (Binance)
    STREAM = "ws"      # the snapshot arrives in the WS stream (Bybit, OKX, Lighter, Hyperliquid)


@dataclass(frozen=True, slots=True)
class AdapterTraits:
    """The behaviour of one venue that the feed and the runner act on (no I/O here)."""

    snapshot_source: SnapshotSource
    # levels per side the venue keeps without sending deletes for levels that fall out
    # (Bybit orderbook.N: N; OKX books: 400); the feed trims the full book after every
    # diff.  0: the diffs cover the whole book.
    book_cap: int = 0
    # events carry the venue's checksum of the book after them (OKX CRC32); the feed
    # compares ``Adapter.checksum(symbol, book)`` with each non-zero one
    checksum: bool = False
    # the venue's BBO stream (BboEvent) shares the depth update-id space and is compared
    # with the book at the same id
    verify_bbo: bool = False
    # keepalive: a text frame sent every ping_interval_s instead of an RFC 6455 ping
    # (OKX "ping", Bybit {"op":"ping"}); None: WebSocket ping frames
    app_ping: str | None = None
    # the text sent back when the venue pings us with a text frame (VenueNotice "ping")
    app_pong: str | None = None
    # seconds between subscribe frames where the venue limits client messages (Lighter)
    subscribe_interval_s: float = 0.0
    # levels per side of a REST snapshot (0: not cut, or not joined to the stream); a cut
    # snapshot bounds the prices the book may trust until the next one
    snapshot_limit: int = 0
    # REST weight per minute we allow ourselves, and the response header in which the
    # venue reports the weight used (Binance), if any
    rest_weight_limit: int = 600
    used_weight_header: str | None = None
    # The depth stream's cadence bound, one for every venue (issues 11 and 19): how long a live
    # book may go without news before it is stale and resynced.  None: the venue sends only on
    # change, so a quiet book is not stale (dead connections are found by pings).  An adapter sets
    # it from its stream's cadence (a few pushes missed: it never flaps on a slow stream nor waits
    # out the idle timeout on a fast one); ``[exchanges.X] stale_after_s`` overrides it
    # (FeedBooks.stale_after_s: the one value in force).  What "news" is, ``stale_watch``:
    #   "change"  a live book with no change for that long is stale (FeedBooks.check_ages), and a
    #             depth connection with no frame for that long has stalled and is reconnected
    #             (Runner._check_stalls);
    #   "push"    the stream pushes whole books on its cadence even when nothing changed
    #             (Hyperliquid l2Book: 5 s plain, 0.5 s fast): a live book with no pushed frame
    #             for that long is stale and resubscribed alone (Runner._staleness_loop); its
    #             connection carries the other coins on
    stale_after_s: float | None = None
    stale_watch: str = "change"
    # how the runner reaches the venue: "ws" (ingest/runner.py: WebSocket connections and REST)
    # or "files" (ingest/filetail.py: hourly files tailed line by line, snapshots from a file)
    transport: str = "ws"
    # the venue numbers each symbol's trades 1, 2, 3...: a jump in trade_id is trades lost (during
    # a disconnect or an ingest restart) and is counted per symbol (status ``trades_missed``)
    contiguous_trade_ids: bool = False
    # most trades one REST request of ``Adapter.trades_request`` returns; 0: the venue has no REST
    # endpoint that lists trades by id (the gaps above are reported, never backfilled)
    trades_page: int = 0

    @property
    def in_stream(self) -> bool:
        """Snapshots arrive in the stream: a resync is a resubscribe, not a REST fetch."""
        return self.snapshot_source is SnapshotSource.STREAM


@runtime_checkable
class Adapter(Protocol):
    """One venue's protocol, sans-I/O.  Adapters subclass this to inherit the defaults.

    In: the exchange's config (constructor), text frames and REST bodies with their
    receive time.  Out: ``ingest.events`` records.  To send: ``stream_groups`` (the
    connections and their subscribe frames), ``resubscribe`` frames, ``snapshot_request``
    and ``discovery_request`` (REST), ``traits.app_ping``/``app_pong``.
    """

    name: ClassVar[str]             # the adapter's name in config (``exchanges.X.adapter``)
    # the channels the venue offers (pipeline.config.CHANNELS names: "trades", "book", "quotes",
    # "derivative_ticker", "liquidations"); ``channels`` is what the config chose of them
    CHANNELS: ClassVar[tuple[str, ...]] = ("trades", "book")
    channels: frozenset[str] = frozenset(("trades", "book"))
    supports_live_subscribe: ClassVar[bool] = False  # ``live_subscribe`` works on an open connection
    DEFAULTS: ClassVar[dict]        # URLs and limits used when the config sets none
    OPTIONS: ClassVar[tuple[str, ...]] = ()  # the adapter's own keys in ``[exchanges.X]`` (parse_options)
    # ``processes = N`` can split the symbols over N ingest processes (pipeline/shards.py); a source
    # every process would have to read whole (the node's files) says False and the config refuses N > 1
    SHARDABLE: ClassVar[bool] = True
    traits: AdapterTraits
    symbols: tuple[str, ...]        # exchange-native symbols, from the config

    # constructor: ``Adapter(config: ExchangeConfig)``; raises ConfigError naming the key

    @classmethod
    def parse_options(cls, table: dict, where: str, base_dir=None) -> dict:
        """The adapter's own keys of ``[exchanges.X]`` (``OPTIONS``) -> checked values.

        Called by the config loader (``where`` = ``exchanges.X``, ``base_dir`` for relative
        paths) and by the adapter's constructor on ``config.options``.  Raises ConfigError
        naming ``where.KEY``.  The default: the adapter has no keys of its own."""
        from pipeline.config import check_keys
        check_keys(table, set(cls.OPTIONS), where)
        return dict(table)

    # ------------------------------------------------------------ what to connect to
    def stream_groups(self) -> list[StreamGroup]:
        """One StreamGroup per WebSocket connection to hold: url, kind ("depth" or
        "trades"), symbols and the frames to send after the handshake."""
        ...

    def connection_opened(self, group: StreamGroup) -> None:
        """A new connection of ``group`` starts: reset per-connection state (trade
        de-duplication keys must survive it)."""

    def resubscribe(self, symbol: str) -> list[str]:
        """In-stream venues: frames that make the venue send a fresh snapshot of
        ``symbol`` on the same connection.  []: the runner reconnects instead."""
        return []

    # ------------------------------------------------------------ parsing (hot path)
    def parse_frame(self, frame: bytes, recv_ns: int):
        """One text frame -> DepthDiff | DepthSnapshot | TradeEvent | BboEvent | TickerEvent |
        LiquidationEvent | VenueNotice | a list of these | None (nothing for the feed).

        Raises MalformedFrame (``.symbol`` set when readable) or UnknownFrame, and
        nothing else on any input (the fuzz tests check this)."""
        ...

    # ------------------------------------------------------------ REST
    def snapshot_request(self, symbol: str) -> SnapshotRequest:
        """The REST request for ``symbol``'s book (sync source of REST venues; the
        best-available-book fallback of every venue)."""
        ...

    def parse_snapshot(self, symbol: str, body: bytes, recv_ns: int) -> DepthSnapshot:
        """A REST book body -> DepthSnapshot.  Raises MalformedFrame."""
        ...

    def poll_requests(self) -> list[tuple[str, SnapshotRequest]]:
        """REST requests the runner repeats every ``open_interest_interval_s``, as (symbol,
        request), within the weight budget (Binance USD-M open interest); []: none."""
        return []

    def parse_poll(self, symbol: str, body: bytes, recv_ns: int):
        """A polled body -> an event for the feed (a TickerEvent).  Raises MalformedFrame."""
        raise NotImplementedError(f"{self.name} polls nothing")

    def trades_request(self, symbol: str, from_id: int, limit: int) -> SnapshotRequest | None:
        """The REST request for up to ``limit`` trades of ``symbol`` from trade id ``from_id`` on, in
        the id space of the venue's trade stream (a trade-id gap's backfill, ``traits.trades_page``);
        None: the venue has none."""
        return None

    def parse_trades(self, symbol: str, body: bytes, recv_ns: int) -> list:
        """A ``trades_request`` answer -> TradeEvents (ids as the stream gives them).  Raises
        MalformedFrame."""
        raise NotImplementedError(f"{self.name} lists no trades over REST")

    def discovery_request(self) -> SnapshotRequest | None:
        """Venue metadata to fetch once before connecting (Lighter market ids); None: none."""
        return None

    def apply_discovery(self, body: bytes) -> None:
        """Read the discovery answer.  Raises SnapshotError (unreadable: retried) or
        ConfigError (a configured symbol the venue does not list: fatal)."""
        raise NotImplementedError(f"{self.name} asks for no discovery")

    # ------------------------------------------------------------ sequencing rule
    @staticmethod
    def check(ev: DepthDiff, book_id: int, first: bool) -> Verdict:
        """SKIP, APPLY or GAP for ``ev`` given the update id the book is at and whether
        ``ev`` would be the first diff after a snapshot (the venue's gap rule)."""
        ...

    @staticmethod
    def snapshot_usable(snapshot_id: int, first_buffered: DepthDiff | None) -> bool:
        """False when a REST snapshot is older than the first buffered diff."""
        ...

    # ------------------------------------------------------------ runtime streams
    # (DESIGN.md contract 9; docs/streams.md.)  A venue that can subscribe on a live
    # connection returns the frames from ``live_subscribe``; the runner then adds a symbol
    # to a connection that has room, and opens a new connection only when none has (or the
    # venue cannot, []).  ``stream_group`` builds one connection for given symbols: the
    # runner asks again at every reconnect, so a connection comes back with its symbols
    # of now.  An adapter without ``stream_group`` cannot change symbols at runtime.

    def stream_group(self, kind: str, symbols: tuple[str, ...]) -> StreamGroup:
        """The connection of ``kind`` ("depth" or "trades") that carries ``symbols``."""
        raise NotImplementedError(f"{self.name}: symbols cannot be changed at runtime yet")

    def symbols_per_connection(self, kind: str) -> int:
        """Most symbols one connection of ``kind`` carries."""
        return max(1, getattr(self, "streams_per_connection", 1))

    def stream_kinds(self) -> tuple[str, ...]:
        """The kinds of connection each symbol needs."""
        return ("depth", "trades")

    def stream_groups_for(self, symbols) -> list[StreamGroup]:
        """``stream_groups`` built from ``stream_group``: each kind's symbols in chunks."""
        groups = []
        for kind in self.stream_kinds():
            n = self.symbols_per_connection(kind)
            for i in range(0, len(symbols), n):
                groups.append(self.stream_group(kind, tuple(symbols[i:i + n])))
        return groups

    def live_subscribe(self, kind: str, symbols: tuple[str, ...], subscribe: bool = True) -> list[str]:
        """Frames that (un)subscribe ``symbols`` on an open connection of ``kind``; []: the
        venue cannot (a new connection, or a reconnect without them, instead)."""
        return []

    def check_new_symbols(self, symbols: tuple[str, ...]) -> None:
        """Raise pipeline.errors.StreamError when following ``symbols`` too would break a venue
        limit (Hyperliquid: subscriptions and connections per IP); called before anything changes."""

    def add_symbol(self, symbol: str) -> None:
        """Follow ``symbol`` too (its routes and per-symbol state); the runner subscribes it."""
        raise NotImplementedError(f"{self.name}: symbols cannot be changed at runtime yet")

    def remove_symbol(self, symbol: str) -> None:
        """Stop following ``symbol`` (file sources: its book is no longer kept).  WebSocket
        adapters keep a removed symbol's routes (frames in flight), so the runner does not call it."""

    def instrument_request(self, symbol: str) -> SnapshotRequest | None:
        """The REST request that says whether the venue lists ``symbol``; None: no list to ask."""
        return None

    def instrument_listed(self, symbol: str, status: int, body: bytes) -> bool:
        """Whether the answer to ``instrument_request(symbol)`` lists the symbol (tradable)."""
        return True

    # ------------------------------------------------------------ integrity, naming
    def checksum(self, symbol: str, book: ViewBook) -> int:
        """The venue's checksum of ``book`` (only called when ``traits.checksum``)."""
        raise NotImplementedError(f"{self.name} has no checksum")

    def instrument(self, symbol: str) -> Instrument:
        """Base, quote and kind (spot/perp/future) of a native symbol."""
        ...
