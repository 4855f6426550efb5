"""The adapter registry: adapter name (``exchanges.X.adapter`` in config) -> class.

A new venue is one module in this package (ingest/adapters/base.py has the contract)
plus one line in ``ADAPTERS``.  Modules are imported only when their adapter is made,
so reading the names costs nothing.  Config validation (pipeline/app, ingest/main.py),
the ingest process and the benchmarks all go through ``create``/``names``; the core
library (pipeline/) never imports this package and takes the names as an argument.
"""

from __future__ import annotations

import importlib

from pipeline.config import ExchangeConfig
from pipeline.errors import ConfigError

# name -> "module:Class"
ADAPTERS: dict[str, str] = {
    "binance": "ingest.adapters.binance:BinanceSpotAdapter",
    "binance_futures": "ingest.adapters.binance:BinanceFuturesAdapter",
    "bybit": "ingest.adapters.bybit:BybitSpotAdapter",
    "bybit_linear": "ingest.adapters.bybit:BybitLinearAdapter",
    "okx": "ingest.adapters.okx:OkxAdapter",
    "hyperliquid": "ingest.adapters.hyperliquid:HyperliquidAdapter",
    "lighter": "ingest.adapters.lighter:LighterAdapter",
}


def names() -> tuple[str, ...]:
    """Every registered adapter name, sorted."""
    return tuple(sorted(ADAPTERS))


def adapter_class(name: str, key: str = "adapter") -> type:
    """The class registered as ``name`` (its module imported now).

    Raises ConfigError naming ``key`` for a name that is not registered."""
    try:
        module, cls = ADAPTERS[name].split(":")
    except KeyError:
        raise ConfigError(key, f'unknown adapter "{name}" (known: {", ".join(names())})') from None
    return getattr(importlib.import_module(module), cls)


def create(config: ExchangeConfig):
    """The adapter of one ``[exchanges.NAME]`` table.  Raises ConfigError naming the key."""
    return adapter_class(config.adapter, f"exchanges.{config.name}.adapter")(config)


__all__ = ["ADAPTERS", "adapter_class", "create", "names"]
