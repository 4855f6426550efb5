"""Hardening of the ingest against a venue that misbehaves (issue 19), as real processes on loopback.

sim -> ingest, each test with its own pair.  No duration is asserted: a frozen book is
judged by its gap and resync counters and the book it ends with (equal to the venue's), a
stall by the state the books reach while the stall lasts (its limit is a fraction of the
stall), a disconnect storm by the reconnect delays the ingest chose (from its log).
"""

from __future__ import annotations

import pytest

from helpers import PIPELINE, Procs, eventually, rest_book_equals_shm, short_tmpdir, sim_fault, start_sim, write_config
from pipeline import status
from pipeline.config import load_config

pytestmark = pytest.mark.integration
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def feeds(config_path) -> dict[str, dict]:
    """The rows of `pipeline status --json` feeds, read in this process (the CLI costs ~1 s a call here)."""
    return {f["symbol"]: f for f in status.feeds(load_config(config_path))[0]}


@pytest.fixture
def pipeline_with():
    """start(extra config) -> (config, sim port, procs); everything stopped by PID after the test."""
    started: list[Procs] = []

    def start(extra: str = "", rate: float = 400):
        workdir = short_tmpdir()
        procs = Procs(workdir)
        started.append(procs)
        sim_port = start_sim(procs, ",".join(SYMBOLS), rate=rate)
        config = write_config(workdir, sim_port, SYMBOLS, extra='depth_stream = "depth@0ms"\n' + extra)
        procs.start("ingest", PIPELINE + ["--config", str(config), "ingest", "sim"])
        eventually(lambda: all(f["state"] == "live" for f in feeds(config).values()), 30, 0.2, "books live")
        return config, sim_port, procs

    yield start
    for procs in started:
        procs.stop_all()


def test_an_oversized_or_empty_rest_snapshot_is_refused_and_fetched_again(pipeline_with):
    # issue 19 item 11: a 50 MB body was read whole; an empty book went live until the BBO check
    config, sim_port, procs = pipeline_with()
    before = feeds(config)["BTCUSDT"]
    assert sim_fault(sim_port, name="rest_oversize", count=1)["ok"]
    assert sim_fault(sim_port, name="rest_empty", count=1)["ok"]
    assert sim_fault(sim_port, name="drop_diff", symbol="BTCUSDT")["ok"]  # a gap: fetch a snapshot
    try:
        after = eventually(lambda: (f := feeds(config)["BTCUSDT"])["rest_errors"] >= before["rest_errors"] + 2
                           and f["state"] == "live" and f["resyncs"] > before["resyncs"] and f, 40, 0.2,
                           "both bad snapshots refused, then live")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{feeds(config)['BTCUSDT']}\n{procs.log('ingest')[-3000:]}") from None
    log = procs.log("ingest")
    assert "body over" in log and "empty book" in log
    assert after["checksum_failed"] == before["checksum_failed"]  # never installed, so never caught late
    rest_book_equals_shm(config, "sim", sim_port, ["BTCUSDT"])
