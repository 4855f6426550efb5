"""The publisher process: config -> mirror + hub + bus reader + WebSocket server; clean up on exit.

The bus reader is the core's (pipeline/bus.py ``Reader``) on this loop: trades first, one read
step per loop turn, so the client senders woken by a trade run before more L2 is read.

Shutdown order (STYLE.md 8): stop reading the bus, close the clients (1001 going away)
and the listening socket, close the ZeroMQ sockets, terminate the context, remove the
stats file.  A bug anywhere in the loop (the bus pump, a sender) stops the process with
a non-zero status; supervisord restarts it and clients reconnect.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import metadata
from pathlib import Path

import zmq

from pipeline import bus, schema
from pipeline.config import Config
from pipeline.pidfile import PidFile
from publisher import health as health_mod
from publisher.base import Stop
from publisher import stats as stats_file
from publisher.grpc_stats import GrpcCollector
from publisher.hub import Hub
from publisher.metrics import PublisherMetrics
from publisher.mirror import BookMirror
from publisher.server import PublisherServer
from publisher.requests import OTHER_CHANNELS
from publisher.settings import load_settings
from publisher.web import Routes

log = logging.getLogger(__name__)

MONITOR_INTERVAL_S = 1.0


def _version() -> str:
    try:
        return metadata.version("l2pipeline")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"


class PublisherFailed(RuntimeError):
    """A bug stopped the publisher (the cause is chained)."""


async def _monitor(config: Config, hub: Hub, mirror: BookMirror, listen_url: str) -> None:
    """Once a second: announce feed state changes seen in shared memory; refresh the stats file."""
    while True:
        h = health_mod.check(config, mirror)
        for f in h.feeds:
            key = (f["exchange"], f["symbol"])
            feed = hub.settings.feeds.get(key[0])
            if feed is not None and key[1] not in feed.symbols and f["state"] not in ("removed", "down"):
                hub.add_symbols(key[0], [key[1]], f["state"])  # added at runtime (docs/streams.md)
                continue
            if key not in hub.feed_states:
                hub.feed_states[key] = f["state"]  # first sight: nothing to announce
                continue
            reason = {"down": "ingest not running", "stale": "book stale or ingest silent"}.get(
                f["state"], f"book {f['state']}")
            hub.announce(key, f["state"], reason)
        stats_file.write(config, hub.statistics(), listen_url)
        await asyncio.sleep(MONITOR_INTERVAL_S)


async def serve(config: Config, host: str | None = None, port: int | None = None,
                ready_file: str | None = None) -> None:
    settings = load_settings(config)
    host = host or settings.limits.host
    port = settings.limits.port if port is None else port
    loop = asyncio.get_running_loop()
    stopper = Stop(loop, "publisher")
    stop, failure, fail = stopper.event, stopper.failure, stopper.fail

    mirror = BookMirror(config)
    metrics = PublisherMetrics()
    hub = Hub(settings, mirror, loop.call_later, version=_version(), metrics=metrics)

    def health() -> tuple[bool, dict]:
        h = health_mod.check(config, mirror)
        return h.ok, h.to_json()

    metrics.bind(hub.statistics, lambda: health_mod.check(config, mirror).feeds,
                 lambda: {k: t.resyncs for k, t in mirror.trackers.items()})
    metrics.registry.register(GrpcCollector(config))  # the gRPC server's figures, when it is configured
    routes = Routes(health, metrics.render, hub.statistics)
    server = PublisherServer(settings, hub, routes, metrics, on_error=fail, config=config)
    ctx = zmq.Context()
    reader = bus.Reader.for_config(ctx, config)  # every kind: trades, books and the others
    on_trade = hub.on_trade
    handlers: dict[schema.EventKind, bus.OnMessage] = {
        schema.TRADE: lambda _topic, payload: on_trade(payload), schema.L2: hub.on_l2}
    for channel, name in OTHER_CHANNELS.items():
        kind = schema.KINDS[name]
        handlers[kind] = lambda _topic, payload, c=channel, k=kind: hub.on_other(c, k, payload)
    reader.on_kinds(handlers, on_error=fail)
    hub.poll_trades = reader.poll_hot
    reader.before_step, reader.after_step = server.begin_step, server.end_step  # one write per client a step
    if reader.l2_sock is not None:
        hub.read_l2(reader.subscribe_l2, reader.unsubscribe_l2)  # books from shared memory where it can
    monitor = None
    try:
        bound = await server.start(host, port)
        listen_url = f"ws://{host}:{bound}/"
        reader.start(loop)
        monitor = asyncio.create_task(_monitor(config, hub, mirror, listen_url))
        monitor.add_done_callback(lambda t: t.cancelled() or t.exception() is None or fail(t.exception()))
        log.info("publisher: %s (page http://%s:%d/), exchanges %s%s", listen_url, host, bound,
                 ", ".join(f"{ex} (throttle {f.throttle_ms} ms)" for ex, f in settings.feeds.items()),
                 ", token required" if settings.limits.token else "")
        if ready_file:
            tmp = Path(ready_file).with_suffix(".tmp")
            tmp.write_text(f"{bound}\n")
            tmp.replace(ready_file)
        await stop.wait()
    finally:
        reader.close()
        if monitor is not None:
            monitor.cancel()
        await server.stop()
        ctx.term()
        mirror.close()
        stats_file.remove(config)
        log.info("publisher stopped")
    if failure:
        raise PublisherFailed("internal error") from failure[0]


def run_publisher(config: Config, host: str | None = None, port: int | None = None,
                  ready_file: str | None = None) -> None:
    """Blocking entry point of ``pipeline publish``."""
    config.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # ipc sockets, pid files: ours only
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    with PidFile(config.run_dir / "publisher.pid"):
        runner(serve(config, host, port, ready_file))
