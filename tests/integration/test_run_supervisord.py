"""`pipeline run`: real supervisord runs sim + ingest; a killed ingest comes back with a new
epoch and consumers resync; Ctrl-C stops everything and leaves nothing behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from helpers import PIPELINE, Procs, eventually, feeds, free_port, short_tmpdir, status, write_config
from pipeline.config import load_config
from pipeline.consumer import Consumer
from pipeline.pidfile import read_pid

pytestmark = pytest.mark.integration


def test_run_supervises_restarts_and_cleans_up_on_ctrl_c():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    port = free_port()
    cfg_path = write_config(workdir, port, ["BTCUSDT", "ETHUSDT"],
                            sim_table=f'[sim]\nport = {port}\nsymbols = ["BTCUSDT", "ETHUSDT"]\nrate = 400\n'
                                      f'[publisher]\nport = {free_port()}\n')
    config = load_config(cfg_path)
    run = procs.start("run", PIPELINE + ["--config", str(cfg_path), "run"])
    try:
        eventually(lambda: all(f["state"] == "live" for f in feeds(cfg_path).values()), 40, 0.2, "books live")
        st = status(cfg_path)
        names = {p["name"]: p for p in st["processes"]}
        assert names["sim"]["state"] == "running" and names["ingest-sim"]["state"] == "running"
        old_pid = names["ingest-sim"]["pid"]
        old_epoch = st["feeds"][0]["epoch"]

        with Consumer(config) as consumer:
            eventually(lambda: consumer.poll(0.1) is not None and consumer.book("sim", "BTCUSDT"), 20, 0.01,
                       "consumer has a book")
            os.kill(old_pid, signal.SIGKILL)  # a crash: no cleanup at all

            def restarted():
                consumer.poll(0.1)
                b = consumer.book("sim", "BTCUSDT")
                return b is not None and b.epoch != old_epoch and b.live
            eventually(restarted, 40, 0.0, "consumer on the new epoch")
            tracker = consumer.trackers[("sim", "BTCUSDT")]
            assert tracker.resyncs >= 2

        new_pid = read_pid(config.run_dir / "ingest-sim.pid")
        assert new_pid and new_pid != old_pid
        eventually(lambda: all(f["state"] == "live" and f["epoch"] != old_epoch
                               for f in feeds(cfg_path).values()), 30, 0.2, "new epoch live in status")
        children = psutil.Process(run.pid).children(recursive=True)
        assert len(children) >= 3  # supervisord, sim, ingest

        run.send_signal(signal.SIGINT)  # Ctrl-C
        assert run.wait(40) == 0
        for child in children:
            eventually(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 20, 0.1,
                       f"{child.pid} stopped")
        assert not list(Path("/dev/shm").glob(f"{config.shm_prefix}_*"))
        assert not list(config.run_dir.glob("*.sock"))
        assert not list(config.run_dir.glob("*.pid"))
        assert "sim" in (config.run_dir / "supervisord.conf").read_text()
    finally:
        procs.stop_all()
