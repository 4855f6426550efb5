"""Normalized events that leave an adapter.  Prices and sizes are floats, converted
once at the adapter boundary; times are integers (exchange time in microseconds,
local receive time in nanoseconds as ``time.time_ns()`` gave it).

The per-frame events are msgspec Structs without GC tracking: cheaper to create than
slotted dataclasses (one per frame on the hot path) and never part of a cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from pipeline.schema import Instrument  # noqa: F401  one type: adapters return what the bus carries

Level = tuple[float, float]


class DepthDiff(msgspec.Struct, gc=False):
    """An incremental book update covering venue update ids first_id..last_id."""

    symbol: str
    first_id: int          # Binance U
    last_id: int           # Binance u
    prev_id: int           # Binance USD-M pu (-1 where the venue has none)
    bids: list[Level]
    asks: list[Level]
    ts_exchange_us: int
    recv_ns: int
    checksum: int = 0      # venue checksum of the book after this diff (OKX CRC32); 0 = none


class DepthSnapshot(msgspec.Struct, gc=False):
    """A full (or top-K) book, valid as of venue update id ``last_id``: from REST, or
    in-stream (Bybit/OKX/Lighter snapshot frames, every Hyperliquid l2Book)."""

    symbol: str
    last_id: int
    bids: list[Level]
    asks: list[Level]
    ts_exchange_us: int
    recv_ns: int
    checksum: int = 0      # venue checksum of this book (OKX CRC32); 0 = none


class TradeEvent(msgspec.Struct, gc=False):
    symbol: str
    price: float
    amount: float
    side: str               # taker side: "buy" | "sell" | "unknown"
    trade_id: str
    ts_exchange_us: int
    recv_ns: int
    liquidation: bool = False  # a liquidation fill (sources that say so: the Hyperliquid node's fills)


class BboEvent(msgspec.Struct, gc=False):
    """Best bid/offer as the venue states it: published as a ``quote`` (pipeline/schema.py),
    and, where ``AdapterTraits.verify_bbo``, compared with the book at the same update id
    (it then shares the depth stream's update-id space).  A side the venue says is empty
    is None; ``update_id`` 0 when the venue gives none; ``ts_exchange_us`` 0 when the venue
    stamps no time (the feed uses the receive time)."""

    symbol: str
    update_id: int
    bid_price: float | None
    bid_size: float | None
    ask_price: float | None
    ask_size: float | None
    recv_ns: int
    ts_exchange_us: int = 0


class TickerEvent(msgspec.Struct, gc=False, kw_only=True):
    """Part of a derivative's ticker: the fields one venue message states, None for the
    others.  The feed merges them into the symbol's ticker state and publishes the whole
    state (``derivative_ticker``), so an adapter emits what each channel says and nothing
    more.  ``ts_exchange_us`` 0: the venue stamps no time (Hyperliquid ``activeAssetCtx``),
    the feed uses the receive time."""

    symbol: str
    ts_exchange_us: int
    recv_ns: int
    mark_price: float | None = None
    index_price: float | None = None
    last_price: float | None = None
    funding_rate: float | None = None
    predicted_funding_rate: float | None = None
    funding_timestamp: int | None = None   # next funding time, microseconds
    open_interest: float | None = None


class L4Event(msgspec.Struct, gc=False):
    """The order-level changes of one block for one symbol: ``(oid, side "bid"|"ask", price,
    size after the block)``, size 0 = gone (a source with orders, e.g. the Hyperliquid node)."""

    symbol: str
    update_id: int
    orders: list[tuple[int, str, float, float]]
    ts_exchange_us: int
    recv_ns: int


class LiquidationEvent(msgspec.Struct, gc=False):
    """A liquidation: ``side`` the side of the liquidation order ("buy": a short position
    was liquidated; "sell": a long one; tardis' convention), ``liquidation_id`` "" when the
    venue gives none."""

    symbol: str
    side: str
    price: float
    amount: float
    liquidation_id: str
    ts_exchange_us: int
    recv_ns: int


@dataclass(slots=True)
class VenueNotice:
    """Control traffic: subscription replies, errors, maintenance notices."""

    kind: str               # "reply" | "error" | "server_shutdown"
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamGroup:
    """One WebSocket connection the runner must hold open: its URL and what it carries."""

    url: str
    kind: str               # "depth" (depth diffs + BBO) or "trades"
    symbols: tuple[str, ...]
    subscribe: tuple[str, ...] = ()   # frames to send after connecting (empty: URL carries the streams)


@dataclass(frozen=True, slots=True)
class FileStream:
    """One set of hourly files the file-tailing transport reads (ingest/filetail.py):
    ``root/YYYYMMDD/H`` (hours with or without zero padding), one record per line.
    ``name`` tells the adapter which stream a line is from ("depth" or "trades");
    ``rewind``: re-read from the new snapshot's height on every resync (the book's stream)."""

    name: str
    root: Path
    rewind: bool = False


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """A REST request for a book (or for venue metadata): GET, or POST with a JSON body."""

    url: str
    weight: int
    method: str = "GET"
    body: bytes | None = None


# ------------------------------------------------------------------ feed inputs
# Everything the feed learns goes through FeedBooks.receive: the adapter's events above,
# and these, which the runner (or a test, or the benchmark) reports.

@dataclass(frozen=True, slots=True)
class DepthConnected:
    """A depth connection is opening for ``symbols``: they buffer and wait for snapshots.
    ``open``: the connection is already up (symbols added to it); False while the handshake is
    still under way (the runner then says DepthOpen once it is): status says "connected" only then."""

    symbols: tuple[str, ...]
    open: bool = True


@dataclass(frozen=True, slots=True)
class DepthOpen:
    """The depth connection that DepthConnected announced for ``symbols`` finished its handshake."""

    symbols: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DepthDisconnected:
    """The depth connection of ``symbols`` is gone (``reason``), at local time ``recv_ns``."""

    symbols: tuple[str, ...]
    reason: str
    recv_ns: int


@dataclass(frozen=True, slots=True)
class SnapshotOverdue:
    """No diff came for ``symbols`` soon after connecting: REST venues fetch a snapshot anyway."""

    symbols: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DepthSilent:
    """Live books of ``symbols`` got no depth frame for ``silent_s`` (past the stream's cadence
    bound, ``AdapterTraits.stale_after_s`` watched by push), at local time ``recv_ns``: stale,
    resync them."""

    symbols: tuple[str, ...]
    silent_s: float
    recv_ns: int


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame the adapter rejected as malformed (``symbol`` when it was readable)."""

    symbol: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """A well-formed frame of a kind we do not follow."""

    detail: str


# ------------------------------------------------------------------ feed outputs

@dataclass(frozen=True, slots=True)
class Request:
    """Something the feed asks the runner to do: ``action`` is ingest.sync.Action
    FETCH_SNAPSHOT (a REST snapshot) or RESUBSCRIBE (a fresh in-stream snapshot)."""

    action: object
    symbol: str


@dataclass(frozen=True, slots=True)
class TradesWanted:
    """The feed asks the runner for the venue trades with ids ``first_id..last_id`` of ``symbol``
    (a trade-id gap, issue 19 item 5): fetched over REST within the weight budget, then handed
    back as a ``TradesBackfill``."""

    symbol: str
    first_id: int
    last_id: int


@dataclass(frozen=True, slots=True)
class TradesBackfill:
    """What a REST backfill of ``first_id..last_id`` brought (``trades``, any order; those outside
    the range are ignored); ``error`` says why it stopped short ("" when it did not)."""

    symbol: str
    first_id: int
    last_id: int
    trades: list
    recv_ns: int
    error: str = ""
