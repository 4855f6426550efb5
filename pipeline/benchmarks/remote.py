"""Remote bus benchmark: trade latency ingest -> a consumer on "another host" over TCP+CURVE and over
NATS JetStream (p50/p99, and their ratio from the same run), and the throughput one NATS bridge sustains.

Real processes on loopback, as separate hosts would run them: ``nats-server -js`` (Debian package
nats-server), ``pipeline sim``, ``pipeline ingest`` with tcp endpoints and CURVE keys, ``pipeline
bridge nats``; both consumers (``Consumer(transport="tcp")`` with the client key, and
``Consumer(transport="nats")``) run at once in this process, each on a thread, with a config of
their own (another run_dir: no shared memory).  Latency is the consumer's receive time minus the
trade's ``ts_published`` (the ingest's clock; here the same clock: the clock offset the snapshot
service measures, ``pipeline status --remote``, is printed too and is ~0 on one host).

Throughput: a synthetic exchange (4 books of 50 levels, 80% L2 deltas of 1-3 levels, 20% trades)
is offered to a second bridge as fast as it drains (in bursts that stay below the bus's high-water
mark) until ``--messages`` are in its JetStream stream; figures: messages per second (wall) and the
bridge process's CPU per message (user+sys, the steadier figure on a loaded box).

    .venv/bin/pipeline bench remote --seconds 15 --rate 1000 --messages 100000
    .venv/bin/pipeline bench remote --only-throughput --messages 100000

The last line of output is one JSON object with every figure (the smoke test reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PIPELINE = [sys.executable, "-m", "pipeline"]
SYN_SYMBOLS = ["S0", "S1", "S2", "S3"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(pred, timeout=30.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.1)
    raise SystemExit(f"bench remote: timed out waiting for {what}")


def pct(xs: list[int], q: float) -> float:
    xs = sorted(xs)
    return float(xs[min(len(xs) - 1, int(q * len(xs)))]) if xs else float("nan")


class Procs:
    """Child processes of the bench; stopped (SIGTERM, then SIGKILL) by pid at the end."""

    def __init__(self, work: Path):
        self.work, self.procs = work, []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "ab")
        p = subprocess.Popen(argv, cwd=self.work, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen) -> None:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="pipeline bench remote", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15, help="latency: how long both consumers read")
    ap.add_argument("--rate", type=float, default=1000, help="latency: the sim's book updates per second")
    ap.add_argument("--messages", type=int, default=100_000, help="throughput: bus messages through the bridge")
    ap.add_argument("--only-throughput", action="store_true", help="skip the latency part")
    ap.add_argument("--only-latency", action="store_true", help="skip the throughput part")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs) and print its path")
    args = ap.parse_args(argv)
    if shutil.which("nats-server") is None:
        raise SystemExit("bench remote: nats-server not found (Debian package nats-server)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # `timeout` stops it: the finally stops the processes
    work = Path(tempfile.mkdtemp(prefix="l2pbr", dir="/tmp"))
    procs = Procs(work)
    result: dict = {}
    try:
        from pipeline import curve

        curve.generate(work / "keys")
        nport = free_port()
        procs.start("nats", ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(nport), "-sd", str(work / "js")])
        wait(lambda: socket.create_connection(("127.0.0.1", nport), 1).close() or True, what="nats-server")
        if not args.only_throughput:
            result.update(latency(work, procs, nport, args.seconds, args.rate))
        if not args.only_latency:
            result.update(bridge_throughput(work, procs, nport, args.messages))
        if "tcp_p50_us" in result:
            result["nats_over_tcp_p50"] = round(result["nats_p50_us"] / result["tcp_p50_us"], 2)
            result["nats_over_tcp_p99"] = round(result["nats_p99_us"] / result["tcp_p99_us"], 2)
            print(f"ratios (same run): NATS/TCP+CURVE p50 {result['nats_over_tcp_p50']:.2f}x, "
                  f"p99 {result['nats_over_tcp_p99']:.2f}x")
        if "bridge_msgs_per_s" in result and "sim_rate" in result:
            # the sim's book updates plus its trades, as the bus carries them
            result["bridge_headroom"] = round(result["bridge_msgs_per_s"] / result["bus_msgs_per_s"], 1)
            print(f"bridge headroom: {result['bridge_headroom']:.1f}x the bus rate of the latency run "
                  f"({result['bus_msgs_per_s']:.0f} msg/s)")
        print(json.dumps(result))
    finally:
        procs.stop_all()
        if args.keep:
            print(f"work directory: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def latency(work: Path, procs: Procs, nport: int, seconds: float, rate: float) -> dict:
    from pipeline.config import load_config
    from pipeline.consumer import Consumer, Trade

    (work / "sim.toml").write_text('[pipeline]\nrun_dir = "simrun"\n[exchanges.x]\nadapter = "binance"\nsymbols = ["X"]\n')
    procs.start("sim", PIPELINE + ["--config", str(work / "sim.toml"), "sim", "--port", "0", "--symbols",
                                   "BTCUSDT,ETHUSDT", "--rate", str(rate), "--ready-file", str(work / "sim.port")])
    wait(lambda: (work / "sim.port").read_text().strip(), what="the sim")
    sport = int((work / "sim.port").read_text())
    p = [free_port() for _ in range(3)]
    endpoints = (f'trades_endpoint = "tcp://127.0.0.1:{p[0]}"\nl2_endpoint = "tcp://127.0.0.1:{p[1]}"\n'
                 f'snapshot_endpoint = "tcp://127.0.0.1:{p[2]}"\n')
    (work / "ingest.toml").write_text(f"""
[pipeline]
run_dir = "run"
[exchanges.sim]
adapter = "binance"
symbols = ["BTCUSDT", "ETHUSDT"]
depth = 20
ws_url = "ws://127.0.0.1:{sport}"
rest_url = "http://127.0.0.1:{sport}"
depth_stream = "depth@0ms"
{endpoints}
[bus]
curve_secret_key = "keys/server.key_secret"
curve_clients_dir = "keys/clients"
[bridges.nats]
url = "nats://127.0.0.1:{nport}"
""")
    (work / "remote.toml").write_text(f"""
[pipeline]
run_dir = "remote"
[exchanges.sim]
symbols = ["BTCUSDT", "ETHUSDT"]
{endpoints}
[bus]
curve_client_secret_key = "keys/client.key_secret"
curve_server_public_key = "keys/server.key"
[bridges.nats]
url = "nats://127.0.0.1:{nport}"
""")
    procs.start("ingest", PIPELINE + ["--config", str(work / "ingest.toml"), "ingest", "sim"])
    procs.start("bridge", PIPELINE + ["--config", str(work / "ingest.toml"), "bridge", "nats"])
    remote = load_config(work / "remote.toml")
    offset = _clock(remote, f"tcp://127.0.0.1:{p[2]}")
    wait(lambda: (work / "run" / "bridge-nats.stats.json").read_text(), 30, "the bridge")
    lat: dict[str, list[int]] = {"tcp": [], "nats": []}
    counts = {"tcp": 0, "nats": 0}
    kinds: dict[str, dict[str, int]] = {"tcp": {}, "nats": {}}
    errors: list[BaseException] = []
    start_us = time.time_ns() // 1000

    def consume(transport: str) -> None:
        try:
            with Consumer(remote, transport=transport, books=True) as c:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    for e in c.poll(0.2):
                        now = time.time_ns() // 1000
                        counts[transport] += 1
                        kinds[transport][type(e).__name__] = kinds[transport].get(type(e).__name__, 0) + 1
                        if isinstance(e, Trade) and e.ts_published > start_us:
                            lat[transport].append(now - e.ts_published)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(t,)) for t in ("tcp", "nats")]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    if errors:
        raise errors[0]
    print(f"trade latency, ingest send -> remote consumer (both consumers at once, {seconds:g} s, sim rate "
          f"{rate:g}/s; clock offset measured by the snapshot service {offset['offset_us']:+.0f} us, "
          f"rtt {offset['rtt_us']:.0f} us):")
    out: dict = {"sim_rate": rate, "seconds": seconds, "bus_msgs_per_s": round(counts["tcp"] / took, 1),
                 "clock_offset_us": offset["offset_us"], "clock_rtt_us": offset["rtt_us"]}
    for name, label in (("tcp", "TCP+CURVE"), ("nats", "NATS")):
        xs = lat[name]
        print(f"  {label:10s} n={len(xs):6d}  p50 {pct(xs, .5):8.0f} us  p99 {pct(xs, .99):8.0f} us  "
              f"max {max(xs) if xs else 0:8d} us   (events: {kinds[name]})")
        out.update({f"{name}_trades": len(xs), f"{name}_events": counts[name], f"{name}_p50_us": pct(xs, .5),
                    f"{name}_p99_us": pct(xs, .99)})
    return out


def _clock(remote, endpoint: str) -> dict:
    """The clock offset to the ingest's host as `pipeline status --remote` measures it."""
    import zmq

    from pipeline.curve import ClientKeys
    from pipeline.snapshots import SnapshotClient, SnapshotUnavailable

    keys = ClientKeys.from_config(remote)
    ctx = zmq.Context()
    client = SnapshotClient(ctx, endpoint, keys.apply if keys else None, timeout=2.0)
    try:
        def measured():
            try:
                out["c"] = client.clock()
                return True
            except SnapshotUnavailable:
                return False

        out: dict = {}
        wait(measured, 30, "the ingest's snapshot service")
        c = out["c"]
        return {"offset_us": round(c.offset_ns / 1000, 1), "rtt_us": round(c.rtt_ns / 1000, 1)}
    finally:
        client.close()
        ctx.term()


def bridge_throughput(work: Path, procs: Procs, nport: int, messages: int) -> dict:
    import nats
    import psutil
    import zmq

    from pipeline import bus
    from pipeline.benchmarks.synthetic_bus import SyntheticBus
    from pipeline.config import load_config

    (work / "syn.toml").write_text(f"""
[pipeline]
run_dir = "synrun"
[exchanges.sim]
adapter = "binance"
symbols = {json.dumps(SYN_SYMBOLS)}
[bridges.nats]
url = "nats://127.0.0.1:{nport}"
prefix = "syn"
stream = "SYN"
bucket = "syn_snapshots"
""")
    config = load_config(work / "syn.toml")
    ctx = zmq.Context()
    t_ep, l_ep = bus.bind_endpoints(config, config.exchange("sim"))
    tsock, lsock = bus.make_pub(ctx, t_ep), bus.make_pub(ctx, l_ep)
    loop = asyncio.new_event_loop()
    nc = loop.run_until_complete(nats.connect(f"nats://127.0.0.1:{nport}"))
    js = nc.jetstream()

    def count() -> int:
        return loop.run_until_complete(js.stream_info("SYN")).state.messages

    try:
        bridge = procs.start("bridge-syn", PIPELINE + ["--config", str(work / "syn.toml"), "bridge", "nats"])
        wait(lambda: count() >= 0, 30, "the bridge's stream")
        wait(lambda: (work / "synrun" / "bridge-nats.stats.json").read_text(), 30, "the bridge")
        syn = SyntheticBus(SYN_SYMBOLS, epoch=1)
        # the bridge's SUB is connected when a snapshot sent now reaches the stream
        wait(lambda: bus.send(lsock, *syn.l2("S0", True)) or count() > 0, 30, "the bridge's subscription")
        for s in SYN_SYMBOLS[1:]:
            bus.send(lsock, *syn.l2(s, True))
        wait(lambda: count() >= len(SYN_SYMBOLS), 30, "the first snapshots in the stream")
        sent = base = count()
        ps = psutil.Process(bridge.pid)
        cpu0 = sum(ps.cpu_times()[:2])
        t_start = time.monotonic()
        rng = syn.rng
        while sent - base < messages:
            for _ in range(min(2000, messages - (sent - base))):
                s = SYN_SYMBOLS[rng.randrange(4)]
                if rng.random() < 0.2:
                    bus.send(tsock, *syn.trade(s))
                else:
                    bus.send(lsock, *syn.l2(s, False))
                sent += 1
            give_up = time.monotonic() + 60
            while sent - count() > 20_000 and time.monotonic() < give_up:  # well below the bus's HWM
                time.sleep(0.02)
        wait(lambda: count() >= sent, 120, "the bridge to publish everything")
        took = time.monotonic() - t_start
        cpu = sum(ps.cpu_times()[:2]) - cpu0
        n = sent - base
        stats = json.loads((work / "synrun" / "bridge-nats.stats.json").read_text())
        print(f"bridge throughput: {n} bus messages (20% trades, 80% L2 deltas of 4 books) into JetStream in "
              f"{took:.1f} s = {n / took:,.0f} msg/s; bridge CPU {cpu / n * 1e6:.1f} us/msg "
              f"(stream {count()} messages, bridge errors {stats.get('errors')})")
        return {"bridge_messages": n, "bridge_seconds": round(took, 2), "bridge_msgs_per_s": round(n / took),
                "bridge_cpu_us_per_msg": round(cpu / n * 1e6, 1), "bridge_errors": stats.get("errors"),
                "stream_messages": count()}
    finally:
        loop.run_until_complete(nc.close())
        loop.close()
        tsock.close(0)
        lsock.close(0)
        ctx.term()


if __name__ == "__main__":
    main()
