"""``pipeline sink csv``: record the bus as tardis-format CSV files, one per UTC day.

The process subscribes on its own to the trades and L2 sockets of the configured
exchanges (trades polled first), turns each message into rows (sinks/recorder.py,
sinks/tardis.py) and appends them to the day's files (sinks/files.py):

- files live in ``[sinks.csv] dir``; there is one book file and one trades file per
  (exchange, symbol) and UTC day, each created with its header when the day (or the
  sink) starts, even if no row follows;
- the day is the UTC day of the sink's clock when a row is written.  At midnight
  every file is flushed, fsynced and closed (then gzipped in the background when
  ``gzip = true``), and the new day's files open, each book file starting with a
  snapshot block of the current book.  The clock is injectable (``CsvSink(clock=)``)
  so rotation is tested without waiting for midnight;
- rows are buffered and written every ``flush_interval_s`` (and when a file's buffer
  passes FLUSH_BYTES), in whole messages; files are fsynced when closed;
- a write error (disk full, permissions) is logged once when it starts and once when
  it ends, counted in the stats, and retried at every flush; the rows stay buffered
  up to MAX_PENDING_BYTES per file, past which they are dropped and counted: the
  book file then gets a fresh snapshot block and the trades are fetched again
  from the trade ring, so the files stay correct;
- on start, the files of the day are repaired (a partial line or an unfinished
  snapshot block left by a crash is cut), every book gets a snapshot block from
  shared memory, and the trades written since the last trade in the file are
  backfilled from the trade ring;
- once per flush interval every stream is compared with shared memory (view seq,
  trade ring head), so a loss at the very end of a burst is repaired even when no
  later message comes to reveal the gap;
- ``statistics()`` feeds ``pipeline status`` through ``RUN_DIR/sink-csv.stats.json``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Callable

import msgspec
import zmq

from pipeline import bus, schema, shards
from pipeline.config import Config, ExchangeConfig
from pipeline.errors import ConfigError
from pipeline.pidfile import PidFile
from pipeline.streams import followed_symbols
from sinks.files import DailyFile, gzip_file, last_row, repair_file
from sinks.recorder import BookStream, SinkCounters, TradeStream
from sinks.sources import ShmSources, rings_of
from sinks.csv_settings import SINK_NAME, csv_config
from sinks.status import process_name, stats_path, write_stats
from sinks.tardis import (BOOK, DATATYPES, OTHER_KINDS, TRADES, RowWriter, day_of, exchange_id, file_name,
                          next_midnight_us)

log = logging.getLogger(__name__)

FLUSH_BYTES = 4 << 20
MAX_PENDING_BYTES = 64 << 20
STATS_INTERVAL_S = 1.0
BATCH_S = 0.005  # least time between two reads of the sockets
STATE_FILE = ".csv-sink-state.json"
_DAY_FILE = re.compile(r"^(?P<ex>.+)_(?P<dt>" + "|".join(map(re.escape, DATATYPES))
                       + r")_(?P<day>\d{4}-\d{2}-\d{2})_(?P<sym>.+)\.csv$")


_decode_l2 = msgspec.msgpack.Decoder(schema.L2Update).decode  # schema.decode_l2 without its Python frame


def _now_us() -> int:
    return time.time_ns() // 1000


class CsvSink:
    """Streams, files, rotation and counters of the sink; sockets live in ``run_sink``."""

    def __init__(self, config: Config, snapshots=None, rings=None, clock: Callable[[], int] = _now_us):
        self.config = config
        self.settings = csv_config(config)
        self.dir = Path(self.settings.dir)
        self.clock = clock
        names = self.settings.exchanges or tuple(config.exchanges)
        # the config's symbols and those added at runtime, as of this start (docs/streams.md)
        self.exchanges = {n: dataclasses.replace(config.exchange(n), symbols=followed_symbols(config, n))
                          for n in names}
        self.ids = {n: self._exchange_id(n, ex) for n, ex in self.exchanges.items()}
        self._check_names()
        self.counters = SinkCounters(unit_of=lambda ex, sym: shards.unit_of(config, ex, sym))
        snapshots = snapshots or (lambda ex, sym, epoch: None)
        rings = rings or (lambda ex, epoch: None)
        self.rings = rings
        self._removed: set[tuple[str, str]] = set()  # unsubscribed at runtime: their files are closed
        self.books: dict[tuple[str, str], BookStream] = {}
        self.trades: dict[tuple[str, str], TradeStream] = {}
        self.rows: dict[tuple[str, str], RowWriter] = {}
        self.other_seq: dict[tuple[str, str, str], tuple[int, int]] = {}  # (kind, ex, sym) -> (epoch, seq)
        self.other_gaps = 0  # quotes, tickers, liquidations the bus lost (seq gaps): not in the files
        for name, ex in self.exchanges.items():
            for sym in ex.symbols:
                rows = self.rows[(name, sym)] = RowWriter(self.ids[name], sym)
                self.books[(name, sym)] = BookStream(name, sym, rows, snapshots, self.counters)
                self.trades[(name, sym)] = TradeStream(name, sym, rows, rings_of(config, rings, name, sym), self.counters,
                                                       since_us=clock())
        self.snapshots = snapshots
        self.day: str | None = None
        self._midnight = 0
        self.files: dict[tuple[str, str, str], DailyFile] = {}
        self._book_route: dict[tuple[str, str], tuple[BookStream, DailyFile]] = {}  # on_l2's one lookup
        self._closing: list[DailyFile] = []
        self._failing: dict[Path, int] = {}
        self._gzip = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gzip") \
            if self.settings.gzip else None
        self._gzip_jobs: list[concurrent.futures.Future] = []
        self._next_flush = 0
        self.files_opened = 0
        self.rows_written = 0
        self.bytes_written = 0
        self.rows_dropped = 0
        self.errors = 0
        self.last_error = ""
        self.last_write_us = 0
        self.started_us = clock()
        self._state: dict[str, dict] = {}
        self._state_this_run: set[str] = set()
        self._state_dirty = False
        self.unknown_messages = 0

    @staticmethod
    def _exchange_id(name: str, ex: ExchangeConfig) -> str:
        try:
            return exchange_id(name, ex.tardis_exchange, ex.adapter)
        except ValueError as exc:
            raise ConfigError(f"exchanges.{name}.tardis_exchange", str(exc)) from None

    def _check_names(self) -> None:
        seen: dict[tuple[str, str], str] = {}
        for name, ex in self.exchanges.items():
            for sym in ex.symbols:
                key = (self.ids[name], sym)
                if key in seen:
                    raise ConfigError(f"exchanges.{name}.tardis_exchange",
                                      f"files of {sym} would collide with exchange {seen[key]!r} "
                                      f"(both are {self.ids[name]!r}); set a distinct tardis_exchange")
                seen[key] = name

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        """Open today's files (repairing them), resume trades from the ring, snapshot every book."""
        now = self.clock()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._error(self.dir, exc)
        self._load_state()
        self._sweep_leftovers(day_of(now))
        day = day_of(now)
        begun = {}  # trades files an earlier run created today: when it began recording them
        for name, sym in self.trades:
            try:
                begun[(name, sym)] = os.stat(self.dir / file_name(self.ids[name], TRADES, day, sym)).st_mtime_ns // 1000
            except OSError:
                pass
        self._open_day(now)
        for key, stream in self.trades.items():
            f = self.files[(*key, TRADES)]
            last = last_row(f.path) if f.fd is not None else None
            position = None
            if last is not None and len(last) == 8 and last[3].isdigit():
                last_id, last_received = last[4], int(last[3])
            else:  # nothing in today's file: what the previous run saved (a new day, or no trade flushed)
                saved = self._state.get(f"{key[0]}|{key[1]}") or {}
                last_id, last_received = saved.get("id"), saved.get("local_timestamp")
                if isinstance(saved.get("epoch"), int) and isinstance(saved.get("seq"), int):
                    position = (saved["epoch"], saved["seq"])
                elif key in begun:
                    last_received = begun[key]  # killed before it saved anything: trades since the file began
            self._append_trades(stream, stream.resume(last_id, last_received, position))
        for key, stream in self.books.items():
            f = self.files[(*key, BOOK)]
            last = last_row(f.path) if f.fd is not None else None
            if last is not None and len(last) == 8 and last[3].isdigit():
                stream.floor = int(last[3])  # local_timestamp never decreases within the file
            self._append(f, stream.catch_up(self.snapshots(key[0], key[1], None)))
        for stream in self.trades.values():
            self._append_trades(stream, stream.catch_up())  # where the ring is now, if nothing to resume
        self._next_flush = now
        log.info("csv sink: recording %d books and trade streams of %s into %s%s", len(self.books),
                 ", ".join(self.exchanges), self.dir, " (gzip at day end)" if self._gzip else "")

    def _open_day(self, now: int) -> None:
        self.day = day_of(now)
        self._midnight = next_midnight_us(now)
        for name, sym in list(self.books):  # the configured symbols and those added at runtime
            self._open_files(name, sym)

    def _open_files(self, name: str, sym: str) -> None:
        """Today's files of one stream; the book file starts with a block of the book (when known)."""
        for dt in (BOOK, TRADES):
            f = DailyFile(self.dir / file_name(self.ids[name], dt, self.day, sym), dt)
            f.key = (name, sym)
            self.files[(name, sym, dt)] = f
            self._ensure_open(f)
        trades = self.trades[(name, sym)]
        self.files[(name, sym, TRADES)].durable_mark = (*trades.position, *trades.last_written)
        self._book_route[(name, sym)] = (self.books[(name, sym)], self.files[(name, sym, BOOK)])
        self._append(self.files[(name, sym, BOOK)], self.books[(name, sym)].new_file())

    # ----------------------------------------------------- runtime streams
    def _follow(self, name: str, sym: str) -> bool:
        """A symbol the ingest began to follow while the sink runs (``pipeline subscribe``,
        docs/streams.md): its streams and today's files; its book file starts with a snapshot
        block (the first message of a new book is its snapshot).  False: not ours to record."""
        if name not in self.exchanges or (name, sym) in self.books or self.day is None:
            return False
        self._removed.discard((name, sym))
        rows = RowWriter(self.ids[name], sym)
        self.books[(name, sym)] = BookStream(name, sym, rows, self.snapshots, self.counters)
        self.trades[(name, sym)] = TradeStream(name, sym, rows, rings_of(self.config, self.rings, name, sym),
                                               self.counters, since_us=self.clock())
        self._open_files(name, sym)
        log.info("csv sink: recording %s %s (added at runtime)", name, sym)
        return True

    def _unfollow(self, name: str, sym: str) -> None:
        """A symbol unsubscribed (its book's final state "removed"): its files are flushed and closed."""
        self._removed.add((name, sym))
        self.books.pop((name, sym), None)
        self.trades.pop((name, sym), None)
        self._book_route.pop((name, sym), None)
        for dt in (BOOK, TRADES):
            f = self.files.pop((name, sym, dt), None)
            if f is not None:
                self._closing.append(f)
        self._close_old()
        log.info("csv sink: %s %s removed; its files are closed", name, sym)

    def _ensure_open(self, f: DailyFile) -> bool:
        if f.fd is not None:
            return True
        new = not f.path.exists()
        try:
            f.ensure_open()
        except OSError as exc:
            self._error(f.path, exc)
            return False
        self.files_opened += 1
        log.debug("csv sink: %s %s", "created" if new else "appending to", f.path)
        return True

    def _sweep_leftovers(self, today: str) -> None:
        """Repair (and gzip, if configured) files of earlier days left open by a crash."""
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        ids = set(self.ids.values())
        for fname in names:
            if fname.endswith(".gz.tmp"):
                (self.dir / fname).unlink(missing_ok=True)
                continue
            m = _DAY_FILE.match(fname)
            if m is None or m["ex"] not in ids or m["day"] >= today:
                continue
            path = self.dir / fname
            dt = m["dt"]
            try:
                repair_file(path, dt)
            except OSError as exc:
                self._error(path, exc)
                continue
            if self._gzip is not None:
                self._gzip_jobs.append(self._gzip.submit(gzip_file, path))

    # --------------------------------------------------------------- messages
    def on_l2(self, payload: bytes) -> None:
        # the hot path of the sink (one call per bus message): one route lookup, the append inlined
        try:
            msg = _decode_l2(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.unknown_messages += 1
            return
        route = self._book_route.get((msg.exchange, msg.symbol))
        if route is None:
            if msg.state == "removed" or not self._follow(msg.exchange, msg.symbol):
                self.unknown_messages += 1
                return
            route = self._book_route[(msg.exchange, msg.symbol)]
        text = route[0].on_l2(msg)
        if text:
            f = route[1]
            f.append(text, text.count("\n"))
            if f.pending_bytes >= FLUSH_BYTES and f.path not in self._failing:
                self._flush(f)
        if msg.snapshot and msg.state == "removed":
            self._unfollow(msg.exchange, msg.symbol)

    def on_trade(self, payload: bytes) -> None:
        try:
            msg = schema.decode_trade(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.unknown_messages += 1
            return
        stream = self.trades.get((msg.exchange, msg.symbol))
        if stream is None:
            key = (msg.exchange, msg.symbol)
            if key in self._removed or not self._follow(*key):
                self.unknown_messages += 1
                return
            stream = self.trades[key]
        self._append_trades(stream, stream.on_trade(msg))

    def on_gap(self, payload: bytes) -> None:
        """A ``trade_gap`` marker (trades the venue skipped; the file has no column for it): counted
        in the stats, and the trades stream holds its rows until the REST backfill came, so the file
        has them in id order (sinks/recorder.py)."""
        try:
            msg = schema.decoder(schema.TRADE_GAP)(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.unknown_messages += 1
            return
        stream = self.trades.get((msg.exchange, msg.symbol))
        if stream is None:
            self.unknown_messages += 1
            return
        self._append_trades(stream, stream.on_gap(msg))

    def on_other(self, kind: schema.EventKind, payload: bytes) -> None:
        """A quote, derivative ticker or liquidation: one row in its datatype's file of the day,
        opened (with its header) at its first row, so a spot symbol gets no empty ticker file.
        These kinds have no snapshot to repair from: a seq gap is counted, not filled."""
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
        f = self.files.get((*key, datatype))
        if f is None:
            f = DailyFile(self.dir / file_name(self.ids[key[0]], datatype, self.day or day_of(self.clock()), key[1]),
                          datatype)
            f.key = key
            self.files[(*key, datatype)] = f
            self._ensure_open(f)
        self._append(f, getattr(rows, method)(msg))

    def _append_trades(self, stream: TradeStream, text: str) -> None:
        if text:
            f = self.files[(stream.exchange, stream.symbol, TRADES)]
            self._append(f, text, mark=(*stream.position, *stream.last_written))

    def _append(self, f: DailyFile, text: str, mark=None) -> None:
        if not text:
            return
        f.append(text, text.count("\n"), mark)
        if f.pending_bytes >= FLUSH_BYTES and f.path not in self._failing:
            self._flush(f)

    # ------------------------------------------------------------------ timers
    def tick(self) -> float:
        """Rotate at midnight, flush when due; returns seconds until the next due time."""
        now = self.clock()
        if now >= self._midnight:
            self.rotate(now)
        if now >= self._next_flush:
            self.catch_up()
            self.flush_all()
            self._next_flush = now + int(self.settings.flush_interval_s * 1e6)
        return max(0.0, (min(self._next_flush, self._midnight) - now) / 1e6)

    def catch_up(self, final: bool = False) -> None:
        """Compare every stream with shared memory: what the bus lost at the end of a burst
        (``final``: at a stop, everything the trade rings hold past each stream)."""
        for (ex, sym), stream in self.trades.items():
            self._append_trades(stream, stream.catch_up(final))
        for (ex, sym), stream in self.books.items():
            self._append(self.files[(ex, sym, BOOK)], stream.catch_up(self.snapshots(ex, sym, None)))

    def rotate(self, now: int) -> None:
        """Close every file of the ending day (fsync, gzip) and open the new day's files."""
        old_day = self.day
        self._closing.extend(self.files.values())
        self.files = {}
        self._open_day(now)
        self._close_old()
        log.info("csv sink: day %s closed, writing %s", old_day, self.day)

    def _close_old(self) -> None:
        still = []
        for f in self._closing:
            if not self._flush(f):
                still.append(f)
                continue
            try:
                f.close()
            except OSError as exc:
                self._error(f.path, exc)
                still.append(f)
                continue
            if self._gzip is not None and f.opened:
                self._gzip_jobs.append(self._gzip.submit(gzip_file, f.path))
        self._closing = still
        self._gzip_jobs = [j for j in self._gzip_jobs if not self._gzip_done(j)]

    def _gzip_done(self, job: concurrent.futures.Future) -> bool:
        if not job.done():
            return False
        exc = job.exception()
        if exc is not None:
            self.errors += 1
            self.last_error = f"gzip: {exc}"
            log.warning("csv sink: gzip failed: %s", exc)
        return True

    def flush_all(self) -> None:
        for f in self.files.values():
            if f.pending_bytes or f.fd is None:
                self._flush(f)
        if self._closing:
            self._close_old()
        self._save_state()

    def _flush(self, f: DailyFile) -> bool:
        """Write one file's buffer; True when nothing is left pending."""
        if not self._ensure_open(f):
            if f.pending_bytes > MAX_PENDING_BYTES:
                self._drop(f)
            return False
        if not f.pending_bytes:
            self._recovered(f)
            return True
        rows0, bytes0 = f.rows_written, f.bytes_written
        try:
            f.flush()
        except OSError as exc:
            self._account(f, rows0, bytes0)
            self._error(f.path, exc)
            if f.pending_bytes > MAX_PENDING_BYTES:
                self._drop(f)
            return False
        self._account(f, rows0, bytes0)
        self._recovered(f)
        return True

    def _recovered(self, f: DailyFile) -> None:
        for path in (f.path, f.path.parent):
            failed = self._failing.pop(path, 0)
            if failed:
                log.info("csv sink: writing %s again after %d failed attempts", path, failed)

    def _account(self, f: DailyFile, rows0: int, bytes0: int) -> None:
        if f.bytes_written > bytes0:
            self.rows_written += f.rows_written - rows0
            self.bytes_written += f.bytes_written - bytes0
            self.last_write_us = self.clock()
            mark = f.durable_mark
            if f.datatype == TRADES and mark is not None and mark[0] is not None:
                key = f"{f.key[0]}|{f.key[1]}"
                self._state[key] = {"epoch": mark[0], "seq": mark[1], "id": mark[2], "local_timestamp": mark[3]}
                self._state_this_run.add(key)
                self._state_dirty = True

    def _drop(self, f: DailyFile) -> None:
        dropped = f.drop_pending()
        self.rows_dropped += dropped
        log.warning("csv sink: dropped %d buffered rows of %s after write failures; the file will "
                    "continue with a snapshot block / trades refetched from the ring", dropped, f.path)
        if f.datatype == BOOK:
            self.books[f.key].file_lost_rows()
        elif f.durable_mark is not None:
            self.trades[f.key].rewind(f.durable_mark)

    def _error(self, path: Path, exc: OSError) -> None:
        self.errors += 1
        self.last_error = f"{path}: {exc.strerror or exc}"
        n = self._failing.get(path, 0)
        self._failing[path] = n + 1
        if n == 0:
            log.warning("csv sink: cannot write %s: %s; rows stay buffered, retrying every %.1fs",
                        path, exc.strerror or exc, self.settings.flush_interval_s)

    # ------------------------------------------------------------------ state
    def _load_state(self) -> None:
        try:
            data = json.loads((self.dir / STATE_FILE).read_text())
            self._state = data.get("trades", {}) if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self._state = {}

    def _save_state(self) -> None:
        """Per trade stream, the last trade durably written (or where recording began), so a
        restart knows where to continue even when today's file holds no trade."""
        for (ex, sym), stream in self.trades.items():
            key = f"{ex}|{sym}"
            if stream.origin is not None and key not in self._state_this_run:
                self._state[key] = {"epoch": stream.origin[0], "seq": stream.origin[1]}
                self._state_this_run.add(key)
                self._state_dirty = True
        if not self._state_dirty:
            return
        tmp = self.dir / (STATE_FILE + ".tmp")
        try:
            tmp.write_text(json.dumps({"trades": self._state}))
            os.replace(tmp, self.dir / STATE_FILE)
        except OSError:
            return  # best effort: the files themselves are the record
        self._state_dirty = False

    # ------------------------------------------------------------------ stop
    def close(self) -> None:
        """Take what the bus did not bring from shared memory, flush and close every file (fsync);
        wait for running gzips."""
        self.catch_up(final=True)
        self.flush_all()
        for f in list(self.files.values()) + self._closing:
            try:
                f.close()
            except OSError as exc:
                self._error(f.path, exc)
                log.warning("csv sink: %d bytes of %s could not be written at shutdown", f.pending_bytes, f.path)
                f.abandon()
        self._closing = []
        self._save_state()
        if self._gzip is not None:
            self._gzip.shutdown(wait=True)
            self._gzip_jobs = [j for j in self._gzip_jobs if not self._gzip_done(j)]

    def statistics(self) -> dict:
        """Counters for ``pipeline status`` (docs/operations.md, ``sinks``)."""
        c = self.counters
        return {
            "name": "csv", "pid": os.getpid(), "dir": str(self.dir), "day": self.day,
            "started_us": self.started_us, "updated_us": self.clock(),
            "rows": self.rows_written, "book_rows": c.book_rows, "trade_rows": c.trade_rows,
            "files": self.files_opened, "files_open": sum(1 for f in self.files.values() if f.fd is not None),
            "bytes": self.bytes_written, "last_write_us": self.last_write_us,
            "pending_bytes": sum(f.pending_bytes for f in self.files.values()) + sum(
                f.pending_bytes for f in self._closing),
            "snapshots": c.snapshots, "book_resyncs": c.book_resyncs, "book_gaps": c.book_gaps, "epochs": c.epochs,
            "blocks_withheld": c.blocks_withheld,
            "gaps_filled": c.gaps_filled, "trade_gaps": c.trade_gaps, "trades_lost": c.trades_lost,
            "trade_id_gaps": c.trade_id_gaps, "trades_missed": c.trades_missed, "trades_backfilled": c.trades_backfilled,
            "backfill_late": c.backfill_late,
            "duplicates": c.duplicates, "errors": self.errors, "last_error": self.last_error,
            "failing_files": len(self._failing), "rows_dropped": self.rows_dropped,
            "unknown_messages": self.unknown_messages, "other_gaps": self.other_gaps,
        }


def run_sink(config: Config) -> None:
    """Blocking entry point of ``pipeline sink csv``: SUB, record, flush, stop on SIGTERM/SIGINT."""
    stop = []
    old = {s: signal.signal(s, lambda signum, _f: stop.append(signum)) for s in (signal.SIGTERM, signal.SIGINT)}
    sources = ShmSources(config.shm_prefix, config)
    sink = CsvSink(config, snapshots=sources.book, rings=sources.ring)
    ctx = zmq.Context()
    # Trades are checked for after every 64th L2 message only: rows reach the files once per flush
    # interval, so a trade gains nothing from overtaking a few L2 messages here.
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
    config.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # ipc sockets, pid files: ours only
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
                    # Let a batch gather: rows reach the files once per flush interval anyway, and one
                    # wake-up per message would cost more CPU than the rows (ZeroMQ queues meanwhile).
                    pause = BATCH_S - (time.monotonic() - last_read)
                    if pause > 0:
                        time.sleep(pause)
                last_read = time.monotonic()
                for _ in range(128):  # bounded, so timers run even under a flood
                    if not reader.read(max_l2=256):  # trades first (pipeline/bus.py)
                        break
            log.info("csv sink: stopping (signal %d)", stop[0])
            reader.drain()
            sink.close()
            write_stats(stats_file, sink.statistics())
    finally:
        reader.close()
        ctx.term()
        sources.close()
        for s, h in old.items():
            signal.signal(s, h)
