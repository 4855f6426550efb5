"""Runtime streams on the Bybit, OKX, Hyperliquid and Lighter sims (issue 14): a symbol subscribed on
the live connection (Bybit/OKX op subscribe, Hyperliquid method subscribe, Lighter type subscribe)
goes live with a book equal to the sim's REST book, the configured symbol's stream shows no gap or
resync, unsubscribing marks it removed, and a symbol the venue does not list is refused
(instruments-info / public/instruments / info meta / orderBookDetails)."""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers import PIPELINE, eventually, feeds, rest_book_equals_shm, venue_pipeline
from pipeline.config import load_config
from pipeline.shm import BookReader, BookState

pytestmark = pytest.mark.integration

VENUES = {
    # name: (sim protocol, adapter, sim symbols, ws path, unknown symbol, sim args, exchange lines)
    "bb": ("bybit", "bybit", ["BTCUSDT", "ETHUSDT"], "/v5/public/spot", "XRPUSDT", [], ""),
    "ok": ("okx", "okx", ["BTC-USDT", "ETH-USDT-SWAP"], "/ws/v5/public", "XRP-USDT", [], ""),
    # the plain l2Book at ten times the venue's cadence (a full book every 0.5 s)
    "hl": ("hyperliquid", "hyperliquid", ["BTC", "ETH"], "/ws", "XRP", ["--book-speedup", "10"],
           "stale_after_s = 3.0"),
    "lt": ("lighter", "lighter", ["ETH", "BTC"], "/stream", "XRP", [], ""),
}


@pytest.fixture(scope="module", params=sorted(VENUES))
def venue(request):
    name = request.param
    protocol, adapter, symbols, ws_path, unknown, sim_args, extra = VENUES[name]
    for stack in venue_pipeline(name, protocol, adapter, symbols, ws_path, configured=symbols[:1],
                                sim_args=sim_args, exchange_extra=extra):
        yield {**stack, "name": name, "symbols": symbols, "unknown": unknown}


def cli(config, *args) -> subprocess.CompletedProcess:
    return subprocess.run(PIPELINE + ["--config", str(config), *args], capture_output=True, text=True, timeout=60)


def test_subscribe_and_unsubscribe_on_the_live_connection(venue):
    name, config_path, (first, added) = venue["name"], venue["config"], venue["symbols"]
    before = feeds(config_path)[first]
    out = cli(config_path, "subscribe", name, venue["unknown"])
    assert out.returncode == 1 and "unknown_symbol" in out.stderr, out.stderr
    out = cli(config_path, "subscribe", name, added)
    assert out.returncode == 0, out.stderr
    eventually(lambda: feeds(config_path)[added]["state"] == "live", 30, 0.2, f"{added} live")
    rest_book_equals_shm(config_path, name, venue["port"], [added, first])
    after = feeds(config_path)
    assert (after[first]["gaps"], after[first]["resyncs"]) == (before["gaps"], before["resyncs"])
    assert after[added]["source"] == "runtime"
    ex = next(e for e in json.loads(cli(config_path, "status", "--json").stdout)["exchanges"] if e["exchange"] == name)
    assert len([c for c in ex["connections"] if c["kind"] == "depth"]) == 1  # subscribed on the open connection

    assert cli(config_path, "unsubscribe", name, added).returncode == 0
    with BookReader.open(load_config(config_path).shm_prefix, name) as reader:
        assert reader.read(added).state is BookState.REMOVED
        assert reader.read(first).state is BookState.LIVE
