"""`pipeline run` with [sinks.csv]: supervisord runs the sink; SIGKILLed, it is restarted and its files
still hold every trade once and whole lines only; Ctrl-C closes them cleanly."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from helpers import PIPELINE, Procs, eventually, feeds, free_port, short_tmpdir, status, write_config
from pipeline.config import load_config
from pipeline.pidfile import read_pid
from tardis_reader import read_rows, rebuild_book

pytestmark = pytest.mark.integration
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def _trade_ids(csv_dir, sym):
    rows = [r for p in sorted(csv_dir.glob(f"sim_trades_*_{sym}.csv")) for r in read_rows(p)[1]]
    return [int(r["id"]) for r in rows]


def test_run_records_csv_and_a_killed_sink_restarts_without_losing_a_trade():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    port = free_port()
    cfg_path = write_config(
        workdir, port, SYMBOLS,
        extra='trade_stream = "trade"\n[sinks.csv]\ndir = "data/csv"\nflush_interval_s = 0.2\n',
        sim_table=(f'[sim]\nport = {port}\nsymbols = {SYMBOLS!r}\nrate = 2000\n'.replace("'", '"')
                   + f'[publisher]\nport = {free_port()}\n'))
    config = load_config(cfg_path)
    csv_dir = workdir / "data" / "csv"
    run = procs.start("run", PIPELINE + ["--config", str(cfg_path), "run"])
    try:
        eventually(lambda: all(f["state"] == "live" for f in feeds(cfg_path).values()), 40, 0.2, "books live")
        eventually(lambda: min(len(_trade_ids(csv_dir, s)) for s in SYMBOLS) >= 50, 30, 0.2, "trades recorded")
        sink = status(cfg_path)["sinks"][0]
        # books and trades per symbol, and quotes (bookTicker) once the first one came
        assert sink["state"] == "running" and sink["rows"] > 0 and 4 <= sink["files"] <= 6 and sink["errors"] == 0
        old_pid = read_pid(config.run_dir / "sink-csv.pid")
        os.kill(old_pid, signal.SIGKILL)  # a crash mid-stream: buffers lost, maybe a partial line
        eventually(lambda: read_pid(config.run_dir / "sink-csv.pid") not in (None, old_pid), 30, 0.1,
                   "supervisord restarted the sink")
        counts = {s: len(_trade_ids(csv_dir, s)) for s in SYMBOLS}
        eventually(lambda: all(len(_trade_ids(csv_dir, s)) > counts[s] + 100 for s in SYMBOLS), 30, 0.2,
                   "the restarted sink records")
        sink = status(cfg_path)["sinks"][0]
        assert sink["state"] == "running" and sink["gaps_filled"] > 0 and sink["trades_lost"] == 0
        run.send_signal(signal.SIGINT)  # Ctrl-C: the sink flushes and closes its files
        assert run.wait(40) == 0
    finally:
        procs.stop_all()
    for sym in SYMBOLS:
        ids = _trade_ids(csv_dir, sym)
        assert ids == list(range(ids[0], ids[0] + len(ids))), sym  # every trade once, none missing
        bids, asks, blocks = rebuild_book(sorted(csv_dir.glob(f"sim_incremental_book_L2_*_{sym}.csv")))
        assert blocks >= 2 and len(bids) == len(asks) == 20 and bids[0][0] < asks[0][0], sym
    assert not list(csv_dir.glob("*.tmp"))
    assert not list(Path("/dev/shm").glob(f"{config.shm_prefix}_*"))  # book segment and trade ring removed
