"""sim -> ingest -> shared memory + bus, as real processes on loopback.

One sim and one ingest serve the whole module; each fault test measures the change
of its own counters.  Books are checked against shared memory through the public
consumer library, the way a strategy would use them.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from helpers import (PIPELINE, Procs, eventually, exchange_stats, feeds, short_tmpdir, sim_fault, start_sim,
                     status, write_config)
from pipeline.app.status import collect
from pipeline.config import load_config
from pipeline.consumer import Book, Consumer, Trade
from pipeline.shm import BookReader, find_segment

pytestmark = pytest.mark.integration
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


@pytest.fixture(scope="module")
def pipeline_procs():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        port = start_sim(procs, ",".join(SYMBOLS), rate=3000, extra=["--ping-interval", "1.0"])
        config = write_config(workdir, port, SYMBOLS, extra='depth_stream = "depth@0ms"\nping_interval_s = 3.0\nsnapshot_interval_s = 1.0\n')
        ingest = procs.start("ingest", PIPELINE + ["--config", str(config), "ingest", "sim"])
        eventually(lambda: all(f["state"] == "live" for f in feeds(config).values()), 30, 0.2, "all books live")
        yield {"port": port, "config": config, "procs": procs, "ingest": ingest, "workdir": workdir}
    finally:
        procs.stop_all()


def wait_all_live(config, what):
    eventually(lambda: all(f["state"] == "live" for f in feeds(config).values()), 30, 0.2, what)


def test_consumer_rebuilds_every_book_equal_to_shared_memory_without_gaps(pipeline_procs):
    config = load_config(pipeline_procs["config"])
    reader = BookReader.open(config.shm_prefix, "sim")
    applied = {s: 0 for s in SYMBOLS}
    equal_checks = {s: 0 for s in SYMBOLS}
    with Consumer(config) as consumer:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            for item in consumer.poll(0.2):
                if not isinstance(item, Book):
                    continue
                applied[item.symbol] += 1
                if applied[item.symbol] % 25:
                    continue
                snap = reader.read(item.symbol)
                if snap.seq != item.seq:
                    continue  # shm moved on already; compare at the next chance
                bids, asks = item.top()
                assert [tuple(x) for x in snap.bids.tolist()] == bids
                assert [tuple(x) for x in snap.asks.tolist()] == asks
                equal_checks[item.symbol] += 1
            if min(applied.values()) >= 2000 and min(equal_checks.values()) >= 10:
                break
        trackers = {s: consumer.trackers[("sim", s)] for s in SYMBOLS}
    reader.close()
    assert min(applied.values()) >= 2000, applied
    assert min(equal_checks.values()) >= 10, equal_checks
    for s, tr in trackers.items():
        assert tr.gaps == 0, s          # every delta arrived, in seq order
        assert tr.resyncs == 1, s       # one snapshot at the start, deltas ever after
        bids, asks = tr.book.top()
        assert bids and asks and bids[0][0] < asks[0][0], s
    assert consumer.trade_gaps == 0


def test_server_pings_are_answered_so_the_venue_keeps_the_connection(pipeline_procs):
    """The sim pings every 1 s and drops a client silent for 3 s (Binance: 20 s / 60 s)."""
    config = pipeline_procs["config"]
    before = exchange_stats(config)["reconnects"]
    time.sleep(4.0)  # a window of four server pings: absence of reconnects is the assertion
    assert exchange_stats(config)["reconnects"] == before
    assert all(f["state"] == "live" for f in feeds(config).values())


def test_consumer_without_shared_memory_syncs_from_bus_snapshots(pipeline_procs):
    """A consumer on another host cannot map shared memory: it waits for the next bus
    snapshot (published every snapshot_interval_s) and then follows deltas."""
    config = load_config(pipeline_procs["config"])
    with Consumer(config, symbols=["SOLUSDT"], trades=False, use_shm=False) as consumer, \
            BookReader.open(config.shm_prefix, "sim") as reader:
        def equal_to_shm():
            for book in consumer.poll(0.2):
                assert isinstance(book, Book)
                snap = reader.read("SOLUSDT")
                if snap.seq == book.seq:
                    return ([tuple(x) for x in snap.bids.tolist()] == book.top()[0]
                            and [tuple(x) for x in snap.asks.tolist()] == book.top()[1]) or "differ"
            return None
        assert eventually(equal_to_shm, 20, 0.0, "bus-only book equal to shm") is True
        assert consumer.trackers[("sim", "SOLUSDT")].gaps == 0


def test_async_consumer_yields_trades_and_books(pipeline_procs):
    import asyncio

    from pipeline.consumer import AsyncConsumer

    async def collect():
        kinds, books = set(), {}
        async with AsyncConsumer(load_config(pipeline_procs["config"])) as consumer, asyncio.timeout(20):
            async for item in consumer:
                kinds.add(type(item))
                if isinstance(item, Book):
                    books[item.symbol] = item
                if kinds == {Trade, Book} and len(books) == len(SYMBOLS):
                    break
        return kinds, books

    kinds, books = asyncio.run(collect())
    assert kinds == {Trade, Book}
    assert all(b.best_bid()[0] < b.best_ask()[0] for b in books.values())


def test_example_consumer_prints_trades_and_books(pipeline_procs):
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "print_books.py"
    p = subprocess.Popen([sys.executable, str(example), str(pipeline_procs["config"])], stdout=subprocess.PIPE,
                         text=True)
    try:
        seen = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and seen != {"trade", "book"}:
            line = p.stdout.readline()
            seen.add(line.split(" ", 1)[0])
        assert {"trade", "book"} <= seen
    finally:
        p.kill()
        p.wait()


def test_status_json_has_the_documented_keys(pipeline_procs):
    st = status(pipeline_procs["config"])
    feed_keys = {"exchange", "symbol", "state", "epoch", "seq", "updates", "trades", "gaps", "resyncs",
                 "malformed", "checksum_ok", "checksum_failed", "age_s", "best_bid", "best_ask"}
    assert {f["symbol"] for f in st["feeds"]} == set(SYMBOLS)
    for f in st["feeds"]:
        assert feed_keys <= f.keys()
        assert f["best_bid"][0] < f["best_ask"][0] and f["best_bid"][1] > 0 and f["best_ask"][1] > 0
        assert f["updates"] > 0 and f["trades"] > 0
    proc = next(p for p in st["processes"] if p["name"] == "ingest-sim")
    assert {"name", "pid", "state", "uptime_s", "cpu_percent", "rss_bytes"} <= proc.keys()
    assert proc["state"] == "running" and proc["pid"] == pipeline_procs["ingest"].pid and proc["rss_bytes"] > 0
    assert proc["cpu_percent"] > 0 and proc["uptime_s"] > 0
    ex = next(e for e in st["exchanges"] if e["exchange"] == "sim")
    # lags over one window: the figures agree (issue 16: "publish lag 259us (max 97)")
    assert 0 < ex["publish_lag_us"] <= ex["publish_lag_p99_us"] <= ex["publish_lag_max_us"]
    assert ex["loop_lag_us"] <= ex["loop_lag_p99_us"] <= ex["loop_lag_max_us"]
    assert ex["connect_failures"] == 0 and ex["last_error"] is None
    assert [c["state"] for c in ex["connections"]] == ["open", "open"] and ex["connections_total"] == 2


def test_book_cli_prints_one_json_object_of_the_view(pipeline_procs):
    out = subprocess.run(PIPELINE + ["--config", str(pipeline_procs["config"]), "book", "sim", "BTCUSDT",
                                     "--depth", "5", "--json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    book = json.loads(out.stdout)
    assert set(book) == {"exchange", "symbol", "epoch", "seq", "state", "bids", "asks", "update_id", "time_exchange",
                         "time_received", "age_s", "reason", "last_error", "last_error_time", "last_error_age_s"}
    assert book["state"] == "live" and len(book["bids"]) == 5 and len(book["asks"]) == 5
    assert book["reason"] is None and book["update_id"] > 0 and 0 <= book["age_s"] < 30
    for key in ("time_exchange", "time_received"):  # ISO-8601 UTC with microseconds, as on the WebSocket
        assert datetime.strptime(book[key], "%Y-%m-%dT%H:%M:%S.%fZ").year >= 2024
    assert book["bids"][0][0] < book["asks"][0][0]
    assert [p for p, _ in book["bids"]] == sorted((p for p, _ in book["bids"]), reverse=True)
    assert [p for p, _ in book["asks"]] == sorted(p for p, _ in book["asks"])


def test_dropped_diff_is_detected_as_gap_and_only_that_symbol_resyncs(pipeline_procs):
    config, port = pipeline_procs["config"], pipeline_procs["port"]
    before = feeds(config)
    sim_fault(port, name="drop_diff", symbol="ETHUSDT")
    after = eventually(lambda: (lambda f: f if f["ETHUSDT"]["resyncs"] > before["ETHUSDT"]["resyncs"]
                                and f["ETHUSDT"]["state"] == "live" else None)(feeds(config)),
                       20, 0.1, "ETHUSDT resync")
    assert after["ETHUSDT"]["gaps"] == before["ETHUSDT"]["gaps"] + 1
    for other in ("BTCUSDT", "SOLUSDT"):  # resync only the stream that broke
        assert after[other]["gaps"] == before[other]["gaps"]
        assert after[other]["resyncs"] == before[other]["resyncs"]


def test_malformed_frame_is_counted_and_skipped(pipeline_procs):
    config, port = pipeline_procs["config"], pipeline_procs["port"]
    before = feeds(config)
    assert sim_fault(port, name="malformed", kind="depth")["connections"] >= 1
    after = eventually(lambda: (lambda f: f if sum(x["malformed"] for x in f.values())
                                > sum(x["malformed"] for x in before.values()) else None)(feeds(config)),
                       20, 0.1, "malformed counted")
    assert all(f["state"] == "live" for f in after.values())
    assert sum(f["gaps"] for f in after.values()) == sum(f["gaps"] for f in before.values())
    assert pipeline_procs["ingest"].poll() is None


def test_disconnect_reconnects_and_books_come_back_live(pipeline_procs):
    config, port = pipeline_procs["config"], pipeline_procs["port"]
    ex_before = exchange_stats(config)
    before = feeds(config)
    sim_fault(port, name="disconnect")
    eventually(lambda: exchange_stats(config)["reconnects"] >= ex_before["reconnects"] + 2, 30, 0.1,
               "depth and trade connections reopened")
    wait_all_live(config, "books live after reconnect")
    after = feeds(config)
    assert all(after[s]["resyncs"] > before[s]["resyncs"] for s in SYMBOLS)  # a new socket means a new snapshot


def test_stalled_server_is_detected_by_the_watchdog(pipeline_procs):
    """The sim stops sending and answering pings: no pong -> dead connection -> reconnect."""
    config, port = pipeline_procs["config"], pipeline_procs["port"]
    ex_before = exchange_stats(config)
    sim_fault(port, name="stall", seconds=9)  # our pings every 3 s: found dead within 6 s
    eventually(lambda: exchange_stats(config)["reconnects"] > ex_before["reconnects"], 30, 0.1, "reconnect after stall")
    wait_all_live(config, "books live after the stall")


def test_rest_429_backs_off_under_retry_after_then_syncs(pipeline_procs):
    config, port = pipeline_procs["config"], pipeline_procs["port"]
    ex_before = exchange_stats(config)
    sim_fault(port, name="rest_status", status=429, count=2)
    sim_fault(port, name="drop_diff", symbol="BTCUSDT")  # forces a REST snapshot
    eventually(lambda: exchange_stats(config)["rest_throttled"] > ex_before["rest_throttled"], 20, 0.1,
               "429 counted")
    t0 = time.monotonic()
    wait_all_live(config, "BTCUSDT live after the 429s")
    ex_after = exchange_stats(config)
    assert ex_after["rest_errors"] >= ex_before["rest_errors"] + 2
    assert pipeline_procs["ingest"].poll() is None
    assert time.monotonic() - t0 < 30


def test_rest_5xx_is_retried(pipeline_procs):
    config, port = pipeline_procs["config"], pipeline_procs["port"]
    ex_before = exchange_stats(config)
    sim_fault(port, name="rest_status", status=503, count=1)
    sim_fault(port, name="drop_diff", symbol="SOLUSDT")
    eventually(lambda: exchange_stats(config)["rest_errors"] > ex_before["rest_errors"], 20, 0.1, "503 counted")
    wait_all_live(config, "SOLUSDT live after the 503")


def test_slow_rest_snapshot_buffers_diffs_and_applies_them_after(pipeline_procs):
    """The snapshot/stream join: diffs keep arriving while REST answers in 2 s; they are
    buffered (never applied to an empty book) and the book comes back exactly in sync."""
    config, port = pipeline_procs["config"], pipeline_procs["port"]
    before = feeds(config)["BTCUSDT"]
    # Polled in-process (status.collect reads shared memory in about a millisecond): a
    # `pipeline status` subprocess takes 1.5-2 s on a loaded 2-core box, as long as the
    # buffering window itself, and the test then missed it.
    cfg = load_config(config)

    def buffered() -> int:
        return next(f for f in collect(cfg)["feeds"] if f["symbol"] == "BTCUSDT")["buffered"]

    sim_fault(port, name="rest_delay", seconds=4, count=1)
    sim_fault(port, name="drop_diff", symbol="BTCUSDT")
    seen_buffering = eventually(lambda: buffered() > 0, 20, 0.05, "diffs buffered")
    assert seen_buffering
    eventually(lambda: (lambda f: f["state"] == "live" and f["resyncs"] > before["resyncs"])(feeds(config)["BTCUSDT"]),
               30, 0.1, "BTCUSDT live after the slow snapshot")
    # and the consumer view agrees with shared memory right after the join
    with Consumer(cfg, symbols=["BTCUSDT"], trades=False) as consumer, BookReader.open(cfg.shm_prefix, "sim") as r:
        def equal_once():
            for book in consumer.poll(0.2):
                assert isinstance(book, Book)
                snap = r.read("BTCUSDT")
                if snap.seq == book.seq:
                    bids, asks = book.top()
                    return ([tuple(x) for x in snap.bids.tolist()] == bids
                            and [tuple(x) for x in snap.asks.tolist()] == asks) or "differ"
            return None
        assert eventually(equal_once, 20, 0.0, "consumer book compared with shm") is True


def test_snapshots_wait_for_the_request_weight_budget(pipeline_procs):
    """A mass (re)connect must not burst REST: with a budget of 50 weight/min and
    snapshots of weight 25, two symbols sync at once and the third waits its turn.
    (limit 500 covers the sim's whole book, so no synced book needs another snapshot.)"""
    workdir, port = pipeline_procs["workdir"], pipeline_procs["port"]
    cfg3 = write_config(workdir, port, SYMBOLS, name="budget.toml", extra="snapshot_limit = 500\nrest_weight_limit = 50\n")
    cfg3.write_text(cfg3.read_text().replace('run_dir = "run"', 'run_dir = "run3"'))
    procs = pipeline_procs["procs"]
    p = procs.start("ingest-budget", PIPELINE + ["--config", str(cfg3), "ingest", "sim"])
    try:
        eventually(lambda: sum(f["state"] == "live" for f in feeds(cfg3).values()) == 2, 30, 0.1, "two books live")
        eventually(lambda: exchange_stats(cfg3)["rest_throttled"] > 0, 20, 0.1, "third snapshot held back")
        time.sleep(2.0)  # a window in which the held-back request must not go out
        ex = exchange_stats(cfg3)
        assert ex["rest_requests"] == 2 and ex["rest_errors"] == 0
        assert sorted(f["state"] for f in feeds(cfg3).values()) == ["live", "live", "syncing"], \
            procs.log("ingest-budget")[-3000:]
    finally:
        assert procs.stop(p) == 0


def test_connection_is_renewed_before_its_max_age(pipeline_procs):
    """Venues cut connections at 24 h; the ingest reconnects first (here after 1.5 s)."""
    workdir, port = pipeline_procs["workdir"], pipeline_procs["port"]
    cfg2 = write_config(workdir, port, ["BTCUSDT"], name="aged.toml",
                        extra="max_connection_age_s = 1.5\nping_interval_s = 0.3\n")
    cfg2.write_text(cfg2.read_text().replace('run_dir = "run"', 'run_dir = "run2"'))
    procs = pipeline_procs["procs"]
    p = procs.start("ingest-aged", PIPELINE + ["--config", str(cfg2), "ingest", "sim"])
    try:
        eventually(lambda: exchange_stats(cfg2)["reconnects"] >= 4, 30, 0.2, "connections renewed")
        eventually(lambda: feeds(cfg2)["BTCUSDT"]["state"] == "live", 20, 0.1, "live after renewals")
        f = feeds(cfg2)["BTCUSDT"]
        assert f["gaps"] == 0 and f["resyncs"] >= 1
    finally:
        assert procs.stop(p) == 0


def test_sigterm_cleans_up_shared_memory_and_sockets(pipeline_procs):
    """Last in the module: stopping the ingest removes its segment, sockets and pid file."""
    config = load_config(pipeline_procs["config"])
    procs, ingest = pipeline_procs["procs"], pipeline_procs["ingest"]
    import os
    seg = f"/dev/shm/{find_segment(config.shm_prefix, 'sim')}"  # the name the ingest published in run_dir
    assert os.path.exists(seg)
    assert procs.stop(ingest) == 0
    assert not os.path.exists(seg)
    assert not list(Path("/dev/shm").glob(f"{config.shm_prefix}_*"))  # the trade ring too
    assert not list((config.run_dir / "shm").iterdir())  # and the name files
    assert not list(config.run_dir.glob("sim.*.sock"))
    assert not (config.run_dir / "ingest-sim.pid").exists()
