"""Shared-memory trade rings: the recent trades of each stream, indexed by bus seq.

The ingest process keeps the last ``capacity`` trades of every (exchange, symbol)
trades stream in one segment per exchange, so a consumer that missed trades on the
bus (it was restarting, or too slow and lost messages past the high-water mark)
can fetch them by seq.  The CSV sink uses it to backfill gaps: a restart within
the ring's span loses no trade.

Layout (native byte order, 8-byte aligned; LAYOUT_VERSION guards changes)::

    segment header   i64[HEADER_WORDS]  magic, version, n_symbols, capacity, pid,
                                        epoch, created_ns, slot_bytes
    exchange name    32 bytes
    symbol table     n_symbols x 32 bytes (ascii, NUL padded)
    per symbol:
        head         i64[8]             [0] seq of the newest trade written (0: none)
        slots        capacity x SLOT_BYTES, trade seq ``s`` in slot ``s % capacity``:
            seq          i64    commit word: the seq the slot holds, <= 0 while written
            ts_exchange  i64    venue trade time, microseconds
            ts_received  i64    local receive time, microseconds
            price        f64
            amount       f64
            side         u8     0 unknown, 1 buy, 2 sell (taker side)
            id_len       u8     length of trade_id in bytes; 255: too long, not kept
            flags        u8     bit 0: a liquidation (schema.Trade.liquidation); was padding
                                before, so a reader that ignores it reads every trade right
            (pad)        5 bytes
            trade_id     ID_BYTES bytes (utf-8)

One writer (the ingest), any number of readers; readers never block the writer.
The writer first sets the slot's commit word to 0, writes the fields, then stores
the seq in the commit word and finally in ``head``.  A reader copies the slot and
accepts it only when the commit word held the wanted seq both before and after the
copy; otherwise the slot is being rewritten (or was overwritten by a newer trade,
``seq <= head - capacity``) and the trade is gone.  Like pipeline/shm.py the commit
words are single aligned 8-byte stores; readers map ``/dev/shm/NAME`` read-only
and never register it with the resource tracker.

Like the book segment it has ``max_symbols`` streams; a runtime addition that takes a
free or removed symbol's place renames it under the name-table generation word
``H_NAMES_GEN`` (odd while renaming, pipeline/shm.py) and clears its head and commit words
first, so no reader finds the old symbol's trades under the new name.

Named like the book segments (pipeline/shm.py "Names"), with the key ``<unit>_trades``:
``<prefix>_<unit>_trades_<random>``, published in ``RUN_DIR/shm/<unit>_trades``.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from pipeline import schema
from pipeline.errors import SharedMemoryError
from pipeline.shm import NAME_BYTES, SegmentCreator, SegmentReader, read_names, write_name, write_names

MAGIC = int.from_bytes(b"L2TRADE1", "little")
LAYOUT_VERSION = 1
HEADER_WORDS = 16
HEAD_WORDS = 8
ID_BYTES = 64
SLOT_BYTES = 48 + ID_BYTES
ID_TOO_LONG = 255
DEFAULT_CAPACITY = 16384
MAX_CAPACITY = 1 << 22

H_MAGIC, H_VERSION, H_NSYM, H_CAPACITY, H_PID, H_EPOCH, H_CREATED_NS, H_SLOT_BYTES, H_NAMES_GEN = range(9)

_SIDE_CODE = {"unknown": 0, "buy": 1, "sell": 2}
_SIDE_NAME = ("unknown", "buy", "sell")
# the fields after the commit word; the commit word is stored apart (see module docstring)
_FIELDS = struct.Struct(f"qqddBBB5x{ID_BYTES}s")
FLAG_LIQUIDATION = 1


def ring_key(unit: str) -> str:
    """The key of a unit's trade ring (its name file under RUN_DIR/shm; pipeline/shm.py "Names")."""
    return f"{unit}_trades"


@dataclass(frozen=True)
class _Layout:
    n_symbols: int
    capacity: int

    @property
    def symbol_bytes(self) -> int:
        return HEAD_WORDS * 8 + self.capacity * SLOT_BYTES

    @property
    def symbols_offset(self) -> int:
        raw = HEADER_WORDS * 8 + NAME_BYTES + self.n_symbols * NAME_BYTES
        return (raw + 63) // 64 * 64

    @property
    def size(self) -> int:
        return self.symbols_offset + self.n_symbols * self.symbol_bytes


class _Stream:
    """numpy views onto one symbol's head word and slot commit words."""

    __slots__ = ("head", "commits", "slots_offset")

    def __init__(self, buf, offset: int, capacity: int):
        self.head = np.ndarray((HEAD_WORDS,), np.int64, buf, offset)
        self.slots_offset = offset + HEAD_WORDS * 8
        self.commits = np.ndarray((capacity,), np.int64, buf, self.slots_offset, strides=(SLOT_BYTES,))


def _streams(buf, layout: _Layout) -> list[_Stream]:
    return [_Stream(buf, layout.symbols_offset + i * layout.symbol_bytes, layout.capacity)
            for i in range(layout.n_symbols)]


class TradeRingWriter(SegmentCreator):
    """The single writer of one exchange's trade ring (the ingest process)."""

    def __init__(self, prefix: str, exchange: str, symbols: list[str] | tuple[str, ...], capacity: int, epoch: int,
                 n_slots: int | None = None, unit: str | None = None):
        """``n_slots``: streams in the ring (``max_symbols``; at least ``len(symbols)``).  ``unit``: as
        BookWriter's (one shard's ring: pipeline/shards.py)."""
        if not 1 <= capacity <= MAX_CAPACITY:
            raise SharedMemoryError(f"trade ring capacity {capacity} outside 1..{MAX_CAPACITY}")
        self.exchange = exchange
        n = max(len(symbols), n_slots or 0)
        self.symbols: list[str] = list(symbols) + [""] * (n - len(symbols))
        self.capacity = capacity
        self.epoch = epoch
        self.layout = _Layout(n, capacity)
        self._seg = self._create_segment(prefix, ring_key(unit or exchange), self.layout.size, TradeRingReader)
        buf = self._seg.buf
        self._buf = buf
        self.header = np.ndarray((HEADER_WORDS,), np.int64, buf, 0)
        self.header[:] = 0
        write_names(buf, HEADER_WORDS * 8, exchange, self.symbols)
        self.streams = _streams(buf, self.layout)
        h = self.header
        h[H_VERSION], h[H_NSYM], h[H_CAPACITY], h[H_PID] = LAYOUT_VERSION, n, capacity, os.getpid()
        h[H_EPOCH], h[H_CREATED_NS], h[H_SLOT_BYTES] = epoch, time.time_ns(), SLOT_BYTES
        h[H_MAGIC] = np.int64(np.uint64(MAGIC).astype(np.int64))  # last: readers check it
        self._publish()

    def assign(self, i: int, symbol: str) -> None:
        """Give stream ``i`` to ``symbol`` (module docstring): cleared, then renamed."""
        h = self.header
        h[H_NAMES_GEN] += 1  # odd: renaming
        st = self.streams[i]
        st.head[0] = 0
        st.commits[:] = 0
        write_name(self._buf, HEADER_WORDS * 8, i, symbol)
        self.symbols[i] = symbol
        h[H_NAMES_GEN] += 1  # even

    def append(self, i: int, seq: int, ts_exchange: int, ts_received: int, price: float, amount: float,
               side: str, trade_id: str, liquidation: bool = False) -> None:
        """Store trade ``seq`` (>= 1, contiguous) of symbol ``i``; it overwrites ``seq - capacity``."""
        st = self.streams[i]
        j = seq % self.capacity
        raw = trade_id.encode()
        n = len(raw)
        if n > ID_BYTES:
            n, raw = ID_TOO_LONG, b""
        commits = st.commits
        commits[j] = 0  # being written
        _FIELDS.pack_into(self._buf, st.slots_offset + j * SLOT_BYTES + 8, ts_exchange, ts_received, price, amount,
                          _SIDE_CODE.get(side, 0), n, FLAG_LIQUIDATION if liquidation else 0, raw)
        commits[j] = seq
        st.head[0] = seq

    def close(self, unlink: bool = True) -> None:
        self.header = None
        self.streams = []
        self._buf = None
        self._seg.close()
        if unlink:
            self._unlink()


class TradeRingReader(SegmentReader):
    """Read-only access to one exchange's trade ring.  Never blocks the writer.

    Usage::

        ring = TradeRingReader.open(config.shm_prefix, "sim")
        ring.epoch, ring.head("BTCUSDT")
        trade = ring.read("BTCUSDT", seq)     # schema.Trade, or None when gone
    """

    key_for = staticmethod(ring_key)

    def __init__(self, seg):
        self._seg = seg
        buf = seg.buf
        self._buf = buf
        self.header = np.ndarray((HEADER_WORDS,), np.int64, buf, 0)
        h = self.header
        if int(np.int64(h[H_MAGIC]).astype(np.uint64)) != MAGIC or h[H_VERSION] != LAYOUT_VERSION \
                or h[H_SLOT_BYTES] != SLOT_BYTES:
            seg.close()
            raise SharedMemoryError(f"trade ring {seg.name!r} has no valid header (being created, or another layout)")
        self.capacity = int(h[H_CAPACITY])
        n = int(h[H_NSYM])
        self.layout = _Layout(n, self.capacity)
        if seg.size < self.layout.size:
            seg.close()
            raise SharedMemoryError(f"trade ring {seg.name!r} is truncated")
        self._names_gen = -1
        self._refresh_names()
        self.streams = _streams(buf, self.layout)

    def _refresh_names(self) -> None:
        h = self.header
        for attempt in range(100000):
            gen = int(h[H_NAMES_GEN])
            if gen == self._names_gen:
                return
            if not gen & 1:
                exchange, names = read_names(self._buf, HEADER_WORDS * 8, self.layout.n_symbols)
                if int(h[H_NAMES_GEN]) == gen:
                    self.exchange, self._names_gen = exchange, gen
                    self.symbols = tuple(s for s in names if s)
                    self._index = {s: i for i, s in enumerate(names) if s}
                    return
            if attempt & 63 == 63:
                time.sleep(0)
        raise SharedMemoryError("could not read a consistent trade-ring name table")

    def _stream(self, symbol: str) -> _Stream:
        self._refresh_names()
        try:
            return self.streams[self._index[symbol]]
        except KeyError:
            raise SharedMemoryError(f"symbol {symbol!r} is not in the trade ring of {self.exchange!r}") from None

    def head(self, symbol: str) -> int:
        """Seq of the newest trade of ``symbol`` (0: none yet)."""
        return int(self._stream(symbol).head[0])

    def oldest(self, symbol: str) -> int:
        """Lowest seq that may still be in the ring (a slot being rewritten may already be gone)."""
        head = self.head(symbol)
        return max(1, head - self.capacity + 1) if head else 1

    def read(self, symbol: str, seq: int) -> schema.Trade | None:
        """Trade ``seq`` of ``symbol``, or None when it was overwritten, not written yet or too long to keep.

        A slot only ever moves on to newer seqs, so a commit word other than ``seq``
        before or after the copy means the trade is not (or no longer) there.
        """
        st = self._stream(symbol)
        j = seq % self.capacity
        commits = st.commits
        if seq < 1 or int(commits[j]) != seq:
            return None
        ts_ex, ts_rx, price, amount, side, n, flags, raw = _FIELDS.unpack_from(self._buf, st.slots_offset + j * SLOT_BYTES + 8)
        if int(commits[j]) != seq or n == ID_TOO_LONG:
            return None
        return schema.Trade(exchange=self.exchange, symbol=symbol, epoch=self.epoch, seq=seq,
                            ts_exchange=ts_ex, ts_received=ts_rx, price=price, amount=amount,
                            side=_SIDE_NAME[side] if side < 3 else "unknown",
                            trade_id=raw[:n].decode(errors="replace"), liquidation=bool(flags & FLAG_LIQUIDATION))

    def read_range(self, symbol: str, first: int, last: int) -> Iterator[tuple[int, schema.Trade | None]]:
        """(seq, trade or None) for seq in first..last."""
        for seq in range(first, last + 1):
            yield seq, self.read(symbol, seq)

    def find(self, symbol: str, trade_id: str, ts_received: int | None = None) -> int | None:
        """Seq of the newest trade in the ring with this id (and receive time), or None."""
        head = self.head(symbol)
        for seq in range(head, self.oldest(symbol) - 1, -1):
            t = self.read(symbol, seq)
            if t is not None and t.trade_id == trade_id and (ts_received is None or t.ts_received == ts_received):
                return seq
        return None

    def close(self) -> None:
        self.streams = []
        self._buf = None
        super().close()
