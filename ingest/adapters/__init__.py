"""The adapter registry: adapter name (``exchanges.X.adapter`` in config) -> class.

A new venue is one module in this package (ingest/adapters/base.py has the contract)
plus one line in ``ADAPTERS``.  Modules are imported only when their adapter is made,
so reading the names costs nothing.  Config validation (pipeline/app, ingest/main.py),
the ingest process and the benchmarks all go through ``create``/``names``; the core
library (pipeline/) never imports this package and takes the names as an argument.
"""

from __future__ import annotations

from pipeline.config import ExchangeConfig
from pipeline.plugins import Plugin, Registry

# name -> "module:Class", the same registry type as the sinks' and servers' (pipeline/plugins.py)
ADAPTERS = Registry("adapter", [
    Plugin("binance", "ingest.adapters.binance:BinanceSpotAdapter"),
    Plugin("binance_futures", "ingest.adapters.binance:BinanceFuturesAdapter"),
    Plugin("bybit", "ingest.adapters.bybit:BybitSpotAdapter"),
    Plugin("bybit_linear", "ingest.adapters.bybit:BybitLinearAdapter"),
    Plugin("okx", "ingest.adapters.okx:OkxAdapter"),
    Plugin("hyperliquid", "ingest.adapters.hyperliquid:HyperliquidAdapter"),
    Plugin("hyperliquid_node", "ingest.adapters.hyperliquid_node:HyperliquidNodeAdapter"),
    Plugin("lighter", "ingest.adapters.lighter:LighterAdapter"),
])


def names() -> tuple[str, ...]:
    """Every registered adapter name, sorted."""
    return tuple(sorted(ADAPTERS.names()))


def adapter_class(name: str, key: str = "adapter") -> type:
    """The class registered as ``name`` (its module imported now).

    Raises ConfigError naming ``key`` for a name that is not registered."""
    return ADAPTERS.get(name, key).load()


def create(config: ExchangeConfig):
    """The adapter of one ``[exchanges.NAME]`` table.  Raises ConfigError naming the key
    (also for a key of the table the adapter does not know: a config loaded without the
    registry keeps such keys raw in ``config.options``)."""
    cls = adapter_class(config.adapter, f"exchanges.{config.name}.adapter")
    cls.parse_options(dict(config.options), f"exchanges.{config.name}")
    return cls(config)


__all__ = ["ADAPTERS", "adapter_class", "create", "names"]
