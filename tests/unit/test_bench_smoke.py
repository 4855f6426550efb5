"""Smoke tests of `pipeline bench gen-capture | ingest | compare` at tiny sizes.

They check what the benchmarks compute, never how fast: the synthetic capture is
deterministic, chains by the spot rule and parses with zero gaps; `bench ingest`
prints one JSON object whose books equal books rebuilt here from the capture with
plain dicts (and its shared-memory views their top 50); `compare` runs offline and
never installs anything (its cryptofeed side runs only if the environment exists).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from captures import CAPTURES, read_capture

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = [str(Path(sys.executable).with_name("pipeline"))]
MESSAGES = 2000


def bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    r = subprocess.run([*PIPELINE, "bench", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "synthetic.jsonl"
    bench("gen-capture", "--out", str(path), "--messages", str(MESSAGES), "--seed", "7", "--levels", "200")
    return path


def rebuild(path: Path) -> tuple[dict, dict, int, int]:
    """Books from the capture with plain dicts, checking the spot chaining rule on the way.

    Returns (books {symbol: (bids, asks)}, last update id per symbol, depth frames, trade frames).
    """
    _, events = read_capture(path)
    books: dict[str, tuple[dict, dict]] = {}
    last: dict[str, int] = {}
    depth = trades = 0
    for ev in events:
        if ev["src"] == "rest":
            sym = ev["url"].split("symbol=")[1].split("&")[0]
            body = json.loads(ev["data"])
            books[sym] = ({float(p): float(q) for p, q in body["bids"]}, {float(p): float(q) for p, q in body["asks"]})
            last[sym] = body["lastUpdateId"]
            continue
        frame = json.loads(ev["data"])
        data = frame["data"]
        sym = data["s"]
        assert frame["stream"].startswith(sym.lower() + "@")
        if data["e"] in ("trade", "aggTrade"):
            trades += 1
            assert float(data["p"]) > 0 and float(data["q"]) > 0
            continue
        assert data["e"] == "depthUpdate"
        depth += 1
        assert data["U"] == last[sym] + 1, "spot rule: U = previous u + 1"
        assert data["u"] >= data["U"]
        last[sym] = data["u"]
        assert 1 <= len(data["b"]) + len(data["a"]) <= 40
        for side, changes in ((books[sym][0], data["b"]), (books[sym][1], data["a"])):
            prices = [p for p, _ in changes]
            assert len(set(prices)) == len(prices), "a price at most once per side"
            for p, q in changes:
                assert len(p.split(".")[1]) == 8 and len(q.split(".")[1]) == 8
                p, q = float(p), float(q)
                if q == 0.0:
                    assert p in side, "a delete names a level the book has"
                    del side[p]
                else:
                    side[p] = q
        bids, asks = books[sym]
        assert bids and asks and max(bids) < min(asks), "the book never crosses"
    return books, last, depth, trades


def test_gen_capture_is_deterministic(tmp_path, capture):
    again = tmp_path / "again.jsonl"
    bench("gen-capture", "--out", str(again), "--messages", str(MESSAGES), "--seed", "7", "--levels", "200")
    assert again.read_bytes() == capture.read_bytes()
    from pipeline.benchmarks.gen_capture import write_capture

    other = tmp_path / "other.jsonl.gz"
    other2 = tmp_path / "other2.jsonl.gz"
    for p in (other, other2):
        write_capture(str(p), messages=300, seed=8, levels=200)
    assert other.read_bytes() == other2.read_bytes(), "gzip output has no name or time in it"
    header, events = read_capture(other)
    assert header["seed"] == 8 and sum(e["src"] == "ws" for e in events) > 300


def test_gen_capture_chains_and_parses_without_gaps(capture, shm_prefix):
    from ingest.events import DepthConnected, DepthDiff, TradeEvent
    from ingest.feed import BusPublisher, FeedBooks
    from ingest.adapters import create as load_adapter
    from pipeline.config import ExchangeConfig
    from pipeline.shm import BookWriter

    header, events = read_capture(capture)
    assert header["adapter"] == "binance" and len(header["symbols"]) == 4
    assert [e["src"] for e in events[:4]] == ["rest"] * 4, "snapshots come before the first diff"
    books, _, depth, trades = rebuild(capture)
    assert depth == MESSAGES and 0.05 * MESSAGES < trades < 0.15 * MESSAGES

    adapter = load_adapter(ExchangeConfig(name="b", adapter="binance", symbols=tuple(header["symbols"])))
    writer = BookWriter(shm_prefix, "b", header["symbols"], 50, epoch=1)
    feed = FeedBooks("b", adapter, writer, BusPublisher(None, None), epoch=1)
    feed.receive(DepthConnected(tuple(header["symbols"])))
    kinds = {DepthDiff: 0, TradeEvent: 0}
    for e in events:
        if e["src"] == "rest":
            sym = e["url"].split("symbol=")[1].split("&")[0]
            feed.receive(adapter.parse_snapshot(sym, e["data"].encode(), 0))
            continue
        ev = adapter.parse_frame(e["data"], 0)  # raises on anything malformed
        kinds[type(ev)] += 1
        feed.receive(ev)
    assert kinds == {DepthDiff: depth, TradeEvent: trades}
    for sym, f in feed.feeds.items():
        assert f.counts.gaps == 0 and f.counts.updates == depth / 4
        bids, asks = books[sym]
        assert f.book.bids.prices == sorted(bids) and f.book.asks.prices == sorted(asks)
    writer.close(unlink=True)


def test_bench_ingest_json_and_books(tmp_path, capture):
    dump = tmp_path / "books.json"
    r = bench("ingest", "--capture", str(capture), "--json", "--dump-books", str(dump))
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout
    out = json.loads(lines[0])
    for key in ("messages", "seconds", "msgs_per_s", "level_changes_per_s", "stages_us", "cpu_us_per_msg"):
        assert key in out, key
    books, last, depth, trades = rebuild(capture)
    assert out["messages"] == depth + trades
    assert out["frames"]["depth"] == depth and out["frames"]["trade"] == trades
    assert out["frames"]["malformed"] == out["frames"]["unknown"] == 0
    assert set(out["stages_us"]) >= {"parse", "sync_book", "shm_write", "bus_send"}
    assert all(v >= 0 for v in out["stages_us"].values())
    assert sum(out["gaps"].values()) == 0 and set(out["states"].values()) == {"live"}
    assert out["bus"]["trades_sent"] == trades
    got = json.loads(dump.read_text())
    assert set(got) == set(books)
    for sym, (bids, asks) in books.items():
        want_bids = [[p, bids[p]] for p in sorted(bids, reverse=True)]
        want_asks = [[p, asks[p]] for p in sorted(asks)]
        g = got[sym]
        assert g["update_id"] == last[sym] and g["state"] == "live"
        assert g["bids"] == want_bids and g["asks"] == want_asks
        # the shared-memory view is the top 50 of that book, at the same update id
        assert g["shm"]["update_id"] == last[sym] and g["shm"]["state"] == "live"
        assert g["shm"]["bids"] == want_bids[:50] and g["shm"]["asks"] == want_asks[:50]


@pytest.mark.shared
def test_bench_ingest_on_a_real_capture():
    path = CAPTURES / "binance_spot_2021-10-12.jsonl"
    out = json.loads(bench("ingest", "--capture", str(path), "--json", "--no-stages").stdout)
    _, events = read_capture(path)
    assert out["adapter"] == "binance" and out["messages"] == sum(e["src"] == "ws" for e in events)
    assert out["frames"]["depth"] > 100 and out["frames"]["malformed"] == 0
    assert sum(out["gaps"].values()) == 0 and set(out["states"].values()) == {"live"}


def test_bench_compare_offline(tmp_path):
    """Never installs: with the cached cryptofeed environment (if a developer made one) both
    sides run and must end with the same best bid/ask; without it, ours alone."""
    from pipeline.benchmarks.compare import DEFAULT_VENV, venv_ready

    r = bench("compare", "--messages", "1000", "--no-install", "--json", timeout=120)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ours"]["msgs_per_s"] > 0 and out["messages"] > 1000
    if venv_ready(DEFAULT_VENV):
        assert out["cryptofeed"] is not None, out["cryptofeed_skipped"]
        assert out["cryptofeed"]["messages"] == out["messages"] and out["cryptofeed"]["errors"] == 0
        assert out["ratio"] > 0 and out["books_agree"] and all(out["books_agree"].values())
    else:
        assert out["cryptofeed"] is None and "no cryptofeed environment" in out["cryptofeed_skipped"]
    missing = tmp_path / "no-venv"
    r = bench("compare", "--messages", "200", "--no-install", "--venv", str(missing))
    assert "skipped" in r.stdout and "msgs/s" in r.stdout and not missing.exists()


@pytest.mark.shared
def test_bench_pass_delivers_every_trade_of_a_batched_frame():
    """Issue 10: the benchmark's own copy of the feed glue counted a frame that parses to a
    list (OKX and Bybit send trades in batches) as "other" and dropped it.  run_pass now goes
    through FeedBooks.receive, as the runner does: every trade of the real OKX capture is
    published."""
    from feeds import FeedRun
    from ingest.adapters.okx import OkxAdapter
    from pipeline.benchmarks.ingest import Capture, run_pass
    from pipeline.config import ExchangeConfig

    symbols = ("BTC-USD-220527", "UNI-USD-SWAP", "BTC-USDT")
    _, events = read_capture(CAPTURES / "okx_2022-05-13.jsonl")
    frames = [e["data"].encode() for e in events if e["src"] == "ws"]
    trades = sum(len(json.loads(f)["data"]) for f in frames if b'"channel":"trades"' in f and b'"data"' in f)
    adapter = OkxAdapter(ExchangeConfig(name="okx", adapter="okx", symbols=symbols))
    with FeedRun(adapter, symbols, exchange="okx") as run:
        r = run_pass(Capture({}, "okx", list(symbols), frames, len(frames), 0), adapter, run.feed)
        assert trades > 70 and len(run.trades) == trades
        assert r["frames"]["trade"] > 0  # (acks and notices are "other")
        assert all(run.live(s) for s in symbols)


def test_bench_publisher_cpu_reads_headers_only_without_delta_clients():
    from pipeline.benchmarks.publisher_cpu import run

    light = run(400, clients=3, delta_clients=0)
    assert light["l2_in"] == 400 and light["l2_header_only"] == 400 and light["sent_l2"] >= 3
    mirrored = run(400, clients=3, delta_clients=1)
    assert mirrored["l2_header_only"] == 0 and mirrored["sent_l2"] > 300  # the deltas to the delta client


def test_bench_trade_path_runs_with_and_without_the_derived_kinds(capsys):
    from pipeline.benchmarks.trade_path import main

    main(["--trades", "2000", "--repeat", "1"])
    out = json.loads(capsys.readouterr().out)
    assert out["cpu_us_per_trade_derived_off"] > 0 and out["cpu_us_per_trade_cvd_and_bars"] > 0 and out["ratio"] > 0
    main(["--trades", "500", "--repeat", "1", "--plain-only"])
    assert json.loads(capsys.readouterr().out)["cpu_us_per_trade"] > 0


def test_bench_publisher_latency_summary_gives_medians_and_ratios_current_to_before():
    from pipeline.benchmarks.publisher_latency import _frames_per_write, summary

    def row(variant, cpu, p99):
        return {"variant": variant, "p50_ms": 1.0, "p99_ms": p99, "p999_ms": p99, "publisher_cpu_us_per_bus_msg": cpu,
                "publisher_cpu_share": cpu / 50, "publisher_l2_in_per_s": 0, "frames_per_socket_write": None}

    out = summary([row("before abc", 20.0, 10.0), row("current", 6.0, 4.0), row("before abc", 22.0, 30.0),
                   row("current", 8.0, 6.0)])["summary"]
    assert out["before abc"]["publisher_cpu_us_per_bus_msg"] == 21.0 and out["current"]["runs"] == 2
    assert out["ratio_current_to_before"]["publisher_cpu_us_per_bus_msg"] == round(7.0 / 21.0, 3)
    assert out["ratio_current_to_before"]["p99_ms"] == 0.25
    s0 = {"socket_writes": 10, "sent": {"trades": 10, "l2": 5}}
    s1 = {"socket_writes": 20, "sent": {"trades": 25, "l2": 10}}
    assert _frames_per_write(s0, s1) == 2.0 and _frames_per_write({"sent": {}}, {"sent": {}}) is None
