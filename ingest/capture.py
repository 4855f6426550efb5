"""Raw recording inside the ingest: every frame, REST body and subscribe request, as received.

With a ``[sinks.raw]`` table, each ingest process writes what its connections carry in the
pipeline-capture/1 format (shared/docs/capture-format.md), so ``pipeline replay`` can serve it
back to a real ingest, which rebuilds the same books:

- ``ws`` every inbound text frame, ``ws_out`` every subscribe (and resubscribe) frame sent,
  ``rest`` every REST body answered 200 (snapshots, discovery), each with its local receive
  (or send) time and the connection's URL / the full request URL;
- files ``DIR/EXCHANGE_YYYY-MM-DDTHH-MM-SS.jsonl.gz`` (the UTC time the file was opened), a new
  one at every hour boundary (``rotate_s``) and at every ingest start, each beginning with its
  header line;
- gzip, one member per flush (``flush_interval_s``): a crash leaves whole members and at most
  a cut last one, which ``pipeline replay`` reads up to the cut;
- bounded disk: when this exchange's files pass ``max_bytes``, the oldest are removed, each
  removal logged as a warning and counted.

Cost on the ingest's hot path: one ``deque.append`` of a tuple per frame (the frame's bytes are
not copied); encoding, compression and writing happen in a background thread, whose queue is
bounded (MAX_QUEUED events, enforced from the event loop too, so a stuck disk cannot grow the
ingest's memory; past it the oldest events are dropped, counted and logged).  Figures in
docs/operations.md (`pipeline bench ingest --record`).

This module is in the ingest layer (the ingest imports it); the ``raw`` entry of the sink
registry (sinks/raw_settings.py) hands its settings to the config loader and to ``pipeline status``.
"""

from __future__ import annotations

import collections
import datetime as _dt
import gzip
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from pipeline.config import (Config, SectionContext, check_keys, expect_number, expect_path, expect_pos_int, show)
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

CAPTURE_FORMAT = "pipeline-capture/1"
# Events waiting for the writer thread (each holds its frame: ~1 KB for a Binance depth frame, so
# ~250 MB at the bound).  Past it the oldest half is dropped, counted and logged: by the writer when
# it runs, and by the ingest's event loop (``trim``, from its 0.25 s stats loop) when the writer is
# stuck (a disk that blocks): the ingest's memory stays bounded whatever the disk does.
MAX_QUEUED = 250_000
SINK_NAME = "raw"


@dataclass(frozen=True)
class RawCaptureConfig:
    """``[sinks.raw]``: raw capture files written by each ingest (docs/operations.md)."""

    dir: Path = Path("data/raw")
    max_bytes: int = 10 << 30  # this exchange's files beyond it: the oldest are removed
    rotate_s: float = 3600.0  # a new file at every multiple of this (UTC)
    flush_interval_s: float = 1.0  # queued events are compressed and written this often
    compresslevel: int = 1  # gzip level: 1 costs the ingest's writer thread a third of 6's CPU, ~40% more bytes
    exchanges: tuple[str, ...] = ()  # exchanges whose ingest records; empty: all


def parse_raw_config(t: dict, key: str, ctx: SectionContext) -> RawCaptureConfig:
    """``[sinks.raw]`` -> RawCaptureConfig; ConfigError naming ``sinks.raw.KEY``."""
    check_keys(t, set(RawCaptureConfig.__dataclass_fields__), key)
    kw: dict[str, Any] = {"dir": expect_path(t.get("dir", str(ctx.data_dir / "raw")), f"{key}.dir", ctx.base_dir)}
    if "max_bytes" in t:
        kw["max_bytes"] = expect_pos_int(t["max_bytes"], f"{key}.max_bytes")
    for name in ("rotate_s", "flush_interval_s"):
        if name in t:
            kw[name] = expect_number(t[name], f"{key}.{name}", positive=True)
    if "compresslevel" in t:
        level = t["compresslevel"]
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 9:
            raise ConfigError(f"{key}.compresslevel", f"expected an integer 1..9, got {show(level)}")
        kw["compresslevel"] = level
    if "exchanges" in t:
        names = t["exchanges"]
        if not isinstance(names, list) or not names:
            raise ConfigError(f"{key}.exchanges", f"expected a non-empty list of exchange names, got {show(names)}")
        for i, name in enumerate(names):
            if name not in ctx.exchanges:
                raise ConfigError(f"{key}.exchanges[{i}]", f"no such exchange {show(name)} in [exchanges]")
        kw["exchanges"] = tuple(dict.fromkeys(names))
    return RawCaptureConfig(**kw)


def raw_config(config: Config) -> RawCaptureConfig | None:
    """The ``[sinks.raw]`` section (parsed here when the config was loaded by the core alone), or None."""
    section = config.sinks.get(SINK_NAME)
    if section is None or isinstance(section, RawCaptureConfig):
        return section
    ctx = SectionContext(base_dir=config.base_dir, data_dir=config.data_dir, exchanges=config.exchanges)
    return parse_raw_config(section, f"sinks.{SINK_NAME}", ctx)


def stats_file(config: Config, exchange: str) -> Path:
    return config.run_dir / f"raw-{exchange}.stats.json"


def capture_files(directory: Path, exchange: str) -> list[Path]:
    """This exchange's capture files, oldest first (their names sort in time order)."""
    return sorted(Path(directory).glob(f"{exchange}_????-??-??T??-??-??.jsonl.gz"))


class _Event(msgspec.Struct):
    """One line of a capture file (shared/docs/capture-format.md), keys in the documented order."""

    ts: float
    src: str
    url: str
    data: str


_encode = msgspec.json.Encoder().encode  # UTF-8 out, non-ASCII text as is (json.dumps is ~3x slower here)


def _stamp(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H-%M-%S")


class CaptureWriter:
    """Queue of raw events (the event loop appends) and the thread that writes them."""

    def __init__(self, settings: RawCaptureConfig, exchange: str, adapter: str, stats_path: Path | None = None,
                 clock=time.time):
        self.settings = settings
        self.exchange, self.adapter = exchange, adapter
        self.dir = Path(settings.dir)
        self.stats_path = stats_path
        self.clock = clock
        self.queue: collections.deque = collections.deque()
        # hot path: ``append((time_ns, src, url, data))``, data bytes or str
        self.append = self.queue.append
        self._stop = threading.Event()
        self._trim_lock = threading.Lock()  # one trimmer at a time (the counts stay exact)
        self._thread = threading.Thread(target=self._run, name=f"capture-{exchange}", daemon=True)
        self._fd: int | None = None
        self.path: Path | None = None
        self._rotate_at = 0.0
        self.events = 0
        self.bytes = 0  # compressed bytes written
        self.files = 0
        self.files_removed = 0
        self.dropped = 0
        self.errors = 0
        self.last_error = ""

    # ------------------------------------------------------------ event loop
    def ws_out(self, url: str, text: str) -> None:
        self.append((time.time_ns(), "ws_out", url, text))

    def rest(self, url: str, body: bytes, recv_ns: int) -> None:
        self.append((recv_ns, "rest", url, body))

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def close(self) -> None:
        """Write what is queued, close the file."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30.0)
        else:
            self._flush()
        self._close_file()
        self._write_stats()

    # ---------------------------------------------------------------- thread
    def _run(self) -> None:
        while not self._stop.wait(self.settings.flush_interval_s):
            self._flush()
            self._write_stats()
        self._flush()

    def trim(self) -> int:
        """Drop the oldest half of the queue when it holds more than MAX_QUEUED events (the writer
        is behind or stuck); the number dropped.  Called by the writer and by the event loop: both
        pop from the left, which a deque does atomically."""
        q = self.queue
        if len(q) <= MAX_QUEUED:
            return 0
        n = 0
        with self._trim_lock:
            try:
                while len(q) > MAX_QUEUED // 2:
                    q.popleft()
                    n += 1
            except IndexError:  # the writer took the rest meanwhile
                pass
            self.dropped += n
        log.warning("raw capture %s: writer behind by more than %d events; the oldest %d dropped", self.exchange,
                    MAX_QUEUED, n)
        return n

    def _flush(self) -> None:
        q = self.queue
        self.trim()
        lines = []
        now = self.clock()
        if self._fd is None or now >= self._rotate_at:
            self._flush_lines(lines)
            self._open(now)
            if self._fd is None:
                return
        encode = _encode
        pop = q.popleft
        for _ in range(len(q)):
            try:
                ts_ns, src, url, data = pop()
            except IndexError:  # trimmed meanwhile by the event loop
                break
            if type(data) is not str:
                data = bytes(data).decode("utf-8", "replace")
            lines.append(encode(_Event(ts_ns / 1e9, src, url, data)))
        self.events += len(lines)
        self._flush_lines(lines)

    def _flush_lines(self, lines: list[bytes]) -> None:
        if not lines or self._fd is None:
            return
        lines.append(b"")
        member = gzip.compress(b"\n".join(lines), compresslevel=self.settings.compresslevel, mtime=0)
        try:
            _write_all(self._fd, member)
        except OSError as exc:
            self._error(exc)
            return
        self.bytes += len(member)

    def _open(self, now: float) -> None:
        self._close_file()
        period = self.settings.rotate_s
        self._rotate_at = (now // period + 1) * period
        path = self.dir / f"{self.exchange}_{_stamp(now)}.jsonl.gz"
        n = 1
        while path.exists():  # two starts within a second
            path = self.dir / f"{self.exchange}_{_stamp(now + n)}.jsonl.gz"
            n += 1
        header = {"format": CAPTURE_FORMAT, "exchange": self.exchange, "adapter": self.adapter,
                  "recorded_by": "pipeline ingest ([sinks.raw])", "opened": now}
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
            member = gzip.compress((json.dumps(header) + "\n").encode(), compresslevel=self.settings.compresslevel,
                                   mtime=0)
            _write_all(fd, member)
        except OSError as exc:
            self._error(exc)
            return
        self._fd, self.path = fd, path
        self.files += 1
        self.bytes += len(member)
        self._enforce_budget()

    def _close_file(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    def _enforce_budget(self) -> None:
        files = capture_files(self.dir, self.exchange)
        sizes = {p: p.stat().st_size for p in files if p.exists()}
        total = sum(sizes.values())
        for p in files:
            if total <= self.settings.max_bytes or p == self.path:
                break
            try:
                p.unlink()
            except OSError as exc:
                self._error(exc)
                break
            total -= sizes[p]
            self.files_removed += 1
            log.warning("raw capture %s: files over max_bytes (%d); removed the oldest, %s", self.exchange,
                        self.settings.max_bytes, p.name)

    def _error(self, exc: OSError) -> None:
        self.errors += 1
        if not self.last_error:
            log.warning("raw capture %s: cannot write in %s: %s", self.exchange, self.dir, exc)
        self.last_error = str(exc)

    def statistics(self) -> dict:
        return {"exchange": self.exchange, "pid": os.getpid(), "file": str(self.path) if self.path else None,
                "events": self.events, "queued": len(self.queue), "bytes": self.bytes, "files": self.files,
                "files_removed": self.files_removed, "dropped": self.dropped, "errors": self.errors,
                "last_error": self.last_error, "updated": self.clock()}

    def _write_stats(self) -> None:
        if self.stats_path is None:
            return
        tmp = self.stats_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.statistics()))
            os.replace(tmp, self.stats_path)
        except OSError:
            pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
