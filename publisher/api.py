"""HTTP API of runtime streams on the publisher's port (DESIGN.md contract 9, docs/streams.md).

    GET    /api/streams              every exchange's streams (pipeline.streams.streams_overview)
    POST   /api/streams              {"exchange": "sim", "symbols": ["ETHUSDT"]}: subscribe
    DELETE /api/streams/EX/SYMBOL    unsubscribe (SYMBOL URL-encoded; it may hold a "/")

Every call goes to the ingest's control socket (pipeline/streams.py), the one control API;
nothing here decides anything.  Errors are JSON ``{"error": reason, "code": code}`` with a
status that says whose fault it is (``STATUS``).  Writing needs the publisher's token when one
is set; without one, only loopback clients may write (403 otherwise).  A browser request from
another origin is refused (403): a page elsewhere must not drive the operator's browser into
changing streams.

websockets reads no request body (it serves only GET handshakes), so ``ApiConnection`` takes a
POST or DELETE off the wire itself: it reads the head and the body (at most MAX_BODY_BYTES),
keeps the method and the body on the connection, and hands websockets the same request as a GET
without a body.  websockets then parses it and answers with what ``answer`` returns, through
its usual ``process_request`` path (one response, connection closed).  No HTTP library in our
dependencies does this on the WebSocket port; aiohttp would mean a second server.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.parse

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from pipeline.config import Config
from pipeline.errors import StreamError
from pipeline.streams import check_symbols, exchange_request_async, streams_overview_async
from publisher.web import json_response

PREFIX = "/api/streams"
MAX_BODY_BYTES = 64 * 1024
MAX_HEAD_BYTES = 16 * 1024
STATUS = {"bad_request": 400, "unknown_exchange": 404, "not_followed": 404, "unknown_symbol": 422, "full": 409,
          "unsupported": 409, "not_running": 503, "unavailable": 503, "bad_state_file": 500}
_BODY_METHODS = (b"POST ", b"DELETE ", b"PUT ", b"PATCH ")


class ApiConnection(ServerConnection):
    """A ServerConnection that reads the body of a POST/DELETE itself (module docstring)."""

    api_method = "GET"
    api_body = b""
    api_error: str | None = None
    _pending: bytearray | None = None
    _first = True

    def data_received(self, data: bytes) -> None:
        if self._first:
            self._first = False
            if data.startswith(_BODY_METHODS):
                self._pending = bytearray()
        if self._pending is None:
            super().data_received(data)
            return
        self._pending += data
        end = self._pending.find(b"\r\n\r\n")
        if end < 0:
            if len(self._pending) > MAX_HEAD_BYTES:
                self._hand_over(bytes(self._pending[:MAX_HEAD_BYTES]) + b"\r\n\r\n", "request head too large")
            return
        head = bytes(self._pending[:end])
        lines = head.split(b"\r\n")
        length, error = 0, None
        kept = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    error = "bad Content-Length"
                continue
            if key == b"transfer-encoding":
                error = "chunked request bodies are not supported; send Content-Length"
                continue
            kept.append(line)
        if length > MAX_BODY_BYTES:
            error = f"request body over {MAX_BODY_BYTES} bytes"
            length = 0
        if error is None and len(self._pending) < end + 4 + length:
            return  # the body is still coming
        method, _, rest = lines[0].partition(b" ")
        self.api_method = method.decode("ascii", "replace")
        self.api_body = bytes(self._pending[end + 4:end + 4 + length])
        self._hand_over(b"\r\n".join([b"GET " + rest, *kept]) + b"\r\n\r\n", error)

    def _hand_over(self, request: bytes, error: str | None) -> None:
        self.api_error = error
        self._pending = None
        super().data_received(request)


def _error(status: int, code: str, reason: str) -> Response:
    return json_response(status, {"error": reason, "code": code})


def _loopback(connection: ServerConnection) -> bool:
    try:
        return ipaddress.ip_address(connection.remote_address[0]).is_loopback
    except (TypeError, ValueError, IndexError):
        return False


def _same_origin(request: Request) -> bool:
    """No Origin (a program), or the Origin is this server (the page itself)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urllib.parse.urlsplit(origin).netloc == request.headers.get("Host", "")


class StreamsApi:
    """Answers /api/streams requests (``answer``), given the config and the publisher's token rule."""

    def __init__(self, config: Config, token: str | None, authorized):
        self.config = config
        self.token = token
        self.authorized = authorized  # (request) -> bool: the publisher's token check

    @staticmethod
    def handles(path: str) -> bool:
        return path == PREFIX or path.startswith(PREFIX + "/")

    async def answer(self, connection: ServerConnection, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        method = getattr(connection, "api_method", "GET")
        if getattr(connection, "api_error", None):
            return _error(400, "bad_request", connection.api_error)
        if method == "GET":
            if self.token is not None and not self.authorized(request):
                return _error(401, "token", "bearer token required")
            if path != PREFIX:
                return _error(404, "not_found", f"no such resource: {path} (GET {PREFIX})")
            return json_response(200, await streams_overview_async(self.config))
        if method not in ("POST", "DELETE"):
            return _error(405, "method", f"{method} {path}: use GET or POST {PREFIX}, DELETE {PREFIX}/EX/SYMBOL")
        refused = self._write_refused(connection, request)
        if refused is not None:
            return refused
        try:
            if method == "POST" and path == PREFIX:
                exchange, symbols = self._subscribe_body(connection.api_body)
                reply = await self._control(exchange, {"op": "subscribe", "symbols": list(symbols)})
                return json_response(200, reply)
            if method == "DELETE" and path.startswith(PREFIX + "/"):
                exchange, _, raw = path[len(PREFIX) + 1:].partition("/")
                symbol = urllib.parse.unquote(raw)
                if not exchange or not symbol:
                    raise StreamError(f"expected DELETE {PREFIX}/EXCHANGE/SYMBOL, got {path}")
                reply = await self._control(urllib.parse.unquote(exchange),
                                            {"op": "unsubscribe", "symbols": list(check_symbols([symbol]))})
                return json_response(200, reply)
        except StreamError as exc:
            return _error(STATUS.get(exc.code, 400), exc.code, str(exc))
        return _error(404, "not_found", f"no such resource: {method} {path}")

    def _write_refused(self, connection: ServerConnection, request: Request) -> Response | None:
        if not _same_origin(request):
            return _error(403, "origin", f"origin {request.headers.get('Origin')} may not change streams")
        if self.token is not None:
            return None if self.authorized(request) else _error(401, "token", "bearer token required")
        if not _loopback(connection):
            return _error(403, "forbidden", "changing streams from another host needs the publisher's token "
                                            "([publisher] token)")
        return None

    @staticmethod
    def _subscribe_body(body: bytes) -> tuple[str, tuple[str, ...]]:
        try:
            obj = json.loads(body or b"null")
        except ValueError as exc:
            raise StreamError(f"malformed JSON: {exc}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("exchange"), str):
            raise StreamError('expected a JSON object {"exchange": "NAME", "symbols": ["SYMBOL", ...]}')
        return obj["exchange"], check_symbols(obj.get("symbols"))

    async def _control(self, exchange: str, request: dict) -> dict:
        if exchange not in self.config.exchanges:
            known = ", ".join(self.config.exchanges) or "none"
            raise StreamError(f"no exchange {exchange!r} in the config (configured: {known})", "unknown_exchange")
        return await exchange_request_async(self.config, exchange, request)
