"""``pipeline sim``: a local simulated exchange speaking the Binance spot protocol.

``market`` is the pure, seeded book generator; ``server`` serves it over WebSocket and
REST on one port (docs/sim.md).
"""
