"""Real Binance traffic -> replay server -> ingest -> bus -> CSV sink, as real processes on loopback.

The capture's frames and REST bodies are served by ``pipeline replay``; a real
ingest process connects to it as to the venue; ``pipeline sink csv`` records the
bus.  The CSV files, read by an independent reader (tests/tardis_reader.py), must
rebuild exactly ``pipeline book`` (shared memory) and an independent reference
book computed from the capture with the venue's rules (tests/unit/
test_binance_replay.py), and hold every trade of the capture once.  Faults: the
sink is SIGKILLed mid-stream and restarted; the ingest is restarted (new epoch).
hftbacktest's own tardis converter reads the files too.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from captures import CAPTURES, read_capture
from helpers import PIPELINE, Procs, eventually, short_tmpdir, status
from tardis_reader import read_rows, rebuild_book

pytestmark = [pytest.mark.integration, pytest.mark.shared]

DEPTH = 20
SPOT = CAPTURES / "binance_spot_2021-10-12.jsonl"
FUTURES = CAPTURES / "binance_futures_2021-07-22.jsonl"

_spec = importlib.util.spec_from_file_location(
    "binance_reference", Path(__file__).resolve().parents[1] / "unit" / "test_binance_replay.py")
_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_reference)
ReferenceBook = _reference.ReferenceBook


class Capture:
    """What the capture says the pipeline must end with: reference books and trades."""

    def __init__(self, path: Path, futures: bool):
        self.path = path
        _, events = read_capture(path)
        self.symbols: list[str] = []
        refs: dict[str, ReferenceBook] = {}
        self.trades: dict[str, list[dict]] = {}
        for e in events:
            if e["src"] == "rest" and "depth" in e["url"]:
                sym = parse_qs(urlparse(e["url"]).query)["symbol"][0]
                self.symbols.append(sym)
                refs.setdefault(sym, ReferenceBook(futures)).snapshot(json.loads(e["data"]))
            elif e["src"] == "ws":
                outer = json.loads(e["data"])
                stream, data = outer["stream"], outer["data"]
                sym = data.get("s")
                if stream.endswith("@depth@100ms"):
                    refs.setdefault(sym, ReferenceBook(futures)).diff(data)
                elif stream.endswith("@aggTrade"):
                    self.trades.setdefault(sym, []).append(data)
        self.books = {s: refs[s].top(DEPTH) for s in self.symbols}
        self.applied = {s: refs[s].applied for s in self.symbols}  # diffs applied after the snapshot


def _config(workdir: Path, name: str, adapter: str, symbols: list[str], port: int) -> Path:
    path = workdir / "p.toml"
    path.write_text(f"""
[pipeline]
run_dir = "run"
data_dir = "data"
[exchanges.{name}]
adapter = "{adapter}"
symbols = {json.dumps(symbols)}
depth = {DEPTH}
ws_url = "ws://127.0.0.1:{port}"
rest_url = "http://127.0.0.1:{port}"
depth_stream = "depth@100ms"
trade_stream = "aggTrade"
ping_interval_s = 30
idle_timeout_s = 120
[sinks.csv]
dir = "data/csv"
flush_interval_s = 0.2
""")
    return path


class Stack:
    """replay -> ingest -> sink for one capture, each a real process."""

    def __init__(self, capture: Capture, name: str, adapter: str, rate: float):
        self.capture, self.name = capture, name
        self.workdir = short_tmpdir()
        self.procs = Procs(self.workdir)
        ready = self.workdir / "replay.port"
        self.procs.start("replay", PIPELINE + ["replay", str(capture.path), "--port", "0", "--rate", str(rate),
                                               "--ready-file", str(ready)])
        port = int(eventually(lambda: ready.exists() and ready.read_text().strip(), 20, what="replay ready"))
        self.config = _config(self.workdir, name, adapter, capture.symbols, port)
        self.csv_dir = self.workdir / "data" / "csv"
        self.sink = self.start_sink()
        self.ingest = self.start_ingest()

    def start_sink(self):
        stats = self.workdir / "run" / "sink-csv.stats.json"
        stats.unlink(missing_ok=True)
        p = self.procs.start("sink", PIPELINE + ["--config", str(self.config), "sink", "csv"])
        eventually(lambda: stats.exists(), 20, what="sink started")  # its SUB sockets exist now
        return p

    def start_ingest(self):
        return self.procs.start("ingest", PIPELINE + ["--config", str(self.config), "ingest", self.name])

    def feeds(self) -> dict:
        return {f["symbol"]: f for f in status(self.config)["feeds"]}

    def wait_replayed(self, what: str) -> None:
        """Every diff and trade of the capture went through the ingest."""
        cap = self.capture

        def done():
            f = self.feeds()
            return all(f[s]["state"] == "live" and f[s]["updates"] == cap.applied[s]
                       and f[s]["trades"] >= len(cap.trades.get(s, [])) for s in cap.symbols)
        eventually(done, 60, 0.2, what)

    def book_files(self, sym: str) -> list[Path]:
        return sorted(self.csv_dir.glob(f"*_incremental_book_L2_*_{sym}.csv"))

    def trade_rows(self, sym: str) -> list[dict]:
        return [r for p in sorted(self.csv_dir.glob(f"*_trades_*_{sym}.csv")) for r in read_rows(p)[1]]

    def shm_book(self, sym: str) -> tuple[list, list]:
        out = subprocess.run(PIPELINE + ["--config", str(self.config), "book", self.name, sym, "--json"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        view = json.loads(out.stdout)
        return [tuple(x) for x in view["bids"]], [tuple(x) for x in view["asks"]]

    def wait_csv_equals_shm(self) -> None:
        def equal():
            return all(rebuild_book(self.book_files(s))[:2] == self.shm_book(s) for s in self.capture.symbols)
        eventually(equal, 20, 0.2, "CSV books equal to shared memory")

    def close(self) -> None:
        self.procs.stop_all()


def _assert_trades_exactly_once(stack: Stack, exchange_id: str) -> None:
    for sym in stack.capture.symbols:
        rows = stack.trade_rows(sym)
        recorded = stack.capture.trades.get(sym, [])
        assert [r["id"] for r in rows] == [str(t["a"]) for t in recorded], sym  # each once, in order
        for r, t in zip(rows, recorded):
            assert r["exchange"] == exchange_id and r["symbol"] == sym
            assert float(r["price"]) == float(t["p"]) and float(r["amount"]) == float(t["q"])
            assert r["side"] == ("sell" if t["m"] else "buy")  # taker side
            assert int(r["timestamp"]) == t["T"] * 1000  # microseconds
            assert len(r["local_timestamp"]) == 16


@pytest.fixture(scope="module")
def spot():
    capture = Capture(SPOT, futures=False)
    stack = Stack(capture, "binance", "binance", rate=0)
    try:
        stack.wait_replayed("spot capture replayed")
        yield stack
    finally:
        stack.close()


def test_replayed_capture_rebuilds_pipeline_book_and_the_reference_from_csv(spot):
    spot.wait_csv_equals_shm()
    for sym in spot.capture.symbols:
        bids, asks, blocks = rebuild_book(spot.book_files(sym))
        assert (bids, asks) == spot.capture.books[sym], sym  # the independent reference
        assert len(bids) == DEPTH and blocks >= 1
        rows = read_rows(spot.book_files(sym)[0])[1]
        assert rows[0]["is_snapshot"] == "true" and {r["exchange"] for r in rows} == {"binance"}
    _assert_trades_exactly_once(spot, "binance")
    sink = status(spot.config)["sinks"][0]
    assert sink["state"] == "running" and sink["errors"] == 0 and sink["rows"] > 0 and sink["files"] >= 8  # + quotes files (bookTicker)
    assert sink["trades_lost"] == 0 and sink["snapshots"] >= 4


def test_hftbacktest_tardis_converter_rebuilds_the_same_book(spot):
    """hftbacktest 2.4.4 reads the files; its local order book equals the pipeline's."""
    hbt = pytest.importorskip("hftbacktest", reason="hftbacktest (the test extra) is not installed")
    from hftbacktest.data.utils import tardis

    spot.wait_csv_equals_shm()
    for sym in ("NKNUSDT", "LRCBTC"):
        (trades,) = spot.csv_dir.glob(f"binance_trades_*_{sym}.csv")
        (book,) = spot.book_files(sym)
        data = tardis.convert([str(trades), str(book)])
        bids, asks = spot.capture.books[sym]
        tick = min(round(abs(a[0] - b[0]), 10) for a, b in zip(bids, bids[1:]))
        asset = (hbt.BacktestAsset().data([data]).linear_asset(1.0).constant_order_latency(0, 0)
                 .power_prob_queue_model(2.0).no_partial_fill_exchange().trading_value_fee_model(0.0, 0.0)
                 .tick_size(tick).lot_size(1e-8).last_trades_capacity(0))
        bt = hbt.HashMapMarketDepthBacktest([asset])
        try:
            bt.elapse(10 ** 18)  # to the end of the data
            depth = bt.depth(0)
            lowest, highest = round(bids[-1][0] / tick), round(asks[-1][0] / tick)
            got_bids = [(round(t * tick, 10), depth.bid_qty_at_tick(t)) for t in range(depth.best_bid_tick, lowest - 1, -1)
                        if depth.bid_qty_at_tick(t) > 0]
            got_asks = [(round(t * tick, 10), depth.ask_qty_at_tick(t)) for t in range(depth.best_ask_tick, highest + 1)
                        if depth.ask_qty_at_tick(t) > 0]
        finally:
            bt.close()
        assert got_bids == [(round(p, 10), q) for p, q in bids], sym
        assert got_asks == [(round(p, 10), q) for p, q in asks], sym


def test_ingest_restart_new_epoch_starts_a_snapshot_block(spot):
    """Last in the module: the ingest is killed and restarted; the replay serves it the capture again."""
    spot.wait_csv_equals_shm()
    before = {s: rebuild_book(spot.book_files(s))[2] for s in spot.capture.symbols}
    epoch = spot.feeds()["NKNUSDT"]["epoch"]
    spot.procs.stop(spot.ingest, signal.SIGKILL)
    spot.ingest = spot.start_ingest()
    eventually(lambda: spot.feeds()["NKNUSDT"]["epoch"] not in (None, epoch), 20, 0.2, "new epoch")
    spot.wait_replayed("capture replayed to the new ingest")
    spot.wait_csv_equals_shm()
    for sym in spot.capture.symbols:
        bids, asks, blocks = rebuild_book(spot.book_files(sym))
        assert blocks > before[sym], sym
        assert (bids, asks) == spot.capture.books[sym], sym
    assert status(spot.config)["sinks"][0]["epochs"] >= 1


def test_sink_killed_mid_stream_loses_no_trade_and_still_rebuilds_the_book():
    """SIGKILL while the capture plays (~6 s at rate 5); restarted while trades keep coming."""
    capture = Capture(FUTURES, futures=True)
    stack = Stack(capture, "binance_futures", "binance_futures", rate=5)
    try:
        total = lambda: sum(len(stack.trade_rows(s)) for s in capture.symbols)  # noqa: E731
        eventually(lambda: total() >= 10, 30, 0.05, "some trades recorded")
        stack.procs.stop(stack.sink, signal.SIGKILL)
        published = lambda: sum(f["trades"] for f in stack.feeds().values())  # noqa: E731
        at_kill = published()
        eventually(lambda: published() >= at_kill + 10, 30, 0.1, "trades published while the sink is down")
        stack.sink = stack.start_sink()
        stack.wait_replayed("futures capture replayed")
        stack.wait_csv_equals_shm()
        _assert_trades_exactly_once(stack, "binance-futures")
        for sym in capture.symbols:
            bids, asks, blocks = rebuild_book(stack.book_files(sym))
            assert (bids, asks) == capture.books[sym], sym
            assert blocks >= 2, sym  # a block at each sink start
        sink = status(stack.config)["sinks"][0]
        assert sink["gaps_filled"] >= 10 and sink["trades_lost"] == 0
    finally:
        stack.close()
