"""Symbols added while the publisher runs (issue 14, docs/streams.md): served from then on, given to the
clients on the default subscription, announced; a client that chose its symbols gets nothing new."""

from __future__ import annotations

from pipeline.config import parse_config
from publisher.hub import Hub
from publisher.mirror import BookMirror
from publisher.settings import load_settings
from test_publisher_hub import CONFIG, Clock, Peer, Timers, kinds


def test_default_clients_get_an_added_symbol_and_new_clients_see_it_in_the_welcome(tmp_path):
    config = parse_config(CONFIG.format(run=tmp_path / "r"), tmp_path)
    clock = Clock()
    mirror = BookMirror(config)
    try:
        hub = Hub(load_settings(config, {}), mirror, Timers(clock), clock=clock, version="test")
        everything, chooser = Peer(hub), Peer(hub)
        chooser.send({"op": "subscribe", "exchange": "sim", "symbols": ["BTCUSDT"], "id": 1})
        everything.drain(), chooser.drain()

        assert hub.add_symbols("sim", ["ETHUSDT", "BTCUSDT"], "syncing") == ["ETHUSDT"]
        assert hub.add_symbols("sim", ["ETHUSDT"]) == []  # once
        assert ("sim", "ETHUSDT") in everything.client.session.subs
        status = [f for f in everything.drain() if f["kind"] == "status"]
        assert status and status[0]["symbol"] == "ETHUSDT" and status[0]["reason"] == "symbol added"
        assert ("sim", "ETHUSDT") not in chooser.client.session.subs and chooser.drain() == []

        chooser.send({"op": "subscribe", "exchange": "sim", "symbols": ["ETHUSDT"], "id": 2})
        assert "subscribed" in kinds(chooser.drain())  # a known symbol now, not an error
        welcome = Peer(hub).drain()[0]
        assert welcome["exchanges"]["sim"]["symbols"] == ["BTCUSDT", "ETHUSDT"]
    finally:
        mirror.close()
