"""A WebSocket client connection: websockets' sans-I/O protocol on an asyncio transport.

Why not ``websockets.connect``: its reader task buffers frames and hands them out
one ``await recv()`` at a time, so a busy depth connection can run ahead of a
trade connection in the same loop.  Here frames are dispatched from
``data_received``: trade frames the moment their bytes arrive; depth frames are
queued and drained in small batches through ``loop.call_soon``, so between two
batches the loop polls sockets again and a waiting trade is handled first.
Reading is paused when the depth queue is long (TCP backpressure to the venue).

The sans-I/O core answers server pings with pongs by itself; we send our own
pings to detect a dead peer (see Runner's watchdog).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from typing import Callable

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidURI, ProtocolError
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

DRAIN_BATCH = 16          # depth frames per loop turn; trades wait at most one batch
PAUSE_AT = 20_000         # queued depth frames that pause reading
RESUME_AT = 2_000
MAX_FRAME = 16 * 1024 * 1024

FrameHandler = Callable[[bytes, int], None]


class HandshakeFailed(ConnectionError):
    """The server refused the WebSocket upgrade (status, or bad response)."""


class WsConnection(asyncio.Protocol):
    """One client connection; ``on_frame(data, recv_ns)`` gets every text/binary message."""

    def __init__(self, url: str, on_frame: FrameHandler, priority: bool):
        self.url = url
        self.uri = parse_uri(url)
        self.ws = ClientProtocol(self.uri, max_size=MAX_FRAME)
        self.on_frame = on_frame
        self.priority = priority
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.opened: asyncio.Future = loop.create_future()
        self.closed: asyncio.Future = loop.create_future()
        self.last_frame_ns = time.time_ns()
        self.last_pong_ns = time.time_ns()
        self.ping_outstanding = False
        self.frames = 0
        self._queue: collections.deque = collections.deque()
        self._drain_scheduled = False
        self._paused = False
        self._fragments: list[bytes] = []

    # ------------------------------------------------------------- asyncio hooks
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        self.last_frame_ns = now
        self.ws.receive_data(data)
        self._dispatch(now)

    def eof_received(self):
        self.ws.receive_eof()
        self._dispatch(time.time_ns())
        return False

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("connection closed during the handshake"))
        if not self.closed.done():
            code = self.ws.close_code
            self.closed.set_result(f"closed (code {code})" if code else f"lost: {exc or 'eof'}")

    # ------------------------------------------------------------------ frames
    def _dispatch(self, now: int) -> None:
        for ev in self.ws.events_received():
            if isinstance(ev, Frame):
                op = ev.opcode
                if op is Opcode.TEXT or op is Opcode.BINARY or op is Opcode.CONT:
                    if not ev.fin:
                        self._fragments.append(ev.data)
                        continue
                    data = ev.data
                    if self._fragments:
                        self._fragments.append(data)
                        data = b"".join(self._fragments)
                        self._fragments = []
                    self.frames += 1
                    if self.priority:
                        self.on_frame(data, now)
                    else:
                        self._queue.append((data, now))
                elif op is Opcode.PONG:
                    self.last_pong_ns = now
                    self.ping_outstanding = False
            elif isinstance(ev, Response):
                if ev.status_code != 101 or self.ws.handshake_exc is not None:
                    exc = self.ws.handshake_exc or HandshakeFailed(f"HTTP {ev.status_code}")
                    if not self.opened.done():
                        self.opened.set_exception(HandshakeFailed(f"{self.url}: {exc}"))
                elif not self.opened.done():
                    self.opened.set_result(True)
        self._flush()
        if self._queue and not self._drain_scheduled:
            self._drain_scheduled = True
            self.loop.call_soon(self._drain)
        if not self._paused and len(self._queue) > PAUSE_AT and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _drain(self) -> None:
        q, handler = self._queue, self.on_frame
        for _ in range(min(DRAIN_BATCH, len(q))):
            data, now = q.popleft()
            handler(data, now)
        if q:
            self.loop.call_soon(self._drain)
        else:
            self._drain_scheduled = False
        if self._paused and len(q) < RESUME_AT and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _flush(self) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                t.write(chunk)
            elif t.can_write_eof():
                t.write_eof()
        if self.ws.close_expected() and self.ws.state is State.CLOSED:
            t.close()

    # -------------------------------------------------------------------- API
    def send_text(self, text: str) -> None:
        self.ws.send_text(text.encode())
        self._flush()

    def ping(self) -> None:
        self.ping_outstanding = True
        self.ws.send_ping(str(time.time_ns()).encode())
        self._flush()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start a clean close; the transport is aborted if it does not finish."""
        if self.transport is None or self.transport.is_closing():
            return
        try:
            if self.ws.state is State.OPEN:
                self.ws.send_close(code, reason)
                self._flush()
        except ProtocolError:
            pass
        self.loop.call_later(2.0, self.abort)

    def abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
        elif self.transport is not None:
            self.transport.abort()

    def pending(self) -> int:
        return len(self._queue)


async def open_connection(url: str, on_frame: FrameHandler, priority: bool, timeout: float = 10.0) -> WsConnection:
    """Connect and complete the handshake; raises OSError, HandshakeFailed or TimeoutError."""
    try:
        uri = parse_uri(url)
    except InvalidURI as exc:
        raise HandshakeFailed(str(exc)) from None
    loop = asyncio.get_running_loop()
    ssl_ctx = ssl.create_default_context() if uri.secure else None
    holder: list[WsConnection] = []

    def factory():
        conn = WsConnection(url, on_frame, priority)
        holder.append(conn)
        return conn

    async with asyncio.timeout(timeout):
        transport, conn = await loop.create_connection(
            factory, uri.host, uri.port, ssl=ssl_ctx, server_hostname=uri.host if ssl_ctx else None)
        try:
            await conn.opened
        except BaseException:
            transport.abort()
            raise
    return conn


__all__ = ["WsConnection", "open_connection", "HandshakeFailed", "InvalidHandshake"]
