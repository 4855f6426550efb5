"""gRPC vs WebSocket: trade latency to 1, 10 and 100 clients under a heavy L2 bus, in one run.

The feeder of `pipeline bench publisher-latency` stands in for the ingest (4 symbols, ``--l2-rate``
L2 deltas and ``--trade-rate`` trades per second, each stamped ``ts_received`` = its send time).
`pipeline grpc` and `pipeline publish` both read that bus.  For each client count, a phase of
``--seconds`` with gRPC clients (``SubscribeTrades``, one channel each, grpc.aio), then one with
WebSocket clients subscribed to trades, over the same feeder: the two servers are measured in the
same run, on the same machine load.  Each client records, per trade, its receive time minus
``time_received`` (docs/grpc.md "Latency"); that covers the bus hop, the server and the client's
own loop.  Prints one JSON line per phase (p50/p99/p99.9 in ms, trades received, the server's CPU
share), then a table.

    .venv/bin/pipeline bench grpc-latency                       # 1, 10, 100 clients, 20k L2 msgs/s
    .venv/bin/pipeline bench grpc-latency --clients 1,10 --seconds 5

Both servers idle while the other is measured (they still read the bus), so the figures include
the cost of one more bus reader on the machine.  Clients run in ``ceil(N / 25)`` processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import psutil

from pipeline.benchmarks.publisher_latency import SYMBOLS, client_proc as ws_client_proc, feed
from pipeline.benchmarks.publisher_latency import PIPELINE, Procs, eventually, write_config

CLIENTS_PER_PROC = 25


async def _grpc_clients(target: str, n: int, seconds: float) -> list[float]:
    import grpc

    from l2pipeline.v1 import marketdata_pb2 as pb

    samples: list[float] = []

    async def one() -> None:
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_stream("/l2pipeline.v1.MarketData/SubscribeTrades",
                                        request_serializer=pb.SubscribeTradesRequest.SerializeToString,
                                        response_deserializer=pb.Trade.FromString)(
                pb.SubscribeTradesRequest(exchange="sim"))
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                try:
                    m = await asyncio.wait_for(call.read(), left)
                except TimeoutError:
                    break
                if m is grpc.aio.EOF:
                    break
                now = time.time_ns() // 1000
                tr = m.time_received
                samples.append((now - (tr.seconds * 1_000_000 + tr.nanos // 1000)) / 1000)
            call.cancel()

    await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    return samples


def grpc_client_proc(target: str, n: int, seconds: float, out: str) -> None:
    import uvloop
    samples = uvloop.run(_grpc_clients(target, n, seconds))
    Path(out).write_text(json.dumps({"samples": samples, "kinds": {"trade": len(samples)}}))


def _phase(server: str, address: str, pid: int, n: int, seconds: float, workdir: Path) -> dict:
    ctx = mp.get_context("spawn")
    procs_n = max(1, math.ceil(n / CLIENTS_PER_PROC))
    per = [n // procs_n + (1 if i < n % procs_n else 0) for i in range(procs_n)]
    outs, clients = [], []
    for i, k in enumerate(per):
        out = workdir / f"{server}-{n}-{i}.json"
        outs.append(out)
        if server == "grpc":
            c = ctx.Process(target=grpc_client_proc, args=(address, k, seconds + 1.0, str(out)), daemon=True)
        else:
            c = ctx.Process(target=ws_client_proc, args=(address, k, "trades", seconds + 1.0, str(out)), daemon=True)
        c.start()
        clients.append(c)
    time.sleep(1.0)  # connected and subscribed; samples of the first second are skewed by the connects
    p = psutil.Process(pid)
    c0, t0 = p.cpu_times(), time.monotonic()
    for c in clients:
        c.join(seconds + 60)
    c1, t1 = p.cpu_times(), time.monotonic()
    samples: list[float] = []
    for out in outs:
        samples += json.loads(out.read_text())["samples"]
    samples.sort()

    def pct(q: float) -> float | None:
        return round(samples[min(len(samples) - 1, int(q * len(samples)))], 3) if samples else None
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    return {"server": server, "clients": n, "trades_received": len(samples), "p50_ms": pct(0.5),
            "p99_ms": pct(0.99), "p999_ms": pct(0.999), "max_ms": round(samples[-1], 3) if samples else None,
            "server_cpu_share": round(cpu / max(1e-9, t1 - t0), 3)}


def run(args: argparse.Namespace) -> list[dict]:
    counts = [int(x) for x in args.clients.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="l2pg", dir="/tmp"))
    procs = Procs(workdir)
    try:
        cfg = write_config(workdir, 1, SYMBOLS, extra='depth_stream = "depth@0ms"\n[publisher]\nmax_clients = 200\n'
                                                      '[grpc]\nmax_streams = 200\n')
        total = len(counts) * 2 * (args.seconds + 60.0) + 60.0  # ends earlier: terminated after the last phase
        feeder = mp.get_context("spawn").Process(target=feed, args=(str(cfg), args.l2_rate, args.trade_rate, total),
                                                 daemon=True)
        feeder.start()
        ready_ws, ready_grpc = workdir / "pub.port", workdir / "grpc.port"
        pub = procs.start("publisher", PIPELINE + ["--config", str(cfg), "publish", "--port", "0",
                                                   "--ready-file", str(ready_ws)])
        grpc_server = procs.start("grpc", PIPELINE + ["--config", str(cfg), "grpc", "--port", "0",
                                                      "--ready-file", str(ready_grpc)])
        ws_port = int(eventually(lambda: ready_ws.exists() and ready_ws.read_text().strip(), 30, what="publisher"))
        grpc_port = int(eventually(lambda: ready_grpc.exists() and ready_grpc.read_text().strip(), 30, what="grpc"))
        time.sleep(2.0)  # both servers have their books
        rows = []
        for n in counts:
            for server, address, pid in (("grpc", f"127.0.0.1:{grpc_port}", grpc_server.pid),
                                         ("websocket", f"ws://127.0.0.1:{ws_port}/", pub.pid)):
                row = _phase(server, address, pid, n, args.seconds, workdir)
                row.update(l2_rate=args.l2_rate, trade_rate=args.trade_rate)
                print(json.dumps(row), flush=True)
                rows.append(row)
        for name in ("grpc", "publisher"):
            errors = procs.log(name).count("Traceback")
            if errors:
                print(f"warning: {errors} tracebacks in the {name} log ({workdir / (name + '.log')})", flush=True)
        feeder.terminate()
        return rows
    finally:
        procs.stop_all()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1,10,100", help="client counts, one phase per server each")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per phase")
    ap.add_argument("--l2-rate", type=float, default=20000.0)
    ap.add_argument("--trade-rate", type=float, default=200.0)
    args = ap.parse_args(argv)
    rows = run(args)
    print(f"\ntrade latency, time_received -> client, ms ({args.l2_rate:g} L2 msgs/s, {args.trade_rate:g} trades/s)")
    print(f"{'clients':>7} {'server':>9} {'p50':>8} {'p99':>8} {'p99.9':>8} {'trades':>8} {'cpu':>6}")
    for r in rows:
        print(f"{r['clients']:>7} {r['server']:>9} {r['p50_ms']!s:>8} {r['p99_ms']!s:>8} {r['p999_ms']!s:>8} "
              f"{r['trades_received']:>8} {r['server_cpu_share']:>6}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
