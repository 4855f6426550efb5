"""``pipeline sim --protocol bybit|okx|hyperliquid|lighter``: pick a venue protocol server and run it.

The protocol modules (pipeline/sim/bybit.py, okx.py, hyperliquid.py, lighter.py) share the
venue machinery of pipeline/sim/feeds.py and the server core of pipeline/sim/base.py with the
Binance sim (pipeline/sim/server.py). docs/sim.md describes each protocol.
"""

from __future__ import annotations

import asyncio

from pipeline.errors import ConfigError
from pipeline.sim import PROTOCOLS
from pipeline.sim.base import BaseServer, SimOptions, serve_server

__all__ = ["make_server", "run", "serve"]


def make_server(protocol: str, options: SimOptions) -> BaseServer:
    """The server of ``protocol``; raises ValueError for an unknown one."""
    try:
        server_class = PROTOCOLS.get(protocol).load()
    except ConfigError:
        raise ValueError(f"unknown sim protocol {protocol!r}; expected one of {PROTOCOLS.names()}") from None
    return server_class(options)


async def serve(protocol: str, options: SimOptions, stop: asyncio.Event | None = None) -> None:
    """Run the ``protocol`` sim on the current loop until ``stop`` is set (or SIGINT/SIGTERM when None)."""
    await serve_server(make_server(protocol, options), stop)


def run(protocol: str, options: SimOptions) -> None:
    """Blocking: run the ``protocol`` sim under uvloop until SIGINT/SIGTERM, then exit cleanly."""
    import uvloop

    uvloop.run(serve(protocol, options))
