"""Measure what WebSocket clients of a running publisher see: trade latency with N clients.

    .venv/bin/pipeline bench ws-loadtest --port 9001 --clients 10 --seconds 10
    .venv/bin/pipeline bench ws-loadtest --clients 10 --stalled 1 --mode deltas

Each client subscribes to trades (and, with ``--mode``, to books of every symbol) and
records, per trade, its receive time minus the trade's ``time_received`` (the ingest's
receive time): the latency the protocol document tells clients to compute.  ``--stalled``
adds clients that subscribe to everything as deltas and never read, to show that they
do not hold up the others.  Prints one line of percentiles per run.  Clients share one
process and event loop, so with many clients the figures include this process's own
queueing; run it beside the pipeline on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import time

from websockets.asyncio.client import connect


def _us(text: str) -> int:
    sec = time.mktime(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    return int(sec) * 1_000_000 + int(text[20:26])


async def _reader(url: str, mode: str | None, seconds: float, out: list[float], counts: dict) -> None:
    async with connect(url, max_queue=1024, compression=None) as ws:
        welcome = json.loads(await ws.recv())
        for ex in welcome["exchanges"]:
            req = {"op": "subscribe", "exchange": ex, "channels": ["trades"] + (["book"] if mode else [])}
            if mode:
                req["mode"] = mode
            await ws.send(json.dumps(req))
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                break
            now = time.time_ns() // 1000
            m = json.loads(raw)
            counts[m["kind"]] = counts.get(m["kind"], 0) + 1
            if m["kind"] == "trade":
                out.append((now - _us(m["time_received"])) / 1000)


async def _stalled(host: str, port: int, seconds: float) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    sock.setblocking(False)
    async with connect(f"ws://{host}:{port}/", sock=sock, max_queue=1) as ws:
        welcome = json.loads(await ws.recv())
        for ex in welcome["exchanges"]:
            await ws.send(json.dumps({"op": "subscribe", "exchange": ex, "mode": "deltas"}))
        await asyncio.sleep(seconds)  # never reads: that is the point


async def run(host: str, port: int, clients: int, seconds: float, mode: str | None, stalled: int) -> dict:
    url = f"ws://{host}:{port}/"
    samples: list[float] = []
    counts: dict[str, int] = {}
    tasks = [_reader(url, mode, seconds, samples, counts) for _ in range(clients)]
    tasks += [_stalled(host, port, seconds) for _ in range(stalled)]
    await asyncio.gather(*tasks, return_exceptions=True)
    samples.sort()

    def pct(p: float) -> float:
        return samples[min(len(samples) - 1, int(p * len(samples)))] if samples else float("nan")
    return {"clients": clients, "stalled": stalled, "mode": mode or "trades", "trades": len(samples),
            "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "max_ms": samples[-1] if samples else None,
            "mean_ms": statistics.fmean(samples) if samples else None, "frames": counts}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--mode", choices=["snapshots", "deltas"], default=None,
                    help="also subscribe to books in this mode (default: trades only)")
    ap.add_argument("--stalled", type=int, default=0, help="clients that subscribe to deltas and never read")
    args = ap.parse_args(argv)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    result = runner(run(args.host, args.port, args.clients, args.seconds, args.mode, args.stalled))
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
