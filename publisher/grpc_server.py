"""The gRPC server process: config -> mirror + GrpcHub + bus reader + grpc.aio server (docs/grpc.md).

``l2pipeline.v1.MarketData`` (proto/l2pipeline/v1/marketdata.proto) on a grpcio asyncio
server, on uvloop, with server reflection and the standard health service
(``grpc.health.v1.Health``: SERVING while every feed it serves is live, checked once a second
like the publisher's ``GET /health``).

The streaming methods are registered with a pass-through response serializer: the hub
serializes each trade and delta once and every stream writes the same bytes.  Each stream
has one writer (its handler) that awaits the next message from its outbox, so a client that
stops reading blocks only its own ``write``; the hub keeps filling that stream's outbox,
which is bounded (publisher/outbox.py).  HTTP/2 flow control does not bound a slow client by
itself: grpc buffers up to the stream's window (megabytes once BDP probing grew it) before a
write waits, so the bound that matters is the outbox.  A stream the hub ended for slowness
gets RESOURCE_EXHAUSTED with the reason as soon as its writer is free; one whose write is
blocked (the client stopped reading) holds only what grpc buffered, and the client gets
the status after it, once it reads again; keepalive pings end the calls of a dead peer.

Shutdown (STYLE.md 8): stop reading the bus, stop the server (1 s grace), close the ZeroMQ
sockets and the context, remove the stats file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
from pathlib import Path

import grpc
import zmq
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from l2pipeline.v1 import marketdata_pb2 as pb
from pipeline import bus, schema
from pipeline import status as pipeline_status
from pipeline.config import Config
from pipeline.pidfile import PidFile
from publisher import health as health_mod
from publisher.base import Stop
from publisher.grpc_hub import EVENT_RPCS, STATES, GrpcHub, Refused, Stream
from publisher.grpc_settings import GrpcConfig, check_exposure, grpc_config
from publisher.grpc_stats import stats_path, write_stats
from publisher.mirror import BookMirror
from publisher.settings import load_settings

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["MarketData"].full_name  # "l2pipeline.v1.MarketData"
MONITOR_INTERVAL_S = 1.0


class GrpcFailed(RuntimeError):
    """A bug stopped the gRPC server (the cause is chained)."""


# ------------------------------------------------------------------------------ the service

def _feed_message(f: dict, depth: int) -> pb.Feed:
    m = pb.Feed(exchange=f["exchange"], symbol=f["symbol"], state=STATES.get(f["state"], pb.BOOK_STATE_UNSPECIFIED),
                epoch=f.get("epoch") or 0, seq=f.get("seq") or 0, depth=depth, updates=f.get("updates", 0),
                trades=f.get("trades", 0), gaps=f.get("gaps", 0), resyncs=f.get("resyncs", 0),
                age_s=f["age_s"] if f.get("age_s") is not None else -1.0)
    if f.get("best_bid"):
        m.best_bid.price, m.best_bid.size = f["best_bid"]
    if f.get("best_ask"):
        m.best_ask.price, m.best_ask.size = f["best_ask"]
    return m


# the streaming methods of the other event kinds: (method, GrpcHub.EVENT_RPCS name, request type)
EVENT_METHODS = (("SubscribeQuotes", "quotes", pb.SubscribeQuotesRequest),
                 ("SubscribeDerivativeTickers", "derivative_tickers", pb.SubscribeDerivativeTickersRequest),
                 ("SubscribeLiquidations", "liquidations", pb.SubscribeLiquidationsRequest))


class MarketDataService:
    """The methods of l2pipeline.v1.MarketData on the hub; ``handler()`` registers them."""

    def __init__(self, config: Config, limits: GrpcConfig, hub: GrpcHub, loop: asyncio.AbstractEventLoop):
        self.config = config
        self.limits = limits
        self.hub = hub
        self.loop = loop
        self._expected = f"Bearer {limits.token}".encode() if limits.token else None

    def handler(self) -> grpc.GenericRpcHandler:
        raw = None  # pass-through: the hub hands over serialized messages
        return grpc.method_handlers_generic_handler(SERVICE, {
            "GetBook": grpc.unary_unary_rpc_method_handler(
                self.get_book, request_deserializer=pb.GetBookRequest.FromString, response_serializer=raw),
            "SubscribeBooks": grpc.unary_stream_rpc_method_handler(
                self.subscribe_books, request_deserializer=pb.SubscribeBooksRequest.FromString,
                response_serializer=raw),
            "SubscribeTrades": grpc.unary_stream_rpc_method_handler(
                self.subscribe_trades, request_deserializer=pb.SubscribeTradesRequest.FromString,
                response_serializer=raw),
            "ListFeeds": grpc.unary_unary_rpc_method_handler(
                self.list_feeds, request_deserializer=pb.ListFeedsRequest.FromString,
                response_serializer=pb.ListFeedsResponse.SerializeToString),
            **{method: grpc.unary_stream_rpc_method_handler(
                self._events(rpc), request_deserializer=request.FromString, response_serializer=raw)
               for method, rpc, request in EVENT_METHODS},
        })

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        if self._expected is None:
            return
        got = next((v for k, v in context.invocation_metadata() or () if k == "authorization"), None)
        if got is None:
            self.hub.refused["UNAUTHENTICATED"] += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token: send metadata "
                                                                  "'authorization: Bearer TOKEN'")
        if not hmac.compare_digest(got.encode() if isinstance(got, str) else got, self._expected):
            self.hub.refused["UNAUTHENTICATED"] += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong bearer token")

    @staticmethod
    async def _refuse(context: grpc.aio.ServicerContext, exc: Refused) -> None:
        await context.abort(getattr(grpc.StatusCode, exc.code), str(exc))

    async def get_book(self, request: pb.GetBookRequest, context: grpc.aio.ServicerContext) -> bytes:
        await self._authorize(context)
        try:
            return self.hub.get_book(request.exchange, request.symbol, request.depth)
        except Refused as exc:
            await self._refuse(context, exc)
            raise  # (abort raised already)

    async def list_feeds(self, request: pb.ListFeedsRequest, context: grpc.aio.ServicerContext) -> pb.ListFeedsResponse:
        await self._authorize(context)
        rows, _ = pipeline_status.feeds(self.config)
        depths = {name: ex.depth for name, ex in self.config.exchanges.items()}
        return pb.ListFeedsResponse(feeds=[_feed_message(f, depths.get(f["exchange"], 0)) for f in rows])

    async def subscribe_books(self, request: pb.SubscribeBooksRequest, context: grpc.aio.ServicerContext) -> None:
        await self._authorize(context)
        try:
            req = self.hub.check_books(request.exchange, list(request.symbols), request.depth, request.mode,
                                       request.interval_ms)
        except Refused as exc:
            await self._refuse(context, exc)
        await self._serve(context, lambda wake: self.hub.open_books(context.peer(), req, wake))

    async def subscribe_trades(self, request: pb.SubscribeTradesRequest, context: grpc.aio.ServicerContext) -> None:
        await self._authorize(context)
        try:
            symbols = self.hub.check_symbols(request.exchange, list(request.symbols))
        except Refused as exc:
            await self._refuse(context, exc)
        await self._serve(context, lambda wake: self.hub.open_trades(context.peer(), request.exchange, symbols, wake,
                                                                     all_symbols=not request.symbols))

    def _events(self, rpc: str):
        """The handler of SubscribeQuotes / SubscribeDerivativeTickers / SubscribeLiquidations."""
        async def subscribe(request, context: grpc.aio.ServicerContext) -> None:
            await self._authorize(context)
            try:
                symbols = self.hub.check_symbols(request.exchange, list(request.symbols))
            except Refused as exc:
                await self._refuse(context, exc)
            await self._serve(context, lambda wake: self.hub.open_events(
                rpc, context.peer(), request.exchange, symbols, wake, all_symbols=not request.symbols))
        return subscribe

    async def _serve(self, context: grpc.aio.ServicerContext, open_stream) -> None:
        """The one writer of a stream: the next message of its outbox, written, until the call ends."""
        ready = asyncio.Event()
        try:
            stream: Stream = open_stream(ready.set)
        except Refused as exc:
            await self._refuse(context, exc)
        hub = self.hub
        try:
            while True:
                frame = hub.next_frame(stream)
                if frame is None:
                    if stream.closing is not None:
                        break
                    ready.clear()
                    frame = hub.next_frame(stream)  # (pushed between the two calls: not lost)
                    if frame is None:
                        if stream.closing is not None:
                            break
                        await ready.wait()
                        continue
                await context.write(frame)
            # Ended by the hub (too slow for its trades).  If the client stopped reading, the status
            # follows what grpc already buffered for it: the client sees it once it reads again.
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, stream.closing)
        finally:
            hub.close(stream)


# ------------------------------------------------------------------------------ the process

async def _monitor(config: Config, hub: GrpcHub, mirror: BookMirror, health_servicer, address: str) -> None:
    """Once a second: SERVING while every served feed is live; refresh the stats file."""
    serving = None
    while True:
        h = health_mod.check(config, mirror)
        ok = h.ok
        for f in h.feeds:  # symbols added at runtime (docs/streams.md): served from now on
            feed = hub.settings.feeds.get(f["exchange"])
            if feed is not None and f["symbol"] not in feed.symbols and f["state"] not in ("removed", "down"):
                hub.settings.feeds[f["exchange"]] = dataclasses.replace(feed, symbols=feed.symbols + (f["symbol"],))
                joined = hub.add_symbol(f["exchange"], f["symbol"])
                log.info("%s %s: added at runtime; served from now on (%d streams of every symbol took it)",
                         f["exchange"], f["symbol"], joined)
        if ok != serving:
            serving = ok
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", SERVICE):
                await health_servicer.set(name, status)
            log.info("health: %s", "SERVING" if ok else "NOT_SERVING")
        write_stats(config, hub.statistics(), address)
        await asyncio.sleep(MONITOR_INTERVAL_S)


def server_credentials(limits: GrpcConfig) -> grpc.ServerCredentials | None:
    if limits.tls_cert is None or limits.tls_key is None:
        return None
    return grpc.ssl_server_credentials([(limits.tls_key.read_bytes(), limits.tls_cert.read_bytes())])


async def serve(config: Config, host: str | None = None, port: int | None = None,
                ready_file: str | None = None) -> None:
    limits = grpc_config(config)
    host = host or limits.host
    check_exposure(limits, host, "--host" if host != limits.host else "grpc.host")
    port = limits.port if port is None else port
    settings = load_settings(config)
    loop = asyncio.get_running_loop()
    stopper = Stop(loop, "grpc server")
    stop, failure, fail = stopper.event, stopper.failure, stopper.fail

    mirror = BookMirror(config)
    hub = GrpcHub(settings, limits, mirror, loop.call_later)
    service = MarketDataService(config, limits, hub, loop)
    server = grpc.aio.server(options=[
        ("grpc.so_reuseport", 0),  # a taken port is an error, not a second server sharing it
        ("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 10_000),  # find dead peers
        ("grpc.http2.max_pings_without_data", 0),
    ])
    server.add_generic_rpc_handlers((service.handler(),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    await health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection([SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    creds = server_credentials(limits)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_secure_port(target, creds) if creds else server.add_insecure_port(target)
    except RuntimeError as exc:  # grpc says only "Failed to bind"
        raise _bind_error(host, port) from exc
    ctx = zmq.Context()
    events = [r for r in EVENT_RPCS.values() if r.rpc != "trades"]
    reader = bus.Reader.for_config(ctx, config, kinds=(schema.TRADE, schema.L2, *(r.kind for r in events)))
    handlers = {schema.TRADE: lambda _topic, payload: hub.on_trade(payload), schema.L2: hub.on_l2}
    for r in events:
        handlers[r.kind] = lambda topic, payload, r=r: hub.on_event(r, topic, payload)
    reader.on_kinds(handlers, on_error=fail)
    hub.poll_trades = reader.poll_hot
    monitor = None
    address = f"{host}:{bound}"
    try:
        await server.start()
        reader.start(loop)
        monitor = asyncio.create_task(_monitor(config, hub, mirror, health_servicer, address))
        monitor.add_done_callback(lambda t: t.cancelled() or t.exception() is None or fail(t.exception()))
        log.info("grpc: %s %s (%s%s), exchanges %s", SERVICE, address, "TLS" if creds else "plaintext",
                 ", token required" if limits.token else "", ", ".join(settings.feeds))
        if ready_file:
            tmp = Path(ready_file).with_suffix(".tmp")
            tmp.write_text(f"{bound}\n")
            tmp.replace(ready_file)
        await stop.wait()
    finally:
        reader.close()
        if monitor is not None:
            monitor.cancel()
        await server.stop(1.0)
        ctx.term()
        mirror.close()
        stats_path(config).unlink(missing_ok=True)
        log.info("grpc server stopped")
    if failure:
        raise GrpcFailed("internal error") from failure[0]


def _bind_error(host: str, port: int) -> OSError:
    """grpc reports a failed bind without a reason: find it by binding the same address ourselves."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, port))
    except OSError as exc:
        return exc
    return OSError(errno.EADDRNOTAVAIL, "grpc could not bind")


def run_grpc(config: Config, host: str | None = None, port: int | None = None, ready_file: str | None = None) -> None:
    """Blocking entry point of ``pipeline grpc``."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    with PidFile(config.run_dir / "grpc.pid"):
        runner(serve(config, host, port, ready_file))
