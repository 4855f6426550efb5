"""Shared memory as the CSV sink reads it: book views and trade rings of each exchange.

Readers are cached per exchange and reopened when the ingest restarts (a new
segment, a new epoch) -- the snapshot store of the Clone pattern (docs/bus.md)
and the trade ring (pipeline/trade_ring.py).  An exchange with several ingest processes
(pipeline/shards.py) has segments per process: a symbol's are its process's (``unit_of``).
"""

from __future__ import annotations

from typing import Callable

from pipeline import shards
from pipeline.config import Config
from pipeline.errors import SharedMemoryError
from pipeline.pidfile import pid_alive
from pipeline.shm import BookReader, BookSnapshot, BookState
from pipeline.trade_ring import TradeRingReader


class ShmSources:
    """Snapshots and trade rings from shared memory, reopened when the ingest restarts."""

    def __init__(self, prefix: str, config: Config | None = None):
        """``config``: finds each symbol's ingest process when an exchange has several (None: one each)."""
        self.prefix = prefix
        self.config = config
        self._books: dict[str, BookReader] = {}
        self._rings: dict[str, TradeRingReader] = {}

    def book(self, exchange: str, symbol: str, epoch: int | None) -> BookSnapshot | None:
        """The view of ``symbol`` if it belongs to ``epoch`` (any epoch when None) and is usable."""
        unit = shards.unit_of(self.config, exchange, symbol) if self.config is not None else exchange
        reader = self._open(self._books, BookReader.open, unit, epoch)
        if reader is None:
            return None
        try:
            snap = reader.read(symbol)
        except SharedMemoryError:
            return None
        if epoch is not None and snap.epoch != epoch:
            return None
        return snap if snap.state is not BookState.SYNCING else None

    def ring(self, exchange: str, epoch: int | None) -> TradeRingReader | None:
        """The trade ring of ``exchange``'s ingest process (a unit name ``NAME.K`` for one shard's:
        ``rings_of``)."""
        return self._open(self._rings, TradeRingReader.open, exchange, epoch)

    def _open(self, cache: dict, opener: Callable, exchange: str, epoch: int | None):
        reader = cache.get(exchange)
        if reader is not None and (epoch is None or reader.epoch == epoch) and reader.pid and pid_alive(reader.pid):
            return reader
        if reader is not None:
            reader.close()
            cache.pop(exchange, None)
        try:
            reader = opener(self.prefix, exchange)
        except SharedMemoryError:
            return None
        if epoch is not None and reader.epoch != epoch:
            reader.close()
            return None
        cache[exchange] = reader
        return reader

    def close(self) -> None:
        for cache in (self._books, self._rings):
            for r in cache.values():
                r.close()
            cache.clear()


def rings_of(config: Config, rings, exchange: str, symbol: str):
    """The ring source of one trade stream: ``rings`` itself, or for a sharded exchange one that opens
    the ring of the symbol's ingest process (pipeline/shards.py) whatever exchange name it is given."""
    if rings is None:
        return None
    unit = shards.unit_of(config, exchange, symbol)
    if unit == exchange:
        return rings
    return lambda _exchange, epoch: rings(unit, epoch)
