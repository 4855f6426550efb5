"""Shared memory as the CSV sink reads it: book views and trade rings of each exchange.

Readers are cached per exchange and reopened when the ingest restarts (a new
segment, a new epoch) -- the snapshot store of the Clone pattern (docs/bus.md)
and the trade ring (pipeline/trade_ring.py).
"""

from __future__ import annotations

from typing import Callable

from pipeline.errors import SharedMemoryError
from pipeline.pidfile import pid_alive
from pipeline.shm import BookReader, BookSnapshot, BookState
from pipeline.trade_ring import TradeRingReader


class ShmSources:
    """Snapshots and trade rings from shared memory, reopened when the ingest restarts."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._books: dict[str, BookReader] = {}
        self._rings: dict[str, TradeRingReader] = {}

    def book(self, exchange: str, symbol: str, epoch: int | None) -> BookSnapshot | None:
        """The view of ``symbol`` if it belongs to ``epoch`` (any epoch when None) and is usable."""
        reader = self._open(self._books, BookReader.open, exchange, epoch)
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
