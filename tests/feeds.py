"""Test helper: drive the real feed (ingest/feed.py) through its one entry point.

``FeedRun`` owns a real FeedBooks with a real shared-memory BookWriter and a bus
publisher that records instead of sending; frames go in as the runner passes them,
``feed.receive(feed.parse_frame(frame, recv_ns))``, and what the feed asks the runner
for is kept in ``requests``.  It re-implements nothing: every book, counter and
state it shows is the feed's own.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

from ingest.events import DepthConnected, VenueNotice
from ingest.feed import BusPublisher, FeedBooks
from ingest.sync import Action
from pipeline.shm import NAMES_DIR, BookReader, BookWriter, ShmSpace

_run_ids = itertools.count()


class Recorder(BusPublisher):
    """The bus publisher without sockets: keeps every message it is given, in order."""

    def __init__(self, batch: bool = False):
        super().__init__(None, None, batch)
        self.l2: list = []
        self.trades: list = []
        self.kinds: dict[str, list] = {}  # the other kinds (quote, derivative_ticker, ...) by kind name

    def send_l2(self, topic, msg) -> None:
        self.l2.append(msg)

    def send_trade(self, topic, msg) -> None:
        self.trades.append(msg)

    def send(self, kind, topic, msg) -> None:
        assert topic == kind.topic(msg.exchange, msg.symbol)
        self.kinds.setdefault(kind.name, []).append(msg)


class FeedRun:
    """adapter -> FeedBooks -> shared memory + recorded bus messages, for ``symbols``."""

    def __init__(self, adapter, symbols, depth: int = 50, exchange: str = "test", prefix: str | None = None,
                 trade_ring=None, **feed_kw):
        self.symbols = tuple(symbols)
        self._run_dir = tempfile.mkdtemp(prefix="l2pf", dir="/tmp")  # where the segment's name is published
        self.prefix = ShmSpace(prefix or f"l2pf{os.getpid()}x{next(_run_ids)}", Path(self._run_dir) / NAMES_DIR)
        self.writer = BookWriter(self.prefix, exchange, list(self.symbols), depth, epoch=1)
        self.bus = Recorder()
        self.feed = FeedBooks(exchange, adapter, self.writer, self.bus, epoch=1, trade_ring=trade_ring, **feed_kw)
        self.exchange = exchange
        self.requests: list = []
        self.notices: list[VenueNotice] = []
        self.receive(DepthConnected(self.symbols))

    # ------------------------------------------------------------------ in
    def receive(self, ev) -> None:
        for out in self.feed.receive(ev) or ():
            (self.notices if isinstance(out, VenueNotice) else self.requests).append(out)

    def frame(self, data, recv_ns: int = 0) -> None:
        self.receive(self.feed.parse_frame(data, recv_ns))

    # ------------------------------------------------------------------ out
    @property
    def resubscribes(self) -> list[str]:
        return [r.symbol for r in self.requests if r.action is Action.RESUBSCRIBE]

    @property
    def fetches(self) -> list[str]:
        return [r.symbol for r in self.requests if r.action is Action.FETCH_SNAPSHOT]

    def counts(self, symbol: str):
        return self.feed.feeds[symbol].counts

    def book(self, symbol: str):
        return self.feed.feeds[symbol].book

    def sync(self, symbol: str):
        return self.feed.feeds[symbol].sync

    def live(self, symbol: str) -> bool:
        return self.feed.live(symbol)

    @property
    def trades(self) -> list:
        return self.bus.trades

    @property
    def unknown(self) -> int:
        return self.feed.counts.unknown_frames

    def shm(self, symbol: str, depth: int | None = None):
        """(view snapshot, stats dict) as a reader in another process would see them now
        (the counters as of a stats-loop copy, done here first)."""
        self.feed.copy_stats()
        reader = BookReader.open(self.prefix, self.exchange)
        try:
            return reader.read(symbol, depth=depth), reader.stats(symbol)
        finally:
            reader.close()

    def close(self) -> None:
        self.writer.close(unlink=True)
        for p in Path("/dev/shm").glob(self.prefix + "_*"):
            p.unlink(missing_ok=True)
        shutil.rmtree(self._run_dir, ignore_errors=True)

    def __enter__(self) -> "FeedRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
