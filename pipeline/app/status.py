"""`pipeline status`: the whole pipeline's health in one record, one table and one exit code.

The composition of the core's ``pipeline.status`` (processes from pid files, feeds from shared
memory) with what each server and sink reports about itself; only this layer knows them all.

Exit codes, for scripts and health checks (docs/operations.md): EXIT_OK when every process runs
and every book is live; EXIT_NOT_LIVE when they all run but a book is syncing or stale (the
code `pipeline book` uses for a book that is not live); EXIT_DOWN when a process is stopped or
dead or an exchange has no shared memory.  1 and 2 stay click's: the command failed, bad usage.
"""

from __future__ import annotations

from pipeline.app.config import PLUGINS
from pipeline.app.supervise import programs
from pipeline.book import BOOK_IMPLEMENTATION
from pipeline.config import Config
from pipeline.status import feeds, iso_time, processes


def publisher(config: Config) -> dict:
    """The ``publisher`` section: clients, queues, conflations, disconnects (publisher/stats.py)."""
    return PLUGINS.servers.get("publisher").load().status(config)


def servers(config: Config) -> dict[str, dict]:
    """One section per server that runs, under its name (``publisher``: publisher/stats.py)."""
    return {s.name: s.load().status(config) for s in PLUGINS.servers if s.name in config.servers}


def sinks(config: Config) -> list[dict]:
    """The ``sinks`` section: one entry per configured sink (the CSV sink's: rows, files, bytes, ...)."""
    return [s.load().status(config) for s in PLUGINS.sinks if s.name in config.sinks]


def bridges(config: Config) -> list[dict]:
    """The ``bridges`` section: one entry per configured bridge (NATS: messages published, KV writes, ...)."""
    return [b.load().status(config) for b in PLUGINS.bridges if b.name in config.bridges]


EXIT_OK, EXIT_NOT_LIVE, EXIT_DOWN = 0, 3, 4


def collect(config: Config) -> dict:
    f, ex = feeds(config)
    expected = [name for name, _ in programs(config, None)]
    procs = processes(config, expected)
    for p in procs:  # why a program gave up (a taken port: pipeline/app/supervise.py)
        err = config.run_dir / f"{p['name']}.error"
        if p["state"] != "running" and err.is_file():
            p["error"] = err.read_text(errors="replace").strip()
    st = {"feeds": f, "processes": procs, "exchanges": ex, **servers(config), "sinks": sinks(config),
          "book_implementation": BOOK_IMPLEMENTATION}  # the book this install's ingest runs (pipeline/book.py)
    if config.bridges:
        st["bridges"] = bridges(config)
    st["down"], st["not_live"] = problems(st)
    return st


def problems(status: dict) -> tuple[list[str], list[str]]:
    """(what is down, which books are not live), each a list of short texts."""
    down = [f"process {p['name']} {p['state']}" for p in status.get("processes", []) if p["state"] != "running"]
    down += [f"remote {r['endpoint']}: {r['error']}" for r in status.get("remote", []) if r["state"] != "up"]
    down += [f"exchange {_unit(e)}: no shared memory" for e in status["exchanges"] if e.get("state") != "up"]
    not_live = [f"{f['exchange']} {f['symbol']} {f['state']}" for f in status["feeds"]
                if f["state"] not in ("live", "removed", "down")]  # down: counted with its exchange
    return down, not_live


def _unit(item: dict) -> str:
    """An exchange's name, with ``.K`` for shard K of a sharded one (pipeline/shards.py)."""
    return item["exchange"] if item.get("shard") is None else f"{item['exchange']}.{item['shard']}"


def exit_code(status: dict) -> int:
    """The exit code of `pipeline status` for a record made by collect() (module docstring)."""
    down, not_live = problems(status)
    return EXIT_DOWN if down else EXIT_NOT_LIVE if not_live else EXIT_OK


RECENT_ERROR_S = 60.0  # a live feed's last error is listed for this long after it happened


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


def _error_line(item: dict) -> str:
    at = item["last_error_time"][11:19]  # HH:MM:SS of the ISO time, UTC
    return f"last error {_ago(item['last_error_age_s'])} ago ({at} UTC): {item['last_error']}"


def remote_endpoint(text: str) -> str:
    """``HOST:PORT`` (a snapshot_endpoint of another host) as a ZeroMQ endpoint; tcp:// and ipc://
    endpoints, and nats:// / tls:// NATS servers (the bridges behind them answer), as they are.
    ValueError when it is none of these."""
    if text.startswith(("tcp://", "ipc://", "nats://", "tls://")):
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (a snapshot_endpoint of the other host), got {text!r}")
    return f"tcp://{host}:{port}"


def collect_remote(config: Config, endpoints: list[str], timeout: float = 2.0) -> dict:
    """`pipeline status --remote`: each endpoint's exchange as its ingest's snapshot service tells it
    (pipeline/snapshots.py: feeds and exchange entry), with the clock offset of that host.

    The CURVE client keys are this host's ``[bus] curve_client_secret_key`` / ``curve_server_public_key``.
    ``clock_offset_ms`` is the other host's clock minus this one's (best of CLOCK_PROBES round trips,
    good to ``clock_error_ms``): a latency computed here from a timestamp made there is off by it.
    Ages in its feeds are the other host's own (its clock), so they need no correction.
    """
    import zmq

    from pipeline.curve import ClientKeys
    from pipeline.snapshots import SnapshotClient, SnapshotUnavailable

    keys = ClientKeys.from_config(config)
    ctx = zmq.Context()
    remotes, all_feeds, all_exchanges = [], [], []
    try:
        for endpoint in endpoints:
            if endpoint.startswith(("nats://", "tls://")):
                nats_remotes, nats_feeds, nats_exchanges = _nats_remote(config, endpoint, timeout)
                remotes += nats_remotes
                all_feeds += nats_feeds
                all_exchanges += nats_exchanges
                continue
            entry: dict = {"endpoint": endpoint, "state": "unreachable", "error": None, "time": None,
                           "clock_offset_ms": None, "clock_error_ms": None, "rtt_ms": None}
            client = SnapshotClient(ctx, endpoint, keys.apply if keys is not None else None, timeout)
            try:
                clock = client.clock()
                st = client.status()
            except SnapshotUnavailable as exc:
                entry["error"] = str(exc) + ("" if keys is not None else
                                             " (no [bus] curve_client_secret_key: a CURVE endpoint answers no one)")
            else:
                entry.update(state="up", time=iso_time(st["time"]),
                             clock_offset_ms=round(clock.offset_ns / 1e6, 3),
                             clock_error_ms=round(clock.error_ns / 1e6, 3), rtt_ms=round(clock.rtt_ns / 1e6, 3))
                for f in st["feeds"]:
                    all_feeds.append({**f, "remote": endpoint})
                for e in st["exchanges"]:
                    all_exchanges.append({**e, "remote": endpoint})
            finally:
                client.close()
            remotes.append(entry)
    finally:
        ctx.term()
    st = {"remote": remotes, "feeds": all_feeds, "exchanges": all_exchanges}
    st["down"], st["not_live"] = problems(st)
    return st


def _nats_remote(config: Config, url: str, timeout: float) -> tuple[list[dict], list[dict], list[dict]]:
    """The bridges answering behind a NATS server (pipeline/natsbus.py ``ask_status``): one remote
    entry per bridge (``endpoint`` = "URL HOST:RUN_DIR"), its exchanges' feeds, and its counters."""
    from pipeline import natsbus

    table = config.bridges.get("nats")
    prefix = natsbus.settings(config)[1] if table is not None else natsbus.DEFAULT_PREFIX
    try:
        answers = natsbus.ask_status(url, prefix, timeout)
    except Exception as exc:  # noqa: BLE001 - no server there, refused, TLS: said as the reason
        return [{"endpoint": url, "state": "unreachable", "error": f"NATS: {exc or type(exc).__name__}", "time": None,
                 "clock_offset_ms": None, "clock_error_ms": None, "rtt_ms": None}], [], []
    if not answers:
        return [{"endpoint": url, "state": "unreachable", "time": None, "clock_offset_ms": None,
                 "clock_error_ms": None, "rtt_ms": None,
                 "error": f"no bridge answered on {natsbus.status_subject(prefix)} within {timeout:g} s"}], [], []
    remotes, feeds_, exchanges = [], [], []
    for a in answers:
        endpoint, clock, st = f"{url} {a['host']}", a["clock"], a["status"] or {}
        remotes.append({"endpoint": endpoint, "state": "up", "error": None, "time": iso_time(a["time"]),
                        "clock_offset_ms": round(clock.offset_ns / 1e6, 3),
                        "clock_error_ms": round(clock.error_ns / 1e6, 3), "rtt_ms": round(clock.rtt_ns / 1e6, 3),
                        "bridge": st.get("bridge")})
        feeds_ += [{**f, "remote": endpoint} for f in st.get("feeds", [])]
        exchanges += [{**e, "remote": endpoint} for e in st.get("exchanges", [])]
    return remotes, feeds_, exchanges


def render_table(status: dict) -> str:
    lines = []
    for r in status.get("remote", []):
        if r["state"] == "up":
            lines.append(f"REMOTE {r['endpoint']}  up  " + (f"its clock {r['time']}: " if r["time"] else "")
                         + f"offset {r['clock_offset_ms']:+.3f} ms "
                         f"(+-{r['clock_error_ms']:.3f} ms, round trip {r['rtt_ms']:.3f} ms)")
        else:
            lines.append(f"REMOTE {r['endpoint']}  {r['state']}: {r['error']}")
    if "processes" in status:
        lines.append(f"{'PROCESS':<22}{'PID':>8}  {'STATE':<9}{'UPTIME':>10}{'CPU%':>7}{'RSS MB':>9}")
    for p in status.get("processes", []):
        up = f"{p['uptime_s']:.0f}s" if p["uptime_s"] is not None else "-"
        cpu = f"{p['cpu_percent']:.1f}" if p["cpu_percent"] is not None else "-"
        rss = f"{p['rss_bytes'] / 2**20:.1f}" if p["rss_bytes"] is not None else "-"
        lines.append(f"{p['name']:<22}{p['pid'] or '-':>8}  {p['state']:<9}{up:>10}{cpu:>7}{rss:>9}")
        if p.get("error"):
            lines.append(f"  {p['error']}")
    lines.append("")
    # column widths follow the longest names (OKX symbols like BTC-USD-250627 are long)
    we = max([12] + [len(_unit(f)) + 2 for f in status["feeds"]])
    ws = max([12] + [len(f["symbol"]) + 2 for f in status["feeds"]])
    lines.append(f"{'EXCHANGE':<{we}}{'SYMBOL':<{ws}}{'STATE':<9}{'SEQ':>9}{'UPDATES':>10}{'TRADES':>9}{'GAPS':>6}"
                 f"{'RESYNC':>7}{'BAD':>5}{'CK OK/FAIL':>12}{'AGE s':>8}  {'BID':>14} {'ASK':<14}")
    for f in status["feeds"]:
        bid = f"{f['best_bid'][0]:.8g}" if f["best_bid"] else "-"
        ask = f"{f['best_ask'][0]:.8g}" if f["best_ask"] else "-"
        age = f"{f['age_s']:.1f}" if f["age_s"] is not None else "-"
        ck = f"{f['checksum_ok']}/{f['checksum_failed']}"
        lines.append(f"{_unit(f):<{we}}{f['symbol']:<{ws}}{f['state']:<9}{f['seq'] if f['seq'] is not None else '-':>9}"
                     f"{f['updates']:>10}{f['trades']:>9}{f['gaps']:>6}{f['resyncs']:>7}{f['malformed']:>5}"
                     f"{ck:>12}{age:>8}  {bid:>14} {ask:<14}" + ("  (runtime)" if f.get("source") == "runtime" else ""))
    # why a book is not live (or what just went wrong): failures and the last error, per feed
    troubled = [f for f in status["feeds"] if f.get("last_error")
                and (f["state"] != "live" or f["last_error_age_s"] < RECENT_ERROR_S)]
    if troubled:
        lines.append("")
    for f in troubled:
        lines.append(f"{f['exchange']} {f['symbol']} {f['state']}: {f['connect_failures']} failed connects, "
                     f"{f['rest_errors']} REST errors; {_error_line(f)}")
    for e in status.get("exchanges", []):
        if e.get("state") == "up":
            lines.append(f"\n{_unit(e)}: frames {e['frames']}, reconnects {e['reconnects']}, "
                         f"failed connects {e['connect_failures']}, "
                         f"rest {e['rest_requests']} req / {e['rest_errors']} err / {e['rest_throttled']} throttled")
            lines.append(f"  lag over the last minute: loop p50 {e['loop_lag_us']}us p99 {e['loop_lag_p99_us']}us "
                         f"max {e['loop_lag_max_us']}us, publish p50 {e['publish_lag_us']}us "
                         f"p99 {e['publish_lag_p99_us']}us max {e['publish_lag_max_us']}us")
            if e.get("last_error"):
                lines.append(f"  {_error_line(e)}")
            wk = max([6] + [len(c["kind"]) for c in e["connections"]])
            wu = max([12] + [len(c["url"]) for c in e["connections"]])
            for c in e["connections"]:
                lines.append(f"  {c['kind']:<{wk}} {c['url']:<{wu}} {c['symbols']:>4} sym  {c['state']:<10} "
                             f"for {_ago(c['state_age_s']):>6}  opened {c['opened']}  "
                             f"failed {c['connect_failures']}" + (f"  last: {c['last_error']}" if c["last_error"] else ""))
            if e["connections_total"] > len(e["connections"]):
                lines.append(f"  ({e['connections_total'] - len(e['connections'])} more connections not shown)")
        else:
            lines.append(f"\n{_unit(e)}: {e.get('state')} ({e.get('detail', '')})")
    pub = status.get("publisher")
    if pub and pub.get("state") != "down":
        lines.append(f"\npublisher {pub['url']}: {pub['clients']} clients, queued {pub['queue_depth']} "
                     f"(max {pub['queue_depth_max']}), conflated {pub['conflated']}, dropped {pub['dropped']}, "
                     f"disconnected {pub['disconnected_total']}"
                     + "".join(f", {why} {n}" for why, n in sorted(pub["disconnected"].items())))
    for s in status.get("sinks", []):
        if s.get("events") is not None and s.get("snapshots") is None:  # [sinks.raw], inside the ingests
            lines.append(f"\nsink {s['name']} ({s['state']}) {s['dir']}: {s['events']} events, {s['files']} files, "
                         f"{s['bytes'] / 2**20:.1f} MB, queued {s.get('queued', 0)}, dropped {s['dropped']}, "
                         f"files removed {s['files_removed']}, "
                         f"errors {s['errors']}")
        elif s.get("rows") is not None:
            age = f"{s['last_write_age_s']:.1f}s ago" if s.get("last_write_age_s") is not None else "never"
            lines.append(f"\nsink {s['name']} ({s['state']}) {s['dir']}: {s['rows']} rows, {s['files']} files, "
                         f"{s['bytes'] / 2**20:.1f} MB, last write {age}, snapshots {s['snapshots']}, "
                         f"trades backfilled {s['gaps_filled']}, lost {s['trades_lost']}, errors {s['errors']}"
                         + (f", venue gaps {s['trade_id_gaps']} ({s['trades_missed']} trades missed upstream, "
                            f"{s.get('trades_backfilled', 0)} from REST)" if s.get("trade_id_gaps") else "")
                         + (f" (last: {s['last_error']})" if s.get("last_error") else ""))
    for b in status.get("bridges", []):
        lines.append(f"\nbridge {b['name']} ({b['state']}) {b['url']}: published {b.get('published', 0)}, "
                     f"KV writes {b.get('kv_writes', 0)}, books resynced {b.get('snapshots_made', 0)}, "
                     f"trades refilled {b.get('trades_refilled', 0)}, lost {b.get('trades_lost', 0)}, "
                     f"errors {b.get('errors', 0)}")
    down, not_live = problems(status)
    if status.get("book_implementation"):
        lines.append(f"\nbook: {status['book_implementation']}")
    lines.append("")
    if down:
        lines.append("DOWN: " + "; ".join(down))
    if not_live:
        lines.append("NOT LIVE: " + "; ".join(not_live))
    if not down and not not_live:
        lines.append("OK: every process running, every book live")
    return "\n".join(lines)
