"""sim (Bybit / OKX protocol) -> ingest -> shared memory + bus, as real processes on loopback.

- Bybit v5 spot (``orderbook.200``): in-stream snapshot then ``u + 1`` deltas, top-200
  trimming; a ZeroMQ consumer's books rebuilt from bus deltas equal shared memory; a
  dropped delta (sim ``drop_diff``) is a gap counted in ``pipeline status --json``, and
  the unsubscribe + subscribe resync makes the book live again.
- OKX v5 (``books``, CRC32 checksums on as in the 2022 traffic): the same, every checksum
  verified (``checksum_ok`` grows, ``checksum_failed`` stays 0); a dropped update breaks
  the ``prevSeqId`` chain, and a wrong checksum (sim ``bad_checksum``) is counted and
  resynced.
"""

from __future__ import annotations

import pytest

from helpers import eventually, feeds, rest_book_equals_shm, sim_fault, venue_pipeline
from test_venue_e2e_hl_lighter import consume_and_compare

pytestmark = pytest.mark.integration

VENUES = {
    # name: (sim protocol, adapter, symbols, ws path)
    "bb": ("bybit", "bybit", ["BTCUSDT", "ETHUSDT"], "/v5/public/spot"),
    "ok": ("okx", "okx", ["BTC-USDT", "ETH-USDT-SWAP"], "/ws/v5/public"),
}


@pytest.fixture(scope="module")
def bb():
    yield from venue_pipeline("bb", *VENUES["bb"])


@pytest.fixture(scope="module")
def ok():
    yield from venue_pipeline("ok", *VENUES["ok"])


def by_symbol(config) -> dict:
    return {f["symbol"]: f for f in feeds(config).values()}


def fault_then_resync(venue: dict, exchange: str, fault: str, symbol: str, other: str, counter: str):
    """Arm a sim fault for ``symbol``; wait until it is counted and the book is live again."""
    config = venue["config"]
    before = by_symbol(config)
    assert sim_fault(venue["port"], name=fault, symbol=symbol)["ok"]

    def resynced():
        f = by_symbol(config)
        s = f[symbol]
        return f if s["resyncs"] > before[symbol]["resyncs"] and s["state"] == "live" else None
    try:
        after = eventually(resynced, 20, 0.1, f"{exchange} {symbol}: {fault} counted and resynced")
    except AssertionError:
        raise AssertionError(f"ingest log:\n{venue['procs'].log('ingest')[-3000:]}") from None
    assert after[symbol][counter] == before[symbol][counter] + 1, (before[symbol], after[symbol])
    assert after[other][counter] == before[other][counter] and after[other]["resyncs"] == before[other]["resyncs"]
    # live again means live: the rebuilt books still equal shared memory
    checks, gaps, _ = consume_and_compare(config, exchange, VENUES[exchange][2], 10, 20)
    assert min(checks.values()) >= 10, checks
    assert venue["ingest"].poll() is None
    return before, after


def test_bybit_consumer_books_equal_shared_memory(bb):
    checks, gaps, trade_gaps = consume_and_compare(bb["config"], "bb", VENUES["bb"][2], 30, 30)
    assert min(checks.values()) >= 30, checks
    assert all(g == 0 for g in gaps.values()) and trade_gaps == 0
    st = by_symbol(bb["config"])
    assert all(f["gaps"] == 0 and f["malformed"] == 0 and f["updates"] > 0 and f["trades"] > 0
               for f in st.values()), st


def test_bybit_dropped_delta_is_a_gap_and_the_book_resyncs(bb):
    fault_then_resync(bb, "bb", "drop_diff", "BTCUSDT", "ETHUSDT", "gaps")


def test_okx_consumer_books_equal_shared_memory_and_checksums_verify(ok):
    checks, gaps, trade_gaps = consume_and_compare(ok["config"], "ok", VENUES["ok"][2], 30, 30)
    assert min(checks.values()) >= 30, checks
    assert all(g == 0 for g in gaps.values()) and trade_gaps == 0
    st = by_symbol(ok["config"])
    assert all(f["gaps"] == 0 and f["malformed"] == 0 and f["checksum_failed"] == 0 and f["checksum_ok"] > 10
               and f["trades"] > 0 for f in st.values()), st


def test_okx_dropped_update_is_a_gap_and_the_book_resyncs(ok):
    fault_then_resync(ok, "ok", "drop_diff", "ETH-USDT-SWAP", "BTC-USDT", "gaps")


def test_okx_wrong_checksum_is_counted_and_the_book_resyncs(ok):
    fault_then_resync(ok, "ok", "bad_checksum", "BTC-USDT", "ETH-USDT-SWAP", "checksum_failed")


def test_bybit_rest_fallback_book_equals_shared_memory_at_rest(bb):
    rest_book_equals_shm(bb["config"], "bb", bb["port"], VENUES["bb"][2])


def test_okx_rest_fallback_book_equals_shared_memory_at_rest(ok):
    rest_book_equals_shm(ok["config"], "ok", ok["port"], VENUES["ok"][2])
