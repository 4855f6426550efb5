"""JSON frames of the WebSocket protocol (docs/websocket.md), defined once, encoded with msgspec.

Pure: values in, UTF-8 JSON bytes out; the caller passes the clock.  Every market
event carries ``kind``, ``exchange``, ``symbol``, ``time_exchange``, ``time_received``
and ``time_published`` (ISO-8601 UTC, microseconds, ``Z``; ``time_exchange`` is null
when the venue gave no time).  A frame is encoded once and the same bytes go to
every client that takes it (building-block-costs.md section 5: the send is the
floor, so nothing per client is re-encoded).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from pipeline import schema

PROTOCOL_VERSION = 1
Levels = list  # [[price, size], ...] (tuples encode as arrays too)

_encoder = msgspec.json.Encoder()


# ------------------------------------------------------------------------ times

class _IsoClock:
    """µs since the epoch -> ``2024-05-01T12:00:00.123456Z``; the seconds part is cached."""

    __slots__ = ("_sec", "_prefix")

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""

    def format(self, us: int) -> str | None:
        if not us:
            return None
        sec, micro = divmod(us, 1_000_000)
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{micro:06d}Z"


iso = _IsoClock().format


def now_us() -> int:
    return time.time_ns() // 1000


# ------------------------------------------------------------------- event structs
# One renderer per bus event kind; their ``kind`` values come from the registry (pipeline/schema.py).

class _Event(msgspec.Struct, tag_field="kind", kw_only=True):
    exchange: str
    symbol: str
    time_exchange: str | None
    time_received: str | None
    time_published: str | None


class TradeEvent(_Event, tag=schema.TRADE.ws_kinds[0], kw_only=True, omit_defaults=True):
    seq: int
    price: float
    amount: float
    side: str  # taker side: buy | sell | unknown
    trade_id: str
    instrument: Any = None  # the bus's {base, quote, kind} when the ingest gave it; absent otherwise
    liquidation: bool = False  # present (true) only on a liquidation's trade


class BookEvent(_Event, tag=schema.L2.ws_kinds[0], kw_only=True, omit_defaults=True):
    """A top-N snapshot: bids and asks best first; replaces the client's book."""

    epoch: int
    seq: int
    state: str
    depth: int
    bids: Levels
    asks: Levels
    instrument: Any = None  # as for trades


class BookUpdateEvent(_Event, tag=schema.L2.ws_kinds[1], kw_only=True, omit_defaults=True):
    """A delta of the client's top-N view: size 0 deletes a level; seq is the previous + 1."""

    epoch: int
    seq: int
    state: str
    depth: int
    bids: Levels
    asks: Levels
    instrument: Any = None  # as for trades


# The other kinds (quote, derivative_ticker, liquidation, cvd, trade_bar): the bus payload's own
# fields, times in µs turned into ISO strings like the envelope's (docs/websocket.md).
_SKIP = frozenset(("kind", "exchange", "symbol", "ts_exchange", "ts_received", "ts_published", "epoch"))
_ISO_FIELDS = frozenset(("funding_timestamp", "open_time", "since"))


def other(msg: Any, ws_kind: str, published_us: int) -> bytes:
    """A quote, derivative_ticker, liquidation, cvd or trade_bar event from its bus payload."""
    out: dict[str, Any] = {"kind": ws_kind, "exchange": msg.exchange, "symbol": msg.symbol,
                           "time_exchange": iso(msg.ts_exchange), "time_received": iso(msg.ts_received),
                           "time_published": iso(published_us)}
    for name in msg.__struct_fields__:
        if name in _SKIP:
            continue
        value = getattr(msg, name)
        if name in _ISO_FIELDS and value is not None:
            value = iso(value)
        if name == "instrument" and value is None:
            continue
        out[name] = value
    return _encoder.encode(out)


class StatusEvent(_Event, tag="status", kw_only=True):
    state: str  # live | stale | syncing | down
    reason: str
    epoch: int
    seq: int


def trade(t: schema.Trade, published_us: int) -> bytes:
    return _encoder.encode(TradeEvent(
        exchange=t.exchange, symbol=t.symbol, time_exchange=iso(t.ts_exchange), time_received=iso(t.ts_received),
        time_published=iso(published_us), seq=t.seq, price=t.price, amount=t.amount, side=t.side,
        trade_id=t.trade_id, instrument=getattr(t, "instrument", None), liquidation=getattr(t, "liquidation", False)))


def book(exchange: str, symbol: str, *, epoch: int, seq: int, state: str, depth: int, bids: Levels, asks: Levels,
         ts_exchange: int, ts_received: int, published_us: int, update: bool = False, instrument: Any = None) -> bytes:
    """An ``order_book_l2`` snapshot, or with ``update=True`` an ``order_book_l2_update`` delta."""
    cls = BookUpdateEvent if update else BookEvent
    return _encoder.encode(cls(
        exchange=exchange, symbol=symbol, time_exchange=iso(ts_exchange), time_received=iso(ts_received),
        time_published=iso(published_us), epoch=epoch, seq=seq, state=state, depth=depth, bids=bids, asks=asks,
        instrument=instrument))


def status(exchange: str, symbol: str, *, state: str, reason: str, epoch: int, seq: int,
           received_us: int, published_us: int) -> bytes:
    return _encoder.encode(StatusEvent(
        exchange=exchange, symbol=symbol, time_exchange=None, time_received=iso(received_us),
        time_published=iso(published_us), state=state, reason=reason, epoch=epoch, seq=seq))


# ------------------------------------------------------------------ control frames

def welcome(*, client_id: int, version: str, feeds: dict[str, dict], default: dict, limits: dict,
            published_us: int) -> bytes:
    return _encoder.encode({
        "kind": "welcome", "server": "l2pipeline publisher", "version": version, "protocol": PROTOCOL_VERSION,
        "client_id": client_id, "time_published": iso(published_us), "exchanges": feeds, "default": default,
        "limits": limits,
    })


def reply(kind: str, request_id: Any, published_us: int, **fields: Any) -> bytes:
    """A confirmation (``subscribed``, ``unsubscribed``, ``pong``) echoing the request's ``id``."""
    return _encoder.encode({"kind": kind, "id": request_id, "time_published": iso(published_us), **fields})


def error(message: str, request_id: Any, published_us: int) -> bytes:
    return _encoder.encode({"kind": "error", "id": request_id, "message": message,
                            "time_published": iso(published_us)})
