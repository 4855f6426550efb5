"""Client requests on :9001: text frame -> a typed request, or RequestError with a message.

Pure.  The grammar (docs/websocket.md, "Requests")::

    {"op": "subscribe", "exchange": E, "symbols": [S...], "channels": ["trades", "book", "quotes", ...],
     "depth": N, "mode": "snapshots" | "deltas", "throttle_ms": T, "id": ...}
    {"op": "unsubscribe", "exchange": E, "symbols": [S...], "channels": [...], "id": ...}
    {"op": "ping", "id": ...}

Everything but ``op`` (and ``exchange`` for subscribe) is optional.  Unknown fields are
errors, so a typo is answered instead of silently ignored.  A RequestError never
closes the connection: the server answers ``{"kind": "error", ...}`` and reads on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgspec

from publisher.settings import Settings

MAX_THROTTLE_MS = 60_000
# subscription channels: trades and book, and one per other kind (OTHER_CHANNELS: channel -> bus kind name)
OTHER_CHANNELS = {"quotes": "quote", "derivative_ticker": "derivative_ticker", "liquidations": "liquidation",
                  "cvd": "cvd", "trade_bars": "trade_bar"}
CHANNELS = ("trades", "book", *OTHER_CHANNELS)
# what a client that sends nothing gets besides trades and book snapshots (docs/websocket.md)
DEFAULT_OTHER = frozenset(("quotes", "derivative_ticker", "liquidations"))
_decoder = msgspec.json.Decoder()


class Mode(enum.Enum):
    SNAPSHOTS = "snapshots"  # throttled order_book_l2 snapshots, the latest view each time
    DELTAS = "deltas"        # one snapshot, then every order_book_l2_update (contiguous seq)


class RequestError(Exception):
    """A request the server cannot follow; ``str()`` is the message for the client."""

    def __init__(self, message: str, request_id: Any = None):
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True)
class Subscribe:
    id: Any
    exchange: str
    symbols: tuple[str, ...]
    trades: bool
    book: bool
    depth: int
    mode: Mode
    throttle_ms: int
    others: frozenset[str] = frozenset()  # OTHER_CHANNELS asked for

    def summary(self) -> dict:
        """The fields echoed in the ``subscribed`` reply."""
        return {"exchange": self.exchange, "symbols": list(self.symbols),
                "channels": _names(self.trades, self.book, self.others),
                "depth": self.depth, "mode": self.mode.value, "throttle_ms": self.throttle_ms}


@dataclass(frozen=True)
class Unsubscribe:
    id: Any
    exchange: str | None  # None: every exchange
    symbols: tuple[str, ...] | None  # None: every symbol of the exchange
    trades: bool
    book: bool
    others: frozenset[str] = frozenset()

    def summary(self) -> dict:
        return {"exchange": self.exchange, "symbols": None if self.symbols is None else list(self.symbols),
                "channels": _names(self.trades, self.book, self.others)}


def _names(trades: bool, book: bool, others: frozenset[str]) -> list[str]:
    return [c for c in CHANNELS if (c == "trades" and trades) or (c == "book" and book) or c in others]


@dataclass(frozen=True)
class Ping:
    id: Any


Request = Subscribe | Unsubscribe | Ping

_FIELDS = {
    "subscribe": {"op", "id", "exchange", "symbols", "channels", "depth", "mode", "throttle_ms"},
    "unsubscribe": {"op", "id", "exchange", "symbols", "channels"},
    "ping": {"op", "id"},
}


def parse_request(frame: str | bytes, settings: Settings) -> Request:
    """Decode and validate one client frame. Raises RequestError."""
    limits = settings.limits
    if not isinstance(frame, str):
        raise RequestError("expected a text frame holding one JSON object, got a binary frame")
    size = len(frame) if len(frame) > limits.max_request_bytes else len(frame.encode("utf-8"))
    if size > limits.max_request_bytes:
        raise RequestError(f"request too large: {size} bytes (at most {limits.max_request_bytes})")
    try:
        obj = _decoder.decode(frame)
    except msgspec.DecodeError as exc:
        raise RequestError(f"invalid JSON: {exc}") from None
    except RecursionError:  # msgspec's own nesting bound (~1000 levels, a 2 KB frame): malformed, not a crash
        raise RequestError("invalid JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise RequestError(f"expected a JSON object, got {type(obj).__name__}")
    request_id = obj.get("id")
    if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, (str, int))):
        raise RequestError("id: expected a string or an integer")
    op = obj.get("op")
    if op not in _FIELDS:
        raise RequestError(f"unknown op {op!r} (known: {', '.join(_FIELDS)})", request_id)
    extra = sorted(set(obj) - _FIELDS[op])
    if extra:
        raise RequestError(f"unknown field {extra[0]!r} for op {op!r} (allowed: {', '.join(sorted(_FIELDS[op]))})",
                           request_id)
    if op == "ping":
        return Ping(request_id)
    if op == "subscribe":
        return _subscribe(obj, request_id, settings)
    return _unsubscribe(obj, request_id, settings)


def _exchange(obj: dict, request_id: Any, settings: Settings, required: bool) -> str | None:
    ex = obj.get("exchange")
    if ex is None:
        if required:
            raise RequestError(f"exchange: required (one of: {', '.join(settings.feeds)})", request_id)
        return None
    if not isinstance(ex, str) or ex not in settings.feeds:
        raise RequestError(f"unknown exchange {ex!r} (known: {', '.join(settings.feeds)})", request_id)
    return ex


def _symbols(obj: dict, request_id: Any, settings: Settings, exchange: str | None) -> tuple[str, ...] | None:
    syms = obj.get("symbols")
    if syms is None:
        return None
    if exchange is None:
        raise RequestError("symbols: name the exchange too", request_id)
    if not isinstance(syms, list) or not syms or not all(isinstance(s, str) for s in syms):
        raise RequestError("symbols: expected a non-empty list of symbol names", request_id)
    known = settings.symbols(exchange)
    for s in syms:
        if s not in known:
            shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
            raise RequestError(f"unknown symbol {s!r} on {exchange} (known: {shown})", request_id)
    return tuple(dict.fromkeys(syms))


def _channels(obj: dict, request_id: Any, default_others: frozenset[str]) -> tuple[bool, bool, frozenset[str]]:
    ch = obj.get("channels")
    if ch is None:
        return True, True, default_others
    known = ", ".join(f'"{c}"' for c in CHANNELS)
    if not isinstance(ch, list) or not ch or not all(isinstance(c, str) for c in ch):
        raise RequestError(f"channels: expected a non-empty list of {known}", request_id)
    for c in ch:
        if c not in CHANNELS:
            raise RequestError(f"unknown channel {c!r} (known: {known})", request_id)
    return "trades" in ch, "book" in ch, frozenset(c for c in ch if c in OTHER_CHANNELS)


def _int(obj: dict, key: str, request_id: Any, low: int, high: int) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise RequestError(f"{key}: expected an integer from {low} to {high}, got {v!r}", request_id)
    return v


def _subscribe(obj: dict, request_id: Any, settings: Settings) -> Subscribe:
    exchange = _exchange(obj, request_id, settings, required=True)
    feed = settings.feeds[exchange]
    symbols = _symbols(obj, request_id, settings, exchange) or feed.symbols
    trades, book, others = _channels(obj, request_id, DEFAULT_OTHER)
    depth = _int(obj, "depth", request_id, 1, feed.depth)
    if depth is None:
        depth = min(settings.limits.default_depth, feed.depth)
    mode_raw = obj.get("mode", Mode.SNAPSHOTS.value)
    try:
        mode = Mode(mode_raw)
    except (ValueError, TypeError):
        raise RequestError(f'mode: expected "snapshots" or "deltas", got {mode_raw!r}', request_id) from None
    throttle = _int(obj, "throttle_ms", request_id, settings.limits.min_throttle_ms, MAX_THROTTLE_MS)
    if throttle is not None and mode is Mode.DELTAS:
        raise RequestError('throttle_ms: applies to mode "snapshots" only (deltas are never throttled)', request_id)
    return Subscribe(request_id, exchange, symbols, trades, book, depth, mode,
                     feed.throttle_ms if throttle is None else throttle, others)


def _unsubscribe(obj: dict, request_id: Any, settings: Settings) -> Unsubscribe:
    exchange = _exchange(obj, request_id, settings, required=False)
    symbols = _symbols(obj, request_id, settings, exchange)
    trades, book, others = _channels(obj, request_id, frozenset(OTHER_CHANNELS))
    return Unsubscribe(request_id, exchange, symbols, trades, book, others)
