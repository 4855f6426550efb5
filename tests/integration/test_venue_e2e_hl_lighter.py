"""sim (Hyperliquid / Lighter protocol) -> ingest -> shared memory + bus, as real processes
on loopback.

- Hyperliquid: every l2Book is a full book; a consumer's books rebuilt from bus deltas
  equal shared memory, and after a reconnect (sim ``disconnect`` fault) the replayed
  trades backlog puts no trade on the bus twice.
- Lighter: market ids come from ``/api/v1/orderBookDetails`` at start; a dropped update
  (sim ``drop_diff``) breaks the ``begin_nonce`` chain: a gap counted in
  ``pipeline status --json``, then a resubscribe makes the book live again.
"""

from __future__ import annotations

import time

import pytest

from helpers import eventually, exchange_stats, feeds, rest_book_equals_shm, sim_fault, venue_pipeline
from pipeline.config import load_config
from pipeline.consumer import Book, Consumer, Trade
from pipeline.shm import BookReader

pytestmark = pytest.mark.integration

VENUES = {
    # name: (sim protocol, adapter, symbols, ws path)
    "hl": ("hyperliquid", "hyperliquid", ["BTC", "ETH"], "/ws"),
    "lt": ("lighter", "lighter", ["ETH", "BTC"], "/stream"),
}


@pytest.fixture(scope="module")
def hl():
    # plain l2Book at ten times the venue's 5 s cadence (0.5 s); the staleness limit is the
    # adapter's default for the real cadence (20 s)
    yield from venue_pipeline("hl", *VENUES["hl"], seed=11, sim_args=["--book-speedup", "10"],
                              exchange_extra="stale_after_s = 3.0  # six pushes of the sped-up cadence")


@pytest.fixture(scope="module")
def hlf():
    """The fast l2Book (5 levels, 0.5 s at the venue; 0.05 s here) with the adapter's default
    staleness limit for it (2 s) and a depth the fast stream cannot fill."""
    yield from venue_pipeline("hlf", *VENUES["hl"], seed=12, sim_args=["--book-speedup", "10"],
                              exchange_extra="fast = true")


@pytest.fixture(scope="module")
def lt():
    yield from venue_pipeline("lt", *VENUES["lt"], seed=11)


def consume_and_compare(config_path, exchange: str, symbols: list[str], min_checks: int, seconds: float):
    """Rebuild books from the bus; compare with shared memory whenever both are at the same seq."""
    config = load_config(config_path)
    checks = {s: 0 for s in symbols}
    with Consumer(config) as consumer, BookReader.open(config.shm_prefix, exchange) as reader:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for item in consumer.poll(0.2):
                if not isinstance(item, Book) or item.exchange != exchange:
                    continue  # (a config may hold several exchanges)
                snap = reader.read(item.symbol)
                if snap.seq != item.seq:
                    continue  # shm moved on already
                bids, asks = item.top()
                assert [tuple(x) for x in snap.bids.tolist()] == bids, item.symbol
                assert [tuple(x) for x in snap.asks.tolist()] == asks, item.symbol
                if bids and asks:
                    assert bids[0][0] < asks[0][0]
                checks[item.symbol] += 1
            if min(checks.values()) >= min_checks:
                break
        gaps = {s: consumer.trackers[(exchange, s)].gaps for s in symbols if (exchange, s) in consumer.trackers}
        trade_gaps = consumer.trade_gaps
    return checks, gaps, trade_gaps


def test_hyperliquid_consumer_books_equal_shared_memory(hl):
    checks, gaps, trade_gaps = consume_and_compare(hl["config"], "hl", ["BTC", "ETH"], 6, 30)
    assert min(checks.values()) >= 6, checks
    assert all(g == 0 for g in gaps.values()) and trade_gaps == 0
    st = {f["symbol"]: f for f in feeds(hl["config"]).values()}
    assert all(f["gaps"] == 0 and f["malformed"] == 0 and f["updates"] > 0 for f in st.values())


def test_hyperliquid_reconnect_puts_no_trade_on_the_bus_twice(hl):
    """After the reconnect the sim's first trades message repeats its 30 most recent
    trades, which the first connection already delivered: none may reach the bus again."""
    config, port = hl["config"], hl["port"]
    seen: dict[tuple, int] = {}
    before = exchange_stats(config, "hl")["reconnects"]
    at_fault = None
    with Consumer(load_config(config), books=False) as consumer:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for t in consumer.poll(0.2):
                assert isinstance(t, Trade)
                key = (t.symbol, t.trade_id, t.ts_exchange)
                seen[key] = seen.get(key, 0) + 1
            if at_fault is None and len(seen) >= 3:
                assert sim_fault(port, name="disconnect")["ok"]
                at_fault = len(seen)
            elif at_fault is not None and len(seen) > at_fault + 3 \
                    and exchange_stats(config, "hl")["reconnects"] > before:
                break
        trade_gaps = consumer.trade_gaps
    assert at_fault is not None, "no trade arrived before the fault"
    assert exchange_stats(config, "hl")["reconnects"] > before
    dupes = [k for k, n in seen.items() if n > 1]
    assert not dupes, f"trades published twice: {dupes[:5]}"
    assert len(seen) > at_fault + 3, "no trades after the reconnect"
    assert trade_gaps == 0
    eventually(lambda: all(f["state"] == "live" for f in feeds(config).values()), 30, 0.2,
               "hyperliquid books live after the reconnect")


def test_lighter_consumer_books_equal_shared_memory(lt):
    checks, gaps, trade_gaps = consume_and_compare(lt["config"], "lt", ["ETH", "BTC"], 30, 30)
    assert min(checks.values()) >= 30, checks
    assert all(g == 0 for g in gaps.values()) and trade_gaps == 0


def test_lighter_dropped_update_is_a_gap_and_the_book_resyncs(lt):
    config, port = lt["config"], lt["port"]
    before = feeds(config)
    assert sim_fault(port, name="drop_diff", symbol="BTC")["ok"]
    after = eventually(lambda: (lambda f: f if f["BTC"]["resyncs"] > before["BTC"]["resyncs"]
                                and f["BTC"]["state"] == "live" else None)(feeds(config)),
                       20, 0.1, "BTC gap and resync")
    assert after["BTC"]["gaps"] == before["BTC"]["gaps"] + 1
    assert after["ETH"]["gaps"] == before["ETH"]["gaps"] and after["ETH"]["resyncs"] == before["ETH"]["resyncs"]
    # live again means live: the rebuilt books still equal shared memory
    checks, gaps, _ = consume_and_compare(config, "lt", ["ETH", "BTC"], 10, 20)
    assert min(checks.values()) >= 10, checks
    assert lt["ingest"].poll() is None


def test_hyperliquid_rest_fallback_book_equals_shared_memory_at_rest(hl):
    rest_book_equals_shm(hl["config"], "hl", hl["port"], VENUES["hl"][2])


def test_lighter_rest_fallback_book_equals_shared_memory_at_rest(lt):
    rest_book_equals_shm(lt["config"], "lt", lt["port"], VENUES["lt"][2])


def test_hyperliquid_plain_books_do_not_flap_and_a_silent_book_is_resynced(hl):
    """At the stream's cadence nothing goes stale; a book whose pushes stop (the sim drops
    twelve in a row: 6 s) is marked stale after stale_after_s and resubscribed."""
    config, port = hl["config"], hl["port"]
    before = feeds(config)
    time.sleep(4.0)  # eight pushes, more than the limit's six
    quiet = feeds(config)
    assert all(quiet[k]["resyncs"] == before[k]["resyncs"] and quiet[k]["state"] == "live" for k in quiet), quiet
    btc, eth = "BTC", "ETH"
    assert sim_fault(port, name="drop_diff", symbol="BTC", count=12)["ok"]
    after = eventually(lambda: (lambda f: f if f[btc]["resyncs"] > quiet[btc]["resyncs"]
                                and f[btc]["state"] == "live" else None)(feeds(config)),
                       30, 0.2, "BTC stale, resubscribed and live again")
    assert after[eth]["resyncs"] == quiet[eth]["resyncs"] and after[btc]["gaps"] == quiet[btc]["gaps"]
    assert "no book for 3.0s" in hl["procs"].log("ingest")


def test_hyperliquid_fast_books_hold_five_levels_and_equal_shared_memory(hlf):
    checks, gaps, trade_gaps = consume_and_compare(hlf["config"], "hlf", ["BTC", "ETH"], 10, 30)
    assert min(checks.values()) >= 10, checks
    assert all(g == 0 for g in gaps.values()) and trade_gaps == 0
    config = load_config(hlf["config"])
    with BookReader.open(config.shm_prefix, "hlf") as reader:
        for coin in ("BTC", "ETH"):
            snap = reader.read(coin)
            assert len(snap.bids) == len(snap.asks) == 5, coin  # depth 20 asked, the fast stream has 5
    st = feeds(hlf["config"])
    assert all(f["resyncs"] == 0 and f["state"] == "live" for f in st.values()), st
    assert "the view holds 5" in hlf["procs"].log("ingest")
