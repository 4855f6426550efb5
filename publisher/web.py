"""Plain HTTP on the WebSocket port: the live page, ``/health``, ``/metrics`` and ``/stats``.

websockets answers the HTTP request itself when ``process_request`` returns a
Response (GET only; the connection closes after the answer).  Routes:

    GET /            the live order-book page (publisher/static/index.html, no build step)
    GET /app.js      its script
    GET /health      JSON; 200 when every feed is live, 503 with the reasons otherwise
    GET /metrics     Prometheus text format
    GET /stats       JSON: the publisher's counters and client queues (as in `pipeline status`)
    /api/streams     runtime streams: GET, POST, DELETE /api/streams/EX/SYM (publisher/api.py, docs/streams.md)
"""

from __future__ import annotations

import email.utils
import http
import json
from pathlib import Path
from typing import Callable

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

STATIC = Path(__file__).with_name("static")
PAGES = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
         "/app.js": ("app.js", "text/javascript; charset=utf-8")}


def response(status: int, body: bytes, content_type: str, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
        *extra,
    ])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def json_response(status: int, obj: object, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    return response(status, json.dumps(obj).encode(), "application/json", extra)


def text_response(status: int, text: str, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    return response(status, text.encode(), "text/plain; charset=utf-8", extra)


class Routes:
    """Answers plain HTTP requests from the live state the server hands in."""

    def __init__(self, health: Callable[[], tuple[bool, dict]], metrics: Callable[[], tuple[bytes, str]],
                 stats: Callable[[], dict]):
        self.health = health
        self.metrics = metrics
        self.stats = stats
        self._static: dict[str, bytes] = {}

    def __call__(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        if path in PAGES:
            name, ctype = PAGES[path]
            body = self._static.get(name)
            if body is None:
                body = self._static[name] = (STATIC / name).read_bytes()
            return response(200, body, ctype)
        if path == "/health":
            ok, body = self.health()
            return json_response(200 if ok else 503, body)
        if path == "/metrics":
            body, ctype = self.metrics()
            return response(200, body, ctype)
        if path == "/stats":
            return json_response(200, self.stats())
        return text_response(404, f"no such page: {path} (try /, /health, /metrics, /stats)\n")
