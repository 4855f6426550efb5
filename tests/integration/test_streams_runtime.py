"""Runtime streams (issue 14, DESIGN.md contract 9): sim -> ingest as real processes, symbols
added and removed through `pipeline subscribe|unsubscribe` while the ingest runs.

The scenario of the issue: BTCUSDT configured; ETHUSDT subscribed goes live with a book equal
to the sim's own (its REST book on a paused market); BTCUSDT's L2 stream keeps a contiguous seq
with no gap or resync across the change; unsubscribing marks ETHUSDT "removed" on the bus and in
shared memory; a restarted ingest comes back with the runtime symbols; bad requests change nothing.
"""

from __future__ import annotations

import json
import subprocess
import threading

import pytest
import zmq

from helpers import (PIPELINE, Procs, eventually, feeds, rest_book_equals_shm, short_tmpdir, start_sim,
                     write_config)
from pipeline import bus, schema
from pipeline.config import load_config
from pipeline.shm import BookReader, BookState
from pipeline.streams import state_path

pytestmark = pytest.mark.integration


class L2Recorder:
    """Every L2 message of the exchange, in arrival order, from a ZeroMQ SUB in a thread."""

    def __init__(self, config, exchange: str):
        self.messages: list[schema.L2Update] = []
        self._ctx = zmq.Context()
        _, l2 = bus.endpoints(config, exchange)
        self._sock = bus.make_sub(self._ctx, [l2], [f"l2.{exchange}.".encode()])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if poller.poll(100):
                _, payload = bus.recv(self._sock)
                self.messages.append(schema.decode_l2(payload))

    def of(self, symbol: str) -> list[schema.L2Update]:
        return [m for m in list(self.messages) if m.symbol == symbol]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close(0)
        self._ctx.term()


def cli(config, *args, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run(PIPELINE + ["--config", str(config), *args], capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def streams_json(config) -> dict:
    return json.loads(cli(config, "streams", "--json").stdout)["exchanges"][0]


@pytest.fixture(scope="module")
def stack():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        port = start_sim(procs, "BTCUSDT,ETHUSDT,SOLUSDT", rate=600)
        config = write_config(workdir, port, ["BTCUSDT"], extra="max_symbols = 2\nsnapshot_interval_s = 1.0\n")
        ingest = procs.start("ingest", PIPELINE + ["--config", str(config), "ingest", "sim"])
        eventually(lambda: feeds(config)["BTCUSDT"]["state"] == "live", 30, 0.2, "BTCUSDT live")
        yield {"procs": procs, "port": port, "config": config, "ingest": ingest, "workdir": workdir}
    finally:
        procs.stop_all()


def test_subscribe_goes_live_equal_to_the_sim_and_leaves_the_other_stream_untouched(stack):
    config_path = stack["config"]
    config = load_config(config_path)
    before = feeds(config_path)["BTCUSDT"]
    rec = L2Recorder(config, "sim")
    try:
        eventually(lambda: rec.of("BTCUSDT"), 10, 0.05, "BTCUSDT messages on the bus")
        out = cli(config_path, "subscribe", "sim", "ETHUSDT")
        assert "subscribed ETHUSDT" in out.stdout
        eventually(lambda: feeds(config_path)["ETHUSDT"]["state"] == "live", 30, 0.2, "ETHUSDT live")
        rest_book_equals_shm(config_path, "sim", stack["port"], ["ETHUSDT", "BTCUSDT"])
        eventually(lambda: len(rec.of("ETHUSDT")) > 5, 10, 0.05, "ETHUSDT deltas")
    finally:
        rec.close()
    after = feeds(config_path)
    assert after["ETHUSDT"]["source"] == "runtime" and after["BTCUSDT"]["source"] == "config"
    # BTCUSDT: one connection changed under it, yet no gap, no resync, a contiguous seq
    assert (after["BTCUSDT"]["gaps"], after["BTCUSDT"]["resyncs"]) == (before["gaps"], before["resyncs"])
    btc = rec.of("BTCUSDT")
    seqs = [m.seq for m in btc]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert all(m.state == "live" for m in btc)
    eth = rec.of("ETHUSDT")
    assert eth[0].snapshot and [m.seq for m in eth] == list(range(eth[0].seq, eth[0].seq + len(eth)))
    st = streams_json(config_path)
    assert st["runtime_added"] == ["ETHUSDT"] and st["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert {r["symbol"]: r["source"] for r in st["streams"]} == {"BTCUSDT": "config", "ETHUSDT": "runtime"}
    assert json.loads(state_path(config.run_dir, "sim").read_text())["added"] == ["ETHUSDT"]


def test_bad_requests_are_refused_with_a_reason_and_change_nothing(stack):
    config_path = stack["config"]
    config = load_config(config_path)
    saved = state_path(config.run_dir, "sim").read_text()
    symbols = streams_json(config_path)["symbols"]
    cases = [
        (("subscribe", "sim", "XRPUSDT"), "unknown_symbol"),        # not in the venue's instrument list
        (("subscribe", "nosuch", "BTCUSDT"), "unknown exchange"),
        (("subscribe", "sim", "SOLUSDT", "XRPUSDT"), "unknown_symbol"),  # all or nothing
        (("subscribe", "sim", "bad name!"), "at most 31 characters"),
        (("unsubscribe", "sim", "SOLUSDT"), "not_followed"),
    ]
    for args, reason in cases:
        out = cli(config_path, *args, check=False)
        assert out.returncode == 1 and reason in out.stderr, (args, out.stderr)
    assert streams_json(config_path)["symbols"] == symbols
    assert state_path(config.run_dir, "sim").read_text() == saved


def test_past_max_symbols_is_a_clear_error(stack):
    out = cli(stack["config"], "subscribe", "sim", "SOLUSDT", check=False)
    assert out.returncode == 1 and "(full)" in out.stderr and "max_symbols is 2" in out.stderr
    assert "SOLUSDT" not in streams_json(stack["config"])["symbols"]


def test_unsubscribe_marks_removed_on_the_bus_and_in_shared_memory_and_the_slot_is_reused(stack):
    config_path = stack["config"]
    config = load_config(config_path)
    rec = L2Recorder(config, "sim")
    try:
        eventually(lambda: rec.of("ETHUSDT"), 10, 0.05, "ETHUSDT messages on the bus")
        cli(config_path, "unsubscribe", "sim", "ETHUSDT")
        last = eventually(lambda: [m for m in rec.of("ETHUSDT") if m.state == "removed"], 10, 0.05,
                          "a removed message")[-1]
        assert last.snapshot
    finally:
        rec.close()
    with BookReader.open(config.shm_prefix, "sim") as reader:
        book = reader.read("ETHUSDT")
        assert book.state is BookState.REMOVED and book.seq == last.seq
        assert feeds(config_path)["ETHUSDT"]["state"] == "removed"
        # the freed slot takes another symbol (max_symbols is 2)
        cli(config_path, "subscribe", "sim", "SOLUSDT")
        eventually(lambda: reader.read("SOLUSDT").state is BookState.LIVE, 30, 0.2, "SOLUSDT live")
        assert "ETHUSDT" not in reader.symbols
    assert streams_json(config_path)["symbols"] == ["BTCUSDT", "SOLUSDT"]


def test_a_restarted_ingest_comes_back_with_the_runtime_symbols_and_reset_drops_them(stack):
    config_path, procs = stack["config"], stack["procs"]
    procs.stop(stack["ingest"])
    st = streams_json(config_path)
    assert not st["running"] and st["symbols"] == ["BTCUSDT", "SOLUSDT"]
    stack["ingest"] = procs.start("ingest2", PIPELINE + ["--config", str(config_path), "ingest", "sim"])
    eventually(lambda: {s: f["state"] for s, f in feeds(config_path).items()} == {"BTCUSDT": "live", "SOLUSDT": "live"},
               30, 0.2, "both books live after the restart")
    assert feeds(config_path)["SOLUSDT"]["source"] == "runtime"
    out = cli(config_path, "streams", "reset", "sim")
    assert "removed SOLUSDT" in out.stdout
    config = load_config(config_path)
    assert not state_path(config.run_dir, "sim").exists()
    with BookReader.open(config.shm_prefix, "sim") as reader:
        eventually(lambda: reader.read("SOLUSDT").state is BookState.REMOVED, 10, 0.1, "SOLUSDT removed")
    assert streams_json(config_path)["symbols"] == ["BTCUSDT"]
