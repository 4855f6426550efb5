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


def publisher(config: Config) -> dict:
    """The ``publisher`` section: clients, queues, conflations, disconnects (publisher/stats.py)."""
    from publisher import stats as publisher_stats

    return publisher_stats.read(config)


def sinks(config: Config) -> list[dict]:
    """The ``sinks`` section: rows, files, bytes, gaps filled... per sink (sinks/status.py)."""
    from sinks import status as sinks_status

    return sinks_status.sinks(config)


def collect(config: Config) -> dict:
    f, ex = feeds(config)
    return {"feeds": f, "processes": processes(config), "exchanges": ex, "publisher": publisher(config),
            "sinks": sinks(config)}


def render_table(status: dict) -> str:
    lines = []
    lines.append(f"{'PROCESS':<22}{'PID':>8}  {'STATE':<9}{'UPTIME':>10}{'CPU%':>7}{'RSS MB':>9}")
    for p in status["processes"]:
        up = f"{p['uptime_s']:.0f}s" if p["uptime_s"] is not None else "-"
        cpu = f"{p['cpu_percent']:.1f}" if p["cpu_percent"] is not None else "-"
        rss = f"{p['rss_bytes'] / 2**20:.1f}" if p["rss_bytes"] is not None else "-"
        lines.append(f"{p['name']:<22}{p['pid'] or '-':>8}  {p['state']:<9}{up:>10}{cpu:>7}{rss:>9}")
    lines.append("")
    # column widths follow the longest names (OKX symbols like BTC-USD-250627 are long)
    we = max([12] + [len(f["exchange"]) + 2 for f in status["feeds"]])
    ws = max([12] + [len(f["symbol"]) + 2 for f in status["feeds"]])
    lines.append(f"{'EXCHANGE':<{we}}{'SYMBOL':<{ws}}{'STATE':<9}{'SEQ':>9}{'UPDATES':>10}{'TRADES':>9}{'GAPS':>6}"
                 f"{'RESYNC':>7}{'BAD':>5}{'CK OK/FAIL':>12}{'AGE s':>8}  {'BID':>14} {'ASK':<14}")
    for f in status["feeds"]:
        bid = f"{f['best_bid'][0]:.8g}" if f["best_bid"] else "-"
        ask = f"{f['best_ask'][0]:.8g}" if f["best_ask"] else "-"
        age = f"{f['age_s']:.1f}" if f["age_s"] is not None else "-"
        ck = f"{f['checksum_ok']}/{f['checksum_failed']}"
        lines.append(f"{f['exchange']:<{we}}{f['symbol']:<{ws}}{f['state']:<9}{f['seq'] if f['seq'] is not None else '-':>9}"
                     f"{f['updates']:>10}{f['trades']:>9}{f['gaps']:>6}{f['resyncs']:>7}{f['malformed']:>5}"
                     f"{ck:>12}{age:>8}  {bid:>14} {ask:<14}")
    for e in status.get("exchanges", []):
        if e.get("state") == "up":
            lines.append(f"\n{e['exchange']}: frames {e['frames']}, reconnects {e['reconnects']}, "
                         f"rest {e['rest_requests']} req / {e['rest_errors']} err / {e['rest_throttled']} throttled, "
                         f"loop lag {e['loop_lag_us']}us (max {e['loop_lag_max_us']}), "
                         f"publish lag {e['publish_lag_us']}us (max {e['publish_lag_max_us']})")
    pub = status.get("publisher")
    if pub and pub.get("state") != "down":
        lines.append(f"\npublisher {pub['url']}: {pub['clients']} clients, queued {pub['queue_depth']} "
                     f"(max {pub['queue_depth_max']}), conflated {pub['conflated']}, dropped {pub['dropped']}, "
                     f"disconnected {pub['disconnected_total']}"
                     + "".join(f", {why} {n}" for why, n in sorted(pub["disconnected"].items())))
    for s in status.get("sinks", []):
        if s.get("rows") is not None:
            age = f"{s['last_write_age_s']:.1f}s ago" if s.get("last_write_age_s") is not None else "never"
            lines.append(f"\nsink {s['name']} ({s['state']}) {s['dir']}: {s['rows']} rows, {s['files']} files, "
                         f"{s['bytes'] / 2**20:.1f} MB, last write {age}, snapshots {s['snapshots']}, "
                         f"trades backfilled {s['gaps_filled']}, lost {s['trades_lost']}, errors {s['errors']}"
                         + (f" (last: {s['last_error']})" if s.get("last_error") else ""))
    return "\n".join(lines)
