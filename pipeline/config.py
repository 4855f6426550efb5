"""Pipeline configuration: one TOML file -> frozen dataclasses, validated at start.

Every error names the dotted key and the reason, e.g.
``exchanges.sim.depth: expected a positive integer, got "ten"``; the CLI prints it as
``config error: ...`` and exits with status 2.  Unknown keys are errors too, so a typo
never silently falls back to a default.

Relative paths (``run_dir``, ``data_dir``, ``sinks.csv.dir``) are resolved against the
directory of the config file, or the current directory for the built-in demo config.

``run_dir`` without a ``[pipeline] run_dir`` key does not depend on the current directory, so
every command finds the running pipeline from anywhere: ``$PIPELINE_RUN_DIR`` when set, else
``$XDG_RUNTIME_DIR/l2pipeline`` (per user, a tmpfs cleared at logout), else
``$XDG_STATE_HOME/l2pipeline`` (``~/.local/state/l2pipeline``).  See ``default_run_dir``.

The tables of sinks and servers belong to their plugins (pipeline/plugins.py): the core checks
them only when the composition root passes the registries (``Plugins``; pipeline/app/config.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pipeline.errors import ConfigError
from pipeline.plugins import Registry

DEMO_SIM_PORT = 9100
DEMO_SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]

RUN_DIR_ENV = "PIPELINE_RUN_DIR"
DEFAULT_MAX_SYMBOLS = 64  # per exchange, when [exchanges.NAME] max_symbols is not set
MAX_PROCESSES = 32  # ingest shards of one exchange ([exchanges.NAME] processes)

DEMO_CONFIG = f"""
# Built-in demo: a local simulated Binance-like exchange and one ingest process.
# run_dir: the per-user default (default_run_dir), whatever the current directory.
[pipeline]
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

[grpc]
host = "127.0.0.1"
port = 50051

[sinks.csv]
dir = "data/csv"
""".replace("'", '"')


def default_run_dir(environ: Mapping[str, str] | None = None) -> Path:
    """run_dir when the config names none: $PIPELINE_RUN_DIR, else per user under $XDG_RUNTIME_DIR,
    else under $XDG_STATE_HOME (~/.local/state).  Never relative to the current directory."""
    env = os.environ if environ is None else environ
    if env.get(RUN_DIR_ENV):
        p = Path(env[RUN_DIR_ENV]).expanduser()
        if not p.is_absolute():
            raise ConfigError(RUN_DIR_ENV, f"expected an absolute path, got {show(env[RUN_DIR_ENV])}")
        return p.resolve()
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_absolute() and os.access(runtime, os.W_OK):
        return Path(runtime).resolve() / "l2pipeline"
    state = env.get("XDG_STATE_HOME")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base.resolve() / "l2pipeline"


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
    # the depth stream's cadence bound, overriding the adapter's traits.stale_after_s (None: that
    # one): a live book with no change for this long is stale (resynced), and a depth connection
    # with no frame for this long is stalled (reconnected); on a stream that pushes whole books
    # on a cadence (traits.stale_watch "push", Hyperliquid) a book not pushed this long is resubscribed
    stale_after_s: float | None = None
    max_connection_age_s: float = 23.5 * 3600  # venues cut at 24 h; reconnect first
    snapshot_interval_s: float = 30.0  # republish every live book as a bus snapshot (remote late joiners)
    streams_per_connection: int | None = None
    l2_endpoint: str | None = None  # e.g. "tcp://0.0.0.0:5556"; ipc in run_dir by default
    trades_endpoint: str | None = None
    snapshot_endpoint: str | None = None  # e.g. "tcp://0.0.0.0:5557": the snapshot service for other hosts
    l2_throttle_ms: int | None = None  # WebSocket L2 snapshot interval per symbol; None: venue default (publisher)
    tardis_exchange: str | None = None  # exchange id in CSV files (sinks/tardis.py); None: derived from the name
    trade_ring_size: int = 16384  # recent trades per symbol kept in shared memory for consumers' backfill
    max_symbols: int | None = None  # slots in shared memory (config + runtime symbols); None: see slots
    processes: int = 1  # ingest processes (shards) sharing the symbols (pipeline/shards.py)
    # Set on the config of one shard only (pipeline/shards.py shard_config), never from TOML: which
    # of the ``processes`` this is.  None: the exchange as a whole (every reader's view).
    shard: int | None = None

    # The adapter's own keys (e.g. Hyperliquid ``fast``, the node source's ``node_data_dir``), checked
    # by the adapter class's ``parse_options`` when the config is loaded with the adapter registry;
    # raw TOML values otherwise (library use).  Adapters read them through ``parse_options`` too.
    options: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=True)
    # channels to subscribe to (CHANNELS); None: every one the venue offers (its adapter says which)
    channels: tuple[str, ...] | None = None
    bar_intervals: tuple[str, ...] = ("1s", "1m")  # trade bars derived from the trades ([] : none)
    cvd: bool = True  # derive the CVD from the trades
    open_interest_interval_s: float = 10.0  # REST polling of open interest where the venue streams none
    # venues with contiguous trade ids and a REST trades endpoint: most trades fetched per trade-id gap
    # (issue 19 item 5; docs/bus.md "trade_gap"); 0: gaps are reported, never backfilled
    trade_backfill_max: int = 10000

    @property
    def slots(self) -> int:
        """Symbols the exchange can follow at once, runtime additions included: ``max_symbols``,
        else twice the configured symbols and at least DEFAULT_MAX_SYMBOLS (shared memory is
        sparse: a slot never written costs no RAM)."""
        return self.max_symbols or max(DEFAULT_MAX_SYMBOLS, 2 * len(self.symbols))

    @property
    def unit(self) -> str:
        """The name of this ingest process's files, sockets and segments: the exchange's name, or
        ``NAME.K`` for shard K of an exchange with ``processes`` > 1 (pipeline/shards.py)."""
        return self.name if self.shard is None else f"{self.name}.{self.shard}"


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
    protocol: str = "binance"  # which venue's protocol the sim speaks (pipeline.sim.PROTOCOLS)


@dataclass(frozen=True)
class BusConfig:
    """``[bus]``: security of the bus's tcp endpoints (docs/remote.md).

    On the ingest's host: ``curve_secret_key`` (the server's secret certificate, written by
    `pipeline keys generate`) turns CURVE on for every tcp endpoint, and ``curve_clients_dir``
    holds the public certificates of the clients allowed in (zmq.auth reads the directory; a
    client whose key is not there gets nothing).  ``insecure = true`` allows a tcp endpoint bound
    beyond loopback without CURVE.  On a consumer's host: ``curve_client_secret_key`` and
    ``curve_server_public_key`` are the key pair the consumer library uses by default.
    """

    curve_secret_key: Path | None = None
    curve_clients_dir: Path | None = None
    insecure: bool = False
    curve_client_secret_key: Path | None = None
    curve_server_public_key: Path | None = None

    @property
    def curve(self) -> bool:
        return self.curve_secret_key is not None


@dataclass(frozen=True)
class Config:
    run_dir: Path
    data_dir: Path
    exchanges: dict[str, ExchangeConfig]
    sim: SimConfig | None = None
    # Tables owned by plugins, each parsed by its plugin when loaded through pipeline.app (every
    # command): [sinks.NAME] by name, and the servers that run ([publisher], [grpc]) by name.
    # Loaded by the core alone (library use), they hold the raw TOML tables, unchecked.
    sinks: Mapping[str, Any] = field(default_factory=dict)
    servers: Mapping[str, Any] = field(default_factory=dict)
    bus: BusConfig = BusConfig()
    bridges: Mapping[str, Any] = field(default_factory=dict)  # [bridges.NAME], parsed by its plugin like sinks
    log_level: str = "INFO"
    source: str = "<demo>"
    base_dir: Path = Path(".")  # relative paths of the file resolve against this
    shm_group: int | None = None  # [pipeline] shm_group (a gid): segments 0640 of that group; None: 0600
    shm_owner: int | None = None  # [pipeline] shm_owner (a uid): whose segments readers accept; None: run_dir's owner

    @property
    def shm_prefix(self):
        """This pipeline's shared-memory namespace (pipeline.shm.ShmSpace): a str, the prefix of every
        segment name (derived from run_dir), which also knows where the segments' random names are
        published (RUN_DIR/shm) and the group and owner settings."""
        from pipeline.shm import NAMES_DIR, ShmSpace  # here: loading a config needs no numpy

        digest = hashlib.blake2s(str(self.run_dir).encode(), digest_size=5).hexdigest()
        return ShmSpace(f"l2p_{digest}", self.run_dir / NAMES_DIR, self.shm_group, self.shm_owner)

    def exchange(self, name: str) -> ExchangeConfig:
        try:
            return self.exchanges[name]
        except KeyError:
            known = ", ".join(sorted(self.exchanges)) or "none"
            raise ConfigError(f"exchanges.{name}", f"no such exchange in the config (configured: {known})") from None


# ---------------------------------------------------------------- validation helpers


def show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def check_keys(table: dict, allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}" if where else key, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def expect_table(value: Any, key: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a table, got {show(value)}")
    return value


def expect_str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a non-empty string, got {show(value)}")
    return value


def expect_pos_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(key, f"expected a positive integer, got {show(value)}")
    return value


def expect_port(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(key, f"expected a port number 0-65535, got {show(value)}")
    return value


def expect_number(value: Any, key: str, minimum: float = 0.0, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"expected a number, got {show(value)}")
    if positive and value <= 0:
        raise ConfigError(key, f"expected a positive number, got {show(value)}")
    if value < minimum:
        raise ConfigError(key, f"expected a number >= {minimum:g}, got {show(value)}")
    return float(value)


def expect_bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {show(value)}")
    return value


def expect_url(value: Any, key: str, schemes: tuple[str, ...]) -> str:
    text = expect_str(value, key)
    if not text.startswith(tuple(s + "://" for s in schemes)):
        raise ConfigError(key, f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}, got {show(value)}")
    scheme = text.split("://", 1)[0]
    if scheme == "ipc":
        if not text[len("ipc://"):].strip("/"):
            raise ConfigError(key, f"expected ipc://PATH, got {show(value)}")
        return text.rstrip("/")
    parts = urllib.parse.urlsplit(text)
    try:
        port = parts.port  # ValueError: not a number, or out of range (ws_url port 99999 was a crash loop)
    except ValueError:
        raise ConfigError(key, f"expected a port number from 1 to 65535 in the URL, got {show(value)}") from None
    if not parts.hostname:
        raise ConfigError(key, f"expected a host in the URL, got {show(value)}")
    if scheme == "tcp" and (port is None or port == 0 or parts.path.strip("/")):
        raise ConfigError(key, f"expected tcp://HOST:PORT (port 1-65535), got {show(value)}")
    if port == 0:
        raise ConfigError(key, f"expected a port number from 1 to 65535 in the URL, got {show(value)}")
    return text.rstrip("/")


MAX_SYMBOL_LEN = 31  # a symbol's name slot in shared memory is 32 bytes, NUL-padded (pipeline/shm.py)


def _symbols(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of symbols, got {show(value)}")
    if not value:
        raise ConfigError(key, "expected at least one symbol, got an empty list")
    seen = []
    for i, sym in enumerate(value):
        if not isinstance(sym, str) or not sym.strip():
            raise ConfigError(f"{key}[{i}]", f"expected a symbol name, got {show(sym)}")
        if not sym.isascii() or not sym.isprintable() or any(c.isspace() for c in sym):
            raise ConfigError(f"{key}[{i}]", f"expected printable ASCII without spaces, got {show(sym)}")
        if len(sym) > MAX_SYMBOL_LEN:  # the name slots of shared memory and the trade ring
            raise ConfigError(f"{key}[{i}]", f"symbol longer than {MAX_SYMBOL_LEN} characters ({len(sym)})")
        if sym in seen:
            raise ConfigError(f"{key}[{i}]", f"duplicate symbol {show(sym)}")
        seen.append(sym)
    return tuple(seen)


def expect_path(value: Any, key: str, base: Path) -> Path:
    p = Path(expect_str(value, key)).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


_EXCHANGE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")
# A tardis.dev exchange id: lowercase words joined by single "-" ("binance-us"), the form
# strict tardis readers accept; sinks/tardis.py derives one when `tardis_exchange` is unset.
TARDIS_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


# The channels an exchange table may list (`channels = [...]`): the WebSocket subscription channel
# names (docs/websocket.md), one per venue-fed kind.  cvd and trade bars come from trades.
CHANNELS = ("trades", "book", "quotes", "derivative_ticker", "liquidations")


def _channels(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise ConfigError(key, f"expected a list of channel names ({', '.join(CHANNELS)}), got {show(value)}")
    for c in value:
        if c not in CHANNELS:
            raise ConfigError(key, f"unknown channel {show(c)} (known: {', '.join(CHANNELS)})")
    if "book" not in value:
        raise ConfigError(key, "the book channel cannot be left out: every feed keeps its books")
    return tuple(dict.fromkeys(value))


def _bar_intervals(value: Any, key: str) -> tuple[str, ...]:
    _units = {"s": 1, "m": 60, "h": 3600}
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list such as [\"1s\", \"1m\"], got {show(value)}")
    for iv in value:
        ok = (isinstance(iv, str) and len(iv) >= 2 and iv[-1] in _units and iv[:-1].isdigit()
              and int(iv[:-1]) > 0 and 86400 % (int(iv[:-1]) * _units[iv[-1]]) == 0)
        if not ok:
            raise ConfigError(key, f"expected intervals like \"1s\", \"5m\", \"1h\" that divide a day, got {show(iv)}")
    return tuple(dict.fromkeys(value))


def _exchange(name: str, raw: Any, adapters: Registry | None = None, base_dir: Path = Path(".")) -> ExchangeConfig:
    where = f"exchanges.{name}"
    t = expect_table(raw, where)
    if not name or not set(name) <= _EXCHANGE_NAME_CHARS:
        raise ConfigError(where, "exchange names use lowercase letters, digits, '_' and '-'")
    common = {f for f in ExchangeConfig.__dataclass_fields__ if f not in ("name", "options", "shard")}
    adapter = expect_str(t.get("adapter", name), f"{where}.adapter")
    own = {k: v for k, v in t.items() if k not in common}
    options: dict[str, Any] = own
    if adapters is not None:
        plugin = adapters.get(adapter, f"{where}.adapter")  # ConfigError: unknown adapter "x" (known: ...)
        if own:  # only then is the adapter's module imported
            cls = plugin.load()
            check_keys(t, common | set(getattr(cls, "OPTIONS", ())), where)
            # the adapter checks its own keys (ConfigError naming exchanges.NAME.KEY); relative
            # paths resolve against the config file's directory
            options = cls.parse_options(own, where, base_dir)
    if "symbols" not in t:
        raise ConfigError(f"{where}.symbols", "missing: list the exchange-native symbols to follow")
    kw: dict[str, Any] = {"name": name, "adapter": adapter, "symbols": _symbols(t["symbols"], f"{where}.symbols")}
    if "depth" in t:
        kw["depth"] = expect_pos_int(t["depth"], f"{where}.depth")
        if kw["depth"] > 5000:
            raise ConfigError(f"{where}.depth", f"expected at most 5000 levels, got {kw['depth']}")
    if "ws_url" in t:
        kw["ws_url"] = expect_url(t["ws_url"], f"{where}.ws_url", ("ws", "wss"))
    if "rest_url" in t:
        kw["rest_url"] = expect_url(t["rest_url"], f"{where}.rest_url", ("http", "https"))
    for key in ("rest_depth_path", "depth_stream", "trade_stream"):
        if key in t:
            kw[key] = expect_str(t[key], f"{where}.{key}")
    if "trade_stream" in kw and kw["trade_stream"] not in ("trade", "aggTrade"):
        raise ConfigError(f"{where}.trade_stream", f'expected "trade" or "aggTrade", got {show(kw["trade_stream"])}')
    for key in ("snapshot_limit", "rest_weight_limit", "streams_per_connection", "l2_throttle_ms"):
        if key in t:
            kw[key] = expect_pos_int(t[key], f"{where}.{key}")
    if "verify_bbo" in t:
        kw["verify_bbo"] = expect_bool(t["verify_bbo"], f"{where}.verify_bbo")
    for key in ("ping_interval_s", "idle_timeout_s", "max_connection_age_s", "snapshot_interval_s", "stale_after_s"):
        if key in t:
            kw[key] = expect_number(t[key], f"{where}.{key}", positive=True)
    for key in ("l2_endpoint", "trades_endpoint", "snapshot_endpoint"):
        if key in t:
            kw[key] = expect_url(t[key], f"{where}.{key}", ("tcp",) if key == "snapshot_endpoint" else ("tcp", "ipc"))
    if "tardis_exchange" in t:
        tid = expect_str(t["tardis_exchange"], f"{where}.tardis_exchange")
        if not TARDIS_ID.fullmatch(tid):
            raise ConfigError(f"{where}.tardis_exchange",
                              "expected a tardis exchange id (lowercase words joined by '-', e.g. "
                              f"\"binance-us\"), got {show(tid)}")
        kw["tardis_exchange"] = tid
    if "trade_ring_size" in t:
        kw["trade_ring_size"] = expect_pos_int(t["trade_ring_size"], f"{where}.trade_ring_size")
        if kw["trade_ring_size"] > 1 << 22:
            raise ConfigError(f"{where}.trade_ring_size", f"expected at most {1 << 22} trades, got {kw['trade_ring_size']}")
    if "channels" in t:
        kw["channels"] = _channels(t["channels"], f"{where}.channels")
    if "bar_intervals" in t:
        kw["bar_intervals"] = _bar_intervals(t["bar_intervals"], f"{where}.bar_intervals")
    if "cvd" in t:
        kw["cvd"] = expect_bool(t["cvd"], f"{where}.cvd")
    if "open_interest_interval_s" in t:
        kw["open_interest_interval_s"] = expect_number(t["open_interest_interval_s"],
                                                       f"{where}.open_interest_interval_s", positive=True)
    if "trade_backfill_max" in t:
        v = t["trade_backfill_max"]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1_000_000:
            raise ConfigError(f"{where}.trade_backfill_max", f"expected a whole number of trades 0..1000000 "
                              f"(0: no backfill), got {show(v)}")
        kw["trade_backfill_max"] = v
    if "max_symbols" in t:
        kw["max_symbols"] = expect_pos_int(t["max_symbols"], f"{where}.max_symbols")
        if kw["max_symbols"] < len(kw["symbols"]):
            raise ConfigError(f"{where}.max_symbols", f"expected at least the {len(kw['symbols'])} configured "
                              f"symbols, got {kw['max_symbols']}")
        if kw["max_symbols"] > 4096:
            raise ConfigError(f"{where}.max_symbols", f"expected at most 4096, got {kw['max_symbols']}")
    if "processes" in t:
        kw["processes"] = expect_pos_int(t["processes"], f"{where}.processes")
        if kw["processes"] > MAX_PROCESSES:
            raise ConfigError(f"{where}.processes", f"expected at most {MAX_PROCESSES}, got {kw['processes']}")
        if kw["processes"] > len(kw["symbols"]):
            raise ConfigError(f"{where}.processes", f"expected at most one process per configured symbol "
                              f"({len(kw['symbols'])}), got {kw['processes']}")
        if kw["processes"] > 1 and adapters is not None and not getattr(
                adapters.get(adapter, f"{where}.adapter").load(), "SHARDABLE", True):
            raise ConfigError(f"{where}.processes", f"adapter {adapter!r} reads one source that every process "
                              f"would read whole (it cannot be split over processes): expected 1, "
                              f"got {kw['processes']}")
    kw["options"] = options
    ex = ExchangeConfig(**kw)
    if ex.processes > 1:  # every shard's endpoints are valid (tcp port + K)
        from pipeline.shards import shard_configs
        shard_configs(ex)
    return ex


def _sim(raw: Any, protocols: Registry | None) -> SimConfig:
    t = expect_table(raw, "sim")
    check_keys(t, set(SimConfig.__dataclass_fields__), "sim")
    kw: dict[str, Any] = {}
    if "host" in t:
        kw["host"] = expect_str(t["host"], "sim.host")
    if "port" in t:
        kw["port"] = expect_port(t["port"], "sim.port")
    if "symbols" in t:
        kw["symbols"] = _symbols(t["symbols"], "sim.symbols")
    if "seed" in t:
        if isinstance(t["seed"], bool) or not isinstance(t["seed"], int):
            raise ConfigError("sim.seed", f"expected an integer, got {show(t['seed'])}")
        kw["seed"] = t["seed"]
    if "rate" in t:
        kw["rate"] = expect_number(t["rate"], "sim.rate", positive=True)
    if "levels" in t:
        kw["levels"] = expect_pos_int(t["levels"], "sim.levels")
    if "disconnect_every" in t:
        kw["disconnect_every"] = expect_number(t["disconnect_every"], "sim.disconnect_every")
    if "protocol" in t:
        kw["protocol"] = expect_str(t["protocol"], "sim.protocol")
        if protocols is not None:
            protocols.get(kw["protocol"], "sim.protocol")
    return SimConfig(**kw)


@dataclass(frozen=True)
class SectionContext:
    """What a plugin's config section may look at besides its table: paths, exchanges."""

    base_dir: Path  # relative paths resolve against it (expect_path)
    data_dir: Path
    exchanges: Mapping[str, ExchangeConfig]


@dataclass(frozen=True)
class Plugins:
    """The registries whose plugins own config tables; pipeline/app/config.py passes them (the core
    names no plugin).  Any left None: those tables are kept raw and unchecked (library use)."""

    sinks: Registry | None = None  # [sinks.NAME]
    servers: Registry | None = None  # a top-level [NAME] table per server; default_on ones run without
    adapters: Registry | None = None  # exchanges.X.adapter (ingest/adapters/__init__.py); None: any name
    sim_protocols: Registry | None = None  # sim.protocol (pipeline/sim/__init__.py); None: any name
    bridges: Registry | None = None  # [bridges.NAME] (publisher/__init__.py BRIDGES)


CORE_TABLES = ("pipeline", "exchanges", "sim", "sinks", "bus", "bridges")


def _bus(raw: Any, base: Path) -> BusConfig:
    t = expect_table(raw, "bus")
    check_keys(t, set(BusConfig.__dataclass_fields__), "bus")
    kw: dict[str, Any] = {}
    for key in ("curve_secret_key", "curve_clients_dir", "curve_client_secret_key", "curve_server_public_key"):
        if key in t:
            kw[key] = expect_path(t[key], f"bus.{key}", base)
    if "insecure" in t:
        kw["insecure"] = expect_bool(t["insecure"], "bus.insecure")
    if ("curve_secret_key" in kw) != ("curve_clients_dir" in kw):
        missing = "curve_clients_dir" if "curve_secret_key" in kw else "curve_secret_key"
        raise ConfigError(f"bus.{missing}", "missing: CURVE needs both the server's secret key and the directory "
                                            "of allowed client public keys (`pipeline keys generate`)")
    if ("curve_client_secret_key" in kw) != ("curve_server_public_key" in kw):
        missing = "curve_server_public_key" if "curve_client_secret_key" in kw else "curve_client_secret_key"
        raise ConfigError(f"bus.{missing}", "missing: a CURVE client needs its secret key and the server's public key")
    for key in ("curve_secret_key", "curve_client_secret_key", "curve_server_public_key"):
        if key in kw and not kw[key].is_file():
            raise ConfigError(f"bus.{key}", f"no such file: {kw[key]}")
    if "curve_clients_dir" in kw and not kw["curve_clients_dir"].is_dir():
        raise ConfigError("bus.curve_clients_dir", f"no such directory: {kw['curve_clients_dir']}")
    return BusConfig(**kw)


def _sinks(raw: Any, registry: Registry | None, ctx: SectionContext, where: str = "sinks") -> dict[str, Any]:
    tables = expect_table(raw, where)
    out = {}
    for name, t in tables.items():
        key = f"{where}.{name}"
        t = expect_table(t, key)
        out[name] = t if registry is None else registry.get(name, key).load().parse_config(t, key, ctx)
    return out


def _servers(raw: dict, registry: Registry | None, ctx: SectionContext) -> dict[str, Any]:
    if registry is None:  # library use: every other top-level table, raw
        return {k: expect_table(v, k) for k, v in raw.items() if k not in CORE_TABLES}
    out = {}
    for p in registry:
        if p.name in raw or p.default_on:
            out[p.name] = p.load().parse_config(expect_table(raw.get(p.name, {}), p.name), p.name, ctx)
    return out


def parse_config(text: str, base_dir: Path, source: str = "<string>", plugins: Plugins | None = None) -> Config:
    """Parse and validate TOML text. Raises ConfigError naming the key and the reason.

    ``plugins``: what checks the tables of sinks and servers and the adapter names (the registries
    live above the core; pipeline/app/config.py passes them, as every command loads the config).
    Without them those tables are kept raw and any adapter name passes (readers of a config that
    run no plugin)."""
    plugins = plugins or Plugins()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"not valid TOML: {exc}") from None
    if plugins.servers is not None:
        check_keys(raw, {*CORE_TABLES, *plugins.servers.names()}, "")

    pipe = expect_table(raw.get("pipeline", {}), "pipeline")
    check_keys(pipe, {"run_dir", "data_dir", "log_level", "shm_group", "shm_owner"}, "pipeline")
    run_dir = expect_path(pipe["run_dir"], "pipeline.run_dir", base_dir) if "run_dir" in pipe else default_run_dir()
    data_dir = expect_path(pipe.get("data_dir", "data"), "pipeline.data_dir", base_dir)
    log_level = expect_str(pipe.get("log_level", "INFO"), "pipeline.log_level").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("pipeline.log_level", f"expected DEBUG, INFO, WARNING or ERROR, got {show(log_level)}")
    _check_run_dir(run_dir, "pipeline.run_dir" if "run_dir" in pipe else RUN_DIR_ENV)
    # ipc socket paths are capped near 107 bytes: catch it here, not at bind time.
    if len(str(run_dir)) > 70:
        raise ConfigError("pipeline.run_dir" if "run_dir" in pipe else RUN_DIR_ENV,
                          f"path too long for ipc sockets ({len(str(run_dir))} > 70 characters): {run_dir}")

    shm_group = _group(pipe["shm_group"], "pipeline.shm_group") if "shm_group" in pipe else None
    shm_owner = _user(pipe["shm_owner"], "pipeline.shm_owner") if "shm_owner" in pipe else None

    exchanges_raw = expect_table(raw.get("exchanges", {}), "exchanges")
    if not exchanges_raw:
        raise ConfigError("exchanges", "expected at least one [exchanges.NAME] table")
    exchanges = {name: _exchange(name, t, plugins.adapters, base_dir) for name, t in exchanges_raw.items()}
    _check_endpoints(exchanges)

    sim = _sim(raw["sim"], plugins.sim_protocols) if "sim" in raw else None
    bus = _bus(raw.get("bus", {}), base_dir)

    ctx = SectionContext(base_dir=base_dir, data_dir=data_dir, exchanges=exchanges)
    servers = _servers(raw, plugins.servers, ctx)
    sinks = _sinks(raw.get("sinks", {}), plugins.sinks, ctx)
    bridges = _sinks(raw.get("bridges", {}), plugins.bridges, ctx, "bridges")  # same shape: [bridges.NAME]

    return Config(run_dir=run_dir, data_dir=data_dir, exchanges=exchanges, sim=sim, sinks=sinks, servers=servers, bus=bus, bridges=bridges,
                  log_level=log_level, source=source, base_dir=base_dir, shm_group=shm_group, shm_owner=shm_owner)


def _group(value: Any, key: str) -> int:
    """A group name or gid that exists on this host."""
    import grp

    try:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return grp.getgrgid(value).gr_gid
        if isinstance(value, str) and value:
            return grp.getgrnam(value).gr_gid
    except (KeyError, OverflowError):
        raise ConfigError(key, f"no such group on this host: {show(value)}") from None
    raise ConfigError(key, f"expected a group name or gid, got {show(value)}")


def _user(value: Any, key: str) -> int:
    """A user name or uid that exists on this host."""
    import pwd

    try:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return pwd.getpwuid(value).pw_uid
        if isinstance(value, str) and value:
            return pwd.getpwnam(value).pw_uid
    except (KeyError, OverflowError):
        raise ConfigError(key, f"no such user on this host: {show(value)}") from None
    raise ConfigError(key, f"expected a user name or uid, got {show(value)}")


def _check_run_dir(run_dir: Path, key: str) -> None:
    """run_dir must be (or become) a directory of ours: not a file, not under /proc or /sys."""
    resolved = run_dir.resolve()
    for pseudo in (Path("/proc"), Path("/sys")):
        if resolved == pseudo or pseudo in resolved.parents:
            raise ConfigError(key, f"{run_dir} is under {pseudo}, not a place for sockets and pid files")
    for p in (resolved, *resolved.parents):
        if p.exists():
            if not p.is_dir():
                raise ConfigError(key, f"{p} exists and is not a directory")
            break


def _check_endpoints(exchanges: dict[str, ExchangeConfig]) -> None:
    """Two sockets bound to one endpoint: the second ingest hung (supervisord showed it RUNNING)."""
    from pipeline.shards import shard_configs  # each ingest process's (shard K binds port + K)

    used: dict[str, str] = {}
    for name, whole in exchanges.items():
        for ex in shard_configs(whole):
            _check_process_endpoints(name, ex, used)


def _check_process_endpoints(name: str, ex: ExchangeConfig, used: dict[str, str]) -> None:
    for key in ("trades_endpoint", "l2_endpoint", "snapshot_endpoint"):
        ep = getattr(ex, key)
        if ep is None:
            continue
        where = f"exchanges.{name}.{key}" + ("" if ex.shard is None else f" (process {ex.shard}: port + {ex.shard})")
        if ep in used:
            raise ConfigError(where, f"{ep} is already {used[ep]}: each socket needs its own endpoint")
        used[ep] = where


def load_config(path: str | os.PathLike | None, plugins: Plugins | None = None) -> Config:
    """Load the config file at ``path``, or the built-in demo config when ``path`` is None."""
    if path is None:
        return parse_config(DEMO_CONFIG, Path.cwd(), "<demo>", plugins)
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(str(p), f"cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    return parse_config(text, p.resolve().parent, str(p), plugins)
