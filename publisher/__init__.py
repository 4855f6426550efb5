"""The WebSocket publisher: every trade and book of the pipeline on one port (docs/websocket.md); bridges.

``SERVERS`` is the registry of long-running servers (publisher/base.py has their shape): a new
server is its module and one line here.  Modules are imported only when used."""

from pipeline.plugins import Plugin, Registry

SERVERS = Registry("server", [
    Plugin("publisher", "publisher.settings:SERVER", command="publish", default_on=True,
           summary="Run the WebSocket publisher: every trade and book on one port, with a live page at /."),
    Plugin("grpc", "publisher.grpc_settings:SERVER",
           summary="Run the gRPC server: l2pipeline.v1.MarketData, books and trades for typed clients (docs/grpc.md)."),
])

# Bridges: processes that carry the bus to another messaging system for other hosts and sites
# (a server's shape, publisher/base.py, with `[bridges.NAME]` as its table; `pipeline bridge NAME`;
# program `bridge-NAME` under `pipeline run` when the table is present).
BRIDGES = Registry("bridge", [
    Plugin("nats", "publisher.nats_bridge:BRIDGE",
           summary="Publish every bus stream to NATS JetStream, the books' latest state to a KV bucket (docs/remote.md)."),
])
