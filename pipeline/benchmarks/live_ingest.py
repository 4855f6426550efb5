"""Live ingest benchmark: sim -> ingest -> ZeroMQ SUB subscriber, as real processes (no publisher, no sink).

For each sim rate (book updates/s, `@depth@0ms`: one update is one frame) prints one JSON line:
the sim's and the ingest's update rates, whether the ingest kept up (criterion in bench/RESULTS.md),
its CPU, CPU µs per message and RSS, and the ingest-receive -> subscriber latency of trades and L2
messages (p50/p99/p99.9, µs, same host clock).  The processes, the measuring and the criterion are
those of `pipeline bench e2e` (pipeline/benchmarks/e2e*.py), which also runs the publisher, the CSV
sink and WebSocket clients; this script is the ingest alone.

    .venv/bin/pipeline bench live-ingest --rates 5000,20000,40000 --seconds 8 [--symbols 200]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from pipeline.benchmarks.e2e import run_rate
from pipeline.benchmarks.e2e_stack import symbol_names


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="5000,20000,40000", help="Comma-separated sim rates (updates/s).")
    ap.add_argument("--seconds", type=float, default=8.0, help="Measurement window per rate.")
    ap.add_argument("--symbols", type=int, default=4, help="Symbols on the sim and the ingest.")
    args = ap.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}", flush=True)
    for rate in (float(r) for r in args.rates.split(",")):
        row, _, _ = run_rate(rate, symbol_names(args.symbols), args.seconds, min(1.0, args.seconds / 4),
                             publisher=False, sink=False)
        print(json.dumps({
            "sim_rate": rate, "sim_updates_per_s": row["sim_updates_per_s"],
            "ingest_msgs_per_s": row["ingest_updates_per_s"], "kept_up": row["kept_up"], "why_not": row["why_not"],
            "ingest_cpu_percent": row["cpu_percent"]["ingest"], "ingest_cpu_us_per_msg": row["ingest_cpu_us_per_msg"],
            "ingest_rss_mb": row["rss_mb"]["ingest"], "publish_lag_us_max": row["publish_lag_us_max"],
            "trade_latency_us": row["zmq_trade_latency_us"], "l2_latency_us": row["zmq_l2_latency_us"],
        }), flush=True)


if __name__ == "__main__":
    main()
