"""The WebSocket server on :9001 (websockets, asyncio/uvloop): handshake checks, one sender per client.

Per connection two tasks: the handler reads requests and hands them to the hub; the
sender writes what the hub queued, in the outbox's order (control, trades, L2).  The
hub never awaits a client: when nothing is queued ahead and the socket's write buffer is
under ``WRITE_LIMIT`` it writes the frame at once (``try_send``, no task switch per
client and frame), a WebSocket frame built once per event and shared by every client;
otherwise it queues and calls ``wake``.  websockets' ``send`` waits
only when that client's write buffer is above ``write_limit``, so a slow client blocks
its own sender and nothing else.

Before the upgrade (``process_request``), in order:

- a request without ``Upgrade: websocket`` is plain HTTP: publisher.web answers it;
- ``Origin`` not in ``[publisher] origins``: 403.  Browsers always send Origin on a
  WebSocket; programs usually do not, and pass.  Not configured and bound to loopback,
  the list is the page's own origins (settings.default_origins);
- ``[publisher] token`` set and neither ``Authorization: Bearer TOKEN`` nor ``?token=``
  matches: 401.  ``/metrics`` and ``/stats`` take the same token;
- ``max_clients`` connected, or ``max_clients_per_ip`` from the peer's address: 503.

A request whose ``Origin``, ``Upgrade`` or ``Authorization`` header comes twice is
answered 400 naming the header (which value would count is ambiguous).

A client the hub gives up on (too slow for its trades, request flood) gets a close
frame with the code and reason; one that does not read it within ``close_timeout_s``
has its TCP connection aborted.

WebSocket pings (RFC 6455 control frames) count like requests.  websockets answers each
ping with a pong written straight to the socket, ahead of every queue of ours, so a
client that sends pings and never reads would grow the publisher's write buffer without
bound (issue 19: 62 MB -> 1 GB in 30 s).  ``_Connection`` hands each ping to the hub,
which charges it to the client's request rate and, while the client's socket is over
its write limit (it is not reading), to its bounded control lane; over either limit
the client is closed 1008.  A client closed for a policy violation is not read any
more (its connection is aborted at ``close_timeout_s``), so it cannot make more pongs.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import urllib.parse
from typing import Any, Callable

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import MultipleValuesError
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from pipeline.wsframe import server_frame
from publisher import render
from publisher.api import ApiConnection, StreamsApi
from publisher.hub import CLOSE_POLICY, Client, Hub
from publisher.settings import Settings, default_origins, per_ip_limit
from publisher.web import Routes, text_response

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 2**20  # hard cap of an incoming frame (close 1009); requests are capped lower, with an error
WRITE_LIMIT = 2**15      # a client's socket buffer above this makes its sender wait (only its own)
BATCH_BYTES = 2**14      # a sender writes what is queued for its client in one write, up to about this much
PROTECTED_PATHS = ("/metrics", "/stats")

_ws_logger = logging.getLogger("publisher.websockets")
_ws_logger.setLevel(logging.WARNING)  # websockets logs every HTTP answer at INFO; we log state changes ourselves


class PublisherServer:
    def __init__(self, settings: Settings, hub: Hub, routes: Routes, metrics: Any = None,
                 on_error: Callable[[BaseException], None] | None = None, config: Any = None):
        self.settings = settings
        # /api/streams (publisher/api.py): runtime streams through the ingests' control sockets
        self.api = StreamsApi(config, settings.limits.token, self._authorized) if config is not None else None
        self.on_error = on_error
        self.limits = settings.limits
        self.hub = hub
        self.routes = routes
        self.metrics = metrics
        self._server = None
        self._tasks: set[asyncio.Task] = set()
        self.port: int | None = None
        self.origins: tuple[str, ...] = settings.limits.origins
        self.stopping = False
        self._corking = False  # inside a bus read step: direct writes are gathered per client (_Cork)
        self._corked: list[_Cork] = []

    # ------------------------------------------------------------------ bus steps
    def begin_step(self) -> None:
        """The bus reader starts a step: frames the hub writes straight to clients are gathered."""
        self._corking = True

    def end_step(self) -> None:
        """The step is over: each client gets what was gathered for it in one write."""
        self._corking = False
        corked, self._corked = self._corked, []
        for cork in corked:
            cork.flush()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (port 0: any free port). Returns the bound port."""
        self._server = await serve(
            self._handler, host, port,
            process_request=self._process_request,
            create_connection=_Connection,  # ApiConnection (POST/DELETE bodies for /api) + ping accounting
            compression=None,  # permessage-deflate doubles the CPU per message (building-block-costs.md s.5)
            max_size=MAX_FRAME_BYTES,
            max_queue=16,
            write_limit=WRITE_LIMIT,
            close_timeout=self.limits.close_timeout_s,
            ping_interval=20, ping_timeout=20,
            logger=_ws_logger,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.origins = self.limits.origins or default_origins(host, self.port)
        if not self.origins:
            log.warning("no [publisher] origins on %s: any web page may open the feed", host)
        return self.port

    async def stop(self, timeout: float = 3.0) -> None:
        if self._server is None:
            return
        self.stopping = True
        self._server.close(close_connections=True)
        try:
            await asyncio.wait_for(self._server.wait_closed(), timeout)
        except TimeoutError:
            log.warning("clients did not close within %.0f s; exiting anyway", timeout)

    # ------------------------------------------------------------------ handshake
    def _authorized(self, request: Request) -> bool:
        token = self.limits.token
        if token is None:
            return True
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip().encode(), token.encode()):
            return True
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
        return any(hmac.compare_digest(t.encode(), token.encode()) for t in query.get("token", []))

    def _process_request(self, connection: ServerConnection, request: Request):
        try:
            return self._check_request(connection, request)
        except MultipleValuesError as exc:  # e.g. two Origin headers: which one counts is ambiguous
            return self._refuse(400, f"duplicate header {exc}: send it once\n", "bad_request")

    def _check_request(self, connection: ServerConnection, request: Request):
        if request.headers.get("Upgrade", "").lower() != "websocket":
            path = request.path.split("?", 1)[0]
            if self.api is not None and self.api.handles(path):
                return self.api.answer(connection, request)  # a coroutine: websockets awaits it
            if getattr(connection, "api_method", "GET") != "GET":
                return text_response(405, f"{connection.api_method} {path}: only GET here (and /api/streams)\n")
            if path in PROTECTED_PATHS and not self._authorized(request):
                return self._refuse(401, "bearer token required\n", "token", (("WWW-Authenticate", "Bearer"),))
            return self.routes(request)
        origins = self.origins
        origin = request.headers.get("Origin")
        if origins and origin is not None and origin.rstrip("/") not in origins:
            return self._refuse(403, f"origin {origin} is not allowed\n", "origin")
        if not self._authorized(request):
            return self._refuse(401, "bearer token required\n", "token", (("WWW-Authenticate", "Bearer"),))
        if len(self.hub.clients) >= self.limits.max_clients:
            return self._refuse(503, f"server full: {self.limits.max_clients} clients\n", "full")
        ip = connection.remote_address[0] if connection.remote_address else ""
        cap = per_ip_limit(self.limits)
        if sum(1 for c in self.hub.clients.values() if c.peer.rpartition(":")[0] == ip) >= cap:
            return self._refuse(503, f"too many connections from {ip}: {cap}\n", "per_ip")
        return None

    def _refuse(self, status: int, text: str, reason: str, extra: tuple = ()) -> Response:
        self.hub.rejected[reason] += 1
        return text_response(status, text, extra)

    # ------------------------------------------------------------------ a client
    async def _handler(self, ws: _Connection) -> None:
        host, port = ws.remote_address[:2]
        if self.limits.socket_send_buffer:
            # An autotuned send buffer grows to MBs for a client that stopped reading: seconds of
            # stale frames in the kernel, where nothing can conflate them.  A bounded one makes
            # backpressure reach the outbox soon, so a slow client gets the latest view instead.
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.socket_send_buffer)
        wake = asyncio.Event()
        sender: asyncio.Task | None = None

        def close(code: int, reason: str) -> None:
            if sender is not None:
                sender.cancel()
            if code == CLOSE_POLICY:
                ws.stop_reading()  # a flooder: nothing more it sends is read (no more pongs)
            self._spawn(ws.close(code, reason))
            asyncio.get_running_loop().call_later(self.limits.close_timeout_s, _abort, ws)

        metrics = self.metrics
        transport = ws.transport
        protocol = ws.protocol

        counts = self.hub.counts
        cork = _Cork(transport, counts, metrics)

        def try_send(frame: bytes, kind: str, received_us: int) -> bool:
            # The frame, pre-built once for every client (text_frame), goes straight to the
            # transport: websockets' send path costs more than the write itself
            # (building-block-costs.md section 5, rawframe).  Safe because websockets flushes
            # its own writes at once (nothing of it is buffered ahead of ours) and we never
            # fragment.  Backpressure is this check: a socket over its write limit gets the
            # outbox (and this client's sender waits) instead.  Inside a bus read step the
            # frame is gathered (_Cork) and written with the step's others at its end.
            if protocol.state is not State.OPEN:
                return False
            if self._corking:
                if transport.get_write_buffer_size() + cork.size >= WRITE_LIMIT:
                    return False
                if not cork.frames:
                    self._corked.append(cork)
                cork.add(text_frame(frame), kind, received_us)
                return True
            if transport.get_write_buffer_size() >= WRITE_LIMIT:
                return False
            transport.write(text_frame(frame))
            counts["socket_writes"] += 1
            if received_us and metrics is not None:
                metrics.send_delay(kind, (render.now_us() - received_us) / 1e6)
            return True

        def try_send_many(items: list) -> bool:
            # A client behind (several frames queued: snapshots falling due together, trades
            # that waited for its socket) gets them in one write, one syscall and one wake-up
            # of the client instead of one per frame.
            if protocol.state is not State.OPEN or transport.get_write_buffer_size() >= WRITE_LIMIT:
                return False
            transport.write(b"".join([server_frame(frame) for frame, _, _ in items]))
            counts["socket_writes"] += 1
            if metrics is not None:
                now = render.now_us()
                for _, kind, received_us in items:
                    if received_us:
                        metrics.send_delay(kind, (now - received_us) / 1e6)
            return True

        client = self.hub.connect(f"{host}:{port}", wake.set, close, try_send)
        hub = self.hub
        ws.on_ping = lambda: hub.ping_received(client, transport.get_write_buffer_size() >= WRITE_LIMIT)
        if len(self.hub.clients) > self.limits.max_clients:  # upgrades that raced past the check
            self.hub.close_client(client, 1013, "server full", "full")
        sender = asyncio.create_task(self._send(ws, client, wake, try_send, try_send_many))
        reason = "client"
        try:
            async for message in ws:
                self.hub.receive(client, message)
        except ConnectionClosedOK:
            pass
        except ConnectionClosed:
            reason = "error"
        finally:
            sender.cancel()
            if self.stopping:
                reason = "shutdown"
            self.hub.disconnect(client, reason)

    async def _send(self, ws: ServerConnection, client: Client, wake: asyncio.Event, try_send,
                    try_send_many=None) -> None:
        next_frame = self.hub.next_frame
        outbox = client.outbox
        try:
            while True:
                item = next_frame(client)
                if item is None:
                    wake.clear()
                    await wake.wait()
                    continue
                if try_send_many is not None and len(outbox):
                    # more is queued: take it too, up to BATCH_BYTES, for one write (in the outbox's
                    # order; what is taken is no longer conflated, hence the small bound)
                    batch, size = [item], len(item[0])
                    client.holding = True  # (next_frame drains the bus's trades: they queue behind these)
                    try:
                        while size < BATCH_BYTES and len(outbox) and (more := next_frame(client)) is not None:
                            batch.append(more)
                            size += len(more[0])
                    finally:
                        client.holding = False
                    if len(batch) > 1:
                        if not try_send_many(batch):
                            client.holding = True  # until the last of them is in the socket's buffer
                            try:
                                for frame, kind, received_us in batch:  # over the write limit: this client waits
                                    await ws.send(frame, text=True)
                                    if received_us and self.metrics is not None:
                                        self.metrics.send_delay(kind, (render.now_us() - received_us) / 1e6)
                            finally:
                                client.holding = False
                        continue
                frame, kind, received_us = item
                if not try_send(frame, kind, received_us):
                    # over the write limit (or closing): wait for this client's socket only
                    await ws.send(frame, text=True)
                    if received_us and self.metrics is not None:
                        self.metrics.send_delay(kind, (render.now_us() - received_us) / 1e6)
        except ConnectionClosed:
            pass
        except Exception as exc:  # our bug: the process stops (STYLE.md 6), supervisord restarts it
            if self.on_error is None:
                raise
            self.on_error(exc)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _Cork:
    """Frames for one client gathered during a bus read step, written as one at its end.

    A step hands the hub every trade waiting on the bus, then up to 64 L2 messages: a burst of
    trades, or a run of deltas for a delta client, would otherwise be one write (a syscall and a
    wake-up of the client) per frame and client.  The step is synchronous, so nothing else can
    write to the client in between: the order is that of the hub's calls.  It ends as soon as a
    trade was drained, so a trade waits for no more than the L2 work before it in that step."""

    __slots__ = ("transport", "counts", "metrics", "frames", "meta", "size")

    def __init__(self, transport, counts, metrics):
        self.transport, self.counts, self.metrics = transport, counts, metrics
        self.frames: list[bytes] = []
        self.meta: list[tuple[str, int]] = []
        self.size = 0

    def add(self, data: bytes, kind: str, received_us: int) -> None:
        self.frames.append(data)
        self.meta.append((kind, received_us))
        self.size += len(data)

    def flush(self) -> None:
        frames, meta = self.frames, self.meta
        self.frames, self.meta, self.size = [], [], 0
        if not frames or self.transport.is_closing():
            return
        self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        self.counts["socket_writes"] += 1
        metrics = self.metrics
        if metrics is not None:
            now = render.now_us()
            for kind, received_us in meta:
                if received_us:
                    metrics.send_delay(kind, (now - received_us) / 1e6)


class _Connection(ApiConnection):
    """websockets' server connection, with each received ping reported (``on_ping``) and a way to
    stop reading a client for good.  websockets has no hook for pings (it answers them inside
    ``data_received``), hence the subclass; ``process_event`` sees every frame after the pong
    was written."""

    on_ping: Callable[[], None] | None = None
    deaf = False

    def data_received(self, data: bytes) -> None:
        if self.deaf:  # websockets resumes reading when its message queue drains: pause again
            self.transport.pause_reading()
            return
        super().data_received(data)

    def process_event(self, event) -> None:
        super().process_event(event)
        if isinstance(event, Frame) and event.opcode is Opcode.PING and self.on_ping is not None:
            self.on_ping()

    def stop_reading(self) -> None:
        self.deaf = True
        self.transport.pause_reading()


class _Framer:
    """Payload -> whole text frame; the hub hands the same bytes object to every client of an
    event in a row, so a one-entry cache (by identity) frames each event once."""

    __slots__ = ("payload", "frame")

    def __init__(self) -> None:
        self.payload: bytes | None = None
        self.frame = b""

    def __call__(self, payload: bytes) -> bytes:
        if payload is not self.payload:
            self.payload = payload
            self.frame = server_frame(payload)  # final, unmasked, text
        return self.frame


text_frame = _Framer()


def _abort(ws: ServerConnection) -> None:
    """A closed client that did not read its close frame in time: cut the TCP connection."""
    if ws.state is not State.CLOSED:
        ws.transport.abort()
