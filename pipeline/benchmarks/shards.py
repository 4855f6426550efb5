"""``pipeline bench shards``: does a sharded ingest (``processes = N``) scale across cores?

The live benchmark (``pipeline bench live-ingest --processes 1,2``) cannot show it on a
2-core machine: the sim that makes the frames needs a core of its own, so it is the ceiling
before two shards are.  This benchmark takes the sim out.  A capture (``pipeline bench
gen-capture``) is split over N shards exactly as ``processes = N`` splits an exchange's
symbols (pipeline/shards.py ``shard_of``); each shard is a process that loads its part into
memory and then, at one common start signal, pushes every frame through the real hot path of
an ingest (``pipeline bench ingest``'s pass: adapter, sync, book, its own shared-memory
segment, its own ZeroMQ PUB sockets).  One subscriber process reads every shard's sockets, as
a consumer of a sharded exchange does.

For each N in ``--processes`` (``--repeat`` rounds, interleaved so that the machine's load
falls on every N alike) it reports the aggregate rate, ``frames of all shards / (last end -
first start)``, its ratio to one process in the same run, the CPU per frame, and whether the
subscriber received every message, and whether every book ends with the same shared-memory view
(update id, state, levels) as with the first shard count.  With N processes on N free cores the ratio approaches N;
below it are the cores' other work (the subscriber, neighbours) and the shards' imbalance.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import click

from pipeline.benchmarks.ingest import BenchError, load_capture

# One SUB socket on every shard's two PUB endpoints.  Probes say which shards' subscriptions are
# through; each shard ends its pass with an end marker, and the counts (l2 + trade messages, then
# the other kinds) are printed when all have.
DRAIN = r"""
import sys, zmq
n_shards = int(sys.argv[1])
s = zmq.Context().socket(zmq.SUB)
s.setsockopt(zmq.RCVHWM, 0)
s.setsockopt(zmq.SUBSCRIBE, b"")
for ep in sys.argv[2:]:
    s.connect(ep)
print("connected", flush=True)
probes, ends, n, other, ready = set(), 0, 0, 0, False
while True:
    topic = s.recv()
    s.recv()
    if topic.startswith((b"l2.", b"trade.")):
        n += 1
    elif topic[:1] != b"\xfe":
        other += 1  # derived kinds (cvd, bars): not in the feed's l2/trade counters
    elif topic.startswith(b"\xfeprobe"):
        probes.add(topic)
        if not ready and len(probes) == 2 * n_shards:
            ready = True
            print("ready", flush=True)
    elif topic == b"\xfeend":
        ends += 1
        if ends == n_shards:
            print(n, other, flush=True)
            n, other, ends = 0, 0, 0
    elif topic == b"\xfequit":
        break
"""


def _symbol_of(item) -> str | None:
    """The symbol of a capture item: a REST body's, or a combined-stream frame's stream name."""
    if type(item) is not bytes:
        return item[0]
    if item.startswith(b'{"stream":"'):
        at = item.find(b"@", 11)
        if at > 0:
            return item[11:at].decode("ascii", "replace").upper()
    return None


def run_shard(path: str, k: int, n: int, endpoint_dir: str, depth: int) -> None:
    """One shard: load its symbols' part of the capture, bind, then pass it at the start signal.

    Talks to the parent over stdin/stdout, one line each way per step."""
    import gc

    import zmq

    from ingest import adapters
    from ingest.feed import BusPublisher
    from pipeline import bus as pbus
    from pipeline import shards
    from pipeline.benchmarks.ingest import _make_feed, run_pass
    from pipeline.config import ExchangeConfig
    from pipeline.shm import BookReader, BookWriter, ShmSpace

    cap = load_capture(path)
    whole = ExchangeConfig(name="bench", adapter=cap.adapter, symbols=tuple(cap.symbols), depth=depth, processes=n)
    mine = set(shards.split(whole, cap.symbols).get(k, []))
    cap.items = [it for it in cap.items if _symbol_of(it) in mine]
    cap.symbols = [s for s in cap.symbols if s in mine]
    cap.ws_frames = sum(1 for it in cap.items if type(it) is bytes)
    cfg = ExchangeConfig(name="bench", adapter=cap.adapter, symbols=tuple(cap.symbols), depth=depth)
    adapter = adapters.create(cfg)
    prefix = ShmSpace(f"l2pbsh{os.getpid()}", f"{endpoint_dir}/shm.{k}")  # names published per process
    writer = BookWriter(prefix, cfg.name, cap.symbols, depth, epoch=1)
    ctx = zmq.Context()
    t_sock = pbus.make_pub(ctx, f"ipc://{endpoint_dir}/{k}.trades.sock")
    l_sock = pbus.make_pub(ctx, f"ipc://{endpoint_dir}/{k}.l2.sock")
    try:
        publisher = BusPublisher(t_sock, l_sock, batch=True)
        print("bound", flush=True)
        # probes until the parent says the subscriber has seen them all
        while not select.select([sys.stdin], [], [], 0.02)[0]:
            t_sock.send_multipart([b"\xfeprobe-t%d" % k, b""])
            l_sock.send_multipart([b"\xfeprobe-l%d" % k, b""])
        while sys.stdin.readline().strip() == "round":
            feed = _make_feed(cap, adapter, writer, publisher)
            gc.collect()
            gc.freeze()  # as the ingest process does (ingest/main.py)
            gc.set_threshold(20_000, 50, 100)
            start = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the host
            r = run_pass(cap, adapter, feed)
            end = time.monotonic()
            gc.unfreeze()
            l_sock.send_multipart([b"\xfeend", b""])
            views = {}  # each book's final view in shared memory, for the comparison across shard counts
            with BookReader.open(prefix, cfg.name) as reader:
                for sym in cap.symbols:
                    v = reader.read(sym)
                    views[sym] = [v.update_id, v.state.name.lower(),
                                  hashlib.sha1(v.bids.tobytes() + v.asks.tobytes()).hexdigest()]
            print(json.dumps({"shard": k, "frames": cap.ws_frames, "symbols": len(cap.symbols), "start": start,
                              "end": end, "cpu": r["cpu"], "l2": sum(f.counts.l2_seq for f in feed.feeds.values()),
                              "trades": sum(f.counts.trade_seq for f in feed.feeds.values()),
                              "gaps": sum(f.counts.gaps for f in feed.feeds.values()), "views": views}),
                  flush=True)
    finally:
        t_sock.close(linger=0)
        l_sock.close(linger=0)
        ctx.term()
        writer.close(unlink=True)


class _Proc:
    """A child speaking one line at a time, with timeouts."""

    def __init__(self, argv: list[str]):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def say(self, line: str) -> None:
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def line(self, timeout: float) -> str:
        if not select.select([self.p.stdout], [], [], timeout)[0]:
            raise BenchError(f"child {self.p.pid}: no answer within {timeout:.0f} s")
        out = self.p.stdout.readline()
        if not out:
            raise BenchError(f"child {self.p.pid} exited (code {self.p.wait()})")
        return out.strip()

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
                self.p.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait()


def _group(path: str, n: int, depth: int, work: str, rounds: int, timeout: float,
           subscriber: bool = True) -> list[dict]:
    """N shard processes + one subscriber (none: ``subscriber`` False, ZeroMQ then drops every
    message at the PUB socket); ``rounds`` common-start passes; one result per round."""
    shard_procs: list[_Proc] = []
    drain = None
    try:
        for k in range(n):
            shard_procs.append(_Proc([sys.executable, "-c", "import sys; from pipeline.benchmarks.shards import "
                                      "run_shard; a = sys.argv; run_shard(a[1], int(a[2]), int(a[3]), a[4], int(a[5]))",
                                      path, str(k), str(n), work, str(depth)]))
        for p in shard_procs:
            if p.line(timeout) != "bound":
                raise BenchError("a shard did not bind its sockets")
        eps = [f"ipc://{work}/{k}.{kind}.sock" for k in range(n) for kind in ("trades", "l2")]
        if subscriber:
            drain = _Proc([sys.executable, "-c", DRAIN, str(n), *eps])
            if drain.line(10) != "connected" or drain.line(10) != "ready":
                raise BenchError("the subscriber did not see every shard")
        out = []
        for _ in range(rounds):
            for p in shard_procs:
                p.say("round")
            results = [json.loads(p.line(timeout)) for p in shard_procs]
            delivered, other = map(int, drain.line(60).split()) if drain is not None else (None, None)
            out.append({**_summary(n, results, delivered), "bus_other_kinds": other})
        return out
    finally:
        for p in shard_procs:
            p.stop()
        if drain is not None:
            drain.p.kill()
            drain.p.wait()


def _summary(n: int, results: list[dict], delivered: int | None) -> dict:
    frames = sum(r["frames"] for r in results)
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    sent = sum(r["l2"] + r["trades"] for r in results)
    return {"processes": n, "frames": frames, "seconds": round(wall, 4),
            "msgs_per_s": round(frames / wall) if wall > 0 else None,
            "cpu_us_per_msg": round(sum(r["cpu"] for r in results) / max(frames, 1) * 1e6, 3),
            "per_shard_frames": [r["frames"] for r in results],
            "per_shard_seconds": [round(r["end"] - r["start"], 4) for r in results],
            "bus_sent": sent, "bus_delivered": delivered, "gaps": sum(r["gaps"] for r in results),
            "views": {sym: v for r in results for sym, v in r["views"].items()}}


def run(path: str, processes: list[int], depth: int, repeat: int, timeout: float = 300.0,
        subscriber: bool = True) -> dict:
    work = tempfile.mkdtemp(prefix="l2pbsh", dir="/tmp")
    try:
        rounds: dict[int, list[dict]] = {n: [] for n in processes}
        for _ in range(repeat):  # interleaved: each round of every N close in time to the others
            for n in processes:
                sub = os.path.join(work, str(n))
                os.makedirs(sub, exist_ok=True)
                rounds[n] += _group(path, n, depth, sub, 1, timeout, subscriber)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for n in processes:
        rs = rounds[n]
        med = statistics.median(r["msgs_per_s"] for r in rs)
        best = max(rs, key=lambda r: r["msgs_per_s"])
        rows.append({**best, "msgs_per_s": med, "runs_msgs_per_s": [r["msgs_per_s"] for r in rs],
                     "cpu_us_per_msg": statistics.median(r["cpu_us_per_msg"] for r in rs),
                     "all_delivered": (all(r["bus_delivered"] == r["bus_sent"] for r in rs) if subscriber
                                       else None)})
    base = rows[0]["msgs_per_s"]
    reference = rounds[processes[0]][0]["views"]
    for n, r in zip(processes, rows):
        r["ratio"] = round(r["msgs_per_s"] / base, 2)
        # every round of every shard count ends with the same books as the first count's first round
        r["books_equal"] = all(x["views"] == reference for x in rounds[n])
        del r["views"]
    return {"capture": path, "depth": depth, "repeat": repeat, "subscriber": subscriber, "cores": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()], "rows": rows}


@click.command(name="shards")
@click.option("--capture", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A pipeline-capture/1 file with several symbols (`pipeline bench gen-capture --symbols 8`).")
@click.option("--processes", default="1,2", show_default=True, help="Shard counts to compare, the first is the base.")
@click.option("--depth", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="Rounds per shard count (interleaved); the median rate is reported.")
@click.option("--subscriber/--no-subscriber", default=True, show_default=True,
              help="One process reading every shard's messages (on a 2-core machine it takes a share of "
                   "the cores the shards need); without, ZeroMQ drops them at the PUB socket.")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
def command(capture: str, processes: str, depth: int, repeat: int, subscriber: bool, as_json: bool) -> None:
    """Sharded ingest without the sim: N shard processes replay their part of a capture at once."""
    try:
        counts = [int(x) for x in processes.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{processes!r}: a comma-separated list of integers", param_hint="--processes")
    if not counts or min(counts) < 1:
        raise click.BadParameter("at least one count, each >= 1", param_hint="--processes")
    report = run(capture, counts, depth, repeat, subscriber=subscriber)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"capture {capture}, depth {depth}, {report['cores']} cores, load {report['load_average']}, "
               f"{'one subscriber' if subscriber else 'no subscriber'}")
    click.echo(f"{'processes':>9} {'msgs/s':>10} {'ratio':>6} {'CPU us/msg':>11} {'frames per shard':>20} "
               f"{'all delivered':>14} {'same books':>11}  runs")
    for r in report["rows"]:
        click.echo(f"{r['processes']:>9} {r['msgs_per_s']:>10,} {r['ratio']:>6} {r['cpu_us_per_msg']:>11} "
                   f"{'/'.join(map(str, r['per_shard_frames'])):>20} {str(r['all_delivered']):>14} "
                   f"{str(r['books_equal']):>11}  "
                   f"{', '.join(f'{x:,}' for x in r['runs_msgs_per_s'])}")
