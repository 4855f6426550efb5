"""The bus schema: event kinds, topics and payloads, defined once, encode and decode side by side.

Every bus message is two ZeroMQ frames (pipeline/bus.py sends and receives them)::

    frame 0  topic    b"KIND.EXCHANGE.SYMBOL" (ascii), KIND the topic prefix of an event kind
    frame 1  payload  a msgpack map (below), self-describing; field "kind" tags it

Event kinds are data: ``KINDS`` below is the one registry of them (name, topic prefix,
payload struct, bus socket, conflatable or not, WebSocket kinds, tardis datatype).  The
bus, the ingest's feed, the publisher and the sinks read it; a new kind is a payload
Struct and one ``EventKind`` line here, plus its renderers (publisher/render.py,
sinks/recorder.py).  docs/bus.md is the reader's version of this page.

Trade payload (kind "trade") -- one per venue trade, on the trades socket:
    exchange, symbol   str    config name of the exchange; venue-native symbol
    epoch              int    ingest process start id (changes on restart)
    seq                int    contiguous per (trade, exchange, symbol) stream, from 1
    ts_exchange        int    venue trade time, microseconds since the epoch (UTC)
    ts_received        int    local receive time of the frame, microseconds
    ts_published       int    local time the message was sent, microseconds
    price, amount      float
    side               str    taker side: "buy", "sell" or "unknown"
    trade_id           str    venue trade id
    instrument         map    {base, quote, kind}: what the native symbol trades, kind
                              "spot" | "perp" | "future" | "unknown" (absent: not known)
    liquidation        bool   true: the trade liquidated a position (sources that say so: the
                              Hyperliquid node's fills); false otherwise or unknown.  Added
                              after SCHEMA_VERSION 1 with a default: old payloads decode as false

L2 payload (kind "l2") -- on the L2 socket:
    exchange, symbol, epoch, seq, ts_exchange, ts_received, ts_published   as above
    snapshot           bool   true: bids/asks are the whole top-N view (replace);
                              false: a delta of the view (apply; size 0 = delete)
    state              str    "syncing" | "live" | "stale" | "removed" (final: unsubscribed at runtime)
    update_id          int    venue update id the view corresponds to (0 if none)
    depth              int    N of the top-N view
    bids, asks         [[price, size], ...]  (snapshot: best first)
    instrument         map    as for trades

A snapshot is published after every (re)sync, and when a book goes stale (with
state "stale" and its last levels, so consumers know not to trust it).  Deltas
follow with seq + 1 each.  Applying deltas in seq order to the latest snapshot
gives exactly the shared-memory view with the same seq.

Every other kind carries exchange, symbol, epoch, seq, ts_exchange, ts_received,
ts_published and instrument as above, seq contiguous per (kind, exchange, symbol):

Quote (kind "quote", topic quote.EX.SYM, hot socket) -- the venue's own best bid/offer:
    bid_price, bid_amount, ask_price, ask_amount   float or None (None: that side is empty)
    update_id          int    the venue's book update id of this quote (0 if it has none)

DerivativeTicker (kind "derivative_ticker", topic ticker.EX.SYM, L2 socket) -- the merged
state of a derivative's venue tickers; a field the venue has not stated is None, never 0:
    mark_price, index_price, last_price, funding_rate, predicted_funding_rate,
    open_interest      float or None
    funding_timestamp  int or None   next funding time, microseconds

Liquidation (kind "liquidation", topic liq.EX.SYM, hot socket):
    side               str    side of the liquidation order (tardis): "buy" -- a short
                              position was liquidated, "sell" -- a long one; "unknown"
    price, amount      float
    liquidation_id     str    the venue's id ("" when it gives none)

Cvd (kind "cvd", topic cvd.EX.SYM, L2 socket) -- derived by the ingest from its trades:
    cvd                float  taker buy volume minus taker sell volume since ``since``
    buy_volume, sell_volume  float  the two sums
    since              int    the UTC midnight (µs) the sums started from (they reset there)
    trade_seq          int    seq of the last trade included
    ts_exchange        int    exchange time of that trade

TradeBar (kind "trade_bar", topic bar.EX.SYM, L2 socket) -- derived, closed bars only:
    interval           str    "1s", "1m", ... (one stream carries every configured interval)
    interval_us        int    its length in microseconds
    open_time          int    start of the bar, exchange time, aligned to interval_us
    ts_exchange        int    end of the bar (open_time + interval_us)
    open, high, low, close, volume, buy_volume, sell_volume   float
    trades             int    trades in the bar (>= 1: an empty interval gives no bar)
    first_trade_seq, last_trade_seq   int   trade seqs of the first and last trade in it

TradeGap (kind "trade_gap", topic tgap.EX.SYM, hot socket) -- trades the venue made that never
reached us (venues whose trade ids are contiguous: a skipped id is a lost trade):
    state              str    "missing": ids first_id..last_id were skipped (published just before the
                              trade that revealed it); "backfilled": the follow-up, after a REST fetch
    first_id, last_id  int    the venue trade ids missing, inclusive
    count              int    last_id - first_id + 1
    backfill           bool   "missing": a REST backfill of these ids follows (a "backfilled" message)
    restart            bool   the gap spans an ingest restart: first_id - 1 is the last trade the previous
                              run (epoch) published
    backfilled         int    "backfilled": how many of the ids were fetched; they follow this message at
                              once as ordinary trades with seqs first_seq..last_seq (0, 0: none)
    first_seq, last_seq  int  trade seqs of the backfilled trades
    ts_exchange        int    venue time of the trade that revealed the gap (its follow-up: the same)

msgspec Structs give the fastest encode/decode measured here
(building-block-costs.md section 4) while the wire stays plain msgpack: any
msgpack library decodes it into a map.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable, Union

import msgspec

SCHEMA_VERSION = 1


def parse_topic(topic: bytes) -> tuple[str, str, str]:
    """``b"l2.sim.BTCUSDT"`` -> ``("l2", "sim", "BTCUSDT")``: topic prefix, exchange, symbol.

    Raises ValueError for a topic without three dot-separated parts.  Exchange names have no
    dot; a symbol may (the first two dots split).
    """
    parts = topic.decode("ascii").split(".", 2)
    if len(parts) != 3:
        raise ValueError(f"bus topic {topic!r} is not KIND.EXCHANGE.SYMBOL")
    return parts[0], parts[1], parts[2]


class Instrument(msgspec.Struct, frozen=True):
    """Normalized instrument of a venue-native symbol, for consumers that join venues."""

    base: str
    quote: str
    kind: str  # "spot" | "perp" | "future" | "unknown"


class Trade(msgspec.Struct, tag="trade", tag_field="kind", kw_only=True):
    exchange: str
    symbol: str
    epoch: int
    seq: int
    ts_exchange: int
    ts_received: int
    ts_published: int = 0
    price: float
    amount: float
    side: str
    trade_id: str
    instrument: Instrument | None = None
    # appended last with a default: a payload without it (an older ingest) decodes as False, and
    # an older decoder ignores it (maps, unknown keys skipped)
    liquidation: bool = False


class L2Update(msgspec.Struct, tag="l2", tag_field="kind", kw_only=True):
    exchange: str
    symbol: str
    epoch: int
    seq: int
    ts_exchange: int
    ts_received: int
    ts_published: int = 0
    snapshot: bool
    state: str
    update_id: int = 0
    depth: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    instrument: Instrument | None = None


class Quote(msgspec.Struct, tag="quote", tag_field="kind", kw_only=True):
    exchange: str
    symbol: str
    epoch: int
    seq: int
    ts_exchange: int
    ts_received: int
    ts_published: int = 0
    bid_price: float | None
    bid_amount: float | None
    ask_price: float | None
    ask_amount: float | None
    update_id: int = 0
    instrument: Instrument | None = None


class DerivativeTicker(msgspec.Struct, tag="derivative_ticker", tag_field="kind", kw_only=True):
    exchange: str
    symbol: str
    epoch: int
    seq: int
    ts_exchange: int
    ts_received: int
    ts_published: int = 0
    mark_price: float | None = None
    index_price: float | None = None
    last_price: float | None = None
    funding_rate: float | None = None
    predicted_funding_rate: float | None = None
    funding_timestamp: int | None = None
    open_interest: float | None = None
    instrument: Instrument | None = None


# the fields of a derivative ticker a venue states (absent: None); the feed merges them per symbol
TICKER_FIELDS = ("mark_price", "index_price", "last_price", "funding_rate", "predicted_funding_rate",
                 "funding_timestamp", "open_interest")


class L4Update(msgspec.Struct, tag="l4", tag_field="kind", kw_only=True):
    """The order-level changes of one block of a source with orders (the Hyperliquid node):
    ``orders`` holds ``(oid, side, price, size)`` after the block, size 0 = the order is gone."""

    exchange: str
    symbol: str
    epoch: int
    seq: int
    ts_exchange: int
    ts_received: int
    ts_published: int = 0
    update_id: int
    orders: list[tuple[int, str, float, float]]
    instrument: Instrument | None = None


class Liquidation(msgspec.Struct, tag="liquidation", tag_field="kind", kw_only=True):
    exchange: str
    symbol: str
    epoch: int
    seq: int
    ts_exchange: int
    ts_received: int
    ts_published: int = 0
    side: str
    price: float
    amount: float
    liquidation_id: str = ""
    instrument: Instrument | None = None


class Cvd(msgspec.Struct, tag="cvd", tag_field="kind", kw_only=True):
    exchange: str
    symbol: str
    epoch: int
    seq: int
    ts_exchange: int
    ts_received: int
    ts_published: int = 0
    cvd: float
    buy_volume: float
    sell_volume: float
    since: int
    trade_seq: int
    instrument: Instrument | None = None


class TradeBar(msgspec.Struct, tag="trade_bar", tag_field="kind", kw_only=True):
    exchange: str
    symbol: str
    epoch: int
    seq: int
    ts_exchange: int
    ts_received: int
    ts_published: int = 0
    interval: str
    interval_us: int
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    buy_volume: float
    sell_volume: float
    trades: int
    first_trade_seq: int
    last_trade_seq: int
    instrument: Instrument | None = None


class TradeGap(msgspec.Struct, tag="trade_gap", tag_field="kind", kw_only=True):
    """Venue trade ids skipped on a symbol (module docstring), and whether they were backfilled."""

    exchange: str
    symbol: str
    epoch: int
    seq: int
    ts_exchange: int
    ts_received: int
    ts_published: int = 0
    state: str  # "missing" | "backfilled"
    first_id: int
    last_id: int
    count: int
    backfill: bool = False
    restart: bool = False
    backfilled: int = 0
    first_seq: int = 0
    last_seq: int = 0
    instrument: Instrument | None = None


GAP_MISSING = "missing"
GAP_BACKFILLED = "backfilled"


class Socket(enum.Enum):
    """The bus socket a kind travels on (pipeline/bus.py: the endpoint is ``NAME.<value>.sock``).

    HOT carries what must never wait behind book traffic (trades, quotes, liquidations); every
    reader drains it first.  L2 carries the book views' deltas and snapshots, and the kinds
    that are states rather than events (derivative tickers, CVD) or come at most once per
    interval (trade bars): none of them may delay a trade.
    """

    HOT = "trades"
    L2 = "l2"


@dataclass(frozen=True)
class EventKind:
    """One kind of bus event: how it is named, routed, framed, conflated, rendered and filed.

    name          the kind's name in code and docs ("trade", "l2")
    topic_prefix  KIND in the topic ``KIND.EXCHANGE.SYMBOL`` (DESIGN.md contract 4)
    payload       the msgspec Struct of its payload; its tag is the payload's "kind" field
    socket        Socket.HOT or Socket.L2
    conflatable   a slow WebSocket client may get only the latest state (books) instead of
                  every event (trades are never conflated: DESIGN.md failure model)
    ws_kinds      its WebSocket ``kind`` values (DESIGN.md contract 5); for a book: the
                  snapshot kind, then the delta kind; () for a kind only bus consumers get
    tardis_datatype  DATATYPE of its CSV / Parquet files (DESIGN.md contract 6); None for
                  the derived kinds, which tardis has no dataset of (cvd, trade_bar)
    """

    name: str
    topic_prefix: str
    payload: type[msgspec.Struct]
    socket: Socket
    conflatable: bool
    ws_kinds: tuple[str, ...]
    tardis_datatype: str | None

    def topic(self, exchange: str, symbol: str) -> bytes:
        """``KIND.EXCHANGE.SYMBOL`` of one stream, e.g. ``b"trade.sim.BTCUSDT"``."""
        return f"{self.topic_prefix}.{exchange}.{symbol}".encode("ascii")

    def subscription(self, exchange: str | None = None) -> bytes:
        """The topic prefix that subscribes to every stream of this kind (of one exchange).

        ZeroMQ subscriptions match prefixes, so a subscription to one symbol's topic also
        receives every symbol that starts with it (``BTCUSD`` gets ``BTCUSDT``): readers
        that want whole symbols also filter on the exact topic (pipeline/bus.py ``Reader``).
        """
        if exchange is None:
            return f"{self.topic_prefix}.".encode("ascii")
        return f"{self.topic_prefix}.{exchange}.".encode("ascii")

    @property
    def tag(self) -> str:
        """The payload's ``kind`` field."""
        return self.payload.__struct_config__.tag  # type: ignore[return-value]


TRADE = EventKind("trade", "trade", Trade, Socket.HOT, conflatable=False,
                  ws_kinds=("trade",), tardis_datatype="trades")
L2 = EventKind("l2", "l2", L2Update, Socket.L2, conflatable=True,
               ws_kinds=("order_book_l2", "order_book_l2_update"), tardis_datatype="incremental_book_L2")

QUOTE = EventKind("quote", "quote", Quote, Socket.HOT, conflatable=True,
                  ws_kinds=("quote",), tardis_datatype="quotes")
DERIVATIVE_TICKER = EventKind("derivative_ticker", "ticker", DerivativeTicker, Socket.L2, conflatable=True,
                              ws_kinds=("derivative_ticker",), tardis_datatype="derivative_ticker")
LIQUIDATION = EventKind("liquidation", "liq", Liquidation, Socket.HOT, conflatable=False,
                        ws_kinds=("liquidation",), tardis_datatype="liquidations")
CVD = EventKind("cvd", "cvd", Cvd, Socket.L2, conflatable=True, ws_kinds=("cvd",), tardis_datatype=None)
TRADE_BAR = EventKind("trade_bar", "bar", TradeBar, Socket.L2, conflatable=False,
                      ws_kinds=("trade_bar",), tardis_datatype=None)

# The registry.  DESIGN.md contract 4 names the topic prefixes trade, l2, quote, ticker, liq (and
# l4, reserved for a source with orders); cvd and bar are the derived kinds' (docs/bus.md).
# Quotes are never conflated on the bus (every reader gets each one); "conflatable" lets a slow
# WebSocket client get the latest quote per symbol instead of each.
# order-level changes per block of a source with orders (DESIGN.md contract 4: `l4`); never conflated
L4 = EventKind("l4", "l4", L4Update, Socket.L2, conflatable=False, ws_kinds=("l4",), tardis_datatype=None)
# trade ids a venue skipped (lost upstream) and their REST backfill: on the hot socket, in order with
# the trades it speaks of; never conflated; for bus consumers only (no WebSocket kind, no tardis file)
TRADE_GAP = EventKind("trade_gap", "tgap", TradeGap, Socket.HOT, conflatable=False, ws_kinds=(),
                      tardis_datatype=None)
KINDS: dict[str, EventKind] = {k.name: k for k in (TRADE, L2, QUOTE, DERIVATIVE_TICKER, LIQUIDATION, CVD, TRADE_BAR,
                                                   L4, TRADE_GAP)}
BY_TOPIC_PREFIX: dict[str, EventKind] = {k.topic_prefix: k for k in KINDS.values()}

TRADE_PREFIX = TRADE.topic_prefix
L2_PREFIX = L2.topic_prefix
trade_topic = TRADE.topic
l2_topic = L2.topic


def kind_of(topic: bytes) -> EventKind:
    """The registered kind of a topic. Raises KeyError for an unknown topic prefix."""
    return BY_TOPIC_PREFIX[topic[:topic.index(b".")].decode("ascii")]


def topics(kind: EventKind, exchanges: Iterable[str], symbols: Iterable[str] | None = None) -> list[bytes]:
    """Exact topics of ``kind`` for every (exchange, symbol), or, with ``symbols`` None, the
    per-exchange subscription prefixes."""
    syms = list(symbols) if symbols is not None else None
    if syms is None:
        return [kind.subscription(ex) for ex in exchanges]
    return [kind.topic(ex, s) for ex in exchanges for s in syms]


# one member per registered kind (test_schema checks it)
BusMessage = Union[Trade, L2Update, Quote, DerivativeTicker, Liquidation, Cvd, TradeBar, L4Update, TradeGap]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(BusMessage)
_trade_decoder = msgspec.msgpack.Decoder(Trade)
_l2_decoder = msgspec.msgpack.Decoder(L2Update)
_decoders = {k.name: msgspec.msgpack.Decoder(k.payload) for k in KINDS.values()}


def encode(message: BusMessage) -> bytes:
    """Payload bytes of any bus message (a registered kind's payload Struct)."""
    return _encoder.encode(message)


def decode(payload: bytes) -> BusMessage:
    """Any registered kind's payload from bytes (by its "kind" tag). Raises msgspec.DecodeError /
    ValidationError."""
    return _decoder.decode(payload)


def decoder(kind: EventKind):
    """The decode function of one kind's payload (faster than ``decode`` when the topic told the kind)."""
    return _decoders[kind.name].decode


def decode_trade(payload: bytes) -> Trade:
    return _trade_decoder.decode(payload)


def decode_l2(payload: bytes) -> L2Update:
    return _l2_decoder.decode(payload)
