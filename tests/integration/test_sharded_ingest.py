"""Sharded ingest (issue 15): ``processes = 2`` under `pipeline run`, every part a real process.

supervisord runs the sim, two ingest processes of exchange ``sim`` (BTCUSDT and SOLUSDT on
shard 0, ETHUSDT on shard 1: config order, ``pipeline/shards.py``), the publisher and the CSV
sink.  Every reader sees one exchange: `pipeline status` (with each feed's shard), one bus reader
with a contiguous seq per stream, books in shared memory equal to the venue's REST books,
WebSocket snapshots, CSV files.  `pipeline subscribe sim ADAUSDT` goes to the shard crc32 picks
(1) through its control socket and state file; kill -9 of that shard: supervisord restarts it
alone, its books come back on a new epoch with ADAUSDT, the other shard's epoch and seq run on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import zlib

import pytest
import zmq
from websockets.sync.client import connect

from helpers import (PIPELINE, Procs, eventually, feeds, free_port, rest_book_equals_shm, short_tmpdir, status,
                     write_config)
from pipeline import bus, schema, shards
from pipeline.config import load_config
from pipeline.consumer import Book, Consumer
from pipeline.pidfile import read_pid
from pipeline.shm import DEV_SHM
from pipeline.streams import state_path
from tardis_reader import first_rows_are_a_block

pytestmark = pytest.mark.integration

CONFIGURED = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
SHARD_OF = {"BTCUSDT": 0, "ETHUSDT": 1, "SOLUSDT": 0, "ADAUSDT": zlib.crc32(b"ADAUSDT") % 2}
assert SHARD_OF["ADAUSDT"] == 1


class L2Recorder:
    """Every L2 message of the exchange from one SUB socket connected to every shard (a thread)."""

    def __init__(self, config):
        self.messages: list[schema.L2Update] = []
        self._ctx = zmq.Context()
        eps = bus.exchange_endpoints(config, "sim", schema.Socket.L2)
        assert len(eps) == 2
        self._sock = bus.make_sub(self._ctx, eps, [b"l2.sim."])
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


def cli(cfg, *args) -> subprocess.CompletedProcess:
    out = subprocess.run(PIPELINE + ["--config", str(cfg), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out


def ws_snapshots(port: int, want: set[str]) -> dict[str, dict]:
    """The welcome's symbols and one order_book_l2 snapshot per wanted symbol from a silent client."""
    got: dict[str, dict] = {}
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
        welcome = json.loads(ws.recv(timeout=10))
        assert want <= set(welcome["exchanges"]["sim"]["symbols"])
        while not want <= set(got):
            ev = json.loads(ws.recv(timeout=20))
            if ev.get("kind") == "order_book_l2" and ev["exchange"] == "sim":
                got[ev["symbol"]] = ev
    return got


def contiguous(msgs: list[schema.L2Update]) -> bool:
    seqs = [m.seq for m in msgs]
    return len({m.epoch for m in msgs}) == 1 and seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_two_ingest_processes_are_one_exchange_to_every_reader():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    port, ws_port = free_port(), free_port()
    cfg_path = write_config(workdir, port, CONFIGURED, extra="processes = 2\n",
                            sim_table=f'[sim]\nport = {port}\nsymbols = {json.dumps(CONFIGURED + ["ADAUSDT"])}\n'
                                      f'rate = 400\n[publisher]\nport = {ws_port}\n[sinks.csv]\ndir = "csv"\n')
    config = load_config(cfg_path)
    assert {s: shards.shard_of(config.exchanges["sim"], s) for s in SHARD_OF} == SHARD_OF
    run = procs.start("run", PIPELINE + ["--config", str(cfg_path), "run"])
    rec = None
    try:
        live = lambda syms: lambda: all(feeds(cfg_path).get(s, {}).get("state") == "live" for s in syms)  # noqa: E731
        eventually(live(CONFIGURED), 60, 0.3, "every configured book live")
        st = status(cfg_path)
        ingests = {p["name"]: p for p in st["processes"] if p["name"].startswith("ingest-")}
        assert set(ingests) == {"ingest-sim.0", "ingest-sim.1"}
        assert all(p["state"] == "running" for p in ingests.values())
        assert {e["shard"]: e["state"] for e in st["exchanges"]} == {0: "up", 1: "up"}
        assert {e["shard"]: e["pid"] for e in st["exchanges"]} == {k: ingests[f"ingest-sim.{k}"]["pid"] for k in (0, 1)}
        assert {f["symbol"]: f["shard"] for f in st["feeds"]} == {s: SHARD_OF[s] for s in CONFIGURED}
        assert all(f["exchange"] == "sim" for f in st["feeds"])

        # one bus reader over both processes: every stream, each with a contiguous seq
        rec = L2Recorder(config)
        eventually(lambda: all(len(rec.of(s)) > 20 for s in CONFIGURED), 20, 0.1, "L2 of every symbol")
        # books equal the venue's REST books on a paused market (each read from its shard's segment)
        rest_book_equals_shm(cfg_path, "sim", port, CONFIGURED)
        book = json.loads(cli(cfg_path, "book", "sim", "ETHUSDT", "--json").stdout)
        assert book["exchange"] == "sim" and book["state"] == "live" and book["bids"]

        # the consumer library: one Consumer, books of both processes
        with Consumer(config, symbols=CONFIGURED) as c:
            def books_of_both():
                for ev in c.poll(0.2):
                    pass
                return all(isinstance(c.book("sim", s), Book) and c.book("sim", s).live and c.book("sim", s).bids
                           for s in CONFIGURED)
            eventually(books_of_both, 20, 0.0, "the consumer's books of every symbol")

        # the publisher serves every symbol of both processes
        snaps = ws_snapshots(ws_port, set(CONFIGURED))
        assert all(snaps[s]["bids"] and snaps[s]["asks"] for s in CONFIGURED)

        # runtime streams: routed to the symbol's shard, kept in that shard's state file
        out = cli(cfg_path, "subscribe", "sim", "ADAUSDT", "ETHUSDT")
        assert "subscribed ADAUSDT" in out.stdout and "already followed: ETHUSDT" in out.stdout
        assert json.loads(state_path(config.run_dir, "sim.1").read_text())["added"] == ["ADAUSDT"]
        assert not state_path(config.run_dir, "sim.0").exists()
        eventually(live(["ADAUSDT"]), 30, 0.3, "ADAUSDT live")
        assert feeds(cfg_path)["ADAUSDT"]["shard"] == 1 and feeds(cfg_path)["ADAUSDT"]["source"] == "runtime"
        streams = json.loads(cli(cfg_path, "streams", "--json").stdout)["exchanges"][0]
        assert streams["running"] and streams["runtime_added"] == ["ADAUSDT"]
        assert {r["symbol"]: r["shard"] for r in streams["streams"]} == SHARD_OF
        assert [p["unit"] for p in streams["processes"]] == ["sim.0", "sim.1"]
        ws_snapshots(ws_port, {"ADAUSDT"})
        book_file = eventually(lambda: list((workdir / "csv").glob("*_incremental_book_L2_*_ADAUSDT.csv")), 30, 0.3,
                               "ADAUSDT's book file")[0]
        eventually(lambda: first_rows_are_a_block(book_file), 20, 0.3, "a snapshot block first")
        assert all(list((workdir / "csv").glob(f"*_incremental_book_L2_*_{s}.csv")) for s in CONFIGURED)

        def sink_epochs():
            return next(x for x in status(cfg_path)["sinks"] if x["name"] == "csv")["epochs"]
        # the sink saw both processes' epochs: two processes, no restart (counted per process)
        assert sink_epochs() == 0

        # kill -9 of shard 1: supervisord restarts it alone; shard 0's streams run on untouched
        old = {f["symbol"]: f["epoch"] for f in status(cfg_path)["feeds"]}
        pid1 = ingests["ingest-sim.1"]["pid"]
        n_btc = len(rec.of("BTCUSDT"))
        os.kill(pid1, signal.SIGKILL)
        eventually(lambda: read_pid(config.run_dir / "ingest-sim.1.pid") not in (None, pid1), 40, 0.2,
                   "supervisord restarted shard 1")

        def back():
            f = feeds(cfg_path)
            return all(f.get(s, {}).get("state") == "live" and f[s]["epoch"] != old[s] for s in ("ETHUSDT", "ADAUSDT"))
        eventually(back, 40, 0.3, "shard 1's books live on a new epoch, ADAUSDT with them")
        after = feeds(cfg_path)
        assert after["BTCUSDT"]["epoch"] == old["BTCUSDT"] and after["SOLUSDT"]["epoch"] == old["SOLUSDT"]
        assert read_pid(config.run_dir / "ingest-sim.0.pid") == ingests["ingest-sim.0"]["pid"]
        eventually(lambda: len(rec.of("BTCUSDT")) > n_btc + 20, 20, 0.1, "BTCUSDT still flowing")
        eventually(lambda: sink_epochs() == 1, 20, 0.3, "the CSV sink counts shard 1's restart once")
        for s in ("BTCUSDT", "SOLUSDT"):
            assert contiguous(rec.of(s)), s
        eth = rec.of("ETHUSDT")
        new_epoch = [m for m in eth if m.epoch == after["ETHUSDT"]["epoch"]]
        # (its first messages may go out before the SUB has reconnected: ZeroMQ's slow joiner; a
        # consumer loads that book from shared memory on the new epoch)
        assert new_epoch and contiguous(new_epoch)

        cli(cfg_path, "unsubscribe", "sim", "ADAUSDT")
        eventually(lambda: feeds(cfg_path)["ADAUSDT"]["state"] == "removed", 20, 0.3, "ADAUSDT removed")
        assert not state_path(config.run_dir, "sim.1").exists()

        run.send_signal(signal.SIGINT)
        assert run.wait(60) == 0
        assert not list(DEV_SHM.glob(f"{config.shm_prefix}*"))
    finally:
        if rec is not None:
            rec.close()
        procs.stop_all()
