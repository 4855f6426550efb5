"""`pipeline status`: processes (pid files + psutil) and feeds (shared memory).

JSON shape (stable; other programs parse it, see docs/operations.md)::

    {"feeds": [{"exchange", "symbol", "source", "state", "epoch", "seq", "updates", "trades",
                "gaps", "resyncs", "malformed", "checksum_ok", "checksum_failed",
                "age_s", "trade_age_s", "stale_after_s", "stalls", "trades_missed", "trade_id_gaps",
                "trades_backfilled", "best_bid", "best_ask", "connected", "buffered",
                "trade_seq", "update_id", "connect_failures", "rest_errors", "last_error",
                "last_error_time", "last_error_age_s", "quotes", "tickers", "liquidations",
                "age": {KIND: seconds or null}}, ...],
     "processes": [{"name", "pid", "state", "uptime_s", "cpu_percent", "rss_bytes"}, ...],
     "exchanges": [{"exchange", "state", "pid", "epoch", "heartbeat_age_s", <process stats>,
                    "last_error", "last_error_time", "last_error_age_s",
                    "connections": [{"kind", "url", "symbols", "state", "state_age_s", "opened",
                                     "connect_failures", "last_error", "last_error_time",
                                     "last_error_age_s"}, ...], "connections_total"}],
     "publisher": {"state", "pid", "url", "clients", "queue_depth", "conflated", "dropped",
                   "disconnected", "client_list", ...},   (publisher/stats.py)
     "sinks": [{"name", "state", "pid", "dir", "rows", "files", "bytes", "last_write_age_s",
                "gaps_filled", "snapshots", "errors", ...}]}   (sinks/status.py)
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from pipeline import shards
from pipeline.config import Config
from pipeline.errors import SharedMemoryError, StreamError
from pipeline.pidfile import read_pid
from pipeline.shm import BookReader, BookState, HealthRecord
from pipeline.streams import load_changes, process_symbols


CPU_SAMPLE_S = 0.25
STALE_GRACE_S = 1.0  # the ingest's watchdog runs every 0.25 s; past the limit by this much, the reader decides
HEARTBEAT_LIMIT_S = 5.0  # an ingest that has not beaten for this long: its live views are not trusted


def _process(name: str, pid: int | None) -> tuple[dict, psutil.Process | None]:
    entry = {"name": name, "pid": pid, "state": "stopped", "uptime_s": None, "cpu_percent": None, "rss_bytes": None}
    if pid is None:
        return entry, None
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            if p.status() == psutil.STATUS_ZOMBIE:
                entry["state"] = "dead"
                return entry, None
            entry["state"] = "running"
            entry["uptime_s"] = round(time.time() - p.create_time(), 1)
            entry["rss_bytes"] = p.memory_info().rss
            p.cpu_percent(interval=None)  # starts the CPU sample; see processes()
        return entry, p
    except psutil.NoSuchProcess:
        entry["state"] = "dead"
    except psutil.AccessDenied:
        entry["state"] = "running"
    return entry, None


def processes(config: Config, expected: list[str] | None = None) -> list[dict]:
    """Every process with a pid file in run_dir, plus the ``expected`` ones (program names; default:
    the sim and the ingests) that have none.

    cpu_percent is measured over one common CPU_SAMPLE_S window for all processes.
    """
    if expected is None:
        expected = (["sim"] if config.sim is not None else []) + [f"ingest-{sx.unit}" for _, sx in shards.each(config)]
    names = list(expected)
    run_dir = Path(config.run_dir)
    if run_dir.is_dir():
        for p in sorted(run_dir.glob("*.pid")):
            if p.stem not in names:
                names.append(p.stem)
    sampled = [_process(n, read_pid(run_dir / f"{n}.pid")) for n in names]
    if any(proc is not None for _, proc in sampled):
        time.sleep(CPU_SAMPLE_S)
    for entry, proc in sampled:
        if proc is not None:
            try:
                entry["cpu_percent"] = round(proc.cpu_percent(interval=None), 1)
            except psutil.NoSuchProcess:
                entry["state"] = "dead"
    return [entry for entry, _ in sampled]


def iso_time(ns: int) -> str:
    """ISO-8601 UTC with ``Z`` and microseconds, the pipeline's time format (DESIGN.md contract 5)."""
    return datetime.fromtimestamp(ns // 1000 / 1e6, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def last_error(rec: HealthRecord | None, now_ns: int) -> dict:
    """``last_error`` (short text or null), its ``last_error_time`` and ``last_error_age_s``."""
    if rec is None or not rec.error_ns:
        return {"last_error": None, "last_error_time": None, "last_error_age_s": None}
    return {"last_error": rec.error, "last_error_time": iso_time(rec.error_ns),
            "last_error_age_s": round(max(0, now_ns - rec.error_ns) / 1e9, 3)}


def _connection(rec: HealthRecord, now_ns: int) -> dict:
    kind, _, url = rec.label.partition(" ")
    return {"kind": kind, "url": url, "symbols": rec.symbols, "state": rec.state.name.lower(),
            "state_age_s": round(max(0, now_ns - rec.state_ns) / 1e9, 3) if rec.state_ns else None,
            "opened": rec.opened, "connect_failures": rec.connect_failures, **last_error(rec, now_ns)}


def feeds(config: Config, now_ns: int | None = None,
          only: str | None = None) -> tuple[list[dict], list[dict]]:
    """(feeds, exchanges) of every configured exchange, or of ``only``: an exchange (all its
    shards) or one ingest unit ``NAME.K`` (the snapshot service's status answer: pipeline/snapshots.py)."""
    now_ns = now_ns or time.time_ns()
    out, exchanges = [], []
    for name, ex in shards.each(config):  # each ingest process: one per exchange, or per shard
        if only is not None and only not in (name, ex.unit):
            continue
        configured = set(ex.symbols)  # "source": config, or runtime (pipeline subscribe; docs/streams.md)
        shard = {} if ex.shard is None else {"shard": ex.shard}  # pipeline/shards.py
        try:
            reader = BookReader.open(config.shm_prefix, ex.unit)
        except SharedMemoryError as exc:
            exchanges.append({"exchange": name, **shard, "state": "down", "detail": str(exc)})
            try:
                symbols = process_symbols(config.exchanges[name], ex, load_changes(config.run_dir, ex.unit))
            except StreamError:
                symbols = ex.symbols
            for sym in symbols:
                out.append({"exchange": name, "symbol": sym, **shard,
                            "source": "config" if sym in configured else "runtime", "state": "down", "epoch": None, "seq": None,
                            "updates": 0, "trades": 0, "gaps": 0, "resyncs": 0, "malformed": 0,
                            "checksum_ok": 0, "checksum_failed": 0, "age_s": None, "trade_age_s": None,
                            "stale_after_s": None, "stalls": 0, "trades_missed": 0, "trade_id_gaps": 0,
                            "trades_backfilled": 0,
                            "best_bid": None, "best_ask": None, "connect_failures": 0, "rest_errors": 0,
                            **last_error(None, now_ns)})
            continue
        with reader:
            hb_age = (now_ns - reader.heartbeat_ns) / 1e9
            conns, n_conns = reader.connections_health()
            exchanges.append({"exchange": name, **shard, "state": "up", "pid": reader.pid, "epoch": reader.epoch,
                              "heartbeat_age_s": round(hb_age, 3), **reader.process_stats(),
                              **last_error(reader.exchange_health(), now_ns),
                              "connections": [_connection(c, now_ns) for c in conns],
                              "connections_total": n_conns})
            for sym in reader.symbols:
                book = reader.read(sym, depth=1)
                st = reader.stats(sym)
                health = reader.feed_health(sym)
                # the book's own age (its last change): trades do not keep a frozen book fresh
                last, last_trade = st["last_update_ns"], st["last_trade_ns"]
                age_s = max(0, now_ns - last) / 1e9 if last else None
                limit_s = st["stale_after_ms"] / 1000
                state = book.state.name.lower()
                if hb_age > HEARTBEAT_LIMIT_S and book.state is BookState.LIVE:
                    state = "stale"  # the writer stopped beating: do not trust the view
                elif limit_s and age_s is not None and age_s > limit_s + STALE_GRACE_S and book.state is BookState.LIVE:
                    state = "stale"  # past the stream's cadence bound (the ingest marks it within a tick)
                out.append({
                    "exchange": name, "symbol": sym, **shard, "source": "config" if sym in configured else "runtime",
                    "state": state, "epoch": book.epoch, "seq": book.seq,
                    "updates": st["updates"], "trades": st["trades"], "gaps": st["gaps"],
                    "resyncs": st["resyncs"], "malformed": st["malformed"],
                    "checksum_ok": st["checksum_ok"], "checksum_failed": st["checksum_failed"],
                    "age_s": round(age_s, 3) if age_s is not None else None,
                    "trade_age_s": round(max(0, now_ns - last_trade) / 1e9, 3) if last_trade else None,
                    "stale_after_s": limit_s or None, "stalls": st["stalls"], "trades_missed": st["trades_missed"],
                    "trade_id_gaps": st["trade_id_gaps"], "trades_backfilled": st["trades_backfilled"],
                    "best_bid": book.bids[0].tolist() if len(book.bids) else None,
                    "best_ask": book.asks[0].tolist() if len(book.asks) else None,
                    "connected": bool(st["connected"]), "buffered": st["buffered"],
                    "trade_seq": st["trade_seq"], "update_id": book.update_id,
                    "connect_failures": health.connect_failures, "rest_errors": health.rest_errors,
                    **last_error(health, now_ns),
                    "quotes": st.get("quotes", 0), "tickers": st.get("tickers", 0),
                    "liquidations": st.get("liquidations", 0), "age": _kind_ages(st, now_ns),
                })
    return out, exchanges


# the age of the last event of each venue kind, from the feed's counters (issue 13); CVD and trade
# bars are derived from trades, so the trade age is theirs too
_KIND_AGES = (("trade", "last_trade_ns"), ("l2", "last_update_ns"), ("quote", "last_quote_ns"),
              ("derivative_ticker", "last_ticker_ns"), ("liquidation", "last_liquidation_ns"))


def _kind_ages(st: dict, now_ns: int) -> dict[str, float | None]:
    """Seconds since the last event of each kind, or None when none came."""
    return {kind: round(max(0, now_ns - st[key]) / 1e9, 3) if st.get(key) else None for kind, key in _KIND_AGES}
