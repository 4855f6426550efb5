"""Sharded ingest: ``processes = N`` in ``[exchanges.NAME]`` splits its symbols over N processes.

One ingest process is one core.  An exchange with many busy symbols outgrows it, so its symbols
can be split over N ingest processes ("shards"), each with its own connections, its own
shared-memory segments and its own bus sockets, while every reader still sees one exchange:
topics stay ``KIND.NAME.SYMBOL``, views and trades say ``exchange = NAME``, and each symbol has
exactly one writer, so its seq and epoch stay contiguous per stream as before.

The contract (everything that names a file, socket or segment goes through this module):

- **Assignment** (``shard_of``): a configured symbol goes to shard ``i % N``, ``i`` its position
  in the config's ``symbols`` list (balanced; it stays put while the list only grows at its end);
  any other symbol (added at runtime) to ``crc32(symbol) % N``.  A pure function of the config,
  so the ingest, the router of runtime requests and every reader agree without asking anyone.
- **Unit names** (``ExchangeConfig.unit``): shard K of exchange NAME is ``NAME.K`` wherever the
  single ingest used ``NAME``: pid file ``ingest-NAME.K.pid``, supervisord program
  ``ingest-NAME.K``, control socket ``ingest-NAME.K.ctl``, runtime state ``streams-NAME.K.json``,
  ipc sockets ``NAME.K.trades.sock`` / ``NAME.K.l2.sock`` / ``NAME.K.snapshot.sock`` and shared
  memory ``PREFIX_NAME.K`` (books) and ``PREFIX_NAME.K_trades`` (trade ring).  Exchange names
  have no ``.``, so a unit name never collides with an exchange's.  With ``processes = 1`` (the
  default) the unit is ``NAME`` and nothing changes.
- **tcp endpoints**: ``l2_endpoint`` / ``trades_endpoint`` / ``snapshot_endpoint`` name shard 0's
  port; shard K binds that port + K.  A configured ipc endpoint gets the suffix ``.K``.
- **Readers**: the bus reader connects its SUB sockets to every shard's endpoints (ZeroMQ merges
  them); a shared-memory reader opens the segment of the symbol's shard (``unit_of``).
- **Runtime streams**: ``pipeline subscribe`` / the HTTP API split a request by ``shard_of`` and
  send each part to its shard's control socket (pipeline/streams.py ``exchange_request``); each
  shard keeps its own state file.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from typing import Iterable, Iterator

from pipeline.config import Config, ExchangeConfig
from pipeline.errors import ConfigError


def count(ex: ExchangeConfig) -> int:
    """How many ingest processes serve the exchange."""
    return ex.processes


def shard_of(ex: ExchangeConfig, symbol: str) -> int:
    """The shard that follows ``symbol`` (module docstring: the assignment)."""
    n = ex.processes
    if n == 1:
        return 0
    if ex.shard is not None:
        raise ValueError(f"shard_of needs the exchange's config, not shard {ex.shard}'s")
    try:
        return ex.symbols.index(symbol) % n
    except ValueError:
        return zlib.crc32(symbol.encode()) % n


def shard_config(ex: ExchangeConfig, k: int) -> ExchangeConfig:
    """The config of shard ``k``: its own configured symbols, ``shard = k`` (so ``unit`` is
    ``NAME.k``), its endpoints, and the exchange's slot count (``max_symbols``) as its own.
    The exchange's config itself when it has one process."""
    if ex.shard is not None:
        raise ValueError(f"{ex.unit} is already one shard's config")
    n = ex.processes
    if n == 1:
        return ex
    if not 0 <= k < n:
        raise ConfigError(f"exchanges.{ex.name}.processes", f"no shard {k}: the exchange has shards 0..{n - 1}")
    return dataclasses.replace(
        ex, shard=k, symbols=tuple(s for i, s in enumerate(ex.symbols) if i % n == k), max_symbols=ex.slots,
        l2_endpoint=_endpoint(ex, "l2_endpoint", k), trades_endpoint=_endpoint(ex, "trades_endpoint", k),
        snapshot_endpoint=_endpoint(ex, "snapshot_endpoint", k))


def shard_configs(ex: ExchangeConfig) -> list[ExchangeConfig]:
    """Every shard's config, in shard order ([ex] when it has one process)."""
    return [shard_config(ex, k) for k in range(ex.processes)]


def each(config: Config) -> Iterator[tuple[str, ExchangeConfig]]:
    """(exchange name, config of one ingest process) for every ingest process of the pipeline."""
    for name, ex in config.exchanges.items():
        for sx in shard_configs(ex):
            yield name, sx


def owner(config: Config, exchange: str, symbol: str) -> ExchangeConfig:
    """The config of the process that follows ``symbol`` of ``exchange`` (ConfigError: no such exchange)."""
    ex = config.exchange(exchange)
    return shard_config(ex, shard_of(ex, symbol))


def unit_of(config: Config, exchange: str, symbol: str) -> str:
    """The unit name (segments, sockets) of the process that follows ``symbol``; ``exchange``
    itself when the config does not know it (a reader of another pipeline's names)."""
    ex = config.exchanges.get(exchange)
    if ex is None or ex.processes == 1:
        return exchange
    key = (id(ex), symbol)
    hit = _units.get(key)
    if hit is not None and hit[0] is ex:  # readers ask per message: remembered
        return hit[1]
    unit = f"{ex.name}.{shard_of(ex, symbol)}"  # == shard_config(...).unit, without building it
    if len(_units) > 100_000:
        _units.clear()
    _units[key] = (ex, unit)
    return unit


_units: dict[tuple[int, str], tuple[ExchangeConfig, str]] = {}


def split(ex: ExchangeConfig, symbols: Iterable[str]) -> dict[int, list[str]]:
    """``symbols`` grouped by shard, in shard order, each group in the given order."""
    out: dict[int, list[str]] = {}
    for s in symbols:
        out.setdefault(shard_of(ex, s), []).append(s)
    return dict(sorted(out.items()))


def owns(ex: ExchangeConfig, exchange_config: ExchangeConfig, symbol: str) -> bool:
    """Whether the process of ``ex`` (a shard's config) follows ``symbol`` of ``exchange_config``."""
    return ex.shard is None or shard_of(exchange_config, symbol) == ex.shard


_TCP = re.compile(r"^(tcp://.*):(\d+)$")


def _endpoint(ex: ExchangeConfig, key: str, k: int) -> str | None:
    """Shard ``k``'s version of a configured endpoint: tcp port + k, ipc path + ``.k``."""
    endpoint = getattr(ex, key)
    if endpoint is None:
        return None
    m = _TCP.match(endpoint)
    if m:
        port = int(m.group(2)) + k
        if port > 65535:
            raise ConfigError(f"exchanges.{ex.name}.{key}", f"shard {k} of {ex.processes} would bind port {port} "
                              "(shard K binds the port + K)")
        return f"{m.group(1)}:{port}"
    if endpoint.startswith("ipc://"):
        return f"{endpoint}.{k}"
    return endpoint


__all__ = ["count", "each", "owner", "owns", "shard_config", "shard_configs", "shard_of", "split", "unit_of"]
