"""Figures of `pipeline bench e2e`: percentiles, the team goals beside the measured values, the
human summary, the dated row of bench/RESULTS.md and the latency plot (pure, except the files).

The goals are printed, never asserted: the machine is shared and small (see the RESULTS.md header).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import threading
from pathlib import Path

import numpy as np

PERCENTILES = (("p50", 50.0), ("p99", 99.0), ("p99.9", 99.9))

RESULTS_HEADER = """# Benchmark results

One row per run of `pipeline bench e2e` (pipeline/benchmarks/e2e.py), appended by the command:

```sh
.venv/bin/pipeline bench e2e                      # defaults: rates 2000,10000,20000,40000; 8 s each; 1,10,100 clients
.venv/bin/pipeline bench e2e --symbols 200 --rates 20000 --clients 10   # ingest RSS with 200 symbols
```

Real processes on loopback: `pipeline sim` (Binance protocol, `depth@0ms`: one frame per book
update) -> `pipeline ingest sim` -> `pipeline publish` (WebSocket) and `pipeline sink csv`, plus a
ZeroMQ SUB subscriber and the WebSocket clients in processes of their own. All latencies are
client receive time minus the ingest's receive time of the venue frame (`ts_received` on the
bus, `time_received` on the WebSocket), on the same host clock.

Columns:

- **date**: UTC time of the run; **machine**: cores, CPU model, Python; **note**: `shared` when other
  work ran on the machine at the same time (figures are then noisy, and low), with the 1-minute load
  average before the run (2 cores: above 2, every process waits for a CPU).
- **symbols**: symbols on the sim; **max sustained**: the highest `--rates` value (sim book updates/s,
  all symbols) at which the ingest kept up (criterion below), `none` when it kept up at none;
  **ingest msg/s**: depth messages/s the ingest applied at that rate; **ingest µs/msg**: its CPU time
  per depth message there (all its work: parse, book, shm, bus), so `1e6 / µs` is the rate one core
  could take.
- **ZMQ trade p50/p99/p99.9**: trade latency to the ZeroMQ subscriber (µs), at the WebSocket rate;
  **WS rate**: the rate of the WebSocket runs; **WS N p50/p99/p99.9**: trade latency to N
  WebSocket clients (ms) subscribed as a screen (trades + throttled book snapshots of every symbol).
- **ingest RSS**: MB at the WebSocket rate; **CSV rows/s**: rows written per second by the sink at
  that rate (bounded by the input) and its rows per CPU-second (its capacity on one core).
- **json**: the full result file of the run.

Kept up at a rate = all of: the sim generated >= 95% of the rate; the ingest applied >= 98% of the
depth updates the sim generated in the same window (both counters read back to back at its start
and end); its receive->publish lag stayed bounded: the ingest's `publish_lag_1s_us` (p50 over the last
second; an EWMA `publish_lag_us` before 2026-12), sampled every 0.25 s, was <= 50 ms in at least 90% of the samples and in the last one (a short stall of a
shared machine passes, a growing backlog does not); no reconnect, sequence gap or resync during the
window, and the sim dropped no slow client.

Goals (printed by the command next to the measured figures, never asserted by tests): live ingest
>= 40k depth msgs/s per process; trade latency to a ZeroMQ subscriber p50 <= 100 µs, p99 <= 500 µs;
to WebSocket clients under 20k L2 msgs/s p99 <= 1 ms with 10 clients, <= 2.5 ms with 100; RSS per
ingest <= 150 MB with 200 symbols; CSV sink >= 200k rows/s.

| date | machine | note | symbols | max sustained | ingest msg/s | ingest µs/msg | ZMQ trade p50/p99/p99.9 µs | WS rate | WS clients: p50/p99/p99.9 ms | ingest RSS MB | CSV rows/s (per CPU-s) | json |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
"""

CRITERION = ("kept up = sim generated >= 95% of the rate AND ingest applied >= 98% of the sim's depth updates "
             "in the same window AND receive->publish lag p50 of the last second (sampled every 0.25 s) <= 50 ms at p90 of the "
             "samples and at the last one AND no reconnect, gap or resync in the window AND the sim dropped "
             "no slow client")
MIN_SIM_RATIO = 0.95
MIN_DELIVERED = 0.98
MAX_PUBLISH_LAG_US = 50_000


def latency(values) -> dict:
    """n, mean, p50, p99, p99.9, max of a latency sample (µs); empty: n 0 and nulls."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "mean": None, **{k: None for k, _ in PERCENTILES}, "max": None}
    pct = np.percentile(a, [p for _, p in PERCENTILES])
    return {"n": int(a.size), "mean": round(float(a.mean()), 1),
            **{k: round(float(v), 1) for (k, _), v in zip(PERCENTILES, pct)}, "max": round(float(a.max()), 1)}


def kept_up(row: dict) -> tuple[bool, list[str]]:
    """The criterion (CRITERION) applied to one rate's figures; the reasons it failed."""
    why = []
    if row["sim_updates_per_s"] < MIN_SIM_RATIO * row["rate"]:
        why.append(f"sim generated only {row['sim_updates_per_s']:.0f}/s")
    if row["delivered_ratio"] < MIN_DELIVERED:
        why.append(f"ingest applied {100 * row['delivered_ratio']:.1f}% of the sim's updates")
    if row["publish_lag_us_p90"] > MAX_PUBLISH_LAG_US or row["publish_lag_us_last"] > MAX_PUBLISH_LAG_US:
        why.append(f"receive->publish lag p90 {row['publish_lag_us_p90'] / 1000:.0f} ms, "
                   f"last {row['publish_lag_us_last'] / 1000:.0f} ms")
    for key in ("reconnects", "gaps", "resyncs", "sim_slow_clients_dropped"):
        if row[key]:
            why.append(f"{row[key]} {key.replace('_', ' ')}")
    return not why, why


def machine(shared: bool) -> dict:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu_model": model or "unknown", "python": sys.version.split()[0],
            "platform": platform.platform(), "shared": shared}


# ---------------------------------------------------------------------------- goals

def goals(result: dict) -> list[dict]:
    """Each team goal with the measured figure next to it (``met`` None when not measured)."""
    s = result["summary"]
    ws = {w["clients"]: w for w in result["ws"]}
    out = []

    def add(name, goal, measured, met, note=""):
        out.append({"goal": name, "target": goal, "measured": measured, "met": met, "note": note})

    best = s.get("max_ingest_msgs_per_s")
    cap = s.get("ingest_capacity_msgs_per_s")
    add("live ingest depth msgs/s per process", ">= 40000",
        f"sustained {s.get('max_sustained_rate') or 'none'}; best {best}/s; {cap}/s per core from CPU/msg",
        None if cap is None else cap >= 40_000,
        "per core = 1e6 / ingest CPU µs per msg at the highest kept-up rate (none kept up: the cheapest rate)")
    z = s.get("zmq_trade_latency_us") or {}
    add("trade latency to ZeroMQ p50", "<= 100 µs", z.get("p50"), None if z.get("p50") is None else z["p50"] <= 100)
    add("trade latency to ZeroMQ p99", "<= 500 µs", z.get("p99"), None if z.get("p99") is None else z["p99"] <= 500)
    rate = s.get("ws_rate")
    for n, limit in ((10, 1000.0), (100, 2500.0)):
        w = ws.get(n)
        p99 = w["trade_latency_us"]["p99"] if w else None
        note = f"at {rate:g} L2 msgs/s" if rate else ""
        if rate and rate < 20_000:
            note += " (goal is at 20k)"
        add(f"trade latency to {n} WS clients p99", f"<= {limit / 1000:g} ms",
            None if p99 is None else round(p99 / 1000, 2), None if p99 is None else p99 <= limit, note)
    rss = s.get("ingest_rss_mb")
    n_sym = result["params"]["symbols"]
    add("RSS per ingest", "<= 150 MB with 200 symbols", rss,
        None if rss is None or n_sym < 200 else rss <= 150,
        f"with {n_sym} symbols" + ("" if n_sym >= 200 else " (measure with --symbols 200)"))
    add("CSV sink rows/s", ">= 200000", f"{s.get('csv_rows_per_s')} live; {s.get('csv_rows_per_cpu_s')} per CPU-s",
        None if s.get("csv_rows_per_cpu_s") is None else s["csv_rows_per_cpu_s"] >= 200_000,
        "live rows/s is bounded by the input; rows per sink CPU-second is its capacity on one core")
    return out


def _ms(us) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def summary_text(result: dict) -> str:
    s = result["summary"]
    m = result["machine"]
    lines = [f"pipeline bench e2e  {result['date']}  {m['cores']} cores {m['cpu_model']}  Python {m['python']}"
             + ("  (machine shared with other work: figures are noisy)" if m["shared"] else ""),
             f"criterion: {CRITERION}", ""]
    lines.append(f"{'rate':>8} {'sim/s':>8} {'ingest/s':>9} {'deliv%':>7} {'lag p90':>7} {'µs/msg':>7} "
                 f"{'kept':>5}  {'ZMQ trade p50/p99/p99.9 µs':>27}  {'CPU% sim/ingest/pub/sink':>25} {'rows/s':>8}")
    for r in result["rates"]:
        z = r["zmq_trade_latency_us"]
        cpu = r["cpu_percent"]
        lines.append(
            f"{r['rate']:>8g} {r['sim_updates_per_s']:>8.0f} {r['ingest_updates_per_s']:>9.0f} "
            f"{100 * r['delivered_ratio']:>7.1f} {r['publish_lag_us_p90'] / 1000:>7.1f} "
            f"{r['ingest_cpu_us_per_msg'] or 0:>7.1f} {'yes' if r['kept_up'] else 'no':>5}  "
            f"{_fmt3(z):>27}  {_cpu(cpu):>25} {r['csv']['rows_per_s'] if r['csv'] else '-':>8}"
            + ("" if r["kept_up"] else f"   ({'; '.join(r['why_not'])})"))
    if result["ws"]:
        lines += ["", f"WebSocket trade latency at {s['ws_rate']:g} L2 msgs/s (ms; clients in separate processes):"]
        for w in result["ws"]:
            t = w["trade_latency_us"]
            lines.append(f"  {w['clients']:>4} clients: p50 {_ms(t['p50'])}  p99 {_ms(t['p99'])}  p99.9 {_ms(t['p99.9'])}"
                         f"  ({t['n']} samples, {w['processes']} client processes, closed early {w['closed_early']}, "
                         f"not connected {w['not_connected']}, failed processes {w['client_processes_failed']}, "
                         f"publisher CPU {w['cpu_percent'].get('publisher', 0):.0f}%)")
    lines += ["", "goals (measured on this machine; not asserted):"]
    for g in result["goals"]:
        mark = {True: "met", False: "NOT met", None: "n/a"}[g["met"]]
        lines.append(f"  {g['goal']:<40} goal {g['target']:<28} measured {g['measured']}  [{mark}]"
                     + (f"  {g['note']}" if g["note"] else ""))
    lines += ["", f"json: {result['files']['json']}", f"plot: {result['files']['plot']}",
              f"results row: {result['files']['results']}"]
    return "\n".join(lines)


def _fmt3(lat: dict) -> str:
    if not lat or lat.get("p50") is None:
        return "-"
    return f"{lat['p50']:.0f}/{lat['p99']:.0f}/{lat['p99.9']:.0f}"


def _cpu(cpu: dict) -> str:
    return "/".join(f"{cpu[k]:.0f}" if k in cpu else "-" for k in ("sim", "ingest", "publisher", "sink-csv"))


# --------------------------------------------------------------------------- RESULTS.md

def results_row(result: dict) -> str:
    s, m = result["summary"], result["machine"]
    z = s.get("zmq_trade_latency_us") or {}
    ws = "; ".join(f"{w['clients']}: {_ms(w['trade_latency_us']['p50'])}/{_ms(w['trade_latency_us']['p99'])}/"
                   f"{_ms(w['trade_latency_us']['p99.9'])}" for w in result["ws"]) or "-"
    cells = [
        result["date"],
        f"{m['cores']} cores, {m['cpu_model']}, Python {m['python']}",
        ("shared" if m["shared"] else "idle") + (f", load {m['load1_before']:.1f}" if "load1_before" in m else ""),
        str(result["params"]["symbols"]),
        f"{s['max_sustained_rate']:g}" if s.get("max_sustained_rate") else "none",
        str(s.get("sustained_ingest_msgs_per_s") or "-"),
        str(s.get("sustained_ingest_cpu_us_per_msg") or "-"),
        _fmt3(z),
        f"{s['ws_rate']:g}" if s.get("ws_rate") else "-",
        ws,
        str(s.get("ingest_rss_mb") or "-"),
        f"{s.get('csv_rows_per_s') or '-'} ({s.get('csv_rows_per_cpu_s') or '-'})",
        f"`{result['files']['json']}`",
    ]
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |\n"


def append_results(path: Path, result: dict) -> None:
    """Append the run's row to ``path``, creating it with the header (columns, command) first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or not path.read_text().strip():
        path.write_text(RESULTS_HEADER)
    with path.open("a") as f:
        f.write(results_row(result))


# ------------------------------------------------------------------------------ plot

def plot(path: Path, hops: list[tuple[str, np.ndarray]], title: str) -> None:
    """Latency CDF per hop (log x, µs), one line each; matplotlib's Agg canvas (no pyplot), imported here."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, values in hops:
        a = np.sort(np.asarray(values, dtype=np.float64))
        a = a[a > 0]
        if a.size == 0:
            continue
        y = np.arange(1, a.size + 1) / a.size
        p = latency(a)
        ax.plot(a, y, label=f"{label}  (n={a.size}, p50 {p['p50']:.0f}, p99 {p['p99']:.0f} µs)")
    ax.set_xscale("log")
    ax.set_xlabel("trade latency: client receive - ingest receive (µs, log scale)")
    ax.set_ylabel("fraction of trades")
    ax.set_ylim(0, 1.001)
    for q in (0.5, 0.99):
        ax.axhline(q, color="grey", linewidth=0.5, linestyle=":")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png")


def prefetch_plotting() -> threading.Thread:
    """Import matplotlib in a thread while the processes start (it takes seconds on a busy machine)."""
    def load():
        try:
            import matplotlib.backends.backend_agg  # noqa: F401
            import matplotlib.figure  # noqa: F401
        except ImportError:
            pass  # reported by plot()
    t = threading.Thread(target=load, name="matplotlib-import", daemon=True)
    t.start()
    return t


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
