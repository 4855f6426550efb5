"""The adapter registry and contract (ingest/adapters/__init__.py, base.py): every registered
name makes an adapter that satisfies the Protocol and states its traits; the config, the
ingest and the benchmark all make adapters through it."""

from __future__ import annotations

import pytest

from ingest import adapters
from ingest.adapters.base import APPLY, GAP, SKIP, Adapter, AdapterTraits, SnapshotSource, Verdict
from pipeline.config import ExchangeConfig
from pipeline.errors import ConfigError

SYMBOLS = {"okx": ("BTC-USDT",), "hyperliquid": ("BTC",), "lighter": ("0",)}


@pytest.mark.parametrize("name", adapters.names())
def test_every_registered_adapter_satisfies_the_contract(name):
    a = adapters.create(ExchangeConfig(name="x", adapter=name, symbols=SYMBOLS.get(name, ("BTCUSDT",))))
    assert isinstance(a, Adapter) and type(a).name == name
    assert isinstance(a.traits, AdapterTraits)
    t = a.traits
    assert t.snapshot_source in SnapshotSource and t.book_cap >= 0 and t.rest_weight_limit > 0
    assert t.in_stream == (t.snapshot_source is SnapshotSource.STREAM)
    # a REST venue joins REST snapshots, so it never asks for a resubscribe
    assert t.in_stream or a.resubscribe(a.symbols[0]) == []
    with pytest.raises(AttributeError):  # frozen: a feed cannot change a venue's behaviour
        t.book_cap = 5


def test_unknown_name_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError) as info:
        adapters.create(ExchangeConfig(name="ex", adapter="nasdaq", symbols=("A",)))
    assert info.value.key == "exchanges.ex.adapter"
    assert 'unknown adapter "nasdaq"' in info.value.reason and "binance" in info.value.reason


def test_verdicts_are_one_enum_shared_by_every_venue():
    from ingest import sync
    from ingest.adapters import binance, bybit, hyperliquid, lighter, okx

    for module in (binance, bybit, hyperliquid, lighter, okx, sync):
        assert (module.SKIP, module.APPLY, module.GAP) == (Verdict.SKIP, Verdict.APPLY, Verdict.GAP)
        assert module.APPLY is APPLY and module.GAP is GAP and module.SKIP is SKIP


def test_names_are_read_without_importing_any_venue_module():
    import subprocess
    import sys

    code = ("import sys, ingest.adapters as a; a.names(); "
            "print(sorted(m for m in sys.modules if m.startswith('ingest.adapters.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
