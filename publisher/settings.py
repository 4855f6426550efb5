"""What the publisher serves, resolved once at start: config + environment -> frozen Settings.

L2 throttle of an exchange (the interval of `order_book_l2` snapshots per symbol for
clients in snapshot mode), first match wins:

1. the environment variable ``L2_THROTTLE_<NAME>_MS`` (NAME = the exchange's config
   name, upper case, ``-`` as ``_``), e.g. ``L2_THROTTLE_OKX_MS=200``;
2. ``[exchanges.NAME] l2_throttle_ms`` in the config;
3. the venue default: VENUE_THROTTLE_MS by adapter or exchange name, else 100 ms.

A bad environment value stops the process at start like a bad config key (ConfigError
naming the variable).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from pipeline.config import Config, PublisherConfig
from pipeline.errors import ConfigError

DEFAULT_THROTTLE_MS = 100
VENUE_THROTTLE_MS = {"okx": 150}  # OKX books: 150 ms keeps a browser tab responsive on its busier feed


@dataclass(frozen=True)
class FeedSettings:
    """One exchange as the publisher serves it."""

    exchange: str
    symbols: tuple[str, ...]
    depth: int  # levels in the shared-memory view: the deepest book a client can ask for
    throttle_ms: int


@dataclass(frozen=True)
class Settings:
    limits: PublisherConfig
    feeds: dict[str, FeedSettings]

    def symbols(self, exchange: str) -> tuple[str, ...]:
        return self.feeds[exchange].symbols

    def keys(self) -> list[tuple[str, str]]:
        """Every (exchange, symbol) the pipeline carries, in config order."""
        return [(ex, sym) for ex, f in self.feeds.items() for sym in f.symbols]


def throttle_env_var(exchange: str) -> str:
    return f"L2_THROTTLE_{exchange.upper().replace('-', '_')}_MS"


def resolve_throttle_ms(name: str, adapter: str, configured: int | None, environ: Mapping[str, str]) -> int:
    """Throttle of one exchange: environment, then config, then venue default (module docstring)."""
    var = throttle_env_var(name)
    raw = environ.get(var)
    if raw is not None:
        try:
            value = int(raw.strip())
        except ValueError:
            value = 0
        if value <= 0:
            raise ConfigError(var, f"expected a positive integer (milliseconds), got {raw!r}")
        return value
    if configured is not None:
        return configured
    return VENUE_THROTTLE_MS.get(name, VENUE_THROTTLE_MS.get(adapter, DEFAULT_THROTTLE_MS))


def load_settings(config: Config, environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    feeds = {}
    for name, ex in config.exchanges.items():
        throttle = resolve_throttle_ms(name, ex.adapter, ex.l2_throttle_ms, env)
        feeds[name] = FeedSettings(name, ex.symbols, ex.depth, throttle)
    return Settings(config.publisher, feeds)
