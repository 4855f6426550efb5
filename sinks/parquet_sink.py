"""``pipeline sink parquet``: record the bus as hive-partitioned Parquet datasets (pyarrow).

The same streams as the CSV sink (sinks/recorder.py: book trackers resynced from shared
memory, trades each once with gaps filled from the trade ring) write the same rows
(sinks/tardis.py ``TupleRows``, the typed twin of the CSV ``RowWriter``), so a Parquet
dataset and the CSV files of one bus stream hold the same values in the same units.

Layout (docs/parquet.md)::

    DIR/exchange=EXCHANGE/datatype=DATATYPE/date=YYYY-MM-DD/part-START_US.parquet

- one dataset per tardis datatype (books, trades, and the quotes, derivative_ticker and
  liquidations of issue 13, each with its CSV columns: sinks/tardis.py ``COLUMNS``); EXCHANGE
  the tardis-style id of the CSV files;
  START_US the sink clock (microseconds) when the file's first row was buffered, zero
  padded, so the file names of a partition sort in time order;
- columns: the datatype's tardis columns without ``exchange`` (hive readers take it from the
  path; a column stored in both places makes pyarrow's and pandas' schema merge fail),
  typed: ``timestamp``/``local_timestamp`` ``timestamp[us, UTC]``, prices and amounts
  float64, ``side`` and ``symbol`` dictionary-encoded strings, ``is_snapshot`` bool; a value
  the venue has not stated (an empty CSV field) is null; zstd by default;
- rows of an (exchange, datatype) are buffered and written as one file every
  ``flush_interval_s``, or sooner once ``flush_rows`` are buffered, and at every UTC
  midnight (the date is the sink clock's day when the file's first row was buffered).
  A file is written as ``.part-START_US.parquet.tmp`` (readers skip names starting with
  ``.``), fsynced, then renamed into place and the directory fsynced: a reader sees a
  whole file or none, and a crash loses at most the rows of one flush window, which the
  next start recovers from shared memory (a snapshot block) and the trade ring; quotes,
  tickers and liquidations have no such source: their rows of that window are lost (and a
  seq gap on the bus is counted as ``other_gaps``, as the CSV sink does);
- every book file starts with a snapshot block of each of its symbols' books (the CSV
  sink's block, closed by the same restating row), so any one file rebuilds the books on
  its own; a gap or a new ingest epoch starts another block, as in the CSV files.  A
  window in which no book changed writes no file (the next file starts with blocks);
- on start, ``.tmp`` leftovers of a crash are removed, every book gets a block from shared
  memory, and trades written since the last durable one (``.parquet-sink-state.json``,
  saved after each trades file is in place) are backfilled from the trade ring;
- with ``upload_url``, every file put in place is copied through fsspec (S3, GCS, a local
  directory...) by a background thread, as ``NAME.tmp`` then moved to its name, with
  capped exponential backoff between attempts; at start, local files missing in the store
  are queued again.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Callable

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import zmq

from pipeline import bus, schema, shards
from pipeline.config import Config, ExchangeConfig
from pipeline.errors import ConfigError
from pipeline.pidfile import PidFile
from sinks.parquet_settings import SINK_NAME, parquet_config
from sinks.recorder import BookStream, SinkCounters, TradeStream
from sinks.sources import ShmSources, rings_of
from sinks.status import process_name, stats_path, write_stats
from sinks.tardis import BOOK, COLUMNS, OTHER_KINDS, TRADES, TupleRows, day_of, exchange_id, next_midnight_us

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 1.0
CATCH_UP_S = 1.0  # streams compared with shared memory this often (sinks/recorder.py catch_up)
BATCH_S = 0.005
MAX_UNWRITTEN_ROWS = 20_000_000  # rows of files that failed to write, kept for retries; then dropped
STATE_FILE = ".parquet-sink-state.json"
MARKS_KEY = "l2pipeline.trade_marks"  # a trades file's metadata: symbol -> [epoch, seq, id, local_timestamp]

TIMESTAMP = pa.timestamp("us", tz="UTC")
_STRING_DICT = pa.dictionary(pa.int32(), pa.string())
_SIDE_DICT = pa.dictionary(pa.int8(), pa.string())
_NAMED_TYPES = {"symbol": _STRING_DICT, "side": _SIDE_DICT, "is_snapshot": pa.bool_(), "id": pa.string()}


def column_type(name: str) -> pa.DataType:
    """The Arrow type of a tardis column, by its name: times as timestamp[us, UTC], the
    few text columns as (dictionary) strings, every other column (prices, sizes, rates) float64."""
    if name.endswith("timestamp"):
        return TIMESTAMP
    return _NAMED_TYPES.get(name, pa.float64())


def arrow_schema(datatype: str) -> pa.Schema:
    """The schema of a datatype's files: its tardis columns without ``exchange`` (the partition)."""
    return pa.schema([(name, column_type(name)) for name in COLUMNS[datatype] if name != "exchange"])


_decode_l2 = msgspec.msgpack.Decoder(schema.L2Update).decode


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Buffer:
    """The rows of one future file of one (exchange, datatype)."""

    exchange: str  # config name
    datatype: str
    started_us: int
    segments: list = field(default_factory=list)  # (symbol, rows) in arrival order
    rows: int = 0
    opening: int = 0  # rows of the opening snapshot blocks (a file of only those is not written)
    marks: dict = field(default_factory=dict)  # trades: symbol -> durable mark once the file is in place

    def add(self, symbol: str, rows: list) -> None:
        self.segments.append((symbol, rows))
        self.rows += len(rows)


def build_table(datatype: str, segments) -> pa.Table:
    """One Arrow table from (symbol, row tuples) segments (rows as sinks/tardis.py TupleRows makes them)."""
    sch = arrow_schema(datatype)
    symbols: list[str] = []
    rows: list[tuple] = []
    for symbol, part in segments:
        symbols.extend([symbol] * len(part))
        rows.extend(part)
    arrays = [pa.array(symbols, type=sch.field(0).type)]
    # one column at a time, at C speed (zip(*rows) over a million rows costs several times more)
    arrays += [pa.array(list(map(itemgetter(i), rows)), type=sch.field(i + 1).type) for i in range(len(sch) - 1)]
    return pa.Table.from_arrays(arrays, schema=sch)


class Uploader:
    """Copies closed files to ``upload_url`` through fsspec in a background thread, with retries.

    Each file goes to ``URL/RELATIVE_PATH.tmp`` first and is then moved to its name, so a reader
    of the store never sees a partial object where the stores make a move atomic (local, most
    object stores write whole objects anyway)."""

    def __init__(self, url: str, root: Path, retries: int, sleep: Callable[[float], bool] | None = None):
        import fsspec

        self.fs, self.base = fsspec.core.url_to_fs(url)
        self.base = self.base.rstrip("/")
        self.root = root
        self.retries = retries
        self.queue: queue.Queue[Path | None] = queue.Queue()
        self._stop = threading.Event()
        self._sleep = sleep or (lambda s: self._stop.wait(s))
        self.uploaded = 0
        self.failed = 0  # files given up after every retry
        self.retried = 0
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="upload", daemon=True)

    def remote(self, path: Path) -> str:
        return f"{self.base}/{path.relative_to(self.root).as_posix()}"

    def start(self, existing: list[Path]) -> None:
        """Queue the local files the store does not have yet, then start the thread."""
        try:
            have = set(self.fs.find(self.base)) if self.fs.exists(self.base) else set()
        except Exception as exc:  # noqa: BLE001 -- any store error: upload everything, retried as usual
            log.warning("parquet sink: cannot list %s (%s); queueing every local file", self.base, exc)
            have = set()
        have = {h.rstrip("/") for h in have} | {self.fs._strip_protocol(h) for h in have}
        for path in existing:
            r = self.remote(path)
            if r not in have and self.fs._strip_protocol(r) not in have:
                self.queue.put(path)
        self._thread.start()

    def put(self, path: Path) -> None:
        self.queue.put(path)

    def pending(self) -> int:
        return self.queue.qsize()

    def _run(self) -> None:
        while True:
            path = self.queue.get()
            if path is None:
                return
            self._upload(path)

    def _upload(self, path: Path) -> None:
        target = self.remote(path)
        delay = 0.5
        for attempt in range(1, self.retries + 1):
            try:
                self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                self.fs.put_file(str(path), target + ".tmp")
                self.fs.mv(target + ".tmp", target)
                self.uploaded += 1
                return
            except Exception as exc:  # noqa: BLE001 -- every store raises its own errors
                self.last_error = f"{target}: {exc}"
                if attempt == self.retries:
                    break
                self.retried += 1
                if attempt == 1:
                    log.warning("parquet sink: upload of %s failed (%s); retrying", path.name, exc)
                if self._sleep(delay):
                    return  # stopping
                delay = min(delay * 2, 30.0)
        self.failed += 1
        log.error("parquet sink: gave up uploading %s after %d attempts: %s", path, self.retries, self.last_error)

    def close(self, wait_s: float = 10.0) -> None:
        """Finish the queue (at most ``wait_s``), then stop."""
        self.queue.put(None)
        if self._thread.is_alive():
            self._thread.join(wait_s)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)


class ParquetSink:
    """Streams, buffers, files and counters of the sink; sockets live in ``run_sink``."""

    def __init__(self, config: Config, snapshots=None, rings=None, clock: Callable[[], int] = _now_us):
        self.config = config
        self.settings = parquet_config(config)
        self.dir = Path(self.settings.dir)
        self.clock = clock
        names = self.settings.exchanges or tuple(config.exchanges)
        self.exchanges = {n: config.exchange(n) for n in names}
        self.ids = {n: self._exchange_id(n, ex) for n, ex in self.exchanges.items()}
        self._check_names()
        self.counters = SinkCounters(unit_of=lambda ex, sym: shards.unit_of(config, ex, sym))
        snapshots = snapshots or (lambda ex, sym, epoch: None)
        rings = rings or (lambda ex, epoch: None)
        self.snapshots = snapshots
        now = clock()
        self.books: dict[tuple[str, str], BookStream] = {}
        self.trades: dict[tuple[str, str], TradeStream] = {}
        self.rows: dict[tuple[str, str], TupleRows] = {}
        self.other_seq: dict[tuple[str, str, str], tuple[int, int]] = {}  # (kind, ex, sym) -> (epoch, seq)
        self.other_rows = 0  # quotes, tickers, liquidations buffered
        self.other_gaps = 0  # ... that the bus lost (seq gaps): not in the files
        for name, ex in self.exchanges.items():
            for sym in ex.symbols:
                rows = self.rows[(name, sym)] = TupleRows(self.ids[name], sym)
                self.books[(name, sym)] = BookStream(name, sym, rows, snapshots, self.counters)
                self.trades[(name, sym)] = TradeStream(name, sym, rows, rings_of(config, rings, name, sym), self.counters,
                                                       since_us=now)
        self.buffers: dict[tuple[str, str], Buffer] = {}
        self._unwritten: dict[tuple[str, str], list[Buffer]] = {}  # sealed, failed to write, retried in order
        self._midnight = next_midnight_us(now)
        self._next_flush = now + self._flush_us()
        self._next_catch_up = now
        self._state: dict[str, dict] = {}
        self._state_dirty = False
        self.uploader: Uploader | None = None
        self.files_written = 0
        self.rows_written = 0
        self.bytes_written = 0
        self.rows_dropped = 0
        self.partials_removed = 0
        self.errors = 0
        self.last_error = ""
        self.last_write_us = 0
        self.started_us = now
        self.unknown_messages = 0
        self._failing = False

    @staticmethod
    def _exchange_id(name: str, ex: ExchangeConfig) -> str:
        try:
            return exchange_id(name, ex.tardis_exchange, ex.adapter)
        except ValueError as exc:
            raise ConfigError(f"exchanges.{name}.tardis_exchange", str(exc)) from None

    def _check_names(self) -> None:
        seen: dict[str, str] = {}
        for name in self.exchanges:
            if self.ids[name] in seen:
                raise ConfigError(f"exchanges.{name}.tardis_exchange",
                                  f"its datasets would mix with exchange {seen[self.ids[name]]!r} (both are "
                                  f"{self.ids[name]!r}); set a distinct tardis_exchange")
            seen[self.ids[name]] = name

    def _flush_us(self) -> int:
        return int(self.settings.flush_interval_s * 1e6)

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        """Remove partial files of a crash, snapshot every book, resume trades from the ring."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._error(self.dir, exc)
        self._sweep_partials()
        self._load_state()
        now = self.clock()
        for name in self.exchanges:
            for dt in (BOOK, TRADES, *(datatype for datatype, _ in OTHER_KINDS.values())):
                self.buffers[(name, dt)] = Buffer(name, dt, now)  # an empty buffer writes no file
        for (name, sym), stream in self.trades.items():
            saved = self._state.get(f"{name}|{sym}") or {}
            position = None
            if isinstance(saved.get("epoch"), int) and isinstance(saved.get("seq"), int):
                position = (saved["epoch"], saved["seq"])
            self._add(name, TRADES, sym, stream.resume(saved.get("id"), saved.get("local_timestamp"), position))
        for (name, sym), stream in self.books.items():
            self._add(name, BOOK, sym, stream.catch_up(self.snapshots(name, sym, None)))
        for name in self.exchanges:
            buf = self.buffers[(name, BOOK)]
            buf.opening = buf.rows
        for (name, sym), stream in self.trades.items():
            self._add(name, TRADES, sym, stream.catch_up())
        self._next_catch_up = now + int(CATCH_UP_S * 1e6)
        if self.settings.upload_url:
            self.uploader = Uploader(self.settings.upload_url, self.dir, self.settings.upload_retries)
            self.uploader.start(sorted(self.dir.rglob("part-*.parquet")))
        log.info("parquet sink: recording %d books and trade streams of %s into %s (a file every %.1fs)",
                 len(self.books), ", ".join(self.exchanges), self.dir, self.settings.flush_interval_s)

    def _sweep_partials(self) -> None:
        for path in self.dir.rglob(".part-*.tmp"):
            try:
                path.unlink()
                self.partials_removed += 1
            except OSError as exc:
                self._error(path, exc)
        if self.partials_removed:
            log.info("parquet sink: removed %d partial files of an earlier run", self.partials_removed)

    # --------------------------------------------------------------- messages
    def _add(self, name: str, datatype: str, symbol: str, rows) -> None:
        if rows:
            buf = self.buffers[(name, datatype)]
            buf.add(symbol, rows)
            if buf.rows >= self.settings.flush_rows:
                self.seal(name, datatype)

    def on_l2(self, payload: bytes) -> None:
        try:
            msg = _decode_l2(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.unknown_messages += 1
            return
        stream = self.books.get((msg.exchange, msg.symbol))
        if stream is None:
            self.unknown_messages += 1
            return
        rows = stream.on_l2(msg)
        if rows:
            self._add(msg.exchange, BOOK, msg.symbol, rows)

    def on_trade(self, payload: bytes) -> None:
        try:
            msg = schema.decode_trade(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.unknown_messages += 1
            return
        stream = self.trades.get((msg.exchange, msg.symbol))
        if stream is None:
            self.unknown_messages += 1
            return
        rows = stream.on_trade(msg)
        if rows:
            self._add(msg.exchange, TRADES, msg.symbol, rows)

    def on_gap(self, payload: bytes) -> None:
        """A ``trade_gap`` marker (trades the venue skipped): counted; the trades stream holds its
        rows until the REST backfill came, so they are written in id order (sinks/recorder.py)."""
        try:
            msg = schema.decoder(schema.TRADE_GAP)(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.unknown_messages += 1
            return
        stream = self.trades.get((msg.exchange, msg.symbol))
        if stream is None:
            self.unknown_messages += 1
            return
        rows = stream.on_gap(msg)
        if rows:
            self._add(msg.exchange, TRADES, msg.symbol, rows)

    def on_other(self, kind: schema.EventKind, payload: bytes) -> None:
        """A quote, derivative ticker or liquidation: one row of its datatype's dataset (a spot
        symbol has no ticker rows, so no ticker files). No snapshot repairs these kinds: a seq gap
        is counted, not filled."""
        datatype, method = OTHER_KINDS[kind]
        try:
            msg = schema.decoder(kind)(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.unknown_messages += 1
            return
        key = (msg.exchange, msg.symbol)
        rows = self.rows.get(key)
        if rows is None:
            self.unknown_messages += 1
            return
        stream = (kind.name, *key)
        last = self.other_seq.get(stream)
        if last is not None and last[0] == msg.epoch and msg.seq != last[1] + 1:
            self.other_gaps += 1
        self.other_seq[stream] = (msg.epoch, msg.seq)
        self.other_rows += 1
        self._add(msg.exchange, datatype, msg.symbol, getattr(rows, method)(msg))

    # ------------------------------------------------------------------ timers
    def tick(self) -> float:
        """Catch up with shared memory, write files when due (and at midnight); seconds to the next due time."""
        now = self.clock()
        if now >= self._next_catch_up:
            self.catch_up()
            self._next_catch_up = now + int(CATCH_UP_S * 1e6)
        if now >= self._next_flush or now >= self._midnight:
            self.flush_all()
            self._next_flush = now + self._flush_us()
            if now >= self._midnight:
                self._midnight = next_midnight_us(now)
        return max(0.0, (min(self._next_flush, self._midnight, self._next_catch_up) - now) / 1e6)

    def catch_up(self, final: bool = False) -> None:
        """Compare every stream with shared memory: what the bus lost at the end of a burst
        (``final``: at a stop, everything the trade rings hold past each stream)."""
        for (name, sym), stream in self.trades.items():
            self._add(name, TRADES, sym, stream.catch_up(final))
        for (name, sym), stream in self.books.items():
            self._add(name, BOOK, sym, stream.catch_up(self.snapshots(name, sym, None)))

    def flush_all(self) -> None:
        for name, dt in list(self.buffers):
            self.seal(name, dt)
        self._save_state()

    def seal(self, name: str, datatype: str) -> None:
        """Close the buffer of (exchange, datatype) as a file and start the next one (books: with blocks)."""
        key = (name, datatype)
        old = self.buffers[key]
        now = max(self.clock(), old.started_us + 1)  # file names stay unique and in order, whatever the clock
        new = self.buffers[key] = Buffer(name, datatype, now)
        if datatype == BOOK:
            for sym in self.exchanges[name].symbols:
                new.add(sym, self.books[(name, sym)].new_file())
            new.opening = new.rows
        elif datatype == TRADES:
            old.marks = {sym: (*self.trades[(name, sym)].position, *self.trades[(name, sym)].last_written)
                         for sym in self.exchanges[name].symbols}
        waiting = self._unwritten.setdefault(key, [])
        if old.rows > old.opening:
            waiting.append(old)
        elif datatype == TRADES and not waiting:
            self._durable(old)  # nothing new: the marks are what is on disk already
        while waiting:
            if not self._write(waiting[0]):
                if sum(b.rows for b in waiting) > MAX_UNWRITTEN_ROWS:
                    self._drop(key)
                return
            self._durable(waiting.pop(0))

    def _durable(self, buf: Buffer) -> None:
        if buf.datatype != TRADES:
            return
        for sym, mark in buf.marks.items():
            if mark[0] is not None:
                self._state[f"{buf.exchange}|{sym}"] = {"epoch": mark[0], "seq": mark[1], "id": mark[2],
                                                        "local_timestamp": mark[3]}
                self._state_dirty = True

    def path_of(self, buf: Buffer) -> Path:
        part = (self.dir / f"exchange={self.ids[buf.exchange]}" / f"datatype={buf.datatype}"
                / f"date={day_of(buf.started_us)}")
        name = f"part-{buf.started_us:016d}.parquet"
        return part / name

    def _write(self, buf: Buffer) -> bool:
        """Write one file: ``.NAME.tmp``, fsync, rename, fsync the directory. False on an OSError."""
        path = self.path_of(buf)
        tmp = path.with_name(f".{path.name}.tmp")
        s = self.settings
        try:
            table = build_table(buf.datatype, buf.segments)
            if buf.marks:  # trades: where each stream is once this file is in place (read back at start)
                table = table.replace_schema_metadata({MARKS_KEY: json.dumps(buf.marks)})
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, str(tmp), compression=None if s.compression == "none" else s.compression,
                           compression_level=s.compression_level, row_group_size=s.flush_rows)
            _fsync(tmp)
            os.replace(tmp, path)
            _fsync(path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self._error(path, exc)
            return False
        if self._failing:
            log.info("parquet sink: writing files again")
            self._failing = False
        self.files_written += 1
        self.rows_written += buf.rows
        self.bytes_written += path.stat().st_size
        self.last_write_us = self.clock()
        if self.uploader is not None:
            self.uploader.put(path)
        return True

    def _drop(self, key: tuple[str, str]) -> None:
        """Give up the files of ``key`` that could not be written: trades are refetched from the ring
        from the last durable one, books start over with blocks (every file starts with them)."""
        waiting = self._unwritten.pop(key, [])
        dropped = sum(b.rows for b in waiting) + self.buffers[key].rows
        self.rows_dropped += dropped
        name, datatype = key
        self.buffers[key] = Buffer(name, datatype, self.clock())
        if datatype == BOOK:
            buf = self.buffers[key]
            for sym in self.exchanges[name].symbols:
                buf.add(sym, self.books[(name, sym)].new_file())
            buf.opening = buf.rows
        elif datatype == TRADES:
            for sym in self.exchanges[name].symbols:
                saved = self._state.get(f"{name}|{sym}")
                if saved:  # the last trade in place, or where recording began
                    self.trades[(name, sym)].rewind((saved["epoch"], saved["seq"], saved.get("id"),
                                                     saved.get("local_timestamp")))
        log.warning("parquet sink: dropped %d rows of %s %s after write failures; trades are refetched "
                    "from the ring, books start again with a snapshot block, other kinds are lost",
                    dropped, name, datatype)

    def _error(self, path: Path, exc: OSError) -> None:
        self.errors += 1
        self.last_error = f"{path}: {exc.strerror or exc}"
        if not self._failing:
            self._failing = True
            log.warning("parquet sink: cannot write %s: %s; retrying at every flush", path, exc.strerror or exc)

    # ------------------------------------------------------------------ state
    def _load_state(self) -> None:
        """The state file, then the marks of each exchange's newest trades file over it: the file is in
        place before the state file is saved, so a crash between the two must not replay its trades."""
        try:
            data = json.loads((self.dir / STATE_FILE).read_text())
            self._state = data.get("trades", {}) if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self._state = {}
        if not isinstance(self._state, dict):
            self._state = {}
        for name in self.exchanges:
            dataset = self.dir / f"exchange={self.ids[name]}" / f"datatype={TRADES}"
            paths = sorted(dataset.glob("date=*/part-*.parquet"))
            if not paths:
                continue
            try:
                meta = pq.read_metadata(paths[-1]).metadata or {}
                marks = json.loads(meta.get(MARKS_KEY.encode(), b"{}"))
            except (OSError, ValueError, pa.ArrowException):
                continue
            for sym, mark in marks.items():
                if isinstance(mark, list) and len(mark) == 4 and isinstance(mark[0], int) and mark[2] is not None:
                    self._state[f"{name}|{sym}"] = {"epoch": mark[0], "seq": mark[1], "id": mark[2],
                                                    "local_timestamp": mark[3]}

    def _save_state(self) -> None:
        """Per trade stream, the last trade durably written (or where recording began), so a
        restart knows where to continue."""
        for (ex, sym), stream in self.trades.items():
            key = f"{ex}|{sym}"
            if stream.origin is not None and "id" not in self._state.get(key, {}) \
                    and self._state.get(key) != {"epoch": stream.origin[0], "seq": stream.origin[1]}:
                self._state[key] = {"epoch": stream.origin[0], "seq": stream.origin[1]}
                self._state_dirty = True
        if not self._state_dirty:
            return
        tmp = self.dir / (STATE_FILE + ".tmp")
        try:
            tmp.write_text(json.dumps({"trades": self._state}))
            os.replace(tmp, self.dir / STATE_FILE)
        except OSError:
            return
        self._state_dirty = False

    # ------------------------------------------------------------------ stop
    def close(self) -> None:
        """Take what the bus did not bring from shared memory, write every buffer (a last file
        each), wait for uploads in progress."""
        self.catch_up(final=True)
        self.flush_all()
        if self.uploader is not None:
            self.uploader.close()

    def statistics(self) -> dict:
        """Counters for ``pipeline status`` (docs/operations.md, ``sinks``)."""
        c = self.counters
        stats = {
            "name": SINK_NAME, "pid": os.getpid(), "dir": str(self.dir),
            "started_us": self.started_us, "updated_us": self.clock(),
            "rows": self.rows_written, "book_rows": c.book_rows, "trade_rows": c.trade_rows,
            "files": self.files_written, "bytes": self.bytes_written, "last_write_us": self.last_write_us,
            "buffered_rows": sum(b.rows for b in self.buffers.values()),
            "unwritten_rows": sum(b.rows for w in self._unwritten.values() for b in w),
            "snapshots": c.snapshots, "book_resyncs": c.book_resyncs, "book_gaps": c.book_gaps, "epochs": c.epochs,
            "blocks_withheld": c.blocks_withheld,
            "gaps_filled": c.gaps_filled, "trade_gaps": c.trade_gaps, "trades_lost": c.trades_lost,
            "trade_id_gaps": c.trade_id_gaps, "trades_missed": c.trades_missed, "trades_backfilled": c.trades_backfilled,
            "backfill_late": c.backfill_late,
            "duplicates": c.duplicates, "errors": self.errors, "last_error": self.last_error,
            "other_rows": self.other_rows, "other_gaps": self.other_gaps,
            "rows_dropped": self.rows_dropped, "partials_removed": self.partials_removed,
            "unknown_messages": self.unknown_messages,
        }
        if self.uploader is not None:
            u = self.uploader
            stats.update({"uploaded": u.uploaded, "upload_pending": u.pending(), "upload_retries": u.retried,
                          "upload_failed": u.failed, "upload_last_error": u.last_error})
        return stats


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run_sink(config: Config) -> None:
    """Blocking entry point of ``pipeline sink parquet``: SUB, record, write files, stop on SIGTERM/SIGINT."""
    stop = []
    old = {s: signal.signal(s, lambda signum, _f: stop.append(signum)) for s in (signal.SIGTERM, signal.SIGINT)}
    sources = ShmSources(config.shm_prefix, config)
    sink = ParquetSink(config, snapshots=sources.book, rings=sources.ring)
    ctx = zmq.Context()
    reader = bus.Reader.for_config(ctx, config, exchanges=sink.exchanges, hot_check_every=64,
                                   kinds=(schema.TRADE, schema.L2, schema.TRADE_GAP, *OTHER_KINDS))
    on_trade, on_l2, on_other, on_gap = sink.on_trade, sink.on_l2, sink.on_other, sink.on_gap
    handlers: dict[schema.EventKind, bus.OnMessage] = {
        schema.TRADE: lambda _topic, payload: on_trade(payload), schema.L2: lambda _topic, payload: on_l2(payload),
        schema.TRADE_GAP: lambda _topic, payload: on_gap(payload)}
    for kind in OTHER_KINDS:
        handlers[kind] = lambda _topic, payload, k=kind: on_other(k, payload)
    reader.on_kinds(handlers)
    stats_file = stats_path(config, SINK_NAME)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with PidFile(config.run_dir / f"{process_name(SINK_NAME)}.pid"):
            sink.start()  # after the SUB sockets exist: nothing published from now on is missed
            next_stats = last_read = 0.0
            while not stop:
                wait = sink.tick()
                now = time.monotonic()
                if now >= next_stats:
                    write_stats(stats_file, sink.statistics())
                    next_stats = now + STATS_INTERVAL_S
                if reader.wait(min(wait, 0.1) + 0.001):
                    pause = BATCH_S - (time.monotonic() - last_read)  # let a batch gather (as the CSV sink)
                    if pause > 0:
                        time.sleep(pause)
                last_read = time.monotonic()
                for _ in range(128):
                    if not reader.read(max_l2=256):
                        break
            log.info("parquet sink: stopping (signal %d)", stop[0])
            reader.drain()
            sink.close()
            write_stats(stats_file, sink.statistics())
    finally:
        reader.close()
        ctx.term()
        sources.close()
        for s, h in old.items():
            signal.signal(s, h)
