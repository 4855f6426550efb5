"""`pipeline streams`: every stream of every exchange as a table (the JSON is pipeline.streams')."""

from __future__ import annotations

import time

import click

from pipeline.status import iso_time


def _age(ns: int, now_ns: int) -> str:
    if not ns:
        return "-"
    s = max(0, now_ns - ns) / 1e9
    return f"{s:.1f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h"


def print_streams(overview: dict, now_ns: int | None = None) -> None:
    """One line per stream: exchange, symbol, source, state, since, counters, rate, last update."""
    now_ns = now_ns or time.time_ns()
    rows = [r for e in overview["exchanges"] for r in e["streams"]]
    we = max([10] + [len(r["exchange"]) + 2 for r in rows])
    ws = max([10] + [len(r["symbol"]) + 2 for r in rows])
    click.echo(f"{'EXCHANGE':<{we}}{'SYMBOL':<{ws}}{'FROM':<9}{'STATE':<9}{'SINCE (UTC)':<21}{'UPDATES':>10}"
               f"{'TRADES':>9}{'GAPS':>6}{'RATE/s':>9}{'LAST':>8}")
    for r in rows:
        since = iso_time(r["since_ns"])[:19].replace("T", " ") if r["since_ns"] else "-"
        click.echo(f"{r['exchange']:<{we}}{r['symbol']:<{ws}}{r['source']:<9}{r['state']:<9}{since:<21}"
                   f"{r['updates']:>10}{r['trades']:>9}{r['gaps']:>6}{r['rate']:>9.1f}"
                   f"{_age(r['last_update_ns'], now_ns):>8}")
    for e in overview["exchanges"]:
        notes = []
        if e["runtime_added"]:
            notes.append(f"added at runtime: {', '.join(e['runtime_added'])}")
        if e["runtime_removed"]:
            notes.append(f"removed at runtime: {', '.join(e['runtime_removed'])}")
        notes.append(f"{len(e['symbols'])}/{e['max_symbols']} slots")
        if not e.get("running"):
            notes.append("ingest not running")
        click.echo(f"{e['exchange']}: " + "; ".join(notes))
