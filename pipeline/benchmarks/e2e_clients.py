"""Measuring clients of `pipeline bench e2e`, each run as its own process so measuring never loads the pipeline.

    python -m pipeline.benchmarks.e2e_clients zmq --config CFG --out F.npz --ready R
    python -m pipeline.benchmarks.e2e_clients ws --url ws://127.0.0.1:P/ --clients N --out F.npz --ready R

Both record, for every trade, ``(receive time, latency)`` in µs on this host's clock, where
latency = receive time - the ingest's receive time of the venue frame: ``ts_received`` on
the bus (docs/bus.md), ``time_received`` on the WebSocket (docs/websocket.md), the latency
those documents tell a consumer to compute.  They run until SIGTERM (or ``--max-seconds``),
then write the samples to ``--out`` (npz: ``recv_us``, ``lat_us``, ``client`` and a JSON
``meta``), so the caller slices them by its own measurement windows.

- ``zmq``: one SUB socket per bus socket of the exchange (trades polled first, as every reader
  here does); L2 messages are decoded and timed too.
- ``ws``: N connections in one uvloop loop on the ingest's lean client (ingest/wsclient.py:
  frames handed over from ``data_received`` with the time their bytes arrived, so a busy
  loop adds less of its own queueing than ``await recv()`` would).  Each subscribes as a
  screen does: trades and ``book`` snapshots (default depth and throttle) of every symbol.
  Only trade frames are parsed, and only for their ``time_received``.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np

SUBSCRIBE = {"op": "subscribe", "channels": ["trades", "book"], "id": 1}


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class Samples:
    """Growable (recv_us, lat_us, client) columns; append is cheap, arrays at the end."""

    def __init__(self) -> None:
        self.recv: list[int] = []
        self.lat: list[int] = []
        self.client: list[int] = []

    def add(self, recv_us: int, lat_us: int, client: int = 0) -> None:
        self.recv.append(recv_us)
        self.lat.append(lat_us)
        self.client.append(client)

    def save(self, path: Path, meta: dict, **extra: np.ndarray) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, recv_us=np.asarray(self.recv, dtype=np.int64), lat_us=np.asarray(self.lat, dtype=np.int64),
                 client=np.asarray(self.client, dtype=np.int32), meta=np.array(json.dumps(meta)), **extra)
        tmp.replace(path)


def load(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) of a file written by `Samples.save`."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
        meta = json.loads(str(z["meta"]))
    return meta, arrays


# ------------------------------------------------------------------------ time parsing

class IsoParser:
    """``2024-05-01T12:00:00.123456Z`` -> µs since the epoch; the seconds part is cached."""

    __slots__ = ("_prefix", "_sec")

    def __init__(self) -> None:
        self._prefix = b""
        self._sec = 0

    def us(self, text: bytes) -> int:
        prefix = text[:19]
        if prefix != self._prefix:
            self._sec = calendar.timegm(time.strptime(prefix.decode(), "%Y-%m-%dT%H:%M:%S"))
            self._prefix = prefix
        return self._sec * 1_000_000 + int(text[20:26])


_TRADE = b'{"kind":"trade"'
_RECEIVED = b'"time_received":"'


def trade_received_us(frame: bytes, parser: IsoParser) -> int | None:
    """The ingest receive time of a WebSocket trade frame (µs), None for any other frame."""
    if not frame.startswith(_TRADE):
        return None
    i = frame.find(_RECEIVED)
    if i < 0:
        return None
    i += len(_RECEIVED)
    return parser.us(frame[i:i + 26])


# --------------------------------------------------------------------------- ZeroMQ

def run_zmq(config_path: str, exchange: str, out: Path, ready: Path, max_seconds: float) -> None:
    import zmq

    from pipeline import bus, schema
    from pipeline.config import load_config

    config = load_config(config_path)
    ctx = zmq.Context()
    # trades first (pipeline/bus.py); the other kinds are not read here
    reader = bus.Reader.for_config(ctx, config, [exchange], kinds=(schema.TRADE, schema.L2))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    tr, l2s = Samples(), Samples()
    trade_gaps = 0
    last_seq: dict[str, int] = {}
    decode_trade, decode_l2 = schema.decode_trade, schema.decode_l2

    def on_trade(_topic: bytes, payload: bytes) -> None:
        nonlocal trade_gaps
        now = time.time_ns() // 1000
        t = decode_trade(payload)
        tr.add(now, now - t.ts_received)
        prev = last_seq.get(t.symbol)
        if prev is not None and t.seq != prev + 1:
            trade_gaps += 1
        last_seq[t.symbol] = t.seq

    def on_l2(_topic: bytes, payload: bytes) -> None:
        now = time.time_ns() // 1000
        m = decode_l2(payload)
        l2s.add(now, now - m.ts_received)

    reader.on_kinds({schema.TRADE: on_trade, schema.L2: on_l2})
    write_atomically(ready, "ready\n")
    deadline = time.monotonic() + max_seconds
    try:
        while not stop and time.monotonic() < deadline:
            if reader.wait(0.1):
                reader.read(max_l2=16)  # L2 in short batches, so a waiting trade is not held long
    finally:
        reader.close()
        ctx.term()
    tr.save(out, {"kind": "zmq", "trade_gaps": trade_gaps, "l2_messages": len(l2s.lat)},
            l2_recv_us=np.asarray(l2s.recv, dtype=np.int64), l2_lat_us=np.asarray(l2s.lat, dtype=np.int64))


# ------------------------------------------------------------------------ WebSocket

async def _ws_clients(url: str, n: int, first_id: int, out: Path, ready: Path, max_seconds: float) -> None:
    from ingest.wsclient import open_connection

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    samples = Samples()
    frames = [0] * n
    welcomed = [asyncio.Event() for _ in range(n)]
    subscribed = [False] * n
    parser = IsoParser()

    def handler(k: int):
        cid = first_id + k
        add = samples.add

        def on_frame(data: bytes, recv_ns: int) -> None:
            frames[k] += 1
            rx = trade_received_us(data, parser)
            if rx is not None:
                now = recv_ns // 1000
                add(now, now - rx, cid)
            elif not subscribed[k]:
                if data.startswith(b'{"kind":"welcome"'):
                    exchanges = json.loads(data)["exchanges"]
                    for ex in exchanges:
                        conns[k].send_text(json.dumps({**SUBSCRIBE, "exchange": ex}))
                    welcomed[k].set()
                elif data.startswith(b'{"kind":"subscribed"'):
                    subscribed[k] = True
        return on_frame

    conns: list = [None] * n
    # the welcome may arrive before open_connection returns: frames wait until conns[k] is set
    opened = await asyncio.gather(*(_open(open_connection, url, handler(k), conns, k) for k in range(n)),
                                  return_exceptions=True)
    failed = [f"{type(c).__name__}: {c}" for c in opened if isinstance(c, BaseException)]
    live = [c for c in opened if not isinstance(c, BaseException)]
    # Ready once every connection has its welcome and sent its subscribe.  Until the reply, a client
    # has the default subscription, which is the same stream (every trade, throttled snapshots of
    # every book: docs/websocket.md), so nothing waits on replies stuck behind a busy loop.
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(welcomed[k].wait() for k, c in enumerate(opened) if c in live))
    except TimeoutError:
        pass
    write_atomically(ready, "ready\n")
    try:
        async with asyncio.timeout(max_seconds):
            await stop.wait()
    except TimeoutError:
        pass
    lost = [c.closed.result() for c in live if c.closed.done()]
    for c in live:
        c.close(1000)
    await asyncio.sleep(0.05)
    for c in live:
        c.abort()
    samples.save(out, {"kind": "ws", "clients": n, "first_id": first_id, "frames": frames, "closed_early": lost,
                       "connect_failed": failed, "unwelcomed": sum(1 for k, c in enumerate(opened) if c in live and not welcomed[k].is_set()),
                       "unsubscribed": sum(1 for k, c in enumerate(opened) if c in live and not subscribed[k])})


async def _open(open_connection, url: str, on_frame, conns: list, k: int):
    pending_welcome: list[bytes] = []

    def early(data: bytes, recv_ns: int) -> None:
        if conns[k] is None:
            pending_welcome.append(data)  # handled once the connection object exists
        else:
            on_frame(data, recv_ns)

    conn = await open_connection(url, early, priority=True, timeout=30.0)
    conns[k] = conn
    for data in pending_welcome:
        on_frame(data, time.time_ns())
    return conn


def run_ws(url: str, clients: int, first_id: int, out: Path, ready: Path, max_seconds: float) -> None:
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    runner(_ws_clients(url, clients, first_id, out, ready, max_seconds))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="kind", required=True)
    z = sub.add_parser("zmq")
    z.add_argument("--config", required=True)
    z.add_argument("--exchange", default="sim")
    w = sub.add_parser("ws")
    w.add_argument("--url", required=True)
    w.add_argument("--clients", type=int, default=1)
    w.add_argument("--first-id", type=int, default=0)
    for p in (z, w):
        p.add_argument("--out", required=True, type=Path)
        p.add_argument("--ready", required=True, type=Path)
        p.add_argument("--max-seconds", type=float, default=600.0)
    args = ap.parse_args(argv)
    if args.kind == "zmq":
        run_zmq(args.config, args.exchange, args.out, args.ready, args.max_seconds)
    else:
        run_ws(args.url, args.clients, args.first_id, args.out, args.ready, args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
