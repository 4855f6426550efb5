"""examples/configs/*.toml: one per real venue, each loaded by the real config loader, its
adapters built as the ingest builds them, and its CSV exchange ids as docs/csv.md says.
A typo in an example (an unknown key, a bad stream name, a wrong type) fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from ingest.adapters import create as load_adapter
from pipeline.app.config import load_config
from sinks.csv_sink import CsvSink

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "examples" / "configs"

# file -> {exchange table: (adapter, CSV exchange id, host of the WebSocket or None for the adapter's default)}
EXPECTED = {
    "aster.toml": {"aster": ("binance_futures", "aster", "fstream.asterdex.com")},
    "binance-spot.toml": {"binance": ("binance", "binance", None)},
    "binance-usdm.toml": {"binance_futures": ("binance_futures", "binance-futures", None)},
    "bybit.toml": {"bybit": ("bybit", "bybit-spot", None), "bybit_linear": ("bybit_linear", "bybit", None)},
    "okx.toml": {"okx": ("okx", "okex", None), "okx_swap": ("okx", "okex-swap", None)},
    "hyperliquid.toml": {"hyperliquid": ("hyperliquid", "hyperliquid", None)},
    "hyperliquid-node.toml": {"hlnode": ("hyperliquid_node", "hyperliquid", None)},
    "lighter.toml": {"lighter": ("lighter", "lighter", None)},
}


def test_every_real_venue_has_an_example_and_every_example_is_checked():
    assert sorted(p.name for p in CONFIGS.glob("*.toml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_loads_builds_its_adapters_and_names_its_csv_files(name):
    config = load_config(CONFIGS / name)  # as the CLI loads it (the registries of pipeline/app/config.py)
    expected = EXPECTED[name]
    assert sorted(config.exchanges) == sorted(expected)
    for table, (adapter, tardis_id, host) in expected.items():
        ex = config.exchanges[table]
        assert ex.adapter == adapter
        assert (ex.ws_url is None) == (host is None) and (host is None or f"//{host}" in ex.ws_url)
        built = load_adapter(ex)  # what `pipeline ingest NAME` does with the table
        for sym in ex.symbols:
            assert built.instrument(sym).base, (table, sym)
    assert "csv" in config.sinks, "every example records tardis-format CSV files"
    assert CsvSink(config).ids == {t: ids[1] for t, ids in expected.items()}


def test_the_readme_aster_block_is_the_example_file():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.S)
    (aster,) = [b for b in blocks if "[exchanges.aster]" in b]
    example = tomllib.loads((CONFIGS / "aster.toml").read_text())
    assert tomllib.loads(aster)["exchanges"] == example["exchanges"]
    assert "examples/configs/aster.toml" in readme
