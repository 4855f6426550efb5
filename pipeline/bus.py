"""ZeroMQ sockets of the bus: endpoints, options, close.  No payload logic here.

Per exchange two PUB endpoints: trades (the hot path) and L2.  ipc sockets in the
run_dir by default; ``l2_endpoint`` / ``trades_endpoint`` in the exchange's config
switch to tcp (for consumers on other hosts).
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq

from pipeline.config import Config, ExchangeConfig

SNDHWM = 200_000  # a slow subscriber loses messages past this; it sees a seq gap and resyncs
RCVHWM = 200_000
LINGER_MS = 200


def endpoints(config: Config, exchange: str | ExchangeConfig) -> tuple[str, str]:
    """(trades endpoint, l2 endpoint) of an exchange, as a subscriber connects to them."""
    ex = config.exchange(exchange) if isinstance(exchange, str) else exchange
    trades = ex.trades_endpoint or f"ipc://{config.run_dir}/{ex.name}.trades.sock"
    l2 = ex.l2_endpoint or f"ipc://{config.run_dir}/{ex.name}.l2.sock"
    return _connectable(trades), _connectable(l2)


def _connectable(endpoint: str) -> str:
    # a publisher bound on tcp://0.0.0.0:P is reached on loopback locally
    return endpoint.replace("tcp://0.0.0.0:", "tcp://127.0.0.1:").replace("tcp://*:", "tcp://127.0.0.1:")


def bind_endpoints(config: Config, ex: ExchangeConfig) -> tuple[str, str]:
    trades = ex.trades_endpoint or f"ipc://{config.run_dir}/{ex.name}.trades.sock"
    l2 = ex.l2_endpoint or f"ipc://{config.run_dir}/{ex.name}.l2.sock"
    return trades, l2


def make_pub(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    """A bound PUB socket; a stale ipc file from a crashed process is replaced."""
    if endpoint.startswith("ipc://"):
        path = Path(endpoint[len("ipc://"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, SNDHWM)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.bind(endpoint)
    return sock


def make_sub(ctx: zmq.Context, endpoints_: list[str], topics: list[bytes] | None = None) -> zmq.Socket:
    """A SUB socket connected to ``endpoints_``, subscribed to topic prefixes (all if None)."""
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, RCVHWM)
    sock.setsockopt(zmq.LINGER, 0)
    for t in topics if topics is not None else [b""]:
        sock.setsockopt(zmq.SUBSCRIBE, t)
    for ep in endpoints_:
        sock.connect(ep)
    return sock


def unlink_ipc(endpoint: str) -> None:
    if endpoint.startswith("ipc://"):
        try:
            os.unlink(endpoint[len("ipc://"):])
        except FileNotFoundError:
            pass
