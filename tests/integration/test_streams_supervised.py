"""Runtime streams under `pipeline run` (issue 14): supervisord runs sim, ingest, publisher and CSV sink
with BTCUSDT configured; `pipeline subscribe sim ETHUSDT` makes it live and the running publisher serves
it (a new client's welcome lists it); after kill -9 of the ingest, supervisord's restart comes back with
ETHUSDT (the state file in run_dir), live again on a new epoch.  The running CSV sink opens ETHUSDT's
files, the book file starting with a snapshot block."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from websockets.sync.client import connect

from helpers import PIPELINE, Procs, eventually, feeds, free_port, short_tmpdir, status, write_config
from pipeline.config import load_config
from pipeline.pidfile import read_pid
from tardis_reader import first_rows_are_a_block

pytestmark = pytest.mark.integration


def welcome_symbols(port: int) -> list[str]:
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
        return json.loads(ws.recv(timeout=10))["exchanges"]["sim"]["symbols"]


def test_kill_9_under_supervisord_comes_back_with_the_runtime_symbols():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    port, ws_port = free_port(), free_port()
    cfg_path = write_config(workdir, port, ["BTCUSDT"],
                            sim_table=f'[sim]\nport = {port}\nsymbols = ["BTCUSDT", "ETHUSDT"]\nrate = 400\n'
                                      f'[publisher]\nport = {ws_port}\n[sinks.csv]\ndir = "csv"\n')
    config = load_config(cfg_path)
    run = procs.start("run", PIPELINE + ["--config", str(cfg_path), "run"])
    try:
        eventually(lambda: feeds(cfg_path)["BTCUSDT"]["state"] == "live", 40, 0.2, "BTCUSDT live")
        out = subprocess.run(PIPELINE + ["--config", str(cfg_path), "subscribe", "sim", "ETHUSDT"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        eventually(lambda: feeds(cfg_path)["ETHUSDT"]["state"] == "live", 30, 0.2, "ETHUSDT live")
        eventually(lambda: "ETHUSDT" in welcome_symbols(ws_port), 20, 0.3, "the publisher serves ETHUSDT")
        # the CSV sink records it: a book file that starts with a snapshot block
        book_file = eventually(lambda: list((workdir / "csv").glob("*_incremental_book_L2_*_ETHUSDT.csv")), 30, 0.3,
                               "ETHUSDT's book file")[0]
        eventually(lambda: first_rows_are_a_block(book_file), 20, 0.3, "a snapshot block first")

        st = status(cfg_path)
        old_pid = next(p["pid"] for p in st["processes"] if p["name"] == "ingest-sim")
        old_epoch = next(f["epoch"] for f in st["feeds"] if f["symbol"] == "BTCUSDT")
        os.kill(old_pid, signal.SIGKILL)  # a crash: nothing saved at exit
        eventually(lambda: read_pid(config.run_dir / "ingest-sim.pid") not in (None, old_pid), 40, 0.2,
                   "supervisord restarted the ingest")

        def back():
            f = feeds(cfg_path)
            return all(f.get(s, {}).get("state") == "live" and f[s]["epoch"] != old_epoch
                       for s in ("BTCUSDT", "ETHUSDT"))
        eventually(back, 40, 0.3, "both books live on the new epoch")
        assert feeds(cfg_path)["ETHUSDT"]["source"] == "runtime"

        run.send_signal(signal.SIGINT)
        assert run.wait(40) == 0
    finally:
        procs.stop_all()
