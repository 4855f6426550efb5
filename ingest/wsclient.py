"""A WebSocket client connection on an asyncio transport (frames: ingest/wsframes.py).

Why not ``websockets.connect``: its reader task buffers frames and hands them out
one ``await recv()`` at a time, so a busy depth connection can run ahead of a
trade connection in the same loop.  Here frames are dispatched from
``data_received``: trade frames the moment their bytes arrive; depth frames at once
too while there is no backlog, at most DRAIN_BATCH per read, the rest queued and
drained in batches through ``loop.call_soon``, so between two batches the loop
polls sockets again and a waiting trade is handled first.
Reading is paused when the depth queue is long (TCP backpressure to the venue).

Server pings are answered with pongs at once; our own pings detect a dead peer
(Runner's watchdog reads ``ping_outstanding`` and ``last_frame_ns``).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from typing import Callable
from urllib.parse import urlsplit

from ingest.wsframes import (OP_CLOSE, OP_PING, OP_PONG, FrameReader, WebSocketError, build_request,
                             check_response, encode_close, encode_frame)

DRAIN_BATCH = 16          # depth frames per loop turn; trades wait at most one batch
PAUSE_AT = 20_000         # queued depth frames that pause reading
RESUME_AT = 2_000
MAX_FRAME = 16 * 1024 * 1024
MAX_HEAD = 64 * 1024      # an HTTP response head longer than this is not a WebSocket server

FrameHandler = Callable[[bytes, int], None]


class HandshakeFailed(ConnectionError):
    """The server refused the WebSocket upgrade (status, or bad response)."""


def parse_url(url: str) -> tuple[str, int, str, bool]:
    """(host, port, resource, secure) of a ws:// or wss:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise HandshakeFailed(f"not a WebSocket URL: {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port, resource, secure


class WsConnection(asyncio.Protocol):
    """One client connection; ``on_frame(data, recv_ns)`` gets every text/binary message."""

    def __init__(self, url: str, on_frame: FrameHandler, priority: bool):
        self.url = url
        self.host, self.port, self.resource, self.secure = parse_url(url)
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
        self.close_code: int | None = None
        self._key = ""
        self._head = bytearray()   # HTTP response bytes until the handshake is done
        self._reader: FrameReader | None = None
        self._queue: collections.deque = collections.deque()
        self._drain_scheduled = False
        self._paused = False
        self._closing = False

    # ------------------------------------------------------------- asyncio hooks
    def connection_made(self, transport) -> None:
        self.transport = transport
        request, self._key = build_request(self.host, self.port, self.resource, self.secure)
        transport.write(request)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        self.last_frame_ns = now
        reader = self._reader
        if reader is None:
            data = self._handshake(data)
            reader = self._reader
            if reader is None or not data:
                return
        try:
            messages = reader.feed(data)
        except WebSocketError as exc:
            self._fail(1002, str(exc))
            return
        # Without a backlog, up to DRAIN_BATCH depth frames are handled at once (no
        # extra loop turn); beyond that they queue and drain in batches.
        inline = DRAIN_BATCH if self.priority or not self._queue else 0
        for op, payload in messages:
            if op < 0x8:
                self.frames += 1
                if self.priority:
                    self.on_frame(payload, now)
                elif inline:
                    inline -= 1
                    self.on_frame(payload, now)
                else:
                    self._queue.append((payload, now))
            elif op == OP_PING:
                self._write(encode_frame(OP_PONG, payload))
            elif op == OP_PONG:
                self.last_pong_ns = now
                self.ping_outstanding = False
            elif op == OP_CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if not self._closing:
                    self._closing = True
                    self._write(encode_close(1000))
                self.transport.close()
        if self._queue and not self._drain_scheduled:
            self._drain_scheduled = True
            self.loop.call_soon(self._drain)
        if not self._paused and len(self._queue) > PAUSE_AT and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _handshake(self, data: bytes) -> bytes:
        """Collect the HTTP response; returns the bytes after it (frames) once upgraded."""
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._fail_handshake(HandshakeFailed("response head too long"))
            return b""
        head, rest = bytes(self._head[:end]), bytes(self._head[end + 4:])
        self._head = bytearray()
        try:
            check_response(head, self._key)
        except WebSocketError as exc:
            self._fail_handshake(HandshakeFailed(f"{self.url}: {exc}"))
            return b""
        self._reader = FrameReader(MAX_FRAME)
        if not self.opened.done():
            self.opened.set_result(True)
        return rest

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("connection closed during the handshake"))
        if not self.closed.done():
            code = self.close_code
            self.closed.set_result(f"closed (code {code})" if code else f"lost: {exc or 'eof'}")

    # ------------------------------------------------------------------ frames
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

    def _write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

    def _fail(self, code: int, reason: str) -> None:
        """Protocol error from the server: close with ``code`` and drop the connection."""
        self.close_code = code
        self._write(encode_close(code, reason))
        self.abort()

    def _fail_handshake(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        self.abort()

    # -------------------------------------------------------------------- API
    def send_text(self, text: str) -> None:
        self._write(encode_frame(0x1, text.encode()))

    def ping(self) -> None:
        self.ping_outstanding = True
        self._write(encode_frame(OP_PING, str(time.time_ns()).encode()))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start a clean close; the transport is aborted if it does not finish."""
        if self.transport is None or self.transport.is_closing():
            return
        if not self._closing:
            self._closing = True
            self._write(encode_close(code, reason))
        self.loop.call_later(2.0, self.abort)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def pending(self) -> int:
        return len(self._queue)


async def open_connection(url: str, on_frame: FrameHandler, priority: bool, timeout: float = 10.0) -> WsConnection:
    """Connect and complete the handshake; raises OSError, HandshakeFailed or TimeoutError."""
    host, port, _, secure = parse_url(url)
    loop = asyncio.get_running_loop()
    ssl_ctx = ssl.create_default_context() if secure else None
    async with asyncio.timeout(timeout):
        transport, conn = await loop.create_connection(
            lambda: WsConnection(url, on_frame, priority), host, port, ssl=ssl_ctx,
            server_hostname=host if ssl_ctx else None)
        try:
            await conn.opened
        except BaseException:
            transport.abort()
            raise
    return conn


__all__ = ["WsConnection", "open_connection", "HandshakeFailed", "parse_url"]
