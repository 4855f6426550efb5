"""CSV (and Parquet) sink offline benchmark: pre-encoded bus messages straight into the sink core, no sockets.

Measures the ceiling of `pipeline sink csv` on this machine (decode, book tracking, row
formatting, buffered writes to real files) and prints rows/s, CPU µs per row and a SHA-256
of the files written, so a change of the formatting code can be checked to keep the exact
output bytes (same --messages and --seed give the same input; timestamps are fixed).

    .venv/bin/pipeline bench csv-offline --messages 300000 --repeat 3
    .venv/bin/pipeline bench csv-offline --profile        # cProfile top 25 by total time
    .venv/bin/pipeline bench csv-offline --sink parquet   # the same stream into the Parquet sink

With ``--sink parquet`` the rows are the same (sinks/recorder.py), built as tuples and written as
zstd Parquet files by pyarrow when the sink closes (flush_rows apart); the SHA-256 is of those files.

The message mix follows a busy book: 90% deltas of 1-3 levels near the top of a 50-level
view (prices with one decimal, sizes with three, 20% deletes), 10% trades.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import schema  # noqa: E402
from pipeline.book import ViewBook  # noqa: E402
from pipeline.config import parse_config  # noqa: E402
from sinks.csv_sink import CsvSink  # noqa: E402

T0_US = 1_714_564_800_000_000  # 2024-05-01T12:00:00Z: fixed, so the output bytes are reproducible


def messages(n: int, seed: int = 1) -> list[bytes]:
    """Encoded bus payloads; trades are prefixed with b"T"."""
    rng = random.Random(seed)
    book = ViewBook(50)
    book.load_snapshot([(100.0 - i * 0.1, 1.0) for i in range(400)], [(100.1 + i * 0.1, 1.0) for i in range(400)])
    now = T0_US
    bids, asks = book.view()
    out = [schema.encode(schema.L2Update(exchange="sim", symbol="BTCUSDT", epoch=1, seq=1, ts_exchange=now,
                                         ts_received=now + 7, snapshot=True, state="live", depth=50,
                                         bids=bids, asks=asks))]
    seq = trade_seq = 1
    while len(out) < n:
        now += 50
        if rng.random() < 0.1:
            out.append(b"T" + schema.encode(schema.Trade(
                exchange="sim", symbol="BTCUSDT", epoch=1, seq=trade_seq, ts_exchange=now, ts_received=now + 311,
                price=round(100.0 + rng.randrange(-30, 30) * 0.1, 1), amount=round(rng.random() * 2, 5),
                side=rng.choice(("buy", "sell")), trade_id=str(1_000_000 + trade_seq))))
            trade_seq += 1
            continue
        changes_b, changes_a = [], []
        for _ in range(rng.randrange(1, 4)):
            bid = rng.random() < 0.5
            p = round((100.0 - rng.randrange(60) * 0.1) if bid else (100.1 + rng.randrange(60) * 0.1), 1)
            s = 0.0 if rng.random() < 0.2 else round(rng.random() * 5, 3)
            (changes_b if bid else changes_a).append((p, s))
        db, da = book.apply(changes_b, changes_a)
        if db or da:
            seq += 1
            out.append(schema.encode(schema.L2Update(
                exchange="sim", symbol="BTCUSDT", epoch=1, seq=seq, ts_exchange=now, ts_received=now + 211,
                snapshot=False, state="live", depth=50, bids=db, asks=da)))
    return out


def run_once(payloads: list[bytes], profile: bool = False, kind: str = "csv") -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="l2csv", dir="/tmp"))
    config = parse_config('[exchanges.sim]\nadapter = "binance"\nsymbols = ["BTCUSDT"]\ndepth = 50\n'
                          '[sinks.csv]\ndir = "csv"\n[sinks.parquet]\ndir = "parquet"\n', workdir)
    if kind == "parquet":
        from sinks.parquet_sink import ParquetSink

        sink = ParquetSink(config, clock=lambda: T0_US)
    else:
        sink = CsvSink(config, clock=lambda: T0_US)
    sink.start()
    prof = cProfile.Profile() if profile else None
    on_trade, on_l2 = sink.on_trade, sink.on_l2
    t0, c0 = time.perf_counter(), time.process_time()
    if prof:
        prof.enable()
    for p in payloads:
        if p[:1] == b"T":
            on_trade(p[1:])
        else:
            on_l2(p)
    sink.close()
    if prof:
        prof.disable()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = sink.statistics()["rows"]
    digest = hashlib.sha256()
    for f in sorted((workdir / kind).rglob("*.csv" if kind == "csv" else "*.parquet")):
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return {"messages": len(payloads), "rows": rows, "rows_per_s": round(rows / dt),
            "cpu_us_per_row": round(cpu / rows * 1e6, 3), "sha256": digest.hexdigest()[:16]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sink", choices=("csv", "parquet"), default="csv")
    args = ap.parse_args(argv)
    payloads = messages(args.messages, args.seed)
    results = [run_once(payloads, args.profile, args.sink) for _ in range(1 if args.profile else args.repeat)]
    best = max(results, key=lambda r: r["rows_per_s"])
    print(json.dumps({"sink": args.sink, **best, "runs_rows_per_s": [r["rows_per_s"] for r in results]}))


if __name__ == "__main__":
    main()
