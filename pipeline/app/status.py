"""`pipeline status`: the whole pipeline's health in one record and one table.

The composition of the core's ``pipeline.status`` (processes from pid files, feeds from shared
memory) with what each server and sink reports about itself; only this layer knows them all.
"""

from __future__ import annotations

from pipeline.config import Config
from pipeline.status import feeds, processes


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
