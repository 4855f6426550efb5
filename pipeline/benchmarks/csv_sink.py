"""CSV sink benchmark: sim -> ingest -> bus -> `pipeline sink csv`, as real processes (no publisher).

For each sim rate (`@depth@0ms`: one sim update is one depth message) prints one JSON line: the
rows/s the sink wrote (from its stats file), by kind, MB/s, its CPU and rows per CPU-second (its
capacity on one core), the ingest's CPU, and what it had to repair (L2 resyncs, trades backfilled
from the ring or lost).  The processes and the measuring are those of `pipeline bench e2e`
(pipeline/benchmarks/e2e*.py), which reports the same `csv` figures beside the rest of the pipeline.
The sink core's ceiling without sockets is pipeline/benchmarks/csv_offline.py.

    .venv/bin/pipeline bench csv-sink --rates 2000,10000,20000 --seconds 10
"""

from __future__ import annotations

import argparse
import json

from pipeline.benchmarks.e2e import run_rate
from pipeline.benchmarks.e2e_stack import symbol_names


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="2000,10000,20000", help="Comma-separated sim rates (updates/s).")
    ap.add_argument("--seconds", type=float, default=10.0, help="Measurement window per rate.")
    ap.add_argument("--symbols", type=int, default=4, help="Symbols on the sim and the ingest.")
    args = ap.parse_args(argv)
    for rate in (float(r) for r in args.rates.split(",")):
        row, _, _ = run_rate(rate, symbol_names(args.symbols), args.seconds, min(2.0, args.seconds / 4),
                             publisher=False, sink=True)
        print(json.dumps({"sim_rate": rate, **row["csv"], "sink_cpu_pct": row["cpu_percent"]["sink-csv"],
                          "ingest_cpu_pct": row["cpu_percent"]["ingest"], "ingest_kept_up": row["kept_up"]}),
              flush=True)


if __name__ == "__main__":
    main()
