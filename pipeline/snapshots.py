"""The snapshot service: books and missed trades on request (the ZeroMQ guide's Clone pattern).

A consumer on another host cannot read shared memory.  Each ingest therefore answers requests on
a ROUTER socket (``SnapshotService``, started by ingest/main.py): ipc in the run_dir always, and
``exchanges.NAME.snapshot_endpoint`` (tcp, with CURVE like the bus: pipeline/curve.py) for other
hosts.  A client (``SnapshotClient``) is a DEALER; each request is one frame, a msgpack map:

    {"kind": "books", "symbols": [..] | null}
        -> one message per book: [b"l2.EX.SYM", L2Update with snapshot=true]: the shared-memory
           view with its epoch and seq (the bus's own payload, so the same decoder reads both)
    {"kind": "trades", "symbol": S, "first": F, "last": L}
        -> one message per trade still in the trade ring: [b"trade.EX.SYM", Trade]
           (pipeline/trade_ring.py; at most MAX_TRADES per request)
    {"kind": "clock"}
        -> [b"clock", {"t_recv", "t_send"}]: the host's clock (ns since the epoch) when the request
           was read and when the answer was made; four timestamps give the offset (``ClockOffset``)
    {"kind": "status"}
        -> [b"status", {"time", "feeds", "exchanges"}]: this exchange's part of `pipeline status`
           (pipeline/status.py ``feeds``), for `pipeline status --remote HOST:PORT`

and every answer ends with the end marker [b"end", {"kind": "end", "epoch", "count", "lost",
"error"}]: ``lost`` lists the (first, last) seq ranges asked for that are gone (overwritten in the
ring, beyond MAX_TRADES, not yet written), ``error`` says why a request was refused ("" when
not).  Applying the bus's deltas with a newer seq to a book snapshot gives the live book: the
ingest writes the view to shared memory before it sends the deltas of the same batch, so a
snapshot is never older than a delta already sent.

Stateful kinds come from their store: the books (kind ``l2``) from shared memory; trades (the only
kind with a ring) by seq range.  A new kind with a store gets a request kind here.

The client is blocking, one request at a time, with a timeout; after a timeout it drops its
socket and opens a new one (the guide's "lazy pirate"), so a late answer cannot be read as the
answer to the next request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Union

import msgspec
import zmq

from pipeline import schema
from pipeline.errors import SharedMemoryError
from pipeline.shm import BookReader
from pipeline.trade_ring import TradeRingReader

log = logging.getLogger(__name__)

MAX_TRADES = 10_000  # trades per request: a consumer further behind is told what was lost
END_TOPIC = b"end"
DEFAULT_TIMEOUT_S = 2.0


class BooksRequest(msgspec.Struct, tag="books", tag_field="kind", kw_only=True):
    symbols: list[str] | None = None


class TradesRequest(msgspec.Struct, tag="trades", tag_field="kind", kw_only=True):
    symbol: str
    first: int
    last: int


class End(msgspec.Struct, tag="end", tag_field="kind", kw_only=True):
    epoch: int = 0
    count: int = 0
    lost: list[tuple[int, int]] = []
    error: str = ""


class ClockRequest(msgspec.Struct, tag="clock", tag_field="kind", kw_only=True):
    pass


class StatusRequest(msgspec.Struct, tag="status", tag_field="kind", kw_only=True):
    pass


class Clock(msgspec.Struct, kw_only=True):
    t_recv: int  # ns since the epoch, the server's clock: the request read
    t_send: int  # the answer made


Request = Union[BooksRequest, TradesRequest, ClockRequest, StatusRequest]
CLOCK_TOPIC, STATUS_TOPIC = b"clock", b"status"
CLOCK_PROBES = 8


class ClockOffset(msgspec.Struct, frozen=True):
    """The other host's clock minus this one's, as NTP computes it from one exchange of messages:
    sent t0 (here), read t1 and answered t2 (there), received t3 (here); offset = ((t1 - t0) +
    (t2 - t3)) / 2, round trip = (t3 - t0) - (t2 - t1).  The error is at most half the round trip
    (the exact split of the way there and back is unknown), so of several probes the one with the
    shortest round trip is kept."""

    offset_ns: int
    rtt_ns: int

    @classmethod
    def from_times(cls, t0: int, t1: int, t2: int, t3: int) -> "ClockOffset":
        return cls(offset_ns=((t1 - t0) + (t2 - t3)) // 2, rtt_ns=max(0, (t3 - t0) - (t2 - t1)))

    @property
    def error_ns(self) -> int:
        return self.rtt_ns // 2

_encode = msgspec.msgpack.Encoder().encode
_decode_request = msgspec.msgpack.Decoder(Request).decode
_decode_end = msgspec.msgpack.Decoder(End).decode
_decode_clock = msgspec.msgpack.Decoder(Clock).decode


class SnapshotUnavailable(Exception):
    """The snapshot service did not answer in time (the ingest is down or unreachable)."""


# ------------------------------------------------------------------ the server (ingest)

class SnapshotService:
    """Answers snapshot requests for one exchange from its shared memory (books) and trade ring.

    ``start(loop)`` reads the ROUTER socket from the ingest's event loop (its ZMQ_FD, as
    pipeline/bus.py ``Reader.start`` does); requests are rare and each answer is a copy of at
    most a few books or MAX_TRADES trades, so the hot path is not held up for long.
    """

    def __init__(self, ctx: zmq.Context, prefix: str, exchange: str, depth: int, endpoint: str,
                 tcp: str | None = None, curve: Callable[[zmq.Socket], None] | None = None,
                 unit: str | None = None, status: Callable[[], dict[str, Any]] | None = None):
        from pipeline.bus import make_pub  # binds ipc (stale file replaced), then tcp with CURVE

        self.prefix, self.exchange, self.depth = prefix, exchange, depth
        self.unit = unit or exchange  # whose segments: one shard's (pipeline/shards.py) or the exchange's
        self.sock = make_pub(ctx, endpoint, tcp, curve, kind=zmq.ROUTER)
        self.endpoints = [endpoint] + ([tcp] if tcp else [])
        self._books: BookReader | None = None
        self._ring: TradeRingReader | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self.status = status  # this exchange's feeds and exchange entry (ingest/main.py: pipeline.status)
        self.requests = self.errors = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._fd = int(self.sock.getsockopt(zmq.FD))
        loop.add_reader(self._fd, self.serve_waiting)
        loop.call_soon(self.serve_waiting)

    def serve_waiting(self) -> None:
        """Answer every request waiting now (reading ZMQ_EVENTS re-arms the edge-triggered FD)."""
        sock = self.sock
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:  # type: ignore[operator]
            frames = sock.recv_multipart()
            self.requests += 1
            identity, body = frames[0], frames[-1]
            for topic, payload in self.answer(body):
                sock.send_multipart([identity, topic, payload])

    def answer(self, body: bytes) -> list[tuple[bytes, bytes]]:
        """The messages answering one request, end marker last."""
        t_recv = time.time_ns()
        try:
            req = _decode_request(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.errors += 1
            return [(END_TOPIC, _encode(End(error=f"bad request: {exc}")))]
        if isinstance(req, ClockRequest):
            clock = Clock(t_recv=t_recv, t_send=time.time_ns())
            return [(CLOCK_TOPIC, _encode(clock)), (END_TOPIC, _encode(End(count=1)))]
        if isinstance(req, StatusRequest):
            if self.status is None:
                return [(END_TOPIC, _encode(End(error="this service gives no status")))]
            try:
                st = self.status()
            except Exception as exc:  # noqa: BLE001 - told to the asker, the ingest goes on
                self.errors += 1
                log.warning("snapshot service: status failed: %s", exc)
                return [(END_TOPIC, _encode(End(error=f"status failed: {exc}")))]
            return [(STATUS_TOPIC, _encode({"time": time.time_ns(), **st})), (END_TOPIC, _encode(End(count=1)))]
        try:
            if isinstance(req, BooksRequest):
                return self._books_answer(req)
            return self._trades_answer(req)
        except SharedMemoryError as exc:  # not created yet, or an unknown symbol
            self.errors += 1
            return [(END_TOPIC, _encode(End(error=str(exc))))]

    def _books_answer(self, req: BooksRequest) -> list[tuple[bytes, bytes]]:
        if self._books is None:
            self._books = BookReader.open(self.prefix, self.unit)
        reader = self._books
        out = []
        for symbol in req.symbols if req.symbols is not None else reader.symbols:
            snap = reader.read(symbol)
            msg = schema.L2Update(exchange=self.exchange, symbol=symbol, epoch=snap.epoch, seq=snap.seq,
                                  ts_exchange=snap.ts_exchange_us, ts_received=snap.ts_received_us,
                                  snapshot=True, state=snap.state.name.lower(), update_id=snap.update_id,
                                  depth=self.depth, bids=[(p, s) for p, s in snap.bids.tolist()],
                                  asks=[(p, s) for p, s in snap.asks.tolist()])
            out.append((schema.L2.topic(self.exchange, symbol), schema.encode(msg)))
        out.append((END_TOPIC, _encode(End(epoch=reader.epoch, count=len(out)))))
        return out

    def _trades_answer(self, req: TradesRequest) -> list[tuple[bytes, bytes]]:
        if self._ring is None:
            self._ring = TradeRingReader.open(self.prefix, self.unit)
        ring = self._ring
        first, last = max(1, req.first), req.last
        lost: list[tuple[int, int]] = []
        if last - first + 1 > MAX_TRADES:  # bounded: the oldest part of the request is reported lost
            lost.append((first, last - MAX_TRADES))
            first = last - MAX_TRADES + 1
        topic = schema.TRADE.topic(self.exchange, req.symbol)
        out = []
        for seq, trade in ring.read_range(req.symbol, first, last):
            if trade is None:
                if lost and lost[-1][1] == seq - 1:
                    lost[-1] = (lost[-1][0], seq)
                else:
                    lost.append((seq, seq))
            else:
                out.append((topic, schema.encode(trade)))
        out.append((END_TOPIC, _encode(End(epoch=ring.epoch, count=len(out), lost=lost))))
        return out

    def close(self) -> None:
        if self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)
        self._loop = None
        for reader in (self._books, self._ring):
            if reader is not None:
                reader.close()
        self._books = self._ring = None
        self.sock.close(linger=0)


# ------------------------------------------------------------------ the client (consumer)

class SnapshotClient:
    """Blocking requests to one exchange's snapshot service (module docstring)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, curve: Callable[[zmq.Socket], None] | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S):
        self.ctx, self.endpoint, self.curve, self.timeout = ctx, endpoint, curve, timeout
        self.sock: zmq.Socket | None = None

    def _socket(self) -> zmq.Socket:
        if self.sock is None:
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if self.curve is not None:
                self.curve(sock)
            sock.connect(self.endpoint)
            self.sock = sock
        return self.sock

    def _ask(self, request: Request) -> tuple[list[bytes], End]:
        sock = self._socket()
        sock.send(_encode(request))
        payloads = []
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        while True:
            if not poller.poll(int(self.timeout * 1000)):
                self.close()  # lazy pirate: a late answer must not be read as the next one's
                raise SnapshotUnavailable(f"no answer from the snapshot service at {self.endpoint} "
                                          f"within {self.timeout:g} s")
            topic, payload = sock.recv_multipart()
            if topic == END_TOPIC:
                return payloads, _decode_end(payload)
            payloads.append(payload)

    def clock(self, probes: int = CLOCK_PROBES) -> ClockOffset:
        """The service host's clock offset from this one's (``ClockOffset``), best of ``probes``."""
        best: ClockOffset | None = None
        for _ in range(probes):
            t0 = time.time_ns()
            payloads, _end = self._ask(ClockRequest())
            t3 = time.time_ns()
            c = _decode_clock(payloads[0])
            got = ClockOffset.from_times(t0, c.t_recv, c.t_send, t3)
            if best is None or got.rtt_ns < best.rtt_ns:
                best = got
        assert best is not None
        return best

    def status(self) -> dict[str, Any]:
        """The service's exchange's status: ``{"time", "feeds", "exchanges"}`` (module docstring)."""
        payloads, end = self._ask(StatusRequest())
        if end.error:
            raise SnapshotUnavailable(f"{self.endpoint}: {end.error}")
        return msgspec.msgpack.decode(payloads[0])

    def books(self, symbols: list[str] | None = None) -> tuple[list[schema.L2Update], End]:
        """Snapshots of the books (all of the exchange's, or ``symbols``) and the end marker."""
        payloads, end = self._ask(BooksRequest(symbols=symbols))
        return [schema.decode_l2(p) for p in payloads], end

    def trades(self, symbol: str, first: int, last: int) -> tuple[list[schema.Trade], End]:
        """Trades ``first..last`` of ``symbol`` still in the ring, and the end marker (``lost``)."""
        payloads, end = self._ask(TradesRequest(symbol=symbol, first=first, last=last))
        return [schema.decode_trade(p) for p in payloads], end

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
