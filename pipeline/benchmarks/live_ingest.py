"""Live ingest benchmark: sim -> ingest -> ZeroMQ SUB subscriber, as real processes (no publisher, no sink).

For each sim rate (book updates/s, `@depth@0ms`: one update is one frame) prints one JSON line:
the sim's and the ingest's update rates, whether the ingest kept up (criterion in bench/RESULTS.md),
its CPU, CPU µs per message and RSS, and the ingest-receive -> subscriber latency of trades and L2
messages (p50/p99/p99.9, µs, same host clock).  The processes, the measuring and the criterion are
those of `pipeline bench e2e` (pipeline/benchmarks/e2e*.py), which also runs the publisher, the CSV
sink and WebSocket clients; this script is the ingest alone.

    .venv/bin/pipeline bench live-ingest --rates 5000,20000,40000 --seconds 8 [--symbols 200]

Comparisons in one run (same machine, same sim, same measuring; the rates interleaved, so a
load change on a shared machine touches every variant alike), then a summary line with ratios:

    --processes 1,2   the exchange as one ingest process and as two shards (`processes = 2`,
                      pipeline/shards.py): what two processes keep up with against one
    --before REV      the ingest of git revision REV (its files from `git archive`, run with the
                      same venv through PYTHONPATH; only the ingest: the sim and the subscriber are
                      this checkout's) against this checkout's, one process each

The ceiling is the highest rate kept up; ``capacity`` is 1e6 / (ingest CPU µs per message) at
the highest rate that was measured, messages per CPU-second of the ingest processes together.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.benchmarks.e2e import run_rate
from pipeline.benchmarks.e2e_stack import symbol_names


def checkout(rev: str) -> tuple[Path, str]:
    """REV's files in a temporary directory (git archive: the repository is only read) and its short id."""
    root = Path(__file__).resolve().parents[2]
    short = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", rev], capture_output=True, text=True,
                           check=True).stdout.strip()
    out = Path(tempfile.mkdtemp(prefix=f"l2p-{short}-", dir="/tmp"))
    archive = subprocess.run(["git", "-C", str(root), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out, short


def summary(rows: list[dict]) -> dict:
    """Per variant: the ceiling (highest rate kept up) and the capacity; ratios (``against``: N processes
    to one, this checkout's one process to the --before revision's)."""
    out: dict = {}
    for r in rows:
        v = out.setdefault(r["variant"], {"ceiling": None, "capacity": None, "max_ingest_msgs_per_s": 0})
        if r["kept_up"] and (v["ceiling"] is None or r["sim_rate"] > v["ceiling"]):
            v["ceiling"] = r["sim_rate"]
        v["max_ingest_msgs_per_s"] = max(v["max_ingest_msgs_per_s"], r["ingest_msgs_per_s"])
        if r["ingest_cpu_us_per_msg"]:
            v["capacity"] = round(1e6 / r["ingest_cpu_us_per_msg"])  # the last (highest) rate's
    names = list(out)
    one = next((n for n, r in zip(names, (next(r for r in rows if r["variant"] == n) for n in names))
                if r["processes"] == 1 and not n.startswith("before")), None)
    for n in names[1:]:
        v = out[n]
        # N processes against this checkout's one process; one process against the first variant (--before)
        against = one if one is not None and n != one and n.startswith("current") else names[0]
        base = out[against]
        v["against"] = against
        v["ceiling_ratio"] = round(v["ceiling"] / base["ceiling"], 2) if v["ceiling"] and base["ceiling"] else None
        v["capacity_ratio"] = round(v["capacity"] / base["capacity"], 2) if v["capacity"] and base["capacity"] else None
        v["max_rate_ratio"] = round(v["max_ingest_msgs_per_s"] / base["max_ingest_msgs_per_s"], 2) \
            if base["max_ingest_msgs_per_s"] else None
    return {"summary": out}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="5000,20000,40000", help="Comma-separated sim rates (updates/s).")
    ap.add_argument("--seconds", type=float, default=8.0, help="Measurement window per rate.")
    ap.add_argument("--symbols", type=int, default=4, help="Symbols on the sim and the ingest.")
    ap.add_argument("--processes", default="1", help="Comma-separated ingest process counts (pipeline/shards.py).")
    ap.add_argument("--before", default=None, metavar="REV",
                    help="Also run the ingest of git revision REV (one process), rates interleaved.")
    args = ap.parse_args(argv)
    counts = [int(n) for n in args.processes.split(",")]
    symbols = symbol_names(args.symbols)
    if max(counts) > len(symbols):
        ap.error(f"--processes {max(counts)} needs at least as many --symbols")
    variants: list[tuple[str, int, Path | None]] = []
    code = None
    if args.before:
        code, short = checkout(args.before)
        variants.append((f"before {short}", 1, code))
    variants += [(f"current, {n} process{'es' if n > 1 else ''}", n, None) for n in counts]
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}", flush=True)
    rows = []
    try:
        for rate in (float(r) for r in args.rates.split(",")):
            for name, n, ingest_code in variants:
                row, _, _ = run_rate(rate, symbols, args.seconds, min(1.0, args.seconds / 4),
                                     publisher=False, sink=False, processes=n, ingest_code=ingest_code)
                out = {
                    "variant": name, "processes": n,
                    "sim_rate": rate, "sim_updates_per_s": row["sim_updates_per_s"],
                    "ingest_msgs_per_s": row["ingest_updates_per_s"], "kept_up": row["kept_up"],
                    "why_not": row["why_not"],
                    "ingest_cpu_percent": row["cpu_percent"]["ingest"],
                    "ingest_cpu_us_per_msg": row["ingest_cpu_us_per_msg"],
                    "ingest_rss_mb": row["rss_mb"]["ingest"], "publish_lag_us_max": row["publish_lag_us_max"],
                    "trade_latency_us": row["zmq_trade_latency_us"], "l2_latency_us": row["zmq_l2_latency_us"],
                }
                if n > 1:
                    out["cpu_percent_per_process"] = {k: v for k, v in row["cpu_percent"].items()
                                                      if k.startswith("ingest.")}
                rows.append(out)
                print(json.dumps(out), flush=True)
    finally:
        if code is not None:
            subprocess.run(["rm", "-rf", str(code)], check=False)
    if len(variants) > 1:
        print(json.dumps(summary(rows)), flush=True)


if __name__ == "__main__":
    main()
