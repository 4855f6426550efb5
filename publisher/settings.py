"""What the publisher serves, resolved once at start: config + environment -> frozen Settings (whose
per-exchange symbols grow when the ingest adds one at runtime: Hub.add_symbols, docs/streams.md).

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
from typing import Any, Mapping

from pipeline.config import (Config, SectionContext, check_keys, expect_number, expect_pos_int, expect_port,
                             expect_str, expect_url, show)
from pipeline.errors import ConfigError
from pipeline.streams import followed_symbols

DEFAULT_THROTTLE_MS = 100
VENUE_THROTTLE_MS = {"okx": 150}  # OKX books: 150 ms keeps a browser tab responsive on its busier feed


@dataclass(frozen=True)
class PublisherConfig:
    """``[publisher]``: the WebSocket bridge (docs/websocket.md has the meaning of each limit)."""

    host: str = "127.0.0.1"  # loopback unless configured
    port: int = 9001
    token: str | None = None  # bearer token required on the WebSocket upgrade (401 without it)
    origins: tuple[str, ...] = ()  # allowed browser Origin values; empty: any (clients without Origin always pass)
    max_clients: int = 100
    max_clients_per_ip: int | None = None  # connections from one address; None: half of max_clients
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



def parse_publisher(t: dict, key: str = "publisher") -> PublisherConfig:
    """``[publisher]`` (its table at ``key``) -> PublisherConfig; ConfigError naming ``key.FIELD``."""
    check_keys(t, set(PublisherConfig.__dataclass_fields__), key)
    kw: dict[str, Any] = {}
    if "host" in t:
        kw["host"] = expect_str(t["host"], f"{key}.host")
    if "port" in t:
        kw["port"] = expect_port(t["port"], f"{key}.port")
    if "token" in t:
        kw["token"] = expect_str(t["token"], f"{key}.token")
    if "origins" in t:
        if not isinstance(t["origins"], list):
            raise ConfigError(f"{key}.origins", f"expected a list of origins, got {show(t['origins'])}")
        kw["origins"] = tuple(expect_url(o, f"{key}.origins[{i}]", ("http", "https"))
                              for i, o in enumerate(t["origins"]))
    for field in ("max_clients", "max_clients_per_ip", "max_subscriptions", "max_request_bytes", "client_queue",
                  "client_l2_queue", "default_depth", "min_throttle_ms"):
        if field in t:
            kw[field] = expect_pos_int(t[field], f"{key}.{field}")
    for field in ("max_requests_per_s", "client_max_lag_s", "close_timeout_s"):
        if field in t:
            kw[field] = expect_number(t[field], f"{key}.{field}", positive=True)
    if "socket_send_buffer" in t:
        v = t["socket_send_buffer"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"{key}.socket_send_buffer", f"expected a number of bytes >= 0, got {show(v)}")
        kw["socket_send_buffer"] = v
    if kw.get("max_request_bytes", 0) > 65536:
        raise ConfigError(f"{key}.max_request_bytes", f"expected at most 65536, got {kw['max_request_bytes']}")
    return PublisherConfig(**kw)


def per_ip_limit(limits: PublisherConfig) -> int:
    """Connections one address may hold: so one host cannot take every slot (issue 19)."""
    return limits.max_clients_per_ip or max(1, limits.max_clients // 2)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def default_origins(host: str, port: int) -> tuple[str, ...]:
    """The Origin allow-list when ``origins`` is not configured: bound to loopback, the page's own
    origins (so no other web page open in a local browser can read the feed); bound beyond, none
    (any origin: set ``origins`` and ``token`` there, docs/operations.md "Local exposure")."""
    if host not in LOOPBACK_HOSTS and not host.startswith("127."):
        return ()
    return (f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}")


def publisher_config(config: Config) -> PublisherConfig:
    """The ``[publisher]`` section of a config loaded through pipeline.app (defaults when absent)."""
    section = config.servers.get("publisher")
    return section if isinstance(section, PublisherConfig) else parse_publisher(section or {})


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
        # the config's symbols and those added at runtime (pipeline/streams.py), as of this start
        feeds[name] = FeedSettings(name, followed_symbols(config, name), ex.depth, throttle)
    return Settings(publisher_config(config), feeds)


class WebSocketServer:
    """The publisher as a server plugin (publisher/base.py, registry in publisher/__init__.py)."""

    def parse_config(self, table: dict, key: str, ctx: SectionContext) -> PublisherConfig:
        return parse_publisher(table, key)

    def address(self, config: Config) -> tuple[str, int]:
        c = publisher_config(config)
        return c.host, c.port

    def banner(self, config: Config) -> str:
        host, port = self.address(config)
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"live page: http://{shown}:{port}/  (WebSocket ws://{shown}:{port}/, docs/websocket.md)"

    def run(self, config: Config, host: str | None, port: int | None, ready_file: str | None) -> None:
        from publisher.main import run_publisher

        run_publisher(config, host, port, ready_file)

    def status(self, config: Config) -> dict[str, Any]:
        from publisher import stats

        return stats.read(config)


SERVER = WebSocketServer()
