"""``pipeline replay CAPTURE``: serve a recorded capture as if it were the venue.

A capture (shared/docs/capture-format.md) holds the WebSocket frames and REST
bodies one exchange connection set received.  Replaying it means: serve the
``ws`` frames, in order, to a client that connects and subscribes to the
matching streams, and answer a REST GET with the recorded body for the same path
and query (the latest one recorded for it).  So a real ingest process with
``ws_url``/``rest_url`` pointing here runs exactly as it would against the venue,
and tests can check end to end what the pipeline makes of real traffic.

Matching (Binance family, exchange-protocols.md sections 1-3): a frame of a
combined stream (``{"stream": "btcusdt@depth@100ms", "data": ...}``) goes to each
client whose streams include that name, given in the URL (``/stream?streams=a/b``,
``/ws/a/b``) or in a later ``SUBSCRIBE`` request.  A frame without a stream name
goes to clients that connected to the recorded URL's path and query.

Each connection gets the capture from its start (START_DELAY_S after the
handshake, as a venue needs a moment to set up a subscription), paced by the
recorded receive times divided by ``rate`` (0: as fast as the client reads), and then stays open
and idle (pings are answered), so an ingest neither misses frames by connecting
a little late nor sees the capture end as a dropped connection.

Limits: no venue pings, no per-connection limits, and a client that reconnects
gets the capture again from the start (trades repeat, as on a venue replaying).

``ReplayPlan`` (what to send to whom) is pure; ``ReplayServer`` does the I/O
(aiohttp, like pipeline/sim/server.py).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import re
import signal
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

CAPTURE_FORMAT = "pipeline-capture/1"
_STREAM_RE = re.compile(r'^\s*\{\s*"stream"\s*:\s*"([^"]+)"')
_SEND_BATCH = 64  # frames written before yielding to the loop when not paced
START_DELAY_S = 0.0  # frames may follow the 101 response in the same packet; the ingest buffers from the handshake on


class CaptureError(ValueError):
    """The file is not a pipeline-capture/1 capture."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One recorded inbound WebSocket frame."""

    ts: float            # recorded receive time, s
    stream: str | None   # combined-stream name (lowercase), None when the frame has none
    url_key: str         # path?query of the connection it was received on
    data: str


def _url_key(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def _query_key(path: str, query: str | list[tuple[str, str]]) -> tuple[str, tuple[tuple[str, str], ...]]:
    items = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else list(query)
    return path.rstrip("/") or "/", tuple(sorted(items))


def stream_of(data: str) -> str | None:
    """The ``stream`` of a combined-stream frame, lowercased; None for other frames."""
    m = _STREAM_RE.match(data)
    return m.group(1).lower() if m else None


def _lines(path: str | os.PathLike):
    """The lines of a capture file; one cut short by a crash while recording (a gzip member or a
    line without its end) gives its whole lines, with a warning."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        try:
            for line in fh:
                if not line.endswith("\n"):
                    if line.strip():
                        try:
                            json.loads(line)
                        except ValueError:
                            log.warning("%s: the last line is cut (a crash while recording?); ignored", path)
                            return
                yield line
        except EOFError:
            log.warning("%s: cut short (a crash while recording?); replaying it up to the cut", path)


def requested_streams(path: str, query: str) -> set[str]:
    """Streams a client asks for in its URL: ``/stream?streams=a/b`` or ``/ws/a/b``."""
    names: list[str] = []
    for k, v in parse_qsl(query):
        if k == "streams":
            names += v.split("/")
    if "/ws/" in path:
        names += path.split("/ws/", 1)[1].split("/")
    return {n.lower() for n in names if n}


def subscribe_request(text: str) -> tuple[str, list[str], object] | None:
    """(method, params, id) of a Binance ``SUBSCRIBE``/``UNSUBSCRIBE`` request, else None."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("method") not in ("SUBSCRIBE", "UNSUBSCRIBE"):
        return None
    params = obj.get("params") or []
    return obj["method"], [str(p).lower() for p in params if isinstance(p, str)], obj.get("id")


@dataclass
class ReplayPlan:
    """The capture as served: frames in receive order and REST bodies by path and query."""

    header: dict
    frames: list[Frame]
    rest: dict[tuple[str, tuple[tuple[str, str], ...]], str] = field(default_factory=dict)

    @classmethod
    def from_lines(cls, lines) -> "ReplayPlan":
        it = iter(lines)
        try:
            header = json.loads(next(it))
        except (StopIteration, ValueError) as exc:
            raise CaptureError(f"no header line: {exc}") from None
        if not isinstance(header, dict) or header.get("format") != CAPTURE_FORMAT:
            raise CaptureError(f"not a {CAPTURE_FORMAT} capture (header {str(header)[:80]!r})")
        frames: list[Frame] = []
        rest: dict = {}
        for n, line in enumerate(it, start=2):
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
                src, url, data, ts = ev["src"], ev["url"], ev["data"], float(ev["ts"])
            except (ValueError, KeyError, TypeError) as exc:
                raise CaptureError(f"line {n}: not a capture event: {exc}") from None
            if src == "ws":
                frames.append(Frame(ts, stream_of(data), _url_key(url), data))
            elif src == "rest":
                parts = urlsplit(url)
                rest[_query_key(parts.path, parts.query)] = data  # the latest one recorded wins
        return cls(header, frames, rest)

    @classmethod
    def load(cls, *paths: str | os.PathLike) -> "ReplayPlan":
        """One capture, or several files of one recording in order (hourly files of ``[sinks.raw]``):
        the first file's header, then the events of each file after its header line."""
        if not paths:
            raise CaptureError("no capture file given")
        plan = cls.from_lines(_lines(paths[0]))
        for path in paths[1:]:
            more = cls.from_lines(_lines(path))
            plan.frames.extend(more.frames)
            plan.rest.update(more.rest)  # the latest one recorded wins
        return plan

    def rest_body(self, path: str, query: str | list[tuple[str, str]]) -> str | None:
        """The recorded body of a GET of ``path`` with this query (any parameter order)."""
        return self.rest.get(_query_key(path, query))

    def start_ts(self) -> float:
        return self.frames[0].ts if self.frames else 0.0


class Cursor:
    """Which frames one client gets, and when: pure, driven by the server."""

    def __init__(self, plan: ReplayPlan, streams: set[str], url_key: str, rate: float):
        self.plan = plan
        self.streams = set(streams)
        self.url_key = url_key
        self.rate = rate
        self.index = 0
        self.sent = 0
        self._t0 = plan.start_ts()

    def wants(self, frame: Frame) -> bool:
        if frame.stream is not None:
            return frame.stream in self.streams
        return frame.url_key == self.url_key

    def due(self, elapsed: float, limit: int) -> tuple[list[str], float | None]:
        """Frames due ``elapsed`` seconds after the client connected (at most ``limit``),
        and the delay until the next one (None: the capture is over)."""
        frames = self.plan.frames
        out: list[str] = []
        while self.index < len(frames) and len(out) < limit:
            f = frames[self.index]
            if self.rate > 0:
                at = (f.ts - self._t0) / self.rate
                if at > elapsed:
                    return out, at - elapsed
            self.index += 1
            if self.wants(f):
                out.append(f.data)
        self.sent += len(out)
        return out, (None if self.index >= len(frames) else 0.0)


class ReplayServer:
    """aiohttp server: WebSocket streams and REST bodies of one capture."""

    def __init__(self, plan: ReplayPlan, host: str = "127.0.0.1", port: int = 0, rate: float = 1.0,
                 ready_file: str | None = None):
        if rate < 0:
            raise ValueError(f"rate: expected a number >= 0, got {rate!r}")
        self.plan, self.host, self.port, self.rate, self.ready_file = plan, host, port, rate, ready_file
        self._runner: web.AppRunner | None = None
        self.connections = 0

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._get)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("replaying %s (%d frames, %d REST bodies) on %s:%d at rate %g", self.plan.header.get("exchange"),
                 len(self.plan.frames), len(self.plan.rest), self.host, self.port, self.rate)
        if self.ready_file:
            tmp = self.ready_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{self.port}\n")
            os.replace(tmp, self.ready_file)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _get(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._ws(request)
        body = self.plan.rest_body(request.path, list(request.query.items()))
        if body is None:
            return web.json_response({"code": -1121, "msg": f"not in the capture: {request.path_qs}"}, status=404)
        return web.Response(text=body, content_type="application/json")

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        self.connections += 1
        cursor = Cursor(self.plan, requested_streams(request.path, request.query_string),
                        request.path_qs, self.rate)
        sender = asyncio.create_task(self._send(ws, cursor))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                req = subscribe_request(msg.data)
                if req is None:
                    continue
                method, params, req_id = req
                if method == "SUBSCRIBE":
                    cursor.streams.update(params)
                else:
                    cursor.streams.difference_update(params)
                await ws.send_str(json.dumps({"result": None, "id": req_id}))
        finally:
            sender.cancel()
        return ws

    async def _send(self, ws: web.WebSocketResponse, cursor: Cursor) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(START_DELAY_S)
            t0 = loop.time()
            while True:
                frames, wait = cursor.due(loop.time() - t0, _SEND_BATCH)
                for data in frames:
                    await ws.send_str(data)
                if wait is None:
                    log.debug("capture sent to a client: %d frames", cursor.sent)
                    return
                await asyncio.sleep(wait)
        except (ConnectionError, RuntimeError):
            return  # the client went away


async def serve(plan: ReplayPlan, host: str, port: int, rate: float, ready_file: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = ReplayServer(plan, host, port, rate, ready_file)
    try:
        await server.start()
        await stop.wait()
    finally:
        await server.stop()


def run(path: str | list[str], host: str = "127.0.0.1", port: int = 0, rate: float = 1.0,
        ready_file: str | None = None) -> None:
    """Blocking: serve ``path`` (or several files of one recording, in order) until SIGINT/SIGTERM.
    Raises CaptureError for a bad file."""
    plan = ReplayPlan.load(*([path] if isinstance(path, (str, os.PathLike)) else path))
    asyncio.run(serve(plan, host, port, rate, ready_file))


__all__ = ["CaptureError", "Cursor", "Frame", "ReplayPlan", "ReplayServer", "requested_streams", "run",
           "stream_of", "subscribe_request"]
