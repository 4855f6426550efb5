"""Best-available book for callers: shared memory when it is live and fresh, else the
venue's REST snapshot ("WebSocket first, REST fallback").

    from pipeline.app.bestbook import best_book
    book = best_book("okx", "BTC-USDT", config)     # config: pipeline.config.load_config(...)
    book.source, book.reason                        # "shm" | "rest", and why
    book.bids[0], book.asks[0]                      # (price, size), best first

Shared memory is used when all of these hold, else the reason names the first that
failed: the exchange's segment exists; the ingest process that wrote it is alive; its
heartbeat (every 0.25 s) is at most ``max_age_s`` old; the symbol's book state is
``live`` (not syncing after a connect, not stale after a gap or a checksum failure).
A quiet market is not a stale book: the age of the last update is reported, not judged.

Otherwise the adapter's own REST request is made (Binance ``/api/v3/depth``, Bybit
``/v5/market/orderbook``, OKX ``/api/v5/market/books``, Hyperliquid ``POST /info``
``l2Book``, Lighter ``orderBookOrders`` aggregated by price) and parsed by the same code
the ingest uses.  A REST book is a point-in-time copy: no sequence, no deltas follow.
It never falls back silently: ``source`` and ``reason`` always say what happened, and
when neither source works ``BookUnavailable`` says why for both.
"""

from __future__ import annotations

import dataclasses
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from pipeline import shards
from pipeline.config import Config, load_config
from pipeline.errors import ConfigError, PipelineError, SharedMemoryError
from pipeline.pidfile import pid_alive
from pipeline.app.book import not_live_reason
from pipeline.shm import BookReader, BookState
from pipeline.streams import followed_symbols

__all__ = ["BestBook", "BookUnavailable", "best_book"]


class BookUnavailable(PipelineError):
    """Neither shared memory nor REST gave a book; the message says why for each."""


@dataclass
class BestBook:
    exchange: str
    symbol: str
    source: str                 # "shm" | "rest"
    reason: str                 # why this source (for "rest": why not shared memory)
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    state: str                  # "live" for shm; "snapshot" for a REST copy
    update_id: int = 0
    seq: int = 0                # shm view seq (0 for REST)
    ts_exchange_us: int = 0
    ts_received_us: int = 0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"exchange": self.exchange, "symbol": self.symbol, "source": self.source, "reason": self.reason,
                "state": self.state, "update_id": self.update_id, "seq": self.seq,
                "ts_exchange_us": self.ts_exchange_us, "ts_received_us": self.ts_received_us,
                "bids": [list(x) for x in self.bids], "asks": [list(x) for x in self.asks]}


def _from_shm(config: Config, exchange: str, symbol: str, depth: int, max_age_s: float) -> BestBook | str:
    """The shared-memory book, or the reason it is not usable."""
    try:
        reader = BookReader.open(config.shm_prefix, shards.unit_of(config, exchange, symbol))
    except SharedMemoryError:
        return f"no shared-memory book for {exchange!r} (is `pipeline ingest {exchange}` running?)"
    try:
        if not pid_alive(reader.pid):
            return f"ingest process {reader.pid} that wrote the book is gone"
        age = (time.time_ns() - reader.heartbeat_ns) / 1e9
        if age > max_age_s:
            return f"ingest heartbeat {age:.1f} s old (limit {max_age_s:g} s)"
        try:
            snap = reader.read(symbol, depth)
            stats = reader.stats(symbol)
        except SharedMemoryError as exc:
            return str(exc)
        if snap.state is not BookState.LIVE:
            why = not_live_reason(snap.state, stats, reader.feed_health(symbol), True, age, time.time_ns())
            return f"book is {snap.state.name.lower()} in shared memory ({why})"
        last = stats.get("last_update_ns", 0)
        return BestBook(exchange, symbol, "shm", "live and fresh in shared memory",
                        [tuple(x) for x in snap.bids.tolist()], [tuple(x) for x in snap.asks.tolist()], "live",
                        snap.update_id, snap.seq, snap.ts_exchange_us, snap.ts_received_us,
                        {"last_update_age_s": round((time.time_ns() - last) / 1e9, 3) if last else None})
    finally:
        reader.close()


def _fetch(req, timeout_s: float) -> bytes:
    headers = {"Content-Type": "application/json"} if req.body else {}
    request = urllib.request.Request(req.url, data=req.body, method=req.method, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 (URLs come from config)
        return resp.read()


def _from_rest(config: Config, exchange: str, symbol: str, depth: int, reason: str, timeout_s: float) -> BestBook:
    from ingest.adapters import create

    ex = config.exchange(exchange)
    if symbol not in ex.symbols:  # added at runtime: the adapter must know it (Lighter: its market id)
        ex = dataclasses.replace(ex, symbols=(*ex.symbols, symbol))
    adapter = create(ex)
    req = adapter.discovery_request()
    if req is not None:  # venue metadata first (Lighter market ids)
        adapter.apply_discovery(_fetch(req, timeout_s))
    req = adapter.snapshot_request(symbol)
    body = _fetch(req, timeout_s)
    snap = adapter.parse_snapshot(symbol, body, time.time_ns())
    bids = sorted(((p, s) for p, s in snap.bids if s > 0), reverse=True)[:depth]
    asks = sorted((p, s) for p, s in snap.asks if s > 0)[:depth]
    return BestBook(exchange, symbol, "rest", reason, bids, asks, "snapshot", snap.last_id, 0,
                    snap.ts_exchange_us, snap.recv_ns // 1000, {"url": req.url})


def best_book(exchange: str, symbol: str, config: Config | None = None, depth: int | None = None,
              max_age_s: float = 2.0, timeout_s: float = 5.0, source: str = "auto") -> BestBook:
    """The book of ``symbol`` on config exchange ``exchange``: shared memory when live and
    fresh, else the venue's REST snapshot (``source="auto"``); ``"shm"`` or ``"rest"`` ask
    for one source only.  Raises ConfigError for an exchange or symbol not in the config,
    BookUnavailable when no allowed source works."""
    if source not in ("auto", "shm", "rest"):
        raise ValueError(f"source must be auto, shm or rest, not {source!r}")
    config = config if config is not None else load_config(None)
    ex = config.exchange(exchange)
    followed = followed_symbols(config, exchange)  # the config's and those added at runtime
    if symbol not in followed:
        raise ConfigError(f"exchanges.{exchange}.symbols", f"{symbol!r} is not configured nor subscribed (has: {', '.join(followed)})")
    depth = depth or ex.depth
    got = "REST asked for" if source == "rest" else _from_shm(config, exchange, symbol, depth, max_age_s)
    if isinstance(got, BestBook):
        return got
    if source == "shm":
        raise BookUnavailable(f"shm: {got}; rest: not asked for")
    try:
        return _from_rest(config, exchange, symbol, depth, got, timeout_s)
    except (urllib.error.URLError, OSError, ValueError, PipelineError) as exc:
        raise BookUnavailable(f"shm: {got}; rest: {type(exc).__name__}: {exc}") from None
