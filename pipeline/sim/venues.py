"""``pipeline sim --protocol bybit|okx|hyperliquid|lighter``: pick a venue protocol server and run it.

The protocol modules (pipeline/sim/bybit.py, okx.py, hyperliquid.py, lighter.py) share the
venue machinery of pipeline/sim/feeds.py and the server core of pipeline/sim/base.py with the
Binance sim (pipeline/sim/server.py). docs/sim.md describes each protocol.
"""

from __future__ import annotations

import asyncio
import importlib

from pipeline.sim.base import BaseServer, SimOptions, serve_server

__all__ = ["PROTOCOLS", "make_server", "run", "serve"]

# protocol -> (module, class)
PROTOCOLS = {
    "bybit": ("pipeline.sim.bybit", "BybitServer"),
    "okx": ("pipeline.sim.okx", "OkxServer"),
    "hyperliquid": ("pipeline.sim.hyperliquid", "HyperliquidServer"),
    "lighter": ("pipeline.sim.lighter", "LighterServer"),
}


def make_server(protocol: str, options: SimOptions) -> BaseServer:
    """The server of ``protocol``; raises ValueError for an unknown one."""
    if protocol == "binance":
        from pipeline.sim.server import SimServer

        return SimServer(options)
    try:
        module, cls = PROTOCOLS[protocol]
    except KeyError:
        raise ValueError(f"unknown sim protocol {protocol!r}; expected one of "
                         f"{['binance', *PROTOCOLS]}") from None
    return getattr(importlib.import_module(module), cls)(options)


async def serve(protocol: str, options: SimOptions, stop: asyncio.Event | None = None) -> None:
    """Run the ``protocol`` sim on the current loop until ``stop`` is set (or SIGINT/SIGTERM when None)."""
    await serve_server(make_server(protocol, options), stop)


def run(protocol: str, options: SimOptions) -> None:
    """Blocking: run the ``protocol`` sim under uvloop until SIGINT/SIGTERM, then exit cleanly."""
    import uvloop

    uvloop.run(serve(protocol, options))
