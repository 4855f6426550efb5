"""`pipeline status`: processes (pid files + psutil) and feeds (shared memory).

JSON shape (stable; other programs parse it, see docs/operations.md)::

    {"feeds": [{"exchange", "symbol", "state", "epoch", "seq", "updates", "trades",
                "gaps", "resyncs", "malformed", "checksum_ok", "checksum_failed",
                "age_s", "best_bid", "best_ask", "connected", "buffered",
                "trade_seq", "update_id"}, ...],
     "processes": [{"name", "pid", "state", "uptime_s", "cpu_percent", "rss_bytes"}, ...],
     "exchanges": [{"exchange", "state", "pid", "epoch", "heartbeat_age_s", <process stats>}],
     "publisher": {"state", "pid", "url", "clients", "queue_depth", "conflated", "dropped",
                   "disconnected", "client_list", ...},   (publisher/stats.py)
     "sinks": [{"name", "state", "pid", "dir", "rows", "files", "bytes", "last_write_age_s",
                "gaps_filled", "snapshots", "errors", ...}]}   (sinks/status.py)
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from pipeline.config import Config
from pipeline.errors import SharedMemoryError
from pipeline.pidfile import read_pid
from pipeline.shm import BookReader, BookState


CPU_SAMPLE_S = 0.25


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


def processes(config: Config) -> list[dict]:
    """Every process with a pid file in run_dir, plus the expected ones that have none.

    cpu_percent is measured over one common CPU_SAMPLE_S window for all processes.
    """
    names = []
    if config.sim is not None:
        names.append("sim")
    names += [f"ingest-{n}" for n in config.exchanges]
    names.append("publisher")
    if config.csv is not None:
        names.append("sink-csv")
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


def feeds(config: Config, now_ns: int | None = None) -> tuple[list[dict], list[dict]]:
    now_ns = now_ns or time.time_ns()
    out, exchanges = [], []
    for name, ex in config.exchanges.items():
        try:
            reader = BookReader.open(config.shm_prefix, name)
        except SharedMemoryError as exc:
            exchanges.append({"exchange": name, "state": "down", "detail": str(exc)})
            for sym in ex.symbols:
                out.append({"exchange": name, "symbol": sym, "state": "down", "epoch": None, "seq": None,
                            "updates": 0, "trades": 0, "gaps": 0, "resyncs": 0, "malformed": 0,
                            "checksum_ok": 0, "checksum_failed": 0, "age_s": None,
                            "best_bid": None, "best_ask": None})
            continue
        with reader:
            hb_age = (now_ns - reader.heartbeat_ns) / 1e9
            exchanges.append({"exchange": name, "state": "up", "pid": reader.pid, "epoch": reader.epoch,
                              "heartbeat_age_s": round(hb_age, 3), **reader.process_stats()})
            for sym in reader.symbols:
                book = reader.read(sym, depth=1)
                st = reader.stats(sym)
                last = max(st["last_update_ns"], st["last_trade_ns"])
                state = book.state.name.lower()
                if hb_age > 5 and book.state is BookState.LIVE:
                    state = "stale"  # the writer stopped beating: do not trust the view
                out.append({
                    "exchange": name, "symbol": sym, "state": state, "epoch": book.epoch, "seq": book.seq,
                    "updates": st["updates"], "trades": st["trades"], "gaps": st["gaps"],
                    "resyncs": st["resyncs"], "malformed": st["malformed"],
                    "checksum_ok": st["checksum_ok"], "checksum_failed": st["checksum_failed"],
                    "age_s": round(max(0, now_ns - last) / 1e9, 3) if last else None,
                    "best_bid": book.bids[0].tolist() if len(book.bids) else None,
                    "best_ask": book.asks[0].tolist() if len(book.asks) else None,
                    "connected": bool(st["connected"]), "buffered": st["buffered"],
                    "trade_seq": st["trade_seq"], "update_id": book.update_id,
                })
    return out, exchanges
