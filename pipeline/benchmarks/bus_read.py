"""Bus read-path benchmark: CPU per message of the consumer's and the publisher's bus readers.

A feeder process binds an exchange's two bus sockets (XPUB, so it knows when the reader has
subscribed, without a sleep), then sends pre-encoded messages back to back: one snapshot per
symbol, then contiguous L2 deltas (1-3 levels of 50-level books, 4 symbols) with a trade after
every ``--trade-every`` deltas.  The reader under test runs in this process until it has handed
out every message; the figure is this process's CPU time per bus message (recv, decode, book
update; ZeroMQ's I/O thread included), so the read paths can be compared before and after a change:

    .venv/bin/pipeline bench bus-read --reader consumer --messages 100000 --runs 3
    .venv/bin/pipeline bench bus-read --reader publisher

``consumer``: ``pipeline.consumer.Consumer.poll`` (trades and book events, no shared memory).
``publisher``: the bus reader (pipeline/bus.py) on an asyncio loop feeding the publisher's book mirror
(``publisher/mirror.py``), i.e. the publisher's input without clients.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]

FEEDER = r"""
import sys
import zmq
from pipeline.benchmarks.synthetic_bus import SyntheticBus

run_dir, n_l2, trade_every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
symbols = sys.argv[4].split(",")
ctx = zmq.Context()
socks = []
for name in ("trades", "l2"):
    s = ctx.socket(zmq.XPUB)
    s.setsockopt(zmq.SNDHWM, 0)
    s.bind(f"ipc://{run_dir}/sim.{name}.sock")
    socks.append(s)
tsock, lsock = socks
synthetic = SyntheticBus(symbols, epoch=1)
rng = synthetic.rng
messages = []
def l2(sym, snapshot):
    return (lsock, *synthetic.l2(sym, snapshot))
def trade(sym):
    return (tsock, *synthetic.trade(sym))
for s in symbols:
    messages.append(l2(s, True))
for i in range(n_l2):
    messages.append(l2(symbols[rng.randrange(len(symbols))], False))
    if i % trade_every == trade_every - 1:
        messages.append(trade(symbols[i % len(symbols)]))
print(len(messages), flush=True)
for s in socks:  # wait for the reader's subscriptions (XPUB hands them to us)
    s.recv()
for sock, topic, payload in messages:
    sock.send(topic, zmq.SNDMORE)
    sock.send(payload)
sys.stdin.readline()  # the reader is done
for s in socks:
    s.close(linger=0)
ctx.term()
"""


def _config(run_dir: Path):
    from pipeline.config import parse_config

    return parse_config(f'[pipeline]\nrun_dir = "{run_dir}"\n[exchanges.sim]\nadapter = "binance"\nsymbols = {json.dumps(SYMBOLS)}\n'
                        f'depth = 50\nrest_url = "http://127.0.0.1:9/"\nws_url = "ws://127.0.0.1:9/"\n',
                        run_dir, "<bench>")


def _read_consumer(config, total: int) -> None:
    from pipeline.consumer import Consumer

    with Consumer(config, use_shm=False) as consumer:
        n = 0
        while n < total:
            n += len(consumer.poll(1.0))


def _read_publisher(config, total: int) -> None:
    import asyncio

    import zmq

    from pipeline import bus, schema
    from publisher.mirror import BookMirror

    async def main() -> None:
        mirror = BookMirror(config)
        done = asyncio.Event()
        count = [0]

        def on_trade(_topic: bytes, payload: bytes) -> None:
            mirror.decode_trade(payload)
            count[0] += 1
            if count[0] >= total:
                done.set()

        def on_l2(topic: bytes, payload: bytes) -> None:
            mirror.apply_l2(topic, payload)
            count[0] += 1
            if count[0] >= total:
                done.set()

        def on_error(exc: BaseException) -> None:
            raise exc

        ctx = zmq.Context()
        reader = bus.Reader.for_config(ctx, config, kinds=(schema.TRADE, schema.L2))
        reader.on_kinds({schema.TRADE: on_trade, schema.L2: on_l2}, on_error=on_error)
        reader.start(asyncio.get_running_loop())
        await done.wait()
        reader.close()
        ctx.term()
        mirror.close()

    asyncio.run(main())


def run_once(reader: str, n_l2: int, trade_every: int) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix="l2pbr", dir="/tmp"))
    config = _config(run_dir)
    feeder = subprocess.Popen([sys.executable, "-c", FEEDER, str(run_dir), str(n_l2), str(trade_every),
                               ",".join(SYMBOLS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        total = int(feeder.stdout.readline())
        cpu0, wall0 = time.process_time(), time.perf_counter()
        (_read_consumer if reader == "consumer" else _read_publisher)(config, total)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        feeder.stdin.write("done\n")
        feeder.stdin.flush()
        feeder.wait(10)
    finally:
        if feeder.poll() is None:
            feeder.kill()
            feeder.wait()
        for p in run_dir.iterdir():
            p.unlink()
        run_dir.rmdir()
    return {"messages": total, "cpu_us_per_msg": round(cpu / total * 1e6, 3), "wall_s": round(wall, 3)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reader", choices=("consumer", "publisher"), default="consumer", help="Read path to measure.")
    ap.add_argument("--messages", type=int, default=100_000, help="L2 deltas per run (trades come on top).")
    ap.add_argument("--trade-every", type=int, default=4, help="A trade after every N L2 deltas.")
    ap.add_argument("--runs", type=int, default=3, help="Runs; the median is reported.")
    args = ap.parse_args(argv)
    random.seed(1)
    runs = [run_once(args.reader, args.messages, args.trade_every) for _ in range(args.runs)]
    print(json.dumps({"reader": args.reader, "messages": runs[0]["messages"],
                      "cpu_us_per_msg_median": statistics.median(r["cpu_us_per_msg"] for r in runs),
                      "cpu_us_per_msg": [r["cpu_us_per_msg"] for r in runs]}), flush=True)


if __name__ == "__main__":
    main()
