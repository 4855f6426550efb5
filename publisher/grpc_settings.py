"""``[grpc]``: what the gRPC server serves and how, and the server plugin (publisher/base.py).

Kept apart from publisher/grpc_server.py so that loading a config, `pipeline status` and
`pipeline run` (which only print the banner) do not import grpcio.

Access (issue 12, docs/grpc.md "Access"): a ``token`` makes every MarketData call carry
``authorization: Bearer TOKEN`` in its metadata (UNAUTHENTICATED otherwise); ``tls_cert`` and
``tls_key`` (PEM files, both or neither) serve TLS.  Binding an address that is not loopback
with neither is refused at start: market data and the server's memory would be open to the
network.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import (Config, SectionContext, check_keys, expect_number, expect_path, expect_pos_int,
                             expect_port, expect_str)
from pipeline.errors import ConfigError

STATS_FILE = "grpc.stats.json"


@dataclass(frozen=True)
class GrpcConfig:
    """``[grpc]`` (docs/grpc.md has the meaning of each limit)."""

    host: str = "127.0.0.1"  # loopback unless configured
    port: int = 50051
    token: str | None = None  # bearer token required in call metadata
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key: TLS
    tls_key: Path | None = None  # PEM private key
    max_streams: int = 200  # open SubscribeBooks + SubscribeTrades calls; one more: RESOURCE_EXHAUSTED
    client_queue: int = 5000  # queued trades per stream; one more ends it (RESOURCE_EXHAUSTED)
    client_l2_queue: int = 1000  # queued deltas per stream; one more conflates them into snapshots
    client_max_lag_s: float = 10.0  # oldest queued trade older than this ends the stream
    min_interval_ms: int = 10  # smallest interval_ms a SNAPSHOTS subscription may ask for


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def check_exposure(c: GrpcConfig, host: str, key: str = "grpc.host") -> None:
    """ConfigError when ``host`` is not loopback and the server has neither a token nor TLS."""
    if not is_loopback(host) and c.token is None and c.tls_cert is None:
        raise ConfigError(key, f"refusing to serve gRPC on {host!r} (not loopback) without a token or TLS: "
                               "set grpc.token and/or grpc.tls_cert + grpc.tls_key")


def parse_grpc(t: dict, key: str = "grpc", base_dir: Path | None = None) -> GrpcConfig:
    """``[grpc]`` (its table at ``key``) -> GrpcConfig; ConfigError naming ``key.FIELD``."""
    check_keys(t, set(GrpcConfig.__dataclass_fields__), key)
    kw: dict[str, Any] = {}
    if "host" in t:
        kw["host"] = expect_str(t["host"], f"{key}.host")
    if "port" in t:
        kw["port"] = expect_port(t["port"], f"{key}.port")
    if "token" in t:
        kw["token"] = expect_str(t["token"], f"{key}.token")
        if not kw["token"].strip() or any(c in kw["token"] for c in "\r\n"):
            raise ConfigError(f"{key}.token", "expected a non-empty token on one line")
    for field in ("tls_cert", "tls_key"):
        if field in t:
            path = expect_path(t[field], f"{key}.{field}", base_dir or Path.cwd())
            if not path.is_file():
                raise ConfigError(f"{key}.{field}", f"no such file: {path}")
            kw[field] = path
    if ("tls_cert" in kw) != ("tls_key" in kw):
        missing = "tls_key" if "tls_cert" in kw else "tls_cert"
        raise ConfigError(f"{key}.{missing}", "TLS needs both tls_cert and tls_key")
    for field in ("max_streams", "client_queue", "client_l2_queue", "min_interval_ms"):
        if field in t:
            kw[field] = expect_pos_int(t[field], f"{key}.{field}")
    if "client_max_lag_s" in t:
        kw["client_max_lag_s"] = expect_number(t["client_max_lag_s"], f"{key}.client_max_lag_s", positive=True)
    c = GrpcConfig(**kw)
    check_exposure(c, c.host, f"{key}.host")
    return c


def grpc_config(config: Config) -> GrpcConfig:
    """The ``[grpc]`` section of a config loaded through pipeline.app (defaults when absent)."""
    section = config.servers.get("grpc")
    return section if isinstance(section, GrpcConfig) else parse_grpc(section or {}, base_dir=config.base_dir)


class GrpcServerPlugin:
    """The gRPC server as a server plugin (publisher/base.py, registry in publisher/__init__.py)."""

    def parse_config(self, table: dict, key: str, ctx: SectionContext) -> GrpcConfig:
        return parse_grpc(table, key, ctx.base_dir)

    def address(self, config: Config) -> tuple[str, int]:
        c = grpc_config(config)
        return c.host, c.port

    def banner(self, config: Config) -> str:
        c = grpc_config(config)
        shown = "127.0.0.1" if c.host in ("0.0.0.0", "") else c.host
        tls = ", TLS" if c.tls_cert else ""
        token = ", token required" if c.token else ""
        return f"gRPC: {shown}:{c.port} (l2pipeline.v1.MarketData{tls}{token}; docs/grpc.md)"

    def run(self, config: Config, host: str | None, port: int | None, ready_file: str | None) -> None:
        from publisher.grpc_server import run_grpc

        run_grpc(config, host, port, ready_file)

    def status(self, config: Config) -> dict[str, Any]:
        from publisher.grpc_stats import read_stats

        return read_stats(config)


SERVER = GrpcServerPlugin()
