"""The node-file simulator (`pipeline sim --protocol hyperliquid_node --out DIR`) + two
`pipeline ingest` processes of the hyperliquid_node source (by-block and streaming layouts of the
same node) + ZeroMQ consumers, as real processes: books rebuilt from the bus equal shared
memory, across an hour rollover, a line written in two parts and a forced block gap (counted,
resynced from a fresh fileSnapshot); the periodic snapshot check matches; status shows the
lag split and the backlog; a coin is dropped and followed again through the control socket."""

from __future__ import annotations

import subprocess
import time

import pytest

from helpers import PIPELINE, Procs, eventually, exchange_stats, short_tmpdir, sim_fault, status
from pipeline.config import load_config
from pipeline.consumer import Consumer, Liquidation, Trade
from pipeline.shm import BookReader, BookState
from test_venue_e2e_hl_lighter import consume_and_compare

pytestmark = pytest.mark.integration

COINS = ["BTC", "ETH"]


@pytest.fixture(scope="module")
def node():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        (workdir / "sim.toml").write_text('[pipeline]\nrun_dir = "simrun"\n[exchanges.x]\nadapter = "binance"\n'
                                          'symbols = ["X"]\n')
        ready = workdir / "sim.port"
        data = workdir / "hl" / "data"
        procs.start("sim", PIPELINE + ["--config", str(workdir / "sim.toml"), "sim", "--protocol", "hyperliquid_node",
                                       "--out", str(data), "--port", "0", "--symbols", ",".join(COINS),
                                       "--rate", "300", "--seed", "5", "--ready-file", str(ready)])
        port = int(eventually(lambda: ready.exists() and ready.read_text().strip(), 30, what="sim ready file"))
        config = workdir / "p.toml"
        tables = "".join(f"""
[exchanges.{name}]
adapter = "hyperliquid_node"
symbols = {COINS!r}
depth = 20
mode = "{mode}"
node_data_dir = "hl/data"
snapshot_url = "http://127.0.0.1:{port}/info"
snapshot_out_path = "l4-{name}.json"
snapshot_check_interval_s = 1.5
snapshot_interval_s = 1.0
l4 = {"true" if mode == "by_block" else "false"}
order_statuses = true
""".replace("'", '"') for name, mode in (("hln", "by_block"), ("hls", "streaming")))
        config.write_text('[pipeline]\nrun_dir = "run"\n' + tables)
        ingests = {name: procs.start(f"ingest-{name}", PIPELINE + ["--config", str(config), "ingest", name])
                   for name in ("hln", "hls")}
        for name in ingests:
            try:
                eventually(lambda: (lambda f: len(f) == len(COINS) and all(x["state"] == "live" for x in f.values()))(
                    exchange_feeds(config, name)), 40, 0.2, f"{name} books live")
            except AssertionError:
                raise AssertionError(f"{name} not live; log:\n{procs.log(f'ingest-{name}')[-3000:]}") from None
        yield {"procs": procs, "port": port, "config": config, "data": data, "ingests": ingests}
    finally:
        procs.stop_all()


def exchange_feeds(config, exchange: str) -> dict[str, dict]:
    return {f["symbol"]: f for f in status(config)["feeds"] if f["exchange"] == exchange}


def books_equal(config, exchange: str, checks: int = 8) -> None:
    got, gaps, trade_gaps = consume_and_compare(config, exchange, COINS, checks, 30)
    assert min(got.values()) >= checks, (exchange, got)
    assert all(g == 0 for g in gaps.values()) and trade_gaps == 0, (exchange, gaps, trade_gaps)


def test_books_from_the_bus_equal_shared_memory_and_the_check_matches(node):
    for name in ("hln", "hls"):
        books_equal(node["config"], name)
    for name in ("hln", "hls"):
        st = eventually(lambda: (lambda f: f if all(x["checksum_ok"] > 0 for x in f.values()) else None)(
            exchange_feeds(node["config"], name)), 30, 0.2, f"{name}: a periodic snapshot check")
        assert all(x["checksum_failed"] == 0 and x["gaps"] == 0 and x["trades"] > 0 for x in st.values()), \
            ({c: (x["state"], x["checksum_ok"], x["checksum_failed"], x["gaps"], x["trades"]) for c, x in st.items()},
             [ln for ln in node["procs"].log(f"ingest-{name}").splitlines() if "WARNING" in ln][:5])
        ex = exchange_stats(node["config"], name)
        assert ex["frames"] > 0 and ex["tail_lag_us"] >= 0 and ex["source_lag_us"] >= 0 and "backlog_bytes" in ex
        # the node's order statuses are read and agree with the book's diffs, block by block
        assert "order statuses: checking them" in node["procs"].log(f"ingest-{name}")
        assert ex["status_mismatches"] == 0, [ln for ln in node["procs"].log(f"ingest-{name}").splitlines()
                                              if "disagree" in ln]


def test_an_hour_rollover_and_a_split_line_lose_nothing(node):
    before = {n: exchange_feeds(node["config"], n) for n in ("hln", "hls")}
    assert sim_fault(node["port"], name="partial")["ok"]
    assert sim_fault(node["port"], name="rollover")["ok"]
    for name in ("hln", "hls"):
        eventually(lambda: "done, reading" in node["procs"].log(f"ingest-{name}"), 20, 0.2, f"{name} rollover")
        books_equal(node["config"], name)
        after = exchange_feeds(node["config"], name)
        assert all(after[c]["gaps"] == before[name][c]["gaps"] for c in COINS), (before[name], after)
        assert all(after[c]["malformed"] == 0 for c in COINS)


def test_a_block_gap_is_counted_and_the_books_resync_from_a_fresh_snapshot(node):
    before = {n: exchange_feeds(node["config"], n) for n in ("hln", "hls")}
    assert sim_fault(node["port"], name="block_gap")["ok"]
    for name in ("hln", "hls"):
        after = eventually(lambda: (lambda f: f if all(
            f[c]["gaps"] > before[name][c]["gaps"] and f[c]["resyncs"] > before[name][c]["resyncs"]
            and f[c]["state"] == "live" for c in COINS) else None)(exchange_feeds(node["config"], name)),
            40, 0.2, f"{name}: gap counted, resynced, live")
        assert all(after[c]["gaps"] == before[name][c]["gaps"] + 1 for c in COINS), after
        books_equal(node["config"], name)
    assert all(p.poll() is None for p in node["ingests"].values())


def test_a_liquidation_fill_is_published_as_a_liquidation(node):
    """... and its trade (the same tid) is marked ``liquidation`` on the bus; no other trade is."""
    got: dict[str, list] = {"hln": [], "hls": []}
    marked: dict[str, list] = {"hln": [], "hls": []}
    trades: dict[str, dict] = {"hln": {}, "hls": {}}
    with Consumer(load_config(node["config"]), exchanges=["hln", "hls"], books=False,
                  kinds=["liquidation"]) as consumer:
        consumer.poll(0.5)  # subscribed before the fault
        assert sim_fault(node["port"], name="liquidation")["ok"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (all(got.values()) and all(
                liqs[0].liquidation_id in trades[name] for name, liqs in got.items())):
            for item in consumer.poll(0.2):
                if isinstance(item, Trade):
                    trades[item.exchange][item.trade_id] = item
                    if item.liquidation:
                        marked[item.exchange].append(item)
                    continue
                assert isinstance(item, Liquidation)
                got[item.exchange].append(item)
    for name, liqs in got.items():
        assert len(liqs) == 1, (name, liqs)
        (liq,) = liqs
        assert liq.symbol in COINS and liq.side in ("buy", "sell") and liq.amount > 0 and liq.liquidation_id
        trade = trades[name][liq.liquidation_id]
        assert trade.liquidation and (trade.symbol, trade.price, trade.amount) == (liq.symbol, liq.price, liq.amount)
        assert [t.trade_id for t in marked[name]] == [liq.liquidation_id], name


def test_l4_order_changes_are_published_per_block(node):
    """by_block has `l4 = true`: one l4 message per block and coin that changed, after its l2."""
    got: dict[str, list] = {}
    with Consumer(load_config(node["config"]), exchanges=["hln", "hls"], trades=False, books=False,
                  kinds=["l4"]) as consumer:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(len(v) for v in got.values()) < 20:
            for item in consumer.poll(0.2):
                got.setdefault(item.exchange, []).append(item)
    assert set(got) == {"hln"}, set(got)  # the streaming ingest has l4 = false
    for coin in COINS:
        msgs = [m for m in got["hln"] if m.symbol == coin]
        assert [m.seq for m in msgs] == list(range(msgs[0].seq, msgs[0].seq + len(msgs)))
        assert all(m.update_id > 0 and m.orders for m in msgs)
        assert [m.update_id for m in msgs] == sorted(m.update_id for m in msgs)
        assert all(side in ("bid", "ask") and px > 0 and sz >= 0 for m in msgs for _, side, px, sz in m.orders)


def test_a_coin_is_dropped_and_followed_again_at_runtime(node):
    """Runtime streams on a file source (issue 14): unsubscribe drops a coin's book (removed in
    shm), subscribe follows it again from a fresh snapshot; the other coin sees no gap, no
    resync; a coin the node's snapshot lacks is refused."""
    config = node["config"]
    for name in ("hln", "hls"):
        before = exchange_feeds(config, name)
        out = _cli(config, "subscribe", name, "XRP")
        assert out.returncode == 1 and "unknown_symbol" in out.stderr, out.stderr
        assert _cli(config, "unsubscribe", name, "ETH").returncode == 0
        with BookReader.open(load_config(config).shm_prefix, name) as reader:
            assert reader.read("ETH").state is BookState.REMOVED
            assert reader.read("BTC").state is BookState.LIVE
        # the node takes seconds to write a snapshot: the other coins read on meanwhile (issue 11)
        assert sim_fault(node["port"], name="snapshot_delay", seconds=3)["ok"]
        try:
            with BookReader.open(load_config(config).shm_prefix, name) as reader:
                out = _cli(config, "subscribe", name, "ETH")
                assert out.returncode == 0, out.stderr
                btc_first = reader.read("BTC").update_id  # the block of BTC's book
                btc_while_eth_waits = None
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    btc, eth = reader.read("BTC"), reader.read("ETH")
                    if eth.state is BookState.LIVE:
                        break
                    btc_while_eth_waits = btc.update_id
                    time.sleep(0.05)
                assert eth.state is BookState.LIVE, f"{name}: ETH not live"
                assert btc_while_eth_waits is not None and btc_while_eth_waits >= btc_first + 3, \
                    (name, btc_first, btc_while_eth_waits)  # BTC's book read blocks on while ETH's snapshot was taken
        finally:
            sim_fault(node["port"], name="clear")
        books_equal(config, name)
        after = exchange_feeds(config, name)
        assert (after["BTC"]["gaps"], after["BTC"]["resyncs"]) == (before["BTC"]["gaps"], before["BTC"]["resyncs"])
        assert after["BTC"]["state"] == "live" and after["ETH"]["source"] == "config"
        # (order statuses of the blocks before ETH's book came back are not held against it)
        assert exchange_stats(config, name)["status_mismatches"] == 0


def _cli(config, *args) -> subprocess.CompletedProcess:
    return subprocess.run(PIPELINE + ["--config", str(config), *args], capture_output=True, text=True, timeout=60)
