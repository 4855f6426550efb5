"""The Parquet sink as a real process: replay -> ingest -> bus -> `pipeline sink parquet` (beside
`pipeline sink csv`), and under `pipeline run` with the simulator, SIGKILLed mid-stream.

The datasets are read back with pyarrow/pandas (tests/parquet_reader.py), DuckDB and polars;
their books must equal the independent reference of the capture and shared memory, their
trades the CSV sink's rows of the same run.
"""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import PIPELINE, Procs, eventually, feeds, free_port, short_tmpdir, status, write_config
from parquet_reader import csv_frame, files, files_start_with_blocks, frame, rebuild_book
from pipeline.config import load_config
from pipeline.pidfile import read_pid

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location("csv_sink_replay", Path(__file__).with_name("test_csv_sink_replay.py"))
_replay = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_replay)

BOOK, TRADES = "incremental_book_L2", "trades"
TRADE_COLUMNS = ["exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price", "amount"]


def _same_trades(csv_dir: Path, pq_dir: Path, exchange: str, sym: str, same_end: bool = True) -> None:
    """The trade rows of both sinks are equal (``same_end`` False: up to where the first one stopped,
    when the two processes were stopped at different moments of a running stream)."""
    want = csv_frame(sorted(csv_dir.glob(f"{exchange}_trades_*_{sym}.csv")))
    got = frame(pq_dir, exchange, TRADES, sym)[TRADE_COLUMNS]
    if not same_end:
        n = min(len(got), len(want))
        got, want = got[:n], want[:n]
    assert len(got) == len(want) > 0, sym
    for col in TRADE_COLUMNS:
        assert list(got[col]) == list(want[col]), (sym, col)


@pytest.mark.shared
def test_replayed_capture_gives_datasets_that_rebuild_the_reference_and_hold_the_csv_trades():
    capture = _replay.Capture(_replay.SPOT, futures=False)
    workdir = short_tmpdir()
    procs = Procs(workdir)
    ready = workdir / "replay.port"
    try:
        procs.start("replay", PIPELINE + ["replay", str(capture.path), "--port", "0", "--rate", "0",
                                          "--ready-file", str(ready)])
        port = int(eventually(lambda: ready.exists() and ready.read_text().strip(), 20, what="replay ready"))
        config = _replay._config(workdir, "binance", "binance", capture.symbols, port)
        config.write_text(config.read_text() + '[sinks.parquet]\ndir = "data/parquet"\nflush_interval_s = 0.3\n')
        sinks = {}
        for name in ("csv", "parquet"):
            sinks[name] = procs.start(f"sink-{name}", PIPELINE + ["--config", str(config), "sink", name])
            stats = workdir / "run" / f"sink-{name}.stats.json"
            eventually(stats.exists, 20, what=f"{name} sink started")
        procs.start("ingest", PIPELINE + ["--config", str(config), "ingest", "binance"])
        pq_dir, csv_dir = workdir / "data" / "parquet", workdir / "data" / "csv"

        def replayed():
            f = {x["symbol"]: x for x in status(config)["feeds"]}
            return all(f[s]["state"] == "live" and f[s]["updates"] == capture.applied[s]
                       and f[s]["trades"] >= len(capture.trades.get(s, [])) for s in capture.symbols)
        eventually(replayed, 60, 0.2, "capture replayed")

        def books_equal():
            return all(rebuild_book(frame(pq_dir, "binance", BOOK, s))[:2] == capture.books[s]
                       for s in capture.symbols)
        eventually(books_equal, 20, 0.3, "Parquet books equal the reference")
        # the stats file is rewritten every second: wait for one written after the first file
        sink = eventually(lambda: next((s for s in status(config)["sinks"] if s["name"] == "parquet" and s["files"]),
                                       None), 10, 0.2, "parquet sink stats with a file written")
        assert sink["state"] == "running" and sink["errors"] == 0 and sink["trades_lost"] == 0
        for p in sinks.values():
            assert procs.stop(p, signal.SIGTERM) == 0  # both write what they buffered
    finally:
        procs.stop_all()
    for sym in capture.symbols:
        if capture.trades.get(sym):
            _same_trades(csv_dir, pq_dir, "binance", sym)
            ids = list(frame(pq_dir, "binance", TRADES, sym)["id"])
            assert ids == [str(t["a"]) for t in capture.trades[sym]], sym
    assert files_start_with_blocks(pq_dir, "binance", capture.symbols)
    assert not list(pq_dir.rglob("*.tmp"))

    duckdb = pytest.importorskip("duckdb")
    polars = pytest.importorskip("polars")
    counts = dict(duckdb.sql(f"SELECT datatype, count(*) FROM read_parquet('{pq_dir}/**/*.parquet', "
                             "hive_partitioning = true, union_by_name = true) "
                             "WHERE exchange = 'binance' GROUP BY datatype").fetchall())
    df = polars.scan_parquet(f"{pq_dir}/exchange=binance/datatype=trades/**/*.parquet",
                             hive_partitioning=True).filter(polars.col("exchange") == "binance").collect()
    assert counts[TRADES] == len(df) == sum(len(capture.trades.get(s, [])) for s in capture.symbols)
    assert counts[BOOK] == sum(len(frame(pq_dir, "binance", BOOK, s)) for s in capture.symbols)


def test_run_records_parquet_and_a_killed_sink_leaves_whole_files_and_loses_no_trade():
    """`pipeline run` with [sinks.csv] and [sinks.parquet] and the simulator: the Parquet sink is SIGKILLed
    mid-stream and restarted by supervisord; every file is readable, no partial file is visible to
    readers, each starts with a block, and the trades equal the CSV sink's, each once."""
    workdir = short_tmpdir()
    procs = Procs(workdir)
    port = free_port()
    symbols = ["BTCUSDT", "ETHUSDT"]
    cfg_path = write_config(
        workdir, port, symbols,
        extra=('trade_stream = "trade"\n[sinks.csv]\ndir = "data/csv"\nflush_interval_s = 0.2\n'
               '[sinks.parquet]\ndir = "data/parquet"\nflush_interval_s = 0.3\n'),
        sim_table=(f'[sim]\nport = {port}\nsymbols = {symbols!r}\nrate = 2000\n'.replace("'", '"')
                   + f'[publisher]\nport = {free_port()}\n'))
    config = load_config(cfg_path)
    pq_dir, csv_dir = workdir / "data" / "parquet", workdir / "data" / "csv"
    trades = lambda: sum(len(frame(pq_dir, "sim", TRADES, s)) for s in symbols)  # noqa: E731
    run = procs.start("run", PIPELINE + ["--config", str(cfg_path), "run"])
    try:
        eventually(lambda: all(f["state"] == "live" for f in feeds(cfg_path).values()), 40, 0.2, "books live")
        eventually(lambda: trades() >= 100, 30, 0.2, "trades recorded")
        old_pid = read_pid(config.run_dir / "sink-parquet.pid")
        os.kill(old_pid, signal.SIGKILL)  # a crash mid-stream: its buffered window is lost
        for path in pq_dir.rglob("part-*.parquet"):  # what a reader sees right after the crash: whole files
            pq.read_table(path)
        eventually(lambda: read_pid(config.run_dir / "sink-parquet.pid") not in (None, old_pid), 30, 0.1,
                   "supervisord restarted the sink")
        at_restart = trades()
        eventually(lambda: trades() > at_restart + 100, 30, 0.2, "the restarted sink records")
        sink = next(s for s in status(cfg_path)["sinks"] if s["name"] == "parquet")
        assert sink["state"] == "running" and sink["gaps_filled"] > 0 and sink["trades_lost"] == 0
        run.send_signal(signal.SIGINT)  # Ctrl-C: the sinks write what they buffered
        assert run.wait(40) == 0
    finally:
        procs.stop_all()
    for path in pq_dir.rglob("part-*.parquet"):
        assert pq.read_table(path).num_rows > 0
    assert not list(pq_dir.rglob("*.tmp"))
    assert files_start_with_blocks(pq_dir, "sim", symbols)
    for sym in symbols:
        ids = [int(i) for i in frame(pq_dir, "sim", TRADES, sym)["id"]]
        assert ids == list(range(ids[0], ids[0] + len(ids))), sym  # every trade once, none missing
        _same_trades(csv_dir, pq_dir, "sim", sym, same_end=False)  # supervisord stopped them one by one
        bids, asks, blocks = rebuild_book(frame(pq_dir, "sim", BOOK, sym))
        assert blocks >= 2 and len(bids) == len(asks) == 20 and bids[0][0] < asks[0][0], sym
    assert len(files(pq_dir, "sim", BOOK)) >= 2
