"""Bybit v5 adapters: spot (``bybit``) and linear perpetuals/futures (``bybit_linear``).
Sans-I/O: frames in, events out.

Venue rules implemented here (shared/docs/exchange-protocols.md section 4):
- the book arrives in the stream (``SnapshotSource.STREAM``): ``orderbook.{N}.{SYMBOL}``
  frames ``{"topic","type":"snapshot"|"delta","ts","data":{"s","b","a","u","seq"},"cts"}``.
  A snapshot -> DepthSnapshot(last_id=u); a delta -> DepthDiff(u, u, prev_id=u-1).
- sequencing: ``u`` goes up by exactly 1 per delta; ``u <= book id`` is old (SKIP),
  ``u == id + 1`` applies, anything else is a gap (rule 2).  A snapshot at any time
  replaces the book, including ``u == 1`` after a service restart and the depth-1
  resends with the same ``u`` (rules 3, 5): the feed installs every snapshot.
- the venue keeps only the top N levels per side and sends no delete for a level that
  falls out of them (rule 6): ``traits.book_cap = N``, the feed trims after every delta.
- depths 1/50/200/1000 only; ``orderbook.full`` is delta-only and seeded from another
  REST endpoint, which this adapter does not implement (a config error).
- trades: ``publicTrade.{SYMBOL}``, ``data`` is an array; ``S`` is the taker side
  (``Buy``/``Sell``), ``i`` a string id, ``T`` the fill time in ms.
- keepalive: the text ``{"op":"ping"}`` (``traits.app_ping``); pongs and subscribe acks carry
  nothing; a failed subscribe (``success: false``) is a VenueNotice("error").
- limits: spot takes at most 10 args per subscribe request, and one connection's args
  may total 21,000 characters; depth and trades use separate connections.
- REST ``GET /v5/market/orderbook`` (weight 1, IP limit 600 requests / 5 s) feeds only
  the best-available-book fallback: its ``u`` is the 1000-level stream's, not ours.
- other kinds (issue 13): quotes from ``orderbook.1.{SYMBOL}`` (its own ``u`` space: a delta
  names only the side that changed, so the adapter keeps each symbol's level-1 state);
  linear ``tickers.{SYMBOL}`` (a snapshot, then deltas with only the changed fields: the feed
  merges them) and ``allLiquidation.{SYMBOL}``, whose ``S`` is the side of the *position*
  (``Buy``: a long was liquidated), so the liquidation order's side is the opposite one.

Prices and sizes leave as floats (msgspec ``strict=False`` converts Bybit's decimal
strings in C); a negative, NaN or infinite level is a MalformedFrame, never an event.
"""

from __future__ import annotations

import json
import math
import re
from urllib.parse import urlencode

import msgspec

from ingest.adapters.base import APPLY, GAP, SKIP, Adapter, AdapterTraits, SnapshotSource, Verdict
from ingest.adapters.common import (Id, Millis, configure, DECODE_ERRORS as _DECODE_ERRORS,
                                    check_levels as _check_levels)
from ingest.adapters.common import malformed as _malformed, trade as _trade
from ingest.events import (BboEvent, DepthDiff, DepthSnapshot, Instrument, LiquidationEvent, SnapshotRequest,
                           StreamGroup, TickerEvent, VenueNotice)
from pipeline.config import ExchangeConfig
from pipeline.errors import ConfigError, MalformedFrame, UnknownFrame
from pipeline.instruments import split_concatenated

_INF = math.inf
DEPTHS = (1, 50, 200, 1000)

# --------------------------------------------------------------------- wire structs


class _BookData(msgspec.Struct):
    s: str
    b: list[tuple[float, float]]
    a: list[tuple[float, float]]
    u: Id
    seq: Id = 0


class _BookFrame(msgspec.Struct):
    topic: str
    type: str
    data: _BookData
    ts: Millis = 0     # push time, ms
    cts: Millis = 0    # matching-engine time, ms


class _Trade(msgspec.Struct):
    T: Millis          # fill time, ms
    p: float
    v: float
    S: str             # taker side: Buy / Sell
    i: str             # trade id (a string)
    s: str = ""


class _TradeFrame(msgspec.Struct):
    topic: str
    data: list[_Trade]
    ts: int = 0


class _Control(msgspec.Struct):
    """Everything that is not a topic push: subscribe acks, pongs."""

    topic: str | None = None
    op: str | None = None
    success: bool | None = None
    ret_msg: str | None = None


class _RestResult(msgspec.Struct):
    s: str
    b: list[tuple[float, float]]
    a: list[tuple[float, float]]
    u: Id = 0
    ts: Millis = 0
    cts: Millis = 0


class _RestBody(msgspec.Struct):
    retCode: int
    result: _RestResult | None = None
    retMsg: str = ""


class _TickerData(msgspec.Struct):
    symbol: str = ""
    markPrice: float | None = None
    indexPrice: float | None = None
    lastPrice: float | None = None
    fundingRate: float | None = None
    nextFundingTime: Millis | None = None
    openInterest: float | None = None


class _TickerFrame(msgspec.Struct):
    topic: str
    data: _TickerData
    ts: Millis = 0
    type: str = "snapshot"


class _Liquidation(msgspec.Struct):
    T: Millis
    s: str
    S: str             # side of the liquidated position: Buy (a long) / Sell (a short)
    v: float
    p: float


class _LiquidationFrame(msgspec.Struct):
    topic: str
    data: list[_Liquidation]
    ts: Millis = 0


_dec_book = msgspec.json.Decoder(_BookFrame, strict=False)
_dec_ticker = msgspec.json.Decoder(_TickerFrame, strict=False)
_dec_liq = msgspec.json.Decoder(_LiquidationFrame, strict=False)
_LIQ_ORDER_SIDES = {"Buy": "sell", "Sell": "buy"}  # a long's liquidation is a sell order
_dec_trades = msgspec.json.Decoder(_TradeFrame, strict=False)
_dec_control = msgspec.json.Decoder(_Control)
_dec_rest = msgspec.json.Decoder(_RestBody, strict=False)
_SIDES = {"Buy": "buy", "Sell": "sell"}
_TOPIC_RE = re.compile(rb'"topic"\s*:\s*"([^"]+)"')


def parse_depth_stream(name: str, where: str = "depth_stream") -> int:
    """``orderbook.200`` -> 200; anything else is a ConfigError naming the key."""
    prefix, _, n = name.partition(".")
    if prefix == "orderbook" and n.isdigit() and int(n) in DEPTHS:
        return int(n)
    raise ConfigError(where, f"expected one of {', '.join(f'orderbook.{d}' for d in DEPTHS)}, got {name!r}"
                      + (" (orderbook.full is delta-only and not supported)" if n == "full" else ""))


class BybitSpotAdapter(Adapter):
    """Bybit v5 spot: in-stream snapshots and ``u + 1`` deltas, top-N book."""

    name = "bybit"
    supports_live_subscribe = True
    CATEGORY = "spot"
    KIND = "spot"
    DEFAULTS = {
        "ws_url": "wss://stream.bybit.com/v5/public/spot",
        "rest_url": "https://api.bybit.com",
        "rest_depth_path": "/v5/market/orderbook",
        "depth_stream": "orderbook.200",
        "trade_stream": "publicTrade",
        "snapshot_limit": 200,
        "rest_weight_limit": 600,          # requests/min: 1/12 of the venue's 600 per 5 s per IP
        "streams_per_connection": 100,     # topics; ~25 chars each, far below 21,000 chars of args
    }
    SUBSCRIBE_BATCH = 10                   # spot: at most 10 args per subscribe request
    MAX_SNAPSHOT_LIMIT = 1000
    CHANNELS = ("trades", "book", "quotes")

    def __init__(self, config: ExchangeConfig):
        configure(self, config)
        # in-stream snapshots; the venue keeps the top N of orderbook.N (rule 6); keepalive
        # {"op":"ping"}; no BBO check: orderbook.1 has its own u space, nothing to compare at an id
        self.traits = AdapterTraits(
            SnapshotSource.STREAM, book_cap=parse_depth_stream(self.depth_stream, f"exchanges.{config.name}.depth_stream"),
            app_ping='{"op":"ping"}', rest_weight_limit=self.rest_weight_limit)
        # topic -> (parser, native symbol); topics are upper-case on the wire
        self._topics: dict[str, tuple] = {}
        self._book_topic: dict[str, str] = {}
        self._trade_topic: dict[str, str] = {}
        self._other_topics: dict[str, list[str]] = {}  # per symbol, on the trades connection
        self._l1: dict[str, list] = {}  # orderbook.1 state per symbol: [bid px, bid size, ask px, ask size]
        for s in config.symbols:
            self._register(s)
        self._req = 0

    def _register(self, s: str) -> None:
        """The topics of symbol ``s`` (by the chosen channels) and their parsers."""
        channels = self.channels
        bt, tt = f"{self.depth_stream}.{s.upper()}", f"{self.trade_stream}.{s.upper()}"
        self._book_topic[s], self._trade_topic[s] = bt, tt
        self._topics[bt] = (self._parse_book, s)
        self._topics[tt] = (self._parse_trades, s)
        others = self._other_topics[s] = []
        if "quotes" in channels:
            qt = f"orderbook.1.{s.upper()}"
            if qt == bt:  # the book is level 1 itself: each frame is also the quote
                self._topics[bt] = (self._parse_book_and_quote, s)
            else:
                self._topics[qt] = (self._parse_quote, s)
                others.append(qt)
        if "derivative_ticker" in channels:
            self._topics[f"tickers.{s.upper()}"] = (self._parse_ticker, s)
            others.append(f"tickers.{s.upper()}")
        if "liquidations" in channels:
            self._topics[f"allLiquidation.{s.upper()}"] = (self._parse_liquidations, s)
            others.append(f"allLiquidation.{s.upper()}")

    def instrument(self, symbol: str) -> Instrument:
        return split_concatenated(symbol, self.KIND)

    # ------------------------------------------------------------ what to connect to
    def _request(self, op: str, args: list[str]) -> str:
        self._req += 1
        return json.dumps({"req_id": f"{op[:5]}{self._req}", "op": op, "args": args}, separators=(",", ":"))

    def stream_groups(self) -> list[StreamGroup]:
        """Depth and trades on separate connections, ``streams_per_connection`` topics each."""
        return self.stream_groups_for(self.symbols)

    def _trade_topics(self, symbols) -> tuple[list[str], list[str]]:
        """The trades connection's topics of ``symbols``: trades, and the other chosen channels."""
        trades = [self._trade_topic[s] for s in symbols] if "trades" in self.channels else []
        return trades, [t for s in symbols for t in self._other_topics[s]]

    def _per_symbol(self) -> int:
        return int("trades" in self.channels) + max((len(t) for t in self._other_topics.values()), default=0)

    def stream_kinds(self) -> tuple[str, ...]:
        return ("depth", "trades") if self._per_symbol() else ("depth",)

    def symbols_per_connection(self, kind: str) -> int:
        per_sym = 1 if kind == "depth" else max(1, self._per_symbol())
        return max(1, self.streams_per_connection // per_sym)

    def _requests(self, op: str, kind: str, symbols) -> list[str]:
        n = self.SUBSCRIBE_BATCH
        if kind == "depth":
            lists = [[self._book_topic[s] for s in symbols]]
        else:
            # trades in requests of their own: a request the venue refuses (one bad topic fails it
            # whole) never costs the trades
            lists = list(self._trade_topics(symbols))
        return [self._request(op, topics[i:i + n]) for topics in lists for i in range(0, len(topics), n)]

    def stream_group(self, kind: str, symbols: tuple[str, ...]) -> StreamGroup:
        return StreamGroup(self.ws_url, kind, tuple(symbols), tuple(self._requests("subscribe", kind, symbols)))

    def live_subscribe(self, kind: str, symbols: tuple[str, ...], subscribe: bool = True) -> list[str]:
        """``op`` subscribe / unsubscribe on the open connection (section 4), 10 args a request."""
        return self._requests("subscribe" if subscribe else "unsubscribe", kind, symbols)

    def add_symbol(self, symbol: str) -> None:
        self._register(symbol)
        self.symbols = (*self.symbols, symbol)

    def instrument_request(self, symbol: str) -> SnapshotRequest:
        query = urlencode({"category": self.CATEGORY, "symbol": symbol.upper()})
        return SnapshotRequest(f"{self.rest_url}/v5/market/instruments-info?{query}", 1)

    def instrument_listed(self, symbol: str, status: int, body: bytes) -> bool:
        """``retCode`` 0 and the symbol in ``result.list`` with status "Trading"."""
        try:
            obj = json.loads(body)
            rows = obj["result"]["list"] if obj.get("retCode") == 0 else []
        except (ValueError, KeyError, TypeError, AttributeError):
            return False
        return status == 200 and any(isinstance(r, dict) and r.get("symbol") == symbol.upper()
                                     and r.get("status") == "Trading" for r in rows)

    def resubscribe(self, symbol: str) -> list[str]:
        """Unsubscribe + subscribe the book topic: the venue answers with a fresh snapshot."""
        topic = self._book_topic[symbol]
        return [self._request("unsubscribe", [topic]), self._request("subscribe", [topic])]

    def snapshot_request(self, symbol: str) -> SnapshotRequest:
        query = urlencode({"category": self.CATEGORY, "symbol": symbol.upper(), "limit": self.snapshot_limit})
        return SnapshotRequest(f"{self.rest_url}{self.rest_depth_path}?{query}", 1)

    # ------------------------------------------------------------------- parsing
    def parse_frame(self, frame: bytes | str, recv_ns: int):
        """One text frame -> DepthSnapshot | DepthDiff | list[TradeEvent] | VenueNotice | None.

        Raises MalformedFrame (``.symbol`` set when the topic was readable) or UnknownFrame.
        """
        if isinstance(frame, str):
            frame = frame.encode()
        # Fast path: pushes start with the topic ({"topic":"orderbook.200.BTCUSDT",...}):
        # slice it by position and decode the frame once, straight into its struct.
        topic = None
        if frame.startswith(b'{"topic":"'):
            end = frame.find(b'"', 10)
            if end > 0:
                topic = frame[10:end].decode("utf-8", "replace")
        if topic is None:
            try:
                ctl = _dec_control.decode(frame)
            except _DECODE_ERRORS as exc:
                m = _TOPIC_RE.search(frame)
                entry = self._topics.get(m.group(1).decode("utf-8", "replace")) if m else None
                raise _malformed(f"not a Bybit frame: {exc}", entry[1] if entry else None) from None
            if ctl.topic is None:
                return self._control(frame, ctl)
            topic = ctl.topic
        entry = self._topics.get(topic)
        if entry is None:
            raise UnknownFrame(f"topic {topic!r}")
        parser, symbol = entry
        try:
            return parser(frame, recv_ns, symbol)
        except _DECODE_ERRORS as exc:
            raise _malformed(str(exc), symbol) from None
        except MalformedFrame as exc:
            exc.symbol = symbol
            raise

    def _control(self, frame: bytes, ctl: _Control):
        if ctl.op in ("ping", "pong"):
            return None
        if ctl.op in ("subscribe", "unsubscribe"):
            if ctl.success is False:
                try:
                    detail = msgspec.json.decode(frame)
                except _DECODE_ERRORS:  # pragma: no cover - decoded once already
                    detail = {}
                return VenueNotice("error", detail if isinstance(detail, dict) else {})
            return None
        raise UnknownFrame(f"op {ctl.op!r}")

    def _parse_book(self, frame: bytes, recv_ns: int, symbol: str):
        f = _dec_book.decode(frame)
        d = f.data
        if d.s.upper() != symbol.upper():
            raise MalformedFrame(f"data.s {d.s!r} on topic {f.topic!r}")
        if d.u < 1:
            raise MalformedFrame(f"u {d.u} < 1")
        _check_levels(d.b)
        _check_levels(d.a)
        ts = (f.cts or f.ts) * 1000
        if f.type == "delta":
            return DepthDiff(symbol, d.u, d.u, d.u - 1, d.b, d.a, ts, recv_ns)
        if f.type == "snapshot":
            return DepthSnapshot(symbol, d.u, d.b, d.a, ts, recv_ns)
        raise MalformedFrame(f"book frame of type {f.type!r}")

    def _parse_quote(self, frame: bytes, recv_ns: int, symbol: str) -> BboEvent:
        """``orderbook.1``: a snapshot states both sides; a delta only the side that changed
        (size 0: that side is empty)."""
        f = _dec_book.decode(frame)
        d = f.data
        if d.s.upper() != symbol.upper():
            raise MalformedFrame(f"data.s {d.s!r} on topic {f.topic!r}")
        _check_levels(d.b)
        _check_levels(d.a)
        if f.type == "snapshot":
            state = self._l1[symbol] = [None, None, None, None]
        elif f.type == "delta":
            state = self._l1.get(symbol)
            if state is None:
                return None  # a delta before the first snapshot says nothing about the other side
        else:
            raise MalformedFrame(f"book frame of type {f.type!r}")
        for i, side in ((0, d.b), (2, d.a)):
            if side:
                px, sz = side[-1]
                state[i], state[i + 1] = (px, sz) if sz > 0 else (None, None)
        return BboEvent(symbol, d.u, state[0], state[1], state[2], state[3], recv_ns, (f.cts or f.ts) * 1000)

    def _parse_book_and_quote(self, frame: bytes, recv_ns: int, symbol: str):
        return [self._parse_book(frame, recv_ns, symbol), self._parse_quote(frame, recv_ns, symbol)]

    def _parse_ticker(self, frame: bytes, recv_ns: int, symbol: str) -> TickerEvent:
        f = _dec_ticker.decode(frame)
        d = f.data
        if d.symbol and d.symbol.upper() != symbol.upper():
            raise MalformedFrame(f"data.symbol {d.symbol!r} on topic {f.topic!r}")
        for name in ("markPrice", "indexPrice", "lastPrice"):
            v = getattr(d, name)
            if v is not None and not 0.0 < v < _INF:
                raise MalformedFrame(f"bad {name} {v!r}")
        return TickerEvent(symbol=symbol, ts_exchange_us=f.ts * 1000, recv_ns=recv_ns, mark_price=d.markPrice,
                           index_price=d.indexPrice, last_price=d.lastPrice, funding_rate=d.fundingRate,
                           funding_timestamp=d.nextFundingTime * 1000 if d.nextFundingTime else None,
                           open_interest=d.openInterest)

    def _parse_liquidations(self, frame: bytes, recv_ns: int, symbol: str):
        f = _dec_liq.decode(frame)
        out = []
        for x in f.data:
            side = _LIQ_ORDER_SIDES.get(x.S)
            if side is None:
                raise MalformedFrame(f"liquidation side {x.S!r}")
            if not (0.0 < x.p < _INF and 0.0 < x.v < _INF):
                raise MalformedFrame(f"bad liquidation price/size {x.p!r}/{x.v!r}")
            out.append(LiquidationEvent(symbol, side, x.p, x.v, "", x.T * 1000, recv_ns))
        return out or None

    def _parse_trades(self, frame: bytes, recv_ns: int, symbol: str):
        f = _dec_trades.decode(frame)
        out = []
        for t in f.data:
            out.append(_trade(symbol, t.p, t.v, _SIDES.get(t.S), t.S, t.i, t.T * 1000, recv_ns))
        return out or None

    def parse_snapshot(self, symbol: str, body: bytes, recv_ns: int) -> DepthSnapshot:
        """REST ``/v5/market/orderbook`` body -> DepthSnapshot (its ``u`` is the 1000-level
        stream's). Raises MalformedFrame."""
        try:
            r = _dec_rest.decode(body)
        except _DECODE_ERRORS as exc:
            raise _malformed(f"snapshot: {exc}", symbol) from None
        if r.retCode != 0 or r.result is None:
            raise _malformed(f"snapshot: retCode {r.retCode} {r.retMsg!r}", symbol)
        s = r.result
        try:
            _check_levels(s.b)
            _check_levels(s.a)
        except MalformedFrame as exc:
            exc.symbol = symbol
            raise
        return DepthSnapshot(symbol, s.u, s.b, s.a, (s.cts or s.ts) * 1000, recv_ns)

    # ------------------------------------------------------------ sequencing rule
    @staticmethod
    def check(ev: DepthDiff, book_id: int, first: bool) -> Verdict:
        """Section 4 rule 2: SKIP if ``u <= id``, APPLY if ``u == id + 1``, else GAP."""
        u = ev.last_id
        if u <= book_id:
            return SKIP
        return APPLY if u == book_id + 1 else GAP

    @staticmethod
    def snapshot_usable(snapshot_id: int, first_buffered: DepthDiff | None) -> bool:
        """Every in-stream snapshot is usable: it replaces the book (rule 3)."""
        return True


class BybitLinearAdapter(BybitSpotAdapter):
    """Bybit v5 linear (USDT/USDC perpetuals and dated futures): same protocol, other socket."""

    name = "bybit_linear"
    CATEGORY = "linear"
    KIND = "perp"
    DEFAULTS = {**BybitSpotAdapter.DEFAULTS, "ws_url": "wss://stream.bybit.com/v5/public/linear"}
    SUBSCRIBE_BATCH = 10   # the 10-arg cap is documented for spot; linear keeps it to stay safe
    CHANNELS = ("trades", "book", "quotes", "derivative_ticker", "liquidations")

    def instrument(self, symbol: str) -> Instrument:
        """``BTCUSDT`` is a perpetual; ``BTC-26DEC25`` / ``BTCUSDT-26DEC25`` are dated futures."""
        head, dash, _ = symbol.upper().partition("-")
        if dash:
            inst = split_concatenated(head, "future")
            return inst if inst.quote else Instrument(head, "USDC", "future")
        return split_concatenated(symbol, self.KIND)
