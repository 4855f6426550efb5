"""Lighter adapter (``lighter``): zkLighter perp and spot markets.  Sans-I/O.

Venue rules implemented here (shared/docs/exchange-protocols.md section 7):
- markets are numeric ids: ``GET /api/v1/orderBookDetails`` maps symbols to ids in two
  categories (``order_book_details`` perps, ``spot_order_book_details`` spot, ids >= 2048).
  The runner fetches it once before connecting (``discovery_request``/``apply_discovery``);
  a purely numeric config symbol is taken as a market id as is;
- one WebSocket at ``/stream``; subscribe ``{"type":"subscribe","channel":"order_book/ID"}``
  (slash), while frames carry ``"channel":"order_book:ID"`` (colon);
- ``subscribed/order_book`` is a full snapshot (``last_id = order_book.nonce``), then
  ``update/order_book`` diffs (absolute sizes, ``"0.0000"`` deletes) chained by
  ``begin_nonce == previous nonce`` [observed]: a DepthDiff with ``first_id = last_id = nonce``
  and ``prev_id = begin_nonce``.  ``offset`` is not contiguous and is not used, except as
  the id of the oldest documented frames, which carry no ``nonce``;
- frames from before late 2025 have no ``begin_nonce``: ``prev_id = -1``, which ``check``
  applies without a continuity check (an older ``nonce`` is still skipped).  Such a feed
  cannot reveal a lost update; only a resubscribe or reconnect heals it;
- ``trade/ID``: ``subscribed/trade`` (a backlog) then ``update/trade``, each with
  ``trades[]`` and ``liquidation_trades[]``; ``is_maker_ask`` true => the maker sold =>
  the taker **bought**.  ``trade_id`` is unique; keys are remembered (bounded) across
  reconnects because every subscription starts with the backlog again.
  ``liquidation_trades[]`` are liquidations, published as such and not as trades (issue
  13): the liquidated account's order is taken to be the taker (the venue's liquidator
  crosses the book), so the liquidation's side is the taker side;
- other kinds (issue 13), on the trades connection: ``ticker/ID`` is the venue's best
  bid/offer (a quote; top-level ``nonce`` as its update id, not confirmed to be the book's);
  ``market_stats/ID`` the derivative ticker: ``mark_price``, ``index_price``,
  ``last_trade_price``, ``open_interest``, ``funding_rate`` (the rate of the last funding),
  ``current_funding_rate`` (the running estimate for the next one: our
  ``predicted_funding_rate``) and ``funding_timestamp`` (ms), in the venue's units;
- keepalive: we send ``{"type":"ping"}``; the server may ping us with ``{"type":"ping"}``
  too (the SDK answers ``{"type":"pong"}``): parse_frame returns VenueNotice("ping") and
  the runner sends ``app_pong``, since an adapter never sends;
- REST ``GET /api/v1/orderBookOrders?market_id=&limit=`` lists resting orders (L3) with no
  nonce: aggregated by price into levels, it serves only as a best-available book
  (``last_id = 0``), never as a sync source;
- runtime streams (issue 14): a market is added with the same subscribe frames on the open
  connections and removed with ``{"type":"unsubscribe","channel":"order_book/ID"}`` (the
  runner paces both, ``subscribe_interval_s``).  A new symbol is checked against
  ``orderBookDetails`` (the discovery request), which also gives its market id.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode

import msgspec

from ingest.adapters.base import APPLY, GAP, SKIP, Adapter, AdapterTraits, SnapshotSource, Verdict
from ingest.adapters.common import (Id, Micros, Millis, configure, DECODE_ERRORS, RecentKeys,
                                    check_uncrossed, malformed as _malformed)
from ingest.events import (BboEvent, DepthDiff, DepthSnapshot, Instrument, LiquidationEvent, SnapshotRequest,
                           StreamGroup, TickerEvent, TradeEvent, VenueNotice)
from pipeline.config import ExchangeConfig
from pipeline.errors import ConfigError, MalformedFrame, SnapshotError, StreamError, UnknownFrame

_INF = math.inf
FIRST_SPOT_ID = 2048  # spot market ids start here (section 7 "Endpoints")

# --------------------------------------------------------------------- wire structs
# strict=False lets msgspec turn the venue's decimal strings into floats in C.


class _Level(msgspec.Struct):
    price: float
    size: float


class _Book(msgspec.Struct):
    asks: list[_Level] = []
    bids: list[_Level] = []
    nonce: Id | None = None
    begin_nonce: Id | None = None
    offset: Id | None = None
    last_updated_at: Micros = 0       # µs
    code: int = 0


class _Trade(msgspec.Struct):
    trade_id: Id
    price: float
    size: float
    is_maker_ask: bool
    timestamp: Millis = 0             # ms


class _Side(msgspec.Struct):
    price: float
    size: float


class _Ticker(msgspec.Struct):
    a: _Side | None = None
    b: _Side | None = None
    last_updated_at: Micros = 0


class _Stats(msgspec.Struct):
    mark_price: float | None = None
    index_price: float | None = None
    last_trade_price: float | None = None
    open_interest: float | None = None
    funding_rate: float | None = None
    current_funding_rate: float | None = None
    funding_timestamp: Millis | None = None


class _Frame(msgspec.Struct):
    type: str = ""
    channel: str = ""
    order_book: _Book | None = None
    ticker: _Ticker | None = None
    market_stats: _Stats | None = None
    nonce: Id | None = None
    trades: list[_Trade] = []
    liquidation_trades: list[_Trade] = []
    timestamp: Millis = 0             # ms
    last_updated_at: Micros = 0       # µs
    error: msgspec.Raw = msgspec.Raw(b"")   # empty: no error field


class _Market(msgspec.Struct):
    symbol: str
    market_id: int


class _Details(msgspec.Struct):
    order_book_details: list[_Market] = []
    spot_order_book_details: list[_Market] = []


class _RestOrder(msgspec.Struct):
    price: str
    remaining_base_amount: str


class _RestOrders(msgspec.Struct):
    asks: list[_RestOrder] = []
    bids: list[_RestOrder] = []


_dec_frame = msgspec.json.Decoder(_Frame, strict=False)
_dec_any = msgspec.json.Decoder()
_dec_details = msgspec.json.Decoder(_Details, strict=False)
_dec_orders = msgspec.json.Decoder(_RestOrders, strict=False)

_CHANNEL_RE = re.compile(rb'"channel"\s*:\s*"[a-z_]+:(\d{1,9})"')


def _levels(levels: list[_Level], symbol: str, keep_zero: bool) -> list[tuple[float, float]]:
    """Wire levels -> (price, size); sizes >= 0 (0 deletes in a diff, is dropped in a snapshot)."""
    out = []
    for lv in levels:
        p, q = lv.price, lv.size
        if not (0.0 < p < _INF and 0.0 <= q < _INF):
            raise _malformed(f"bad level [{p!r}, {q!r}]", symbol)
        if q > 0.0 or keep_zero:
            out.append((p, q))
    return out


def aggregate_orders(orders: list[_RestOrder], symbol: str, bids: bool) -> list[tuple[float, float]]:
    """Resting orders -> L2 levels, best first: sizes summed per price in Decimal (exact)."""
    by_price: dict[Decimal, Decimal] = {}
    for o in orders:
        try:
            p, q = Decimal(o.price), Decimal(o.remaining_base_amount)
            ok = p.is_finite() and q.is_finite() and p > 0 and q >= 0
        except InvalidOperation:
            ok = False
        if not ok:
            raise _malformed(f"bad order [{o.price!r}, {o.remaining_base_amount!r}]", symbol)
        if q:
            by_price[p] = by_price.get(p, Decimal(0)) + q
    out = []
    for p, q in sorted(by_price.items(), reverse=bids):
        fp, fq = float(p), float(q)
        if not (0.0 < fp < _INF and 0.0 <= fq < _INF):
            raise _malformed(f"order price/size out of range [{p}, {q}]", symbol)
        if fq > 0.0:
            out.append((fp, fq))
    return out


class _Markets:
    """An orderBookDetails body read: symbol -> (market id, spot), case-folded when unique."""

    def __init__(self, body: bytes):
        try:
            details = _dec_details.decode(body)
        except DECODE_ERRORS as exc:
            raise SnapshotError(f"lighter orderBookDetails unreadable: {exc}") from None
        venue: dict[str, tuple[int, bool]] = {}
        for spot, markets in ((False, details.order_book_details), (True, details.spot_order_book_details)):
            for m in markets:
                venue.setdefault(m.symbol, (m.market_id, spot))
        self.venue = venue
        self.folded: dict[str, list[tuple[int, bool]]] = {}
        for name, v in venue.items():
            self.folded.setdefault(name.upper(), []).append(v)
        self.names_by_id = {mid: name for name, (mid, _) in venue.items()}
        self.spot_ids = {mid for mid, spot in venue.values() if spot}

    def find(self, symbol: str) -> tuple[int, bool] | None:
        hit = self.venue.get(symbol)
        if hit is None and len(self.folded.get(symbol.upper(), ())) == 1:
            hit = self.folded[symbol.upper()][0]
        return hit


class LighterAdapter(Adapter):
    """Lighter: WS snapshot + nonce-chained diffs per market id; trades de-duplicated."""

    name = "lighter"
    supports_live_subscribe = True
    DEFAULTS = {
        "ws_url": "wss://mainnet.zklighter.elliot.ai/stream",
        "rest_url": "https://mainnet.zklighter.elliot.ai",
        "rest_depth_path": "/api/v1/orderBookOrders",
        "discovery_path": "/api/v1/orderBookDetails",
        "depth_stream": "order_book",
        "trade_stream": "trade",
        "snapshot_limit": 250,            # resting orders per side [unconfirmed maximum]
        "rest_weight_limit": 30,          # requests per minute: half of a standard account's 60
        "streams_per_connection": 100,    # subscriptions per connection (cap 500 [unconfirmed])
    }
    MAX_SNAPSHOT_LIMIT = 250
    REQUEST_WEIGHT = 1                    # the standard-account budget counts requests
    TRADE_KEYS_PER_MARKET = 5000
    CHANNELS = ("trades", "book", "quotes", "derivative_ticker", "liquidations")

    def __init__(self, config: ExchangeConfig):
        configure(self, config)
        # subscribed/order_book is the snapshot (in-stream), the stream keeps the whole book;
        # {"type":"pong"} answers a server {"type":"ping"} (VenueNotice "ping"); client
        # messages are limited to 200 a minute per IP with 50 unacknowledged (section 7):
        # subscribe frames 0.6 s apart, book and trade connections paced separately; no
        # BBO check: the ticker's nonce could not be confirmed to be the book's
        self.traits = AdapterTraits(SnapshotSource.STREAM, app_ping='{"type":"ping"}', app_pong='{"type":"pong"}',
                                    subscribe_interval_s=0.6, rest_weight_limit=self.rest_weight_limit)
        self._market_id: dict[str, int] = {}       # config symbol -> market id
        self._by_id: dict[int, str] = {}           # market id -> config symbol
        self._spot: set[str] = set()               # symbols discovery listed as spot
        self._names: dict[str, str] = {}           # numeric config symbol -> venue symbol, when known
        self._listed: dict[str, tuple[int, bool]] = {}  # runtime symbols checked: (market id, spot)
        for s in config.symbols:
            if s.isdigit():
                self._bind(s, int(s))
        self._seen = {s: RecentKeys(self.TRADE_KEYS_PER_MARKET) for s in config.symbols}

    def _bind(self, symbol: str, market_id: int) -> None:
        self._market_id[symbol] = market_id
        self._by_id[market_id] = symbol

    # ---------------------------------------------------------------- discovery
    def discovery_request(self) -> SnapshotRequest | None:
        """orderBookDetails, unless every config symbol is already a market id."""
        if all(s in self._market_id for s in self.symbols):
            return None
        return SnapshotRequest(f"{self.rest_url}{self.DEFAULTS['discovery_path']}", self.REQUEST_WEIGHT)

    def apply_discovery(self, body: bytes) -> None:
        """Map config symbols to market ids from an orderBookDetails body.

        Raises SnapshotError for a body that cannot be read, ConfigError naming every
        config symbol the venue does not list."""
        markets = _Markets(body)
        missing = [s for s in self.symbols if not self._learn(s, markets)]
        if missing:
            raise ConfigError(f"exchanges.{self.config.name}.symbols",
                              f"not listed by Lighter orderBookDetails: {', '.join(missing)} "
                              f"(known: {', '.join(sorted(markets.venue)[:40])}"
                              f"{' ...' if len(markets.venue) > 40 else ''})")

    def _learn(self, symbol: str, markets: _Markets) -> bool:
        """Bind ``symbol`` to its market id from ``markets``; False when the venue does not list it."""
        if symbol.isdigit():
            mid = int(symbol)
            if mid in markets.names_by_id:
                self._names[symbol] = markets.names_by_id[mid]
            if mid in markets.spot_ids:
                self._spot.add(symbol)
            return True
        hit = markets.find(symbol)
        if hit is None:
            return False
        self._bind(symbol, hit[0])
        if hit[1]:
            self._spot.add(symbol)
        return True

    # ------------------------------------------------------------ runtime streams
    def instrument_request(self, symbol: str) -> SnapshotRequest | None:
        """orderBookDetails (the discovery request); None for a market id given as is."""
        if symbol.isdigit():
            return None
        return SnapshotRequest(f"{self.rest_url}{self.DEFAULTS['discovery_path']}", self.REQUEST_WEIGHT)

    def instrument_listed(self, symbol: str, status: int, body: bytes) -> bool:
        """Whether orderBookDetails lists ``symbol``; its market id is kept for ``add_symbol``."""
        if status != 200:
            return False
        try:
            markets = _Markets(body)
        except SnapshotError:
            return False
        hit = markets.find(symbol)
        if hit is not None:
            self._listed[symbol] = hit
        return hit is not None

    def add_symbol(self, symbol: str) -> None:
        """Follow ``symbol`` too: its market id from the check (``instrument_listed``), from
        discovery, or the symbol itself when numeric."""
        if symbol not in self._market_id:
            if symbol.isdigit():
                self._bind(symbol, int(symbol))
            elif symbol in self._listed:
                mid, spot = self._listed.pop(symbol)
                self._bind(symbol, mid)
                if spot:
                    self._spot.add(symbol)
            else:
                raise StreamError(f"{self.config.name}: no market id for {symbol!r} (not checked against "
                                  "orderBookDetails)", "unknown_symbol")
        self.symbols = (*self.symbols, symbol)
        self._seen.setdefault(symbol, RecentKeys(self.TRADE_KEYS_PER_MARKET))

    def market_id(self, symbol: str) -> int:
        try:
            return self._market_id[symbol]
        except KeyError:
            raise ConfigError(f"exchanges.{self.config.name}.symbols",
                              f"no market id for {symbol!r}: apply_discovery() has not run") from None

    def instrument(self, symbol: str) -> Instrument:
        """Perps -> (symbol, USD, perp); spot (listed as spot, or id >= 2048) -> split on "/"."""
        name = self._names.get(symbol, symbol)
        mid = self._market_id.get(symbol)
        spot = symbol in self._spot or (mid is not None and mid >= FIRST_SPOT_ID) or "/" in name
        if not spot:
            return Instrument(name, "USD", "perp")
        base, slash, quote = name.partition("/")
        return Instrument(base, quote if slash else "", "spot")

    # ------------------------------------------------------------ what to connect to
    @staticmethod
    def _sub(kind: str, channel: str, mid: int) -> str:
        return f'{{"type":"{kind}","channel":"{channel}/{mid}"}}'

    def _channels(self, kind: str) -> tuple[str, ...]:
        """The channels a market takes on a connection of ``kind``: the book alone, or the chosen
        ones of the trades connection (trade/ID carries trades and liquidations)."""
        if kind == "depth":
            return ("order_book",)
        ch = self.channels
        return tuple(c for c, want in (("trade", "trades" in ch or "liquidations" in ch), ("ticker", "quotes" in ch),
                                       ("market_stats", "derivative_ticker" in ch)) if want)

    def _frames(self, kind_of_message: str, kind: str, symbols) -> tuple[str, ...]:
        # spot markets have no market_stats
        return tuple(self._sub(kind_of_message, c, self.market_id(s)) for s in symbols for c in self._channels(kind)
                     if c != "market_stats" or self.instrument(s).kind != "spot")

    def stream_kinds(self) -> tuple[str, ...]:
        return ("depth", "trades") if self._channels("trades") else ("depth",)

    def stream_groups(self) -> list[StreamGroup]:
        """Books apart from trades; one subscribe frame per market and channel."""
        return self.stream_groups_for(self.symbols)

    def symbols_per_connection(self, kind: str) -> int:
        return max(1, self.streams_per_connection // max(1, len(self._channels(kind))))

    def stream_group(self, kind: str, symbols: tuple[str, ...]) -> StreamGroup:
        return StreamGroup(self.ws_url, kind, tuple(symbols), self._frames("subscribe", kind, symbols))

    def live_subscribe(self, kind: str, symbols: tuple[str, ...], subscribe: bool = True) -> list[str]:
        """The subscribe frames again, or ``unsubscribe`` for the same channels."""
        return list(self._frames("subscribe" if subscribe else "unsubscribe", kind, symbols))

    def resubscribe(self, symbol: str) -> list[str]:
        """Unsubscribe + subscribe order_book/ID: a fresh subscribed/order_book follows."""
        mid = self.market_id(symbol)
        return [self._sub("unsubscribe", "order_book", mid), self._sub("subscribe", "order_book", mid)]

    def snapshot_request(self, symbol: str) -> SnapshotRequest:
        query = urlencode({"market_id": self.market_id(symbol), "limit": self.snapshot_limit})
        return SnapshotRequest(f"{self.rest_url}{self.rest_depth_path}?{query}", self.REQUEST_WEIGHT)

    # ------------------------------------------------------------------- parsing
    def parse_frame(self, frame: bytes | str, recv_ns: int):
        """One WebSocket text frame -> DepthSnapshot | DepthDiff | list[TradeEvent] | VenueNotice | None.

        None: pong, the connect greeting, unsubscribe acks, or a trades frame whose
        trades were all seen before.  Raises MalformedFrame (``.symbol`` set when the
        channel was readable) or UnknownFrame.
        """
        if isinstance(frame, str):
            frame = frame.encode()
        try:
            f = _dec_frame.decode(frame)
        except DECODE_ERRORS as exc:
            raise _malformed(f"not a Lighter frame: {exc}", self._symbol_in(frame)) from None
        kind = f.type
        if kind == "update/order_book" or kind == "subscribed/order_book":
            symbol = self._channel_symbol(f.channel, "order_book")
            if f.order_book is None:
                raise _malformed(f"{kind} without order_book", symbol)
            return self._parse_book(f, symbol, kind[0] == "s", recv_ns)
        if kind == "update/trade" or kind == "subscribed/trade":
            return self._parse_trades(f, self._channel_symbol(f.channel, "trade"), recv_ns)
        if kind == "update/ticker" or kind == "subscribed/ticker":
            return self._parse_ticker(f, self._channel_symbol(f.channel, "ticker"), recv_ns)
        if kind == "update/market_stats" or kind == "subscribed/market_stats":
            return self._parse_stats(f, self._channel_symbol(f.channel, "market_stats"), recv_ns)
        if kind == "ping":
            return VenueNotice("ping", {})   # the runner answers {"type":"pong"}
        if kind in ("pong", "connected") or kind.startswith("unsubscribed"):
            return None
        if len(f.error) or kind == "error":
            try:
                detail = _dec_any.decode(f.error) if len(f.error) else None
            except DECODE_ERRORS:
                detail = None
            return VenueNotice("error", {"error": detail})
        raise UnknownFrame(f"type {kind!r} channel {f.channel!r}")

    def _symbol_in(self, raw: bytes) -> str | None:
        m = _CHANNEL_RE.search(raw)
        return self._by_id.get(int(m.group(1))) if m else None

    def _channel_symbol(self, channel: str, prefix: str) -> str:
        name, _, mid = channel.partition(":")
        if name != prefix or not mid.isdigit():
            raise MalformedFrame(f"channel {channel!r} for a {prefix} frame")
        symbol = self._by_id.get(int(mid))
        if symbol is None:
            raise UnknownFrame(f"channel {channel!r}: market not subscribed")
        return symbol

    def _parse_book(self, f: _Frame, symbol: str, snapshot: bool, recv_ns: int):
        ob = f.order_book
        nonce = ob.nonce if ob.nonce is not None else ob.offset   # oldest frames: offset only
        if nonce is None or nonce < 0:
            raise _malformed(f"order_book without a nonce (nonce {ob.nonce!r}, offset {ob.offset!r})", symbol)
        ts_us = ob.last_updated_at or f.last_updated_at or f.timestamp * 1000
        if snapshot:
            bids = _levels(ob.bids, symbol, keep_zero=False)
            asks = _levels(ob.asks, symbol, keep_zero=False)
            check_uncrossed(bids, asks, symbol)
            return DepthSnapshot(symbol, nonce, bids, asks, ts_us, recv_ns)
        prev = ob.begin_nonce if ob.begin_nonce is not None and ob.nonce is not None else -1
        if prev > nonce or prev < -1:
            raise _malformed(f"begin_nonce {prev} after nonce {nonce}", symbol)
        bids = _levels(ob.bids, symbol, keep_zero=True)
        asks = _levels(ob.asks, symbol, keep_zero=True)
        return DepthDiff(symbol, nonce, nonce, prev, bids, asks, ts_us, recv_ns)

    def _parse_trades(self, f: _Frame, symbol: str, recv_ns: int) -> list | None:
        """Trades and liquidations of one frame (liquidations first: a liquidation's own fills
        never appear as trades here)."""
        for t in f.liquidation_trades + f.trades:  # validate all before remembering any id
            if not (0.0 < t.price < _INF and 0.0 < t.size < _INF) or t.timestamp < 0 or t.trade_id < 0:
                raise _malformed(f"bad trade {t.trade_id!r}: price/size {t.price!r}/{t.size!r}", symbol)
        seen = self._seen[symbol]
        events: list = []
        if f.liquidation_trades and "liquidations" in self.channels:
            liqs = sorted(f.liquidation_trades, key=lambda t: (t.timestamp, t.trade_id))
            events += [LiquidationEvent(symbol, "buy" if t.is_maker_ask else "sell", t.price, t.size,
                                        str(t.trade_id), t.timestamp * 1000, recv_ns)
                       for t in liqs if seen.add(("liq", t.trade_id))]
        if "trades" in self.channels:
            out = sorted(f.trades, key=lambda t: (t.timestamp, t.trade_id))
            events += [TradeEvent(symbol, t.price, t.size, "buy" if t.is_maker_ask else "sell", str(t.trade_id),
                                  t.timestamp * 1000, recv_ns)
                       for t in out if seen.add(t.trade_id)]
        return events or None

    def _parse_ticker(self, f: _Frame, symbol: str, recv_ns: int) -> BboEvent:
        t = f.ticker
        if t is None:
            raise _malformed(f"{f.type} without ticker", symbol)
        for side in (t.a, t.b):
            if side is not None and not (0.0 < side.price < _INF and 0.0 <= side.size < _INF):
                raise _malformed(f"bad ticker level {side.price!r}/{side.size!r}", symbol)
        bid = t.b if t.b is not None and t.b.size > 0 else None
        ask = t.a if t.a is not None and t.a.size > 0 else None
        return BboEvent(symbol, f.nonce or 0, bid.price if bid else None, bid.size if bid else None,
                        ask.price if ask else None, ask.size if ask else None, recv_ns,
                        t.last_updated_at or f.last_updated_at or f.timestamp * 1000)

    def _parse_stats(self, f: _Frame, symbol: str, recv_ns: int) -> TickerEvent:
        m = f.market_stats
        if m is None:
            raise _malformed(f"{f.type} without market_stats", symbol)
        for name in ("mark_price", "index_price", "last_trade_price"):
            v = getattr(m, name)
            if v is not None and not 0.0 < v < _INF:
                raise _malformed(f"bad {name} {v!r}", symbol)
        return TickerEvent(symbol=symbol, ts_exchange_us=f.timestamp * 1000, recv_ns=recv_ns, mark_price=m.mark_price,
                           index_price=m.index_price, last_price=m.last_trade_price, funding_rate=m.funding_rate,
                           predicted_funding_rate=m.current_funding_rate,
                           funding_timestamp=m.funding_timestamp * 1000 if m.funding_timestamp else None,
                           open_interest=m.open_interest)

    def parse_snapshot(self, symbol: str, body: bytes, recv_ns: int) -> DepthSnapshot:
        """orderBookOrders body -> DepthSnapshot of levels aggregated by price.

        There is no nonce: ``last_id`` 0, for the best-available book only."""
        try:
            o = _dec_orders.decode(body)
        except DECODE_ERRORS as exc:
            raise _malformed(f"orderBookOrders: {exc}", symbol) from None
        bids = aggregate_orders(o.bids, symbol, bids=True)
        asks = aggregate_orders(o.asks, symbol, bids=False)
        check_uncrossed(bids, asks, symbol)
        return DepthSnapshot(symbol, 0, bids, asks, 0, recv_ns)

    # ------------------------------------------------------------ sequencing rule
    @staticmethod
    def check(ev: DepthDiff, book_id: int, first: bool) -> Verdict:
        """``begin_nonce == book nonce`` -> APPLY; already covered -> SKIP; else GAP.

        Without ``begin_nonce`` (prev_id -1) continuity cannot be checked: the diff is
        applied unless its nonce is not newer than the book."""
        if ev.prev_id == book_id and ev.prev_id >= 0:
            return APPLY
        if ev.last_id <= book_id:
            return SKIP
        if ev.prev_id < 0:
            return APPLY
        return GAP

    @staticmethod
    def snapshot_usable(snapshot_id: int, first_buffered: DepthDiff | None) -> bool:
        """In-stream snapshots are always usable: buffered diffs before them are older."""
        return True
