"""Pipeline configuration: one TOML file -> frozen dataclasses, validated at start.

Every error names the dotted key and the reason, e.g.
``exchanges.sim.depth: expected a positive integer, got "ten"``; the CLI prints it as
``config error: ...`` and exits with status 2.  Unknown keys are errors too, so a typo
never silently falls back to a default.

Relative paths (``run_dir``, ``data_dir``, ``sinks.csv.dir``) are resolved against the
directory of the config file, or the current directory for the built-in demo config.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

from pipeline.errors import ConfigError

SIM_PROTOCOLS = ("binance", "bybit", "okx", "hyperliquid", "lighter")
DEMO_SIM_PORT = 9100
DEMO_SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]

DEMO_CONFIG = f"""
# Built-in demo: a local simulated Binance-like exchange and one ingest process.
[pipeline]
run_dir = "run"
data_dir = "data"

[sim]
port = {DEMO_SIM_PORT}
symbols = {DEMO_SYMBOLS!r}
rate = 500

[exchanges.sim]
adapter = "binance"
symbols = {DEMO_SYMBOLS!r}
depth = 50
ws_url = "ws://127.0.0.1:{DEMO_SIM_PORT}"
rest_url = "http://127.0.0.1:{DEMO_SIM_PORT}"

[publisher]
host = "127.0.0.1"
port = 9001

[sinks.csv]
dir = "data/csv"
""".replace("'", '"')


@dataclass(frozen=True)
class ExchangeConfig:
    """One ``[exchanges.NAME]`` table: one ingest process."""

    name: str
    adapter: str
    symbols: tuple[str, ...]
    depth: int = 50
    ws_url: str | None = None
    rest_url: str | None = None
    rest_depth_path: str | None = None
    depth_stream: str | None = None  # e.g. "depth@100ms", "depth@0ms"; adapter default if None
    trade_stream: str | None = None  # "trade" or "aggTrade"; adapter default if None
    snapshot_limit: int | None = None
    rest_weight_limit: int | None = None  # request weight per minute we allow ourselves
    verify_bbo: bool = True
    ping_interval_s: float = 10.0  # our own WS pings: a dead connection is found within 2x this
    idle_timeout_s: float = 60.0  # no frame at all for this long -> the connection is dead
    max_connection_age_s: float = 23.5 * 3600  # venues cut at 24 h; reconnect first
    snapshot_interval_s: float = 30.0  # republish every live book as a bus snapshot (remote late joiners)
    streams_per_connection: int | None = None
    l2_endpoint: str | None = None  # e.g. "tcp://0.0.0.0:5556"; ipc in run_dir by default
    trades_endpoint: str | None = None
    l2_throttle_ms: int | None = None  # WebSocket L2 snapshot interval per symbol; None: venue default (publisher)
    tardis_exchange: str | None = None  # exchange id in CSV files (sinks/tardis.py); None: derived from the name
    trade_ring_size: int = 16384  # recent trades per symbol kept in shared memory for consumers' backfill


@dataclass(frozen=True)
class SimConfig:
    """``[sim]``: the local simulated exchange started by ``pipeline run``."""

    host: str = "127.0.0.1"
    port: int = DEMO_SIM_PORT
    symbols: tuple[str, ...] = tuple(DEMO_SYMBOLS)
    seed: int = 1
    rate: float = 500.0
    levels: int = 400
    disconnect_every: float = 0.0
    protocol: str = "binance"  # which venue's protocol the sim speaks (SIM_PROTOCOLS)


@dataclass(frozen=True)
class PublisherConfig:
    """``[publisher]``: the WebSocket bridge (docs/websocket.md has the meaning of each limit)."""

    host: str = "127.0.0.1"  # loopback unless configured
    port: int = 9001
    token: str | None = None  # bearer token required on the WebSocket upgrade (401 without it)
    origins: tuple[str, ...] = ()  # allowed browser Origin values; empty: any (clients without Origin always pass)
    max_clients: int = 100
    max_subscriptions: int = 200  # (exchange, symbol) pairs per client
    max_request_bytes: int = 4096  # a larger request gets an error reply; frames over 1 MiB close the connection
    max_requests_per_s: float = 20.0
    client_queue: int = 5000  # queued trades per client; one more closes it (1013): trades are never dropped
    client_l2_queue: int = 1000  # queued L2 deltas per client; one more conflates them into snapshots
    client_max_lag_s: float = 10.0  # oldest queued trade older than this closes the client (1013)
    default_depth: int = 10  # levels per side of a book subscription that names no depth
    min_throttle_ms: int = 10  # smallest throttle_ms a client may ask for
    close_timeout_s: float = 5.0  # a closed client that does not read its close frame is cut after this
    socket_send_buffer: int = 262144  # kernel send buffer per client (bytes; 0: autotuned, can hold MBs of stale data)


@dataclass(frozen=True)
class CsvSinkConfig:
    """``[sinks.csv]``: tardis-format CSV files (docs/csv.md)."""

    dir: Path = Path("data/csv")
    gzip: bool = False  # gzip each day's files once the day is over
    flush_interval_s: float = 1.0  # buffered rows reach the files at least this often
    exchanges: tuple[str, ...] = ()  # exchanges to record; empty: all


@dataclass(frozen=True)
class Config:
    run_dir: Path
    data_dir: Path
    exchanges: dict[str, ExchangeConfig]
    sim: SimConfig | None = None
    publisher: PublisherConfig = field(default_factory=PublisherConfig)
    csv: CsvSinkConfig | None = None
    log_level: str = "INFO"
    source: str = "<demo>"

    @property
    def shm_prefix(self) -> str:
        """Prefix of every shared-memory name of this pipeline, derived from run_dir."""
        digest = hashlib.blake2s(str(self.run_dir).encode(), digest_size=5).hexdigest()
        return f"l2p_{digest}"

    def exchange(self, name: str) -> ExchangeConfig:
        try:
            return self.exchanges[name]
        except KeyError:
            known = ", ".join(sorted(self.exchanges)) or "none"
            raise ConfigError(f"exchanges.{name}", f"no such exchange in the config (configured: {known})") from None


# ---------------------------------------------------------------- validation helpers


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}" if where else key, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _table(value: Any, key: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a table, got {_show(value)}")
    return value


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a non-empty string, got {_show(value)}")
    return value


def _pos_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(key, f"expected a positive integer, got {_show(value)}")
    return value


def _port(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(key, f"expected a port number 0-65535, got {_show(value)}")
    return value


def _number(value: Any, key: str, minimum: float = 0.0, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"expected a number, got {_show(value)}")
    if positive and value <= 0:
        raise ConfigError(key, f"expected a positive number, got {_show(value)}")
    if value < minimum:
        raise ConfigError(key, f"expected a number >= {minimum:g}, got {_show(value)}")
    return float(value)


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {_show(value)}")
    return value


def _url(value: Any, key: str, schemes: tuple[str, ...]) -> str:
    text = _str(value, key)
    if not text.startswith(tuple(s + "://" for s in schemes)):
        raise ConfigError(key, f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}, got {_show(value)}")
    return text.rstrip("/")


def _symbols(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of symbols, got {_show(value)}")
    if not value:
        raise ConfigError(key, "expected at least one symbol, got an empty list")
    seen = []
    for i, sym in enumerate(value):
        if not isinstance(sym, str) or not sym.strip():
            raise ConfigError(f"{key}[{i}]", f"expected a symbol name, got {_show(sym)}")
        if sym in seen:
            raise ConfigError(f"{key}[{i}]", f"duplicate symbol {_show(sym)}")
        seen.append(sym)
    return tuple(seen)


def _path(value: Any, key: str, base: Path) -> Path:
    p = Path(_str(value, key)).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


_EXCHANGE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")
# A tardis.dev exchange id: lowercase words joined by single "-" ("binance-us"), the form
# strict tardis readers accept; sinks/tardis.py derives one when `tardis_exchange` is unset.
TARDIS_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def _exchange(name: str, raw: Any, adapters: Collection[str] | None) -> ExchangeConfig:
    where = f"exchanges.{name}"
    t = _table(raw, where)
    if not name or not set(name) <= _EXCHANGE_NAME_CHARS:
        raise ConfigError(where, "exchange names use lowercase letters, digits, '_' and '-'")
    _check_keys(t, {f for f in ExchangeConfig.__dataclass_fields__ if f != "name"}, where)
    adapter = _str(t.get("adapter", name), f"{where}.adapter")
    if adapters is not None and adapter not in adapters:
        raise ConfigError(f"{where}.adapter", f"unknown adapter {_show(adapter)} (known: {', '.join(sorted(adapters))})")
    if "symbols" not in t:
        raise ConfigError(f"{where}.symbols", "missing: list the exchange-native symbols to follow")
    kw: dict[str, Any] = {"name": name, "adapter": adapter, "symbols": _symbols(t["symbols"], f"{where}.symbols")}
    if "depth" in t:
        kw["depth"] = _pos_int(t["depth"], f"{where}.depth")
        if kw["depth"] > 5000:
            raise ConfigError(f"{where}.depth", f"expected at most 5000 levels, got {kw['depth']}")
    if "ws_url" in t:
        kw["ws_url"] = _url(t["ws_url"], f"{where}.ws_url", ("ws", "wss"))
    if "rest_url" in t:
        kw["rest_url"] = _url(t["rest_url"], f"{where}.rest_url", ("http", "https"))
    for key in ("rest_depth_path", "depth_stream", "trade_stream"):
        if key in t:
            kw[key] = _str(t[key], f"{where}.{key}")
    if "trade_stream" in kw and kw["trade_stream"] not in ("trade", "aggTrade"):
        raise ConfigError(f"{where}.trade_stream", f'expected "trade" or "aggTrade", got {_show(kw["trade_stream"])}')
    for key in ("snapshot_limit", "rest_weight_limit", "streams_per_connection", "l2_throttle_ms"):
        if key in t:
            kw[key] = _pos_int(t[key], f"{where}.{key}")
    if "verify_bbo" in t:
        kw["verify_bbo"] = _bool(t["verify_bbo"], f"{where}.verify_bbo")
    for key in ("ping_interval_s", "idle_timeout_s", "max_connection_age_s", "snapshot_interval_s"):
        if key in t:
            kw[key] = _number(t[key], f"{where}.{key}", positive=True)
    for key in ("l2_endpoint", "trades_endpoint"):
        if key in t:
            kw[key] = _url(t[key], f"{where}.{key}", ("tcp", "ipc"))
    if "tardis_exchange" in t:
        tid = _str(t["tardis_exchange"], f"{where}.tardis_exchange")
        if not TARDIS_ID.fullmatch(tid):
            raise ConfigError(f"{where}.tardis_exchange",
                              "expected a tardis exchange id (lowercase words joined by '-', e.g. "
                              f"\"binance-us\"), got {_show(tid)}")
        kw["tardis_exchange"] = tid
    if "trade_ring_size" in t:
        kw["trade_ring_size"] = _pos_int(t["trade_ring_size"], f"{where}.trade_ring_size")
        if kw["trade_ring_size"] > 1 << 22:
            raise ConfigError(f"{where}.trade_ring_size", f"expected at most {1 << 22} trades, got {kw['trade_ring_size']}")
    return ExchangeConfig(**kw)


def _csv_sink(t: dict, data_dir: Path, base_dir: Path, exchanges: dict[str, ExchangeConfig]) -> CsvSinkConfig:
    _check_keys(t, set(CsvSinkConfig.__dataclass_fields__), "sinks.csv")
    kw: dict[str, Any] = {"dir": _path(t.get("dir", str(data_dir / "csv")), "sinks.csv.dir", base_dir)}
    if "gzip" in t:
        kw["gzip"] = _bool(t["gzip"], "sinks.csv.gzip")
    if "flush_interval_s" in t:
        kw["flush_interval_s"] = _number(t["flush_interval_s"], "sinks.csv.flush_interval_s", positive=True)
    if "exchanges" in t:
        names = t["exchanges"]
        if not isinstance(names, list) or not names:
            raise ConfigError("sinks.csv.exchanges", f"expected a non-empty list of exchange names, got {_show(names)}")
        for i, name in enumerate(names):
            if name not in exchanges:
                raise ConfigError(f"sinks.csv.exchanges[{i}]", f"no such exchange {_show(name)} in [exchanges]")
        kw["exchanges"] = tuple(dict.fromkeys(names))
    return CsvSinkConfig(**kw)


def _sim(raw: Any) -> SimConfig:
    t = _table(raw, "sim")
    _check_keys(t, set(SimConfig.__dataclass_fields__), "sim")
    kw: dict[str, Any] = {}
    if "host" in t:
        kw["host"] = _str(t["host"], "sim.host")
    if "port" in t:
        kw["port"] = _port(t["port"], "sim.port")
    if "symbols" in t:
        kw["symbols"] = _symbols(t["symbols"], "sim.symbols")
    if "seed" in t:
        if isinstance(t["seed"], bool) or not isinstance(t["seed"], int):
            raise ConfigError("sim.seed", f"expected an integer, got {_show(t['seed'])}")
        kw["seed"] = t["seed"]
    if "rate" in t:
        kw["rate"] = _number(t["rate"], "sim.rate", positive=True)
    if "levels" in t:
        kw["levels"] = _pos_int(t["levels"], "sim.levels")
    if "disconnect_every" in t:
        kw["disconnect_every"] = _number(t["disconnect_every"], "sim.disconnect_every")
    if "protocol" in t:
        kw["protocol"] = _str(t["protocol"], "sim.protocol")
        if kw["protocol"] not in SIM_PROTOCOLS:
            raise ConfigError("sim.protocol", f"unknown protocol {_show(kw['protocol'])} "
                                              f"(known: {', '.join(SIM_PROTOCOLS)})")
    return SimConfig(**kw)


def _publisher(raw: Any) -> PublisherConfig:
    t = _table(raw, "publisher")
    _check_keys(t, set(PublisherConfig.__dataclass_fields__), "publisher")
    kw: dict[str, Any] = {}
    if "host" in t:
        kw["host"] = _str(t["host"], "publisher.host")
    if "port" in t:
        kw["port"] = _port(t["port"], "publisher.port")
    if "token" in t:
        kw["token"] = _str(t["token"], "publisher.token")
    if "origins" in t:
        if not isinstance(t["origins"], list):
            raise ConfigError("publisher.origins", f"expected a list of origins, got {_show(t['origins'])}")
        kw["origins"] = tuple(_url(o, f"publisher.origins[{i}]", ("http", "https"))
                              for i, o in enumerate(t["origins"]))
    for key in ("max_clients", "max_subscriptions", "max_request_bytes", "client_queue", "client_l2_queue",
                "default_depth", "min_throttle_ms"):
        if key in t:
            kw[key] = _pos_int(t[key], f"publisher.{key}")
    for key in ("max_requests_per_s", "client_max_lag_s", "close_timeout_s"):
        if key in t:
            kw[key] = _number(t[key], f"publisher.{key}", positive=True)
    if "socket_send_buffer" in t:
        v = t["socket_send_buffer"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError("publisher.socket_send_buffer", f"expected a number of bytes >= 0, got {_show(v)}")
        kw["socket_send_buffer"] = v
    if kw.get("max_request_bytes", 0) > 65536:
        raise ConfigError("publisher.max_request_bytes", f"expected at most 65536, got {kw['max_request_bytes']}")
    return PublisherConfig(**kw)


def parse_config(text: str, base_dir: Path, source: str = "<string>",
                 adapters: Collection[str] | None = None) -> Config:
    """Parse and validate TOML text. Raises ConfigError naming the key and the reason.

    ``adapters``: the adapter names to accept in ``exchanges.X.adapter``.  The registry
    lives in the ingest layer (ingest/adapters/__init__.py), above this module, so the
    callers that start processes pass ``ingest.adapters.names()`` (the CLI, the ingest);
    None accepts any name (readers of a config that make no adapter)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"not valid TOML: {exc}") from None
    _check_keys(raw, {"pipeline", "exchanges", "sim", "publisher", "sinks"}, "")

    pipe = _table(raw.get("pipeline", {}), "pipeline")
    _check_keys(pipe, {"run_dir", "data_dir", "log_level"}, "pipeline")
    run_dir = _path(pipe.get("run_dir", "run"), "pipeline.run_dir", base_dir)
    data_dir = _path(pipe.get("data_dir", "data"), "pipeline.data_dir", base_dir)
    log_level = _str(pipe.get("log_level", "INFO"), "pipeline.log_level").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("pipeline.log_level", f"expected DEBUG, INFO, WARNING or ERROR, got {_show(log_level)}")
    # ipc socket paths are capped near 107 bytes: catch it here, not at bind time.
    if len(str(run_dir)) > 70:
        raise ConfigError("pipeline.run_dir", f"path too long for ipc sockets ({len(str(run_dir))} > 70 characters)")

    exchanges_raw = _table(raw.get("exchanges", {}), "exchanges")
    if not exchanges_raw:
        raise ConfigError("exchanges", "expected at least one [exchanges.NAME] table")
    exchanges = {name: _exchange(name, t, adapters) for name, t in exchanges_raw.items()}

    sim = _sim(raw["sim"]) if "sim" in raw else None

    publisher = _publisher(raw.get("publisher", {}))

    csv = None
    sinks = _table(raw.get("sinks", {}), "sinks")
    _check_keys(sinks, {"csv"}, "sinks")
    if "csv" in sinks:
        c = _table(sinks["csv"], "sinks.csv")
        csv = _csv_sink(c, data_dir, base_dir, exchanges)

    return Config(run_dir=run_dir, data_dir=data_dir, exchanges=exchanges, sim=sim, publisher=publisher,
                  csv=csv, log_level=log_level, source=source)


def load_config(path: str | os.PathLike | None, adapters: Collection[str] | None = None) -> Config:
    """Load the config file at ``path``, or the built-in demo config when ``path`` is None.

    ``adapters``: as in ``parse_config``."""
    if path is None:
        return parse_config(DEMO_CONFIG, Path.cwd(), "<demo>", adapters)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), f"cannot read config file: {exc.strerror}") from None
    return parse_config(text, p.resolve().parent, str(p), adapters)
