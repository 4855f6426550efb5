"""Pure pieces of the venue protocol sims: text forms, view deltas, the OKX checksum, native names."""

from __future__ import annotations

import json

import pytest

from captures import DATA
from pipeline.sim.feeds import fixed_text, hyperliquid_text, level_changes, stripped_text
from pipeline.sim.market import Market, symbol_spec
from pipeline.sim.okx import okx_checksum
from pipeline.sim import PROTOCOLS
from pipeline.sim.venues import make_server


@pytest.mark.shared
def test_okx_checksum_matches_the_vectors():
    vectors = json.loads((DATA / "samples" / "okx" / "checksum_vectors.json").read_text())["vectors"]
    for v in vectors:
        bids = v.get("bids") or v["bids_top25"]
        asks = v.get("asks") or v["asks_top25"]
        assert okx_checksum(bids, asks) == v["crc32_signed"], v["name"]


@pytest.mark.parametrize("text,stripped,hl,fixed2", [
    ("61837.63000000", "61837.63", "61837.63", "61837.63"),
    ("60000.00000000", "60000", "60000.0", "60000.00"),
    ("0.14280000", "0.1428", "0.1428", "0.14"),
    ("0.00000000", "0", "0.0", "0.00"),
])
def test_venue_text_forms(text, stripped, hl, fixed2):
    assert stripped_text(text) == stripped
    assert hyperliquid_text(text) == hl
    assert fixed_text(2)(text) == fixed2
    assert fixed_text(0)("5.00000000") == "5"
    assert fixed_text(8)(text) == text


def test_level_changes_delete_fallouts_only_when_asked():
    old = {"10": "1", "9": "2", "8": "3"}
    new = {"11": "5", "10": "1", "9": "4"}  # 11 came in, 9 changed, 8 fell out of the top 3
    assert level_changes(old, new, {}, "b", "0", True) == [["11", "5"], ["9", "4"], ["8", "0"]]
    # Bybit: a level that only fell out gets no delete; one that was really deleted does.
    assert level_changes(old, new, {}, "b", "0", False) == [["11", "5"], ["9", "4"]]
    assert level_changes(old, new, {("b", "8"): True}, "b", "0", False) == [["11", "5"], ["9", "4"], ["8", "0"]]


def test_native_symbol_names_map_to_the_same_market_specs():
    assert symbol_spec("BTC-USDT").start_tick == symbol_spec("BTC").start_tick == symbol_spec("BTCUSDT").start_tick
    swap = symbol_spec("BTC-USDT-SWAP")
    assert (swap.base_asset, swap.quote_asset, swap.step_decimals) == ("BTC", "USDT", 0)
    assert (symbol_spec("ETH/USDC").base_asset, symbol_spec("ETH/USDC").quote_asset) == ("ETH", "USDC")
    market = Market(("BTC-USDT", "ETH", "SOL/USDC", "BTC-USDT-SWAP"), seed=3, levels=20)
    for _ in range(2000):
        market.step()
    for s in market.symbols:
        _, bids, asks = market.snapshot(s, 5)
        assert bids and asks and float(bids[0][0]) < float(asks[0][0])


def test_unknown_protocol_is_rejected():
    with pytest.raises(ValueError, match="unknown sim protocol"):
        make_server("kraken", None)  # type: ignore[arg-type]
    assert set(PROTOCOLS.names()) == {"binance", "bybit", "okx", "hyperliquid", "hyperliquid_node", "lighter"}
