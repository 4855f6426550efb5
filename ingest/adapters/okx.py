"""OKX v5 adapter (``okx``): spot, perpetual swaps and dated futures on one public socket.
Sans-I/O: frames in, events out.

Venue rules implemented here (shared/docs/exchange-protocols.md section 5):
- the book arrives in the stream (``SnapshotSource.STREAM``): ``books`` (400 levels,
  100 ms; the default) or ``books-l2-tbt`` / ``books50-l2-tbt`` (10 ms, VIP4+) via
  ``depth_stream``.  Frames ``{"arg":{"channel","instId"},"action":"snapshot"|"update",
  "data":[{"asks","bids","ts","checksum","prevSeqId","seqId"}]}``; a level is
  ``[px, sz, "0", numOrders]``, ``sz`` absolute, ``"0"`` deletes.
- sequencing: snapshot -> DepthSnapshot(last_id=seqId); update -> DepthDiff(seqId,
  seqId, prev_id=prevSeqId) and it applies iff ``prevSeqId == book id``.  That one rule
  covers the heartbeat update (``seqId == prevSeqId``) and the reset after maintenance
  (``seqId < prevSeqId``).  Frames from before 2022-06 carry no seqId: they get
  ``prev_id = -1``, apply in order and are guarded by the checksum alone.
- checksum: events carry the venue's ``checksum`` (0 = none; OKX sends 0 since the
  2026-06-23 docs revision).  ``checksum(symbol, book)`` is the signed CRC32 of
  ``bid1px:bid1sz:ask1px:ask1sz:...`` over the top 25 levels per side, built from the
  *original text* of each level (never from floats; section 0 rule 1).  The text of
  every level decoded is kept per symbol (price float -> "px:sz"), reset by each
  snapshot, updated by each update; it is kept only while the stream carries checksums.
- the venue keeps a 400-level window (50 for books50-l2-tbt): ``traits.book_cap`` trims to it,
  which is exact whether or not OKX sends deletes for levels leaving the window.
- trades: ``trades`` data array; ``side`` is the taker side, ``tradeId`` (the last id of
  an aggregate), ``ts`` ms as a string.
- keepalive: the text ``ping``; the text reply ``pong`` is checked before any JSON
  decoding.  Notice 64008 (service upgrade soon) -> VenueNotice("server_shutdown");
  ``event: error`` -> VenueNotice("error").
- limits: fewer than 30 channels per connection for 400-level channels; one request's
  args at most 64 KB; 480 (un)subscribe requests per hour per connection (a resync costs 2).
- REST ``GET /api/v5/market/books?instId=..&sz=400`` feeds only the best-available-book
  fallback (40 requests / 2 s per IP).

Other kinds (issue 13), on the trades connection: quotes from ``bbo-tbt`` (``seqId`` as the
update id); for swaps and futures the derivative ticker merged from ``mark-price``,
``index-tickers`` (subscribed by the index id, ``BTC-USDT`` for ``BTC-USDT-SWAP``),
``funding-rate`` (``fundingTime`` is the next funding time, ``nextFundingRate`` the predicted
rate when the venue states one) and ``open-interest`` (``oi``, contracts); liquidations from
``liquidation-orders`` (one subscription per instrument type; ``side`` is the liquidation
order's side, ``sz`` contracts for swaps and futures).  Spot symbols have no derivative ticker.

Units: for SWAP and FUTURES instruments ``sz`` is a number of **contracts**, not base
currency.  This adapter keeps the venue's unit (no ``ctVal`` conversion): consumers that
compare venues must scale by the instrument's contract value themselves.
"""

from __future__ import annotations

import json
import math
import zlib
from urllib.parse import urlencode

import msgspec

from ingest.adapters.base import APPLY, GAP, SKIP, Adapter, AdapterTraits, SnapshotSource, Verdict  # noqa: F401
from ingest.adapters.common import (Id, Millis, configure, DECODE_ERRORS as _DECODE_ERRORS,
                                    malformed as _malformed, trade as _trade)
from ingest.events import (BboEvent, DepthDiff, DepthSnapshot, Instrument, LiquidationEvent, SnapshotRequest,
                           StreamGroup, TickerEvent, VenueNotice)
from pipeline.config import ExchangeConfig
from pipeline.errors import ConfigError, MalformedFrame, UnknownFrame
from pipeline.instruments import split_dashed

_INF = math.inf
CHECKSUM_LEVELS = 25
BOOK_CHANNELS = {"books": 400, "books-l2-tbt": 400, "books50-l2-tbt": 50}
NO_SEQ = -1

# --------------------------------------------------------------------- wire structs
# Book levels are decoded as text: the checksum needs it byte for byte.


class _Arg(msgspec.Struct):
    channel: str
    instId: str = ""


class _Book(msgspec.Struct):
    asks: list[list[str]]
    bids: list[list[str]]
    ts: Millis = 0                   # ms, a string on the wire (strict=False)
    checksum: int = 0
    seqId: Id | None = None
    prevSeqId: Id | None = None


class _BookF(msgspec.Struct):
    """The same with float levels, decoded in C: updates while no checksum is tracked."""

    asks: list[tuple[float, float, float, float]]
    bids: list[tuple[float, float, float, float]]
    ts: Millis = 0
    checksum: int = 0
    seqId: Id | None = None
    prevSeqId: Id | None = None


class _Trade(msgspec.Struct):
    px: float
    sz: float
    side: str
    tradeId: str
    ts: Millis                       # ms, a string on the wire
    instId: str = ""


_NO_DATA = msgspec.Raw(b"")


class _Frame(msgspec.Struct):
    arg: _Arg | None = None
    action: str | None = None
    data: msgspec.Raw = _NO_DATA
    event: str | None = None
    code: str | int | None = None


class _RestBooks(msgspec.Struct):
    code: str | int
    data: list[_Book] | None = None
    msg: str = ""


_dec_frame = msgspec.json.Decoder(_Frame)
_dec_books = msgspec.json.Decoder(list[_Book], strict=False)
_dec_books_f = msgspec.json.Decoder(list[_BookF], strict=False)
_dec_trades = msgspec.json.Decoder(list[_Trade], strict=False)
_dec_rest = msgspec.json.Decoder(_RestBooks, strict=False)


class _Bbo(msgspec.Struct):
    asks: list[tuple[float, float, float, float]]
    bids: list[tuple[float, float, float, float]]
    ts: Millis = 0
    seqId: Id = 0


class _Mark(msgspec.Struct):
    markPx: float
    ts: Millis = 0


class _Index(msgspec.Struct):
    instId: str
    idxPx: float
    ts: Millis = 0


class _Funding(msgspec.Struct):
    fundingRate: float | None = None
    fundingTime: Millis | None = None
    nextFundingRate: str = ""
    ts: Millis = 0


class _Oi(msgspec.Struct):
    oi: float
    ts: Millis = 0


class _LiqDetail(msgspec.Struct):
    side: str
    sz: float
    bkPx: float
    ts: Millis


class _Liq(msgspec.Struct):
    instId: str
    details: list[_LiqDetail]


_dec_bbo = msgspec.json.Decoder(list[_Bbo], strict=False)
_dec_mark = msgspec.json.Decoder(list[_Mark], strict=False)
_dec_index = msgspec.json.Decoder(list[_Index], strict=False)
_dec_funding = msgspec.json.Decoder(list[_Funding], strict=False)
_dec_oi = msgspec.json.Decoder(list[_Oi], strict=False)
_dec_liq = msgspec.json.Decoder(list[_Liq], strict=False)
_DERIVATIVE = ("perp", "future")
_INST_TYPES = {"perp": "SWAP", "future": "FUTURES"}
_SIDES = {"buy": "buy", "sell": "sell"}


def _levels(raw: list[list[str]], texts: dict[float, str] | None) -> list[tuple[float, float]]:
    """Text levels -> float (price, size) pairs; record "px:sz" per price when ``texts``
    is given (size 0 deletes the text).  Raises MalformedFrame on a bad level."""
    out = []
    for lv in raw:
        if len(lv) < 2:
            raise MalformedFrame(f"level {lv!r} has fewer than 2 fields")
        px, sz = lv[0], lv[1]
        try:
            p, q = float(px), float(sz)
        except ValueError:
            raise MalformedFrame(f"level {lv!r} is not numeric") from None
        if not (0.0 < p < _INF and 0.0 <= q < _INF):
            raise MalformedFrame(f"bad level [{px!r}, {sz!r}]")
        out.append((p, q))
        if texts is not None:
            if q == 0.0:
                texts.pop(p, None)
            else:
                texts[p] = f"{px}:{sz}"
    return out


def _float_levels(raw: list[tuple[float, float, float, float]]) -> list[tuple[float, float]]:
    out = [(p, q) for p, q, _, _ in raw]
    for p, q in out:
        if not (0.0 < p < _INF and 0.0 <= q < _INF):
            raise MalformedFrame(f"bad level [{p!r}, {q!r}]")
    return out


def crc32_signed(text: str) -> int:
    """zlib CRC32 of ``text`` as OKX reports it: a signed 32-bit integer."""
    v = zlib.crc32(text.encode())
    return v - (1 << 32) if v >= (1 << 31) else v


def checksum_string(bids: list[str], asks: list[str]) -> str:
    """Interleave ``"px:sz"`` entries, best first: ``b1:a1:b2:a2...``; the longer side's
    extra entries follow alone (section 5, checksum)."""
    parts = []
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            parts.append(bids[i])
        if i < len(asks):
            parts.append(asks[i])
    return ":".join(parts)


class OkxAdapter(Adapter):
    """OKX v5 public: in-stream snapshots, ``prevSeqId`` chaining, CRC32 on the text."""

    name = "okx"
    supports_live_subscribe = True
    DEFAULTS = {
        "ws_url": "wss://ws.okx.com:8443/ws/v5/public",
        "rest_url": "https://www.okx.com",
        "rest_depth_path": "/api/v5/market/books",
        "depth_stream": "books",
        "trade_stream": "trades",
        "snapshot_limit": 400,
        "rest_weight_limit": 600,          # requests/min: half the venue's 40 per 2 s per IP
        "streams_per_connection": 25,      # fewer than 30 channels per connection for 400-level books
    }
    TRADES_PER_CONNECTION = 100
    MAX_ARGS_BYTES = 60_000                # one request's args at most 64 KB
    MAX_SNAPSHOT_LIMIT = 400
    CHANNELS = ("trades", "book", "quotes", "derivative_ticker", "liquidations")

    def __init__(self, config: ExchangeConfig):
        configure(self, config)
        if self.depth_stream not in BOOK_CHANNELS:
            raise ConfigError(f"exchanges.{config.name}.depth_stream",
                              f"expected one of {', '.join(BOOK_CHANNELS)}, got {self.depth_stream!r}")
        # in-stream snapshots; a 400-level window (50 for books50-l2-tbt); CRC32 checksums;
        # keepalive "ping"; no BBO check: bbo-tbt shares no id with the book to compare at
        self.traits = AdapterTraits(SnapshotSource.STREAM, book_cap=BOOK_CHANNELS[self.depth_stream], checksum=True,
                                    app_ping="ping", rest_weight_limit=self.rest_weight_limit)
        self._by_inst = {s.upper(): s for s in config.symbols}
        # per symbol: (bid texts, ask texts), price -> "px:sz"; None while the stream sends checksum 0
        self._texts: dict[str, tuple[dict[float, str], dict[float, str]] | None] = dict.fromkeys(config.symbols)
        # per symbol: a local update counter for frames without seqId (pre-2022-06 captures)
        self._local_seq: dict[str, int] = dict.fromkeys(config.symbols, 0)
        self._req = 0
        # index id -> the symbols whose derivative ticker takes its index price
        self._by_index: dict[str, list[str]] = {}
        self._derivatives = [sym for sym in config.symbols if split_dashed(sym).kind in _DERIVATIVE]
        for sym in self._derivatives:
            inst = split_dashed(sym)
            self._by_index.setdefault(f"{inst.base}-{inst.quote}", []).append(sym)
        self._other_parsers = {"bbo-tbt": self._parse_bbo, "mark-price": self._parse_mark,
                               "funding-rate": self._parse_funding, "open-interest": self._parse_oi}

    def instrument(self, symbol: str) -> Instrument:
        return split_dashed(symbol)

    def _other_args(self) -> list[dict]:
        """Subscription args of the other kinds the channels ask for (on the trades connection)."""
        args: list[dict] = []
        ch = self.channels
        if "quotes" in ch:
            args += [{"channel": "bbo-tbt", "instId": sym.upper()} for sym in self.symbols]
        if "derivative_ticker" in ch:
            for channel in ("mark-price", "funding-rate", "open-interest"):
                args += [{"channel": channel, "instId": sym.upper()} for sym in self._derivatives
                         if channel != "funding-rate" or split_dashed(sym).kind == "perp"]
            args += [{"channel": "index-tickers", "instId": idx} for idx in self._by_index]
        if "liquidations" in ch:
            kinds = dict.fromkeys(split_dashed(sym).kind for sym in self._derivatives)
            args += [{"channel": "liquidation-orders", "instType": _INST_TYPES[k]} for k in kinds]
        return args

    def connection_opened(self, group: StreamGroup) -> None:
        """A new socket: forget the level texts of its symbols (a snapshot comes first)."""
        if group.kind == "depth":
            for s in group.symbols:
                self._texts[s] = None
                self._local_seq[s] = 0

    # ------------------------------------------------------------ what to connect to
    def _request(self, op: str, channel: str, symbols) -> str:
        self._req += 1
        args = [{"channel": channel, "instId": s.upper()} for s in symbols]
        return json.dumps({"id": f"{op[:3]}{self._req}", "op": op, "args": args}, separators=(",", ":"))

    def _subscribe_frames(self, channel: str, symbols) -> tuple[str, ...]:
        """Subscribe requests whose args stay under the 64 KB per-request limit."""
        frames, batch, size = [], [], 0
        for s in symbols:
            n = len(channel) + len(s) + 32
            if batch and size + n > self.MAX_ARGS_BYTES:
                frames.append(self._request("subscribe", channel, batch))
                batch, size = [], 0
            batch.append(s)
            size += n
        if batch:
            frames.append(self._request("subscribe", channel, batch))
        return tuple(frames)

    def stream_groups(self) -> list[StreamGroup]:
        """Books and trades on separate connections; < 30 book channels per connection."""
        groups = self.stream_groups_for(self.symbols)
        # the other chosen channels, on connections of their own (kind "trades": no book on them);
        # symbols added at runtime get books and trades only (their args are built here, at start)
        args = self._other_args()
        for i in range(0, len(args), 200):  # well under the 64 KB of one request
            self._req += 1
            frame = json.dumps({"id": f"sub{self._req}", "op": "subscribe", "args": args[i:i + 200]},
                               separators=(",", ":"))
            groups.append(StreamGroup(self.ws_url, "trades", tuple(self.symbols), (frame,)))
        return groups

    def stream_kinds(self) -> tuple[str, ...]:
        return ("depth", "trades") if "trades" in self.channels else ("depth",)

    def symbols_per_connection(self, kind: str) -> int:
        return max(1, self.streams_per_connection if kind == "depth" else self.TRADES_PER_CONNECTION)

    def stream_group(self, kind: str, symbols: tuple[str, ...]) -> StreamGroup:
        channel = self.depth_stream if kind == "depth" else self.trade_stream
        return StreamGroup(self.ws_url, kind, tuple(symbols), self._subscribe_frames(channel, symbols))

    def live_subscribe(self, kind: str, symbols: tuple[str, ...], subscribe: bool = True) -> list[str]:
        """``op`` subscribe / unsubscribe on the open connection (section 5)."""
        channel = self.depth_stream if kind == "depth" else self.trade_stream
        if subscribe:
            return list(self._subscribe_frames(channel, symbols))
        return [self._request("unsubscribe", channel, symbols)]

    def add_symbol(self, symbol: str) -> None:
        self._by_inst[symbol.upper()] = symbol
        self._texts[symbol] = None
        self._local_seq[symbol] = 0
        self.symbols = (*self.symbols, symbol)

    def instrument_request(self, symbol: str) -> SnapshotRequest:
        """``/api/v5/public/instruments`` for the one instId; instType from its shape."""
        parts = symbol.upper().split("-")
        inst_type = "SWAP" if parts[-1] == "SWAP" else "FUTURES" if len(parts) == 3 and parts[2].isdigit() else "SPOT"
        query = urlencode({"instType": inst_type, "instId": symbol.upper()})
        return SnapshotRequest(f"{self.rest_url}/api/v5/public/instruments?{query}", 1)

    def instrument_listed(self, symbol: str, status: int, body: bytes) -> bool:
        """``code`` "0" and the instId in ``data`` with state "live"."""
        try:
            obj = json.loads(body)
            rows = obj["data"] if obj.get("code") == "0" else []
        except (ValueError, KeyError, TypeError, AttributeError):
            return False
        return status == 200 and any(isinstance(r, dict) and r.get("instId") == symbol.upper()
                                     and r.get("state") == "live" for r in rows)

    def resubscribe(self, symbol: str) -> list[str]:
        """Unsubscribe + subscribe the book channel: OKX answers with a fresh snapshot."""
        return [self._request("unsubscribe", self.depth_stream, [symbol]),
                self._request("subscribe", self.depth_stream, [symbol])]

    def snapshot_request(self, symbol: str) -> SnapshotRequest:
        query = urlencode({"instId": symbol.upper(), "sz": self.snapshot_limit})
        return SnapshotRequest(f"{self.rest_url}{self.rest_depth_path}?{query}", 1)

    # ------------------------------------------------------------------- parsing
    def parse_frame(self, frame: bytes | str, recv_ns: int):
        """One text frame -> DepthSnapshot | DepthDiff | list[TradeEvent] | VenueNotice | None.

        Raises MalformedFrame (``.symbol`` set when the instId was readable) or UnknownFrame.
        """
        if isinstance(frame, str):
            frame = frame.encode()
        if frame == b"pong":
            return None
        try:
            f = _dec_frame.decode(frame)
        except _DECODE_ERRORS as exc:
            raise MalformedFrame(f"not an OKX frame: {exc}") from None
        if f.arg is None or not f.data:
            return self._event(frame, f)
        channel = f.arg.channel
        if channel == "index-tickers":  # by index id, which can also be a configured spot instId (BTC-USDT)
            return self._parse_index(f.data, recv_ns, f.arg.instId)
        symbol = self._by_inst.get(f.arg.instId.upper())
        if symbol is None:
            if channel == "liquidation-orders":
                return self._parse_liquidations(f.data, recv_ns)
            raise UnknownFrame(f"channel {channel!r} for unknown instId {f.arg.instId!r}")
        try:
            if channel == self.depth_stream:
                return self._parse_books(f, recv_ns, symbol)
            if channel == self.trade_stream:
                return self._parse_trades(f.data, recv_ns, symbol)
            other = self._other_parsers.get(channel)
            if other is not None:
                return other(f.data, recv_ns, symbol)
        except _DECODE_ERRORS as exc:
            raise _malformed(str(exc), symbol) from None
        except MalformedFrame as exc:
            exc.symbol = symbol
            raise
        raise UnknownFrame(f"channel {channel!r}")

    def _event(self, frame: bytes, f: _Frame):
        ev = f.event
        if ev is None:
            raise UnknownFrame("frame with neither event nor arg/data")
        if ev in ("subscribe", "unsubscribe", "channel-conn-count"):
            return None
        try:
            detail = msgspec.json.decode(frame)
        except _DECODE_ERRORS:  # pragma: no cover - decoded once already
            detail = {}
        detail = detail if isinstance(detail, dict) else {}
        if ev == "error":
            return VenueNotice("error", detail)
        if ev == "notice" and str(f.code) == "64008":
            return VenueNotice("server_shutdown", detail)
        return VenueNotice("reply", detail)

    def _parse_books(self, f: _Frame, recv_ns: int, symbol: str):
        action = f.action
        if action not in ("snapshot", "update"):
            raise MalformedFrame(f"books action {action!r}")
        if action == "update" and self._texts[symbol] is None:
            # fast path (no checksum tracked: OKX sends 0 since 2026-06): floats in C
            try:
                fast = _dec_books_f.decode(f.data)
            except _DECODE_ERRORS:
                fast = None  # an unusual level shape: the text path below decides
            if fast:
                return self._updates_fast(fast, recv_ns, symbol)
        books = _dec_books.decode(f.data)
        if not books:
            raise MalformedFrame("books frame with an empty data array")
        out = []
        for b in books:
            if action == "snapshot":
                texts = ({}, {}) if b.checksum else None
                self._texts[symbol] = texts
                bids = _levels(b.bids, texts[0] if texts else None)
                asks = _levels(b.asks, texts[1] if texts else None)
                if b.seqId is None:
                    self._local_seq[symbol] = seq = 0
                else:
                    seq = b.seqId
                out.append(DepthSnapshot(symbol, seq, bids, asks, b.ts * 1000, recv_ns, b.checksum))
            else:
                texts = self._texts[symbol]
                out.append(self._diff(b, _levels(b.bids, texts[0] if texts else None),
                                      _levels(b.asks, texts[1] if texts else None), recv_ns, symbol))
        return out[0] if len(out) == 1 else out

    def _updates_fast(self, books: list[_BookF], recv_ns: int, symbol: str):
        out = [self._diff(b, _float_levels(b.bids), _float_levels(b.asks), recv_ns, symbol) for b in books]
        return out[0] if len(out) == 1 else out

    def _diff(self, b, bids, asks, recv_ns: int, symbol: str) -> DepthDiff:
        if b.seqId is None:  # pre-2022-06 frames: a local counter, and no chain to check
            self._local_seq[symbol] = seq = self._local_seq[symbol] + 1
            prev = NO_SEQ
        else:
            seq = b.seqId
            prev = b.prevSeqId if b.prevSeqId is not None else NO_SEQ - 1  # never chains
        return DepthDiff(symbol, seq, seq, prev, bids, asks, b.ts * 1000, recv_ns, b.checksum)

    def _parse_bbo(self, data: msgspec.Raw, recv_ns: int, symbol: str):
        out = []
        for b in _dec_bbo.decode(data):
            bid, ask = (b.bids[0] if b.bids else None), (b.asks[0] if b.asks else None)
            for lvl in (bid, ask):
                if lvl is not None and not (0.0 < lvl[0] < _INF and 0.0 <= lvl[1] < _INF):
                    raise MalformedFrame(f"bad bbo level {lvl!r}")
            out.append(BboEvent(symbol, b.seqId, bid[0] if bid else None, bid[1] if bid else None,
                                ask[0] if ask else None, ask[1] if ask else None, recv_ns, b.ts * 1000))
        return (out[0] if len(out) == 1 else out) or None

    def _parse_mark(self, data: msgspec.Raw, recv_ns: int, symbol: str):
        out = []
        for m in _dec_mark.decode(data):
            if not 0.0 < m.markPx < _INF:
                raise MalformedFrame(f"bad markPx {m.markPx!r}")
            out.append(TickerEvent(symbol=symbol, ts_exchange_us=m.ts * 1000, recv_ns=recv_ns, mark_price=m.markPx))
        return (out[0] if len(out) == 1 else out) or None

    def _parse_index(self, data: msgspec.Raw, recv_ns: int, index: str):
        symbols = self._by_index.get(index.upper())
        if symbols is None:
            raise UnknownFrame(f"index-tickers for unknown index {index!r}")
        out = []
        try:
            for x in _dec_index.decode(data):
                if not 0.0 < x.idxPx < _INF:
                    raise MalformedFrame(f"bad idxPx {x.idxPx!r}")
                out += [TickerEvent(symbol=sym, ts_exchange_us=x.ts * 1000, recv_ns=recv_ns, index_price=x.idxPx)
                        for sym in symbols]
        except _DECODE_ERRORS as exc:
            raise _malformed(str(exc), symbols[0]) from None
        except MalformedFrame as exc:
            exc.symbol = symbols[0]
            raise
        return out or None

    def _parse_funding(self, data: msgspec.Raw, recv_ns: int, symbol: str):
        out = []
        for x in _dec_funding.decode(data):
            try:
                predicted = float(x.nextFundingRate) if x.nextFundingRate else None
            except ValueError:
                raise MalformedFrame(f"bad nextFundingRate {x.nextFundingRate!r}") from None
            out.append(TickerEvent(symbol=symbol, ts_exchange_us=x.ts * 1000, recv_ns=recv_ns,
                                   funding_rate=x.fundingRate, predicted_funding_rate=predicted,
                                   funding_timestamp=x.fundingTime * 1000 if x.fundingTime else None))
        return (out[0] if len(out) == 1 else out) or None

    def _parse_oi(self, data: msgspec.Raw, recv_ns: int, symbol: str):
        out = []
        for x in _dec_oi.decode(data):
            if not 0.0 <= x.oi < _INF:
                raise MalformedFrame(f"bad oi {x.oi!r}")
            out.append(TickerEvent(symbol=symbol, ts_exchange_us=x.ts * 1000, recv_ns=recv_ns, open_interest=x.oi))
        return (out[0] if len(out) == 1 else out) or None

    def _parse_liquidations(self, data: msgspec.Raw, recv_ns: int):
        """``liquidation-orders`` covers an instrument type: keep the configured instruments."""
        try:
            liqs = _dec_liq.decode(data)
        except _DECODE_ERRORS as exc:
            raise _malformed(f"liquidation-orders: {exc}", None) from None
        out = []
        for x in liqs:
            symbol = self._by_inst.get(x.instId.upper())
            if symbol is None:
                continue
            for d in x.details:
                side = _SIDES.get(d.side)
                if side is None or not (0.0 < d.bkPx < _INF and 0.0 < d.sz < _INF):
                    raise _malformed(f"bad liquidation {d.side!r} {d.sz!r} @ {d.bkPx!r}", symbol)
                out.append(LiquidationEvent(symbol, side, d.bkPx, d.sz, "", d.ts * 1000, recv_ns))
        return out or None

    def _parse_trades(self, data: msgspec.Raw, recv_ns: int, symbol: str):
        out = []
        for t in _dec_trades.decode(data):
            out.append(_trade(symbol, t.px, t.sz, _SIDES.get(t.side), t.side, t.tradeId, t.ts * 1000, recv_ns))
        return out or None

    def parse_snapshot(self, symbol: str, body: bytes, recv_ns: int) -> DepthSnapshot:
        """REST ``/api/v5/market/books`` body -> DepthSnapshot (no checksum; the stream's
        level texts are left alone). Raises MalformedFrame."""
        try:
            r = _dec_rest.decode(body)
            if str(r.code) != "0" or not r.data:
                raise _malformed(f"snapshot: code {r.code!r} {r.msg!r}", symbol)
            b = r.data[0]
            bids, asks = _levels(b.bids, None), _levels(b.asks, None)
        except _DECODE_ERRORS as exc:
            raise _malformed(f"snapshot: {exc}", symbol) from None
        except MalformedFrame as exc:
            exc.symbol = symbol
            raise
        return DepthSnapshot(symbol, b.seqId if b.seqId is not None else 0, bids, asks, b.ts * 1000, recv_ns)

    # ------------------------------------------------------------ sequencing rule
    @staticmethod
    def check(ev: DepthDiff, book_id: int, first: bool) -> Verdict:
        """Section 5 step 2: APPLY iff ``prevSeqId == book id`` (heartbeats and seq resets
        included), else GAP.  Unsequenced (pre-seqId) frames apply in order."""
        if ev.prev_id == book_id or ev.prev_id == NO_SEQ:
            return APPLY
        return GAP

    @staticmethod
    def snapshot_usable(snapshot_id: int, first_buffered: DepthDiff | None) -> bool:
        """Every in-stream snapshot is usable: it replaces the book."""
        return True

    # ------------------------------------------------------------------ integrity
    def checksum(self, symbol: str, book) -> int:
        """OKX's checksum of ``book`` (a pipeline.book.ViewBook) from the original level
        text: signed CRC32 of the interleaved top 25 ``px:sz`` per side."""
        texts = self._texts.get(symbol)
        bid_text, ask_text = texts if texts is not None else ({}, {})
        n = CHECKSUM_LEVELS
        bp, bs = book.bids.top(n)   # best first
        ap, as_ = book.asks.top(n)
        # a level without text (never decoded here) falls back to float text: it will
        # not match, and the mismatch makes the feed resync
        bids = [bid_text.get(p) or f"{p!r}:{s!r}" for p, s in zip(bp, bs)]
        asks = [ask_text.get(p) or f"{p!r}:{s!r}" for p, s in zip(ap, as_)]
        return crc32_signed(checksum_string(bids, asks))
