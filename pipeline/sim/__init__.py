"""``pipeline sim``: a local simulated exchange, in the wire protocol of any venue we ingest.

``market`` is the pure, seeded book generator; ``server`` serves it in the Binance spot protocol,
``bybit``, ``okx``, ``hyperliquid`` and ``lighter`` in theirs, over WebSocket and REST on one
port (docs/sim.md).  ``PROTOCOLS`` is their registry: a new venue's sim is its module and one
line here (config validation, ``pipeline sim --protocol`` and ``venues.make_server`` read it).
"""

from pipeline.plugins import Plugin, Registry

PROTOCOLS = Registry("protocol", [
    Plugin("binance", "pipeline.sim.server:SimServer"),
    Plugin("bybit", "pipeline.sim.bybit:BybitServer"),
    Plugin("okx", "pipeline.sim.okx:OkxServer"),
    Plugin("hyperliquid", "pipeline.sim.hyperliquid:HyperliquidServer"),
    Plugin("hyperliquid_node", "pipeline.sim.hyperliquid_node:NodeServer"),
    Plugin("lighter", "pipeline.sim.lighter:LighterServer"),
])
