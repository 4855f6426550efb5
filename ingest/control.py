"""The control API of one ingest: add and remove symbols while it runs (DESIGN.md contract 9).

``StreamControl`` is the one implementation; the control socket (``RUN_DIR/ingest-EX.ctl``,
protocol in pipeline/streams.py) is its only door, and the CLI, the publisher's HTTP API and
the page all go through it.  A request is checked whole before anything changes: symbol
names, the slots left (``max_symbols``), the venue's instrument list (unknown symbol: refused);
then the feed takes the symbols (a slot each, pipeline/shm.py), the runner subscribes or
unsubscribes them on the live connections (ingest/runner.py), and the state file is written
(pipeline/streams.py), so a restart comes back with them.  Requests are served one at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Callable

from ingest.adapters.base import Adapter
from ingest.feed import FeedBooks
from ingest.runner import Runner
from pipeline.errors import StreamError, StreamsFull
from pipeline.shm import BookState
from pipeline.streams import MAX_REQUEST_BYTES, Changes, check_symbols, save_changes

log = logging.getLogger(__name__)

RATE_INTERVAL = 2.0  # seconds between samples of each stream's message rate


class StreamControl:
    """Runtime subscribe / unsubscribe / reset and the streams listing of one exchange."""

    def __init__(self, exchange: str, configured: tuple[str, ...], run_dir: Path, feed: FeedBooks, runner: Runner,
                 clock=time.time_ns, unit: str | None = None, owns: Callable[[str], bool] | None = None):
        """``unit`` and ``owns``: one shard of a sharded exchange (pipeline/shards.py) keeps its state file
        under its unit name and refuses symbols another shard follows (a router error, never a user's)."""
        self.exchange = exchange
        self.unit = unit or exchange
        self.owns = owns
        self.configured = tuple(configured)
        self.run_dir = Path(run_dir)
        self.feed = feed
        self.runner = runner
        self.adapter = feed.adapter
        self.clock = clock
        self._lock = asyncio.Lock()
        self._rates: dict[str, float] = {}
        self._last_counts: dict[str, tuple[int, int]] = {}

    # ------------------------------------------------------------------ requests
    async def handle(self, request: object) -> dict:
        """One request (a decoded JSON object) -> its reply; refusals as ``ok: false``."""
        try:
            if not isinstance(request, dict):
                raise StreamError("expected a JSON object")
            op = request.get("op")
            if op == "streams":
                return self.streams()
            if op not in ("subscribe", "unsubscribe", "reset"):
                raise StreamError(f"unknown op {json.dumps(op)} (expected subscribe, unsubscribe, reset, streams)")
            if not self.supported():
                raise StreamError(f"{self.exchange}: the {self.adapter.name} adapter cannot change symbols while "
                                  "it runs (edit the config and restart it)", "unsupported")
            if getattr(self.runner, "session", None) is None or getattr(self.runner, "_tg", None) is None:
                raise StreamError(f"{self.exchange}: the ingest is still starting; try again", "unavailable")
            async with self._lock:
                if op == "reset":
                    return await self.reset()
                symbols = check_symbols(request.get("symbols"))
                if self.owns is not None and op == "subscribe":
                    other = [s for s in symbols if not self.owns(s)]
                    if other:
                        raise StreamError(f"{self.unit}: {', '.join(other)} belong to another ingest process of "
                                          f"{self.exchange} (send requests through pipeline subscribe)", "wrong_shard")
                if op == "subscribe":
                    return await self.subscribe(symbols)
                return self.unsubscribe(symbols)
        except StreamError as exc:
            return {"ok": False, "exchange": self.exchange, "code": exc.code, "error": str(exc)}

    def supported(self) -> bool:
        """The adapter can change symbols on a running connection (and the runner is the WebSocket one)."""
        return (getattr(type(self.adapter), "add_symbol", Adapter.add_symbol) is not Adapter.add_symbol
                and isinstance(self.runner, Runner))

    def _followed(self) -> list[str]:
        return self.feed.symbols()

    async def subscribe(self, symbols: tuple[str, ...], validate: bool = True) -> dict:
        """Follow ``symbols`` too: all of them or, on any refusal, none."""
        followed = set(self._followed())
        already = [s for s in symbols if s in followed]
        new = tuple(s for s in symbols if s not in followed)
        if validate and new:
            listed = await asyncio.gather(*(self.runner.instrument_listed(s) for s in new))
            unknown = [s for s, ok in zip(new, listed) if ok is False]
            if unknown:
                raise StreamError(f"{self.exchange}: the venue does not list {', '.join(unknown)} "
                                  "(symbols are exchange-native, e.g. BTCUSDT, BTC-USDT)", "unknown_symbol")
            if any(ok is None for ok in listed):
                raise StreamError(f"{self.exchange}: could not get the venue's instrument list to check "
                                  f"{', '.join(new)}; nothing changed, try again", "unavailable")
        free = self.feed.free_slots()
        if len(new) > free:
            raise StreamsFull(f"{self.exchange}: max_symbols is {self.feed.writer.capacity} and {len(followed)} "
                              f"symbols are followed: room for {free} more, not {len(new)} "
                              f"(raise exchanges.{self.exchange}.max_symbols and restart the ingest)")
        self.adapter.check_new_symbols(new)
        now = self.clock()
        known = set(self.adapter.symbols)
        for s in new:
            if s not in known:
                self.adapter.add_symbol(s)
            self.feed.add_symbol(s, now)
        if new:
            self.runner.health.symbols_changed()
            self.runner.add_symbols(new)
            self._save()
            log.info("%s: subscribed %s", self.exchange, ", ".join(new))
        return {"ok": True, "exchange": self.exchange, "added": list(new), "already": already}

    def unsubscribe(self, symbols: tuple[str, ...]) -> dict:
        """Stop following ``symbols``: all of them or, when one is not followed, none."""
        followed = self._followed()
        absent = [s for s in symbols if s not in followed]
        if absent:
            raise StreamError(f"{self.exchange}: {', '.join(absent)} not followed (following: "
                              f"{', '.join(followed) or 'nothing'})", "not_followed")
        now = self.clock()
        for s in symbols:
            self.feed.remove_symbol(s, now)
        self.runner.remove_symbols(symbols)
        self._save()
        log.info("%s: unsubscribed %s", self.exchange, ", ".join(symbols))
        return {"ok": True, "exchange": self.exchange, "removed": list(symbols)}

    async def reset(self) -> dict:
        """Back to the configured symbols; the state file goes."""
        followed = self._followed()
        extra = tuple(s for s in followed if s not in self.configured)
        missing = tuple(s for s in self.configured if s not in followed)
        if extra:
            self.unsubscribe(extra)
        if missing:
            await self.subscribe(missing, validate=False)
        self._save()
        return {"ok": True, "exchange": self.exchange, "added": list(missing), "removed": list(extra)}

    def _save(self) -> None:
        save_changes(self.run_dir, self.unit, Changes.between(self.configured, self._followed()))

    # ------------------------------------------------------------------ listing
    def streams(self) -> dict:
        """Every stream with its state, since when, counters and rate (``pipeline streams --json``)."""
        configured = set(self.configured)
        rows = []
        for sym, f in self.feed.feeds.items():
            if f.removed and f.index < 0:
                continue  # its slot went to another symbol: only the state file remembers it
            c = f.counts
            rows.append({
                "exchange": self.exchange, "symbol": sym,
                "source": "config" if sym in configured else "runtime",
                "state": BookState(f.sync.book_state).name.lower(),
                "since_ns": f.state_since_ns, "added_ns": f.added_ns,
                "updates": c.updates, "trades": c.trades, "gaps": c.gaps, "resyncs": c.resyncs,
                "rate": round(self._rates.get(sym, 0.0), 2),
                "last_update_ns": max(c.last_update_ns, c.last_trade_ns),
                "connected": bool(c.connected),
            })
        followed = self._followed()
        return {"ok": True, "exchange": self.exchange, "configured": list(self.configured),
                "symbols": followed, "runtime_added": [s for s in followed if s not in configured],
                "runtime_removed": [s for s in self.configured if s not in followed],
                "max_symbols": self.feed.writer.capacity, "free": self.feed.free_slots(), "streams": rows}

    def sample_rates(self, dt: float) -> None:
        """Messages (book updates + trades) per second of each stream since the last sample."""
        for sym, f in self.feed.feeds.items():
            n = (f.counts.updates, f.counts.trades)
            prev = self._last_counts.get(sym)
            self._last_counts[sym] = n
            if prev is not None and dt > 0:
                self._rates[sym] = max(0.0, (n[0] - prev[0] + n[1] - prev[1]) / dt)

    # ------------------------------------------------------------------ the socket
    async def serve(self, path: Path, stop: asyncio.Event) -> None:
        """Answer the control socket at ``path`` until ``stop``; the socket file goes at the end."""
        server = await asyncio.start_unix_server(self._client, path=str(path), limit=MAX_REQUEST_BYTES)
        path.chmod(0o600)
        log.info("%s: control socket %s", self.exchange, path)
        t0 = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), RATE_INTERVAL)
                except asyncio.TimeoutError:
                    pass
                t1 = time.monotonic()
                self.sample_rates(t1 - t0)
                t0 = t1
        finally:
            server.close()
            path.unlink(missing_ok=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(_reply({"ok": False, "code": "bad_request",
                                         "error": f"request longer than {MAX_REQUEST_BYTES} bytes"}))
                    break
                if not line:
                    break
                try:
                    request = json.loads(line)
                except ValueError as exc:
                    reply = {"ok": False, "code": "bad_request", "error": f"malformed JSON: {exc}"}
                else:
                    reply = await self.handle(request)
                writer.write(_reply(reply))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def _reply(obj: dict) -> bytes:
    return json.dumps(obj).encode() + b"\n"
