"""WebSocket publisher benchmark: trade latency to N clients under a heavy L2 bus, as real processes.

A feeder process stands in for the ingest: it binds the exchange's bus sockets and publishes
L2 deltas (1-3 levels of 50-level books, 4 symbols) at ``--l2-rate`` and trades at
``--trade-rate``, each stamped ``ts_received`` = its send time.  `pipeline publish` serves
``--clients`` WebSocket clients spread over ``--client-procs`` processes; each client records,
per trade, its receive time minus ``time_received`` (the latency docs/websocket.md tells clients
to compute; here it covers the bus hop, the publisher and the client's own loop).  Prints one
JSON line: client p50/p90/p99/p99.9, trades received, frames by kind, the publisher's CPU
(share of one core, and µs per bus message), and the publisher's own part of a trade's latency
(its /metrics histograms: feeder -> publisher receive, -> written to a client socket), so the
client side and the machine's scheduling can be told apart.

    .venv/bin/pipeline bench publisher-latency --clients 10 --seconds 10
    .venv/bin/pipeline bench publisher-latency --clients 100 --client-procs 4 --mode snapshots
    .venv/bin/pipeline bench publisher-latency --clients 10 --py-spy /tmp/pub.svg   # profile the publisher

``--mode``: ``trades`` (subscribe to trades only), ``snapshots`` (send nothing: the default
subscription, every trade and throttled book snapshots of depth 10), ``deltas`` (trades and every
book as deltas).  ``--live``: use ``pipeline sim --rate L2_RATE`` + ``pipeline ingest`` with
``depth@0ms`` instead of the feeder (then latency includes the ingest, and the sim decides the
trade rate).

``--before REV`` runs the publisher of git revision REV too (its files from `git archive`, with
this venv through PYTHONPATH; feeder and clients are this checkout's), alternating with this
checkout's ``--repeat`` times, and ends with a summary line of ratios (current / before).  The
bus messages a publisher's CPU is divided by are those the source published (the views' seqs in
shared memory, plus the trades), not those the publisher took: a publisher that subscribes to
less is not credited with a smaller denominator.

    .venv/bin/pipeline bench publisher-latency --clients 10 --mode snapshots --before main --repeat 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "integration"))
from helpers import PIPELINE, Procs, eventually, feeds, start_sim, write_config  # noqa: E402

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]


# ------------------------------------------------------------------ the feeder (stands in for the ingest)

def feed(config_path: str, l2_rate: float, trade_rate: float, seconds: float) -> None:
    import zmq

    from pipeline import bus
    from pipeline.benchmarks.synthetic_bus import SyntheticBus
    from pipeline.config import load_config
    from pipeline.shm import BookState, BookWriter

    config = load_config(Path(config_path))
    ex = config.exchange("sim")
    t_ep, l_ep = bus.bind_endpoints(config, ex)
    ctx = zmq.Context()
    tsock, lsock = bus.make_pub(ctx, t_ep), bus.make_pub(ctx, l_ep)
    synthetic = SyntheticBus(SYMBOLS, epoch=int(time.time()))
    rng = synthetic.rng
    # as the ingest: each view is written to shared memory before its bus message is sent (the
    # publisher renders snapshots from there); the synthetic books keep their 50 prices, so the
    # price lists are sorted once
    writer = BookWriter(config.shm_prefix, "sim", SYMBOLS, ex.depth, epoch=synthetic.epoch)
    index = {s: i for i, s in enumerate(SYMBOLS)}
    prices = {s: (sorted(b, reverse=True)[:ex.depth], sorted(a)[:ex.depth]) for s, (b, a) in synthetic.books.items()}

    def send_l2(sym: str, snapshot: bool) -> None:
        now = time.time_ns() // 1000
        topic, payload = synthetic.l2(sym, snapshot, now, now)
        (bids, asks), (bp, ap) = synthetic.books[sym], prices[sym]
        seq = synthetic.l2_seq[sym]
        writer.write_view(index[sym], seq, BookState.LIVE, now, now, seq, bp, [bids[p] for p in bp], ap,
                          [asks[p] for p in ap])
        lsock.send_multipart((topic, payload))

    def send_trade(sym: str) -> None:
        now = time.time_ns() // 1000
        tsock.send_multipart(list(synthetic.trade(sym, now, now)))

    t0 = time.monotonic()
    sent_l2 = sent_t = 0
    next_snap = t0
    while (elapsed := time.monotonic() - t0) < seconds:
        if time.monotonic() >= next_snap:  # late joiners (the publisher) get a book
            writer.heartbeat()
            for s in SYMBOLS:
                send_l2(s, True)
            next_snap += 1.0
        due_t = int(elapsed * trade_rate)
        while sent_t < due_t:
            send_trade(SYMBOLS[sent_t % len(SYMBOLS)])
            sent_t += 1
        due_l2 = int(elapsed * l2_rate)
        while sent_l2 < due_l2:
            send_l2(SYMBOLS[rng.randrange(len(SYMBOLS))], False)
            sent_l2 += 1
        time.sleep(0.0005)
    tsock.close(linger=0)
    lsock.close(linger=0)
    ctx.term()
    writer.close(unlink=True)


# ------------------------------------------------------------------ clients

def _iso_us(text: str) -> int:
    import calendar
    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) * 1_000_000 + int(text[20:26])


async def _clients(url: str, n: int, mode: str, seconds: float) -> tuple[list[float], dict]:
    import msgspec
    from websockets.asyncio.client import connect

    decode = msgspec.json.decode
    samples: list[float] = []
    kinds: dict[str, int] = {}
    prefix_cache: dict[str, int] = {}

    def iso_us(text: str) -> int:
        sec = prefix_cache.get(text[:19])
        if sec is None:
            sec = prefix_cache[text[:19]] = _iso_us(text) - int(text[20:26])
        return sec + int(text[20:26])

    async def one() -> None:
        async with connect(url, max_queue=4096, compression=None) as ws:
            await ws.recv()  # welcome
            if mode != "snapshots":
                req = {"op": "subscribe", "exchange": "sim", "channels": ["trades"] + (["book"] if mode == "deltas" else [])}
                if mode == "deltas":
                    req["mode"] = "deltas"
                await ws.send(json.dumps(req))
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                try:
                    raw = await asyncio.wait_for(ws.recv(decode=False), left)
                except TimeoutError:
                    break
                now = time.time_ns() // 1000
                m = decode(raw)
                k = m["kind"]
                kinds[k] = kinds.get(k, 0) + 1
                if k == "trade":
                    samples.append((now - iso_us(m["time_received"])) / 1000)

    await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    return samples, kinds


def client_proc(url: str, n: int, mode: str, seconds: float, out: str) -> None:
    import uvloop
    samples, kinds = uvloop.run(_clients(url, n, mode, seconds))
    Path(out).write_text(json.dumps({"samples": samples, "kinds": kinds}))


# ------------------------------------------------------------------ the run

def _stats(port: int) -> dict:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
        return json.loads(r.read())


def _histograms(port: int) -> dict[str, list[tuple[float, int]]]:
    """The publisher's own trade latency histograms from /metrics (publisher/metrics.py): ``bus``
    (ingest receive -> publisher receive) and ``send`` (-> written to a client socket), as
    cumulative (upper bound s, count) lists."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[float, int]]] = {"bus": [], "send": []}
    for line in text.splitlines():
        for name, metric in (("bus", "l2p_publisher_bus_latency_seconds_bucket{"),
                             ("send", "l2p_publisher_send_latency_seconds_bucket{")):
            if line.startswith(metric) and 'kind="trade"' in line:
                le = line.split('le="', 1)[1].split('"', 1)[0]
                out[name].append((float(le), int(float(line.rsplit(" ", 1)[1]))))
    return out


def _bucket_quantiles(before: list[tuple[float, int]], after: list[tuple[float, int]]) -> dict:
    """p50/p99 of the observations between two scrapes, as the upper bound (ms) of their bucket."""
    counts = [(le, n - dict(before).get(le, 0)) for le, n in after]
    total = counts[-1][1] if counts else 0
    out: dict = {"n": total}
    for q in (0.5, 0.9, 0.99):
        le = next((le for le, n in counts if n >= q * total), None) if total else None
        out[f"p{round(q * 100)}_le_ms"] = None if le is None else round(le * 1000, 3)
    return out


def _bus_l2_seq(config_path: Path) -> int:
    """The L2 messages the source published so far: the sum of the views' seqs in shared memory."""
    from pipeline.config import load_config
    from pipeline.shm import BookReader

    config = load_config(config_path)
    with BookReader.open(config.shm_prefix, "sim") as reader:
        return sum(reader.read_head(s)[1] for s in SYMBOLS)


def _frames_per_write(s0: dict, s1: dict) -> float | None:
    """Frames written to client sockets per write (a sender that batches writes several at once);
    None for a publisher that does not count its writes."""
    if "socket_writes" not in s1:
        return None
    writes = s1["socket_writes"] - s0["socket_writes"]
    frames = sum(s1["sent"].values()) - sum(s0["sent"].values())
    return round(frames / writes, 3) if writes else None


def checkout(rev: str) -> tuple[Path, str]:
    """REV's files in a temporary directory (git archive: the repository is only read) and its short id."""
    root = Path(__file__).resolve().parents[2]
    short = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", rev], capture_output=True, text=True,
                           check=True).stdout.strip()
    out = Path(tempfile.mkdtemp(prefix=f"l2p-{short}-", dir="/tmp"))
    archive = subprocess.run(["git", "-C", str(root), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out, short


def run(args: argparse.Namespace, code: Path | None = None, variant: str = "current") -> dict:
    """One measurement; ``code``: run the publisher from this source tree (PYTHONPATH) instead."""
    workdir = Path(tempfile.mkdtemp(prefix="l2pp", dir="/tmp"))
    (workdir / "sim.toml").write_text('[exchanges.x]\nadapter = "binance"\nsymbols = ["X"]\n')
    procs = Procs(workdir)
    feeder = None
    cfg = None
    try:
        extra = 'depth_stream = "depth@0ms"\n[publisher]\nmax_clients = 200\n'
        if args.live:
            port = start_sim(procs, ",".join(SYMBOLS), rate=args.l2_rate)
            cfg = write_config(workdir, port, SYMBOLS, extra=extra)
            procs.start("ingest", PIPELINE + ["--config", str(cfg), "ingest", "sim"])
            eventually(lambda: all(f["state"] == "live" for f in feeds(cfg).values()), 60, 0.2, "live")
        else:
            cfg = write_config(workdir, 1, SYMBOLS, extra=extra)
            feeder = mp.get_context("spawn").Process(
                target=feed, args=(str(cfg), args.l2_rate, args.trade_rate, args.seconds + 8.0), daemon=True)
            feeder.start()
        ready = workdir / "pub.port"
        pub = procs.start("publisher", PIPELINE + ["--config", str(cfg), "publish", "--port", "0",
                                                   "--ready-file", str(ready)],
                          env={"PYTHONPATH": str(code)} if code is not None else None)
        port = int(eventually(lambda: ready.exists() and ready.read_text().strip(), 30, what="publisher ready"))
        time.sleep(2.0)  # the publisher has its books
        url = f"ws://127.0.0.1:{port}/"
        ctx = mp.get_context("spawn")
        outs, clients = [], []
        per = [args.clients // args.client_procs + (1 if i < args.clients % args.client_procs else 0)
               for i in range(args.client_procs)]
        for i, n in enumerate(per):
            out = workdir / f"clients{i}.json"
            outs.append(out)
            c = ctx.Process(target=client_proc, args=(url, n, args.mode, args.seconds + 1.0, str(out)), daemon=True)
            c.start()
            clients.append(c)
        time.sleep(1.0)  # connected and subscribed
        p = psutil.Process(pub.pid)
        spy = None
        if args.py_spy:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pub.pid),
                                    "-o", args.py_spy, "-d", str(int(args.seconds)), "-r", "200", "--nonblocking",
                                    *({".json": ["-f", "speedscope"], ".txt": ["-f", "raw"]}.get(Path(args.py_spy).suffix, []))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load0 = os.getloadavg()[0]
        s0, c0, t0, h0, q0 = _stats(port), p.cpu_times(), time.monotonic(), _histograms(port), _bus_l2_seq(cfg)
        time.sleep(args.seconds - 0.5)
        s1, c1, t1, h1, q1 = _stats(port), p.cpu_times(), time.monotonic(), _histograms(port), _bus_l2_seq(cfg)
        load1 = os.getloadavg()[0]
        for c in clients:
            c.join(args.seconds + 30)
        if spy is not None:
            spy.wait(60)
        samples: list[float] = []
        kinds: dict[str, int] = {}
        for out in outs:
            d = json.loads(out.read_text())
            samples += d["samples"]
            for k, v in d["kinds"].items():
                kinds[k] = kinds.get(k, 0) + v
        samples.sort()

        def pct(q: float) -> float | None:
            return round(samples[min(len(samples) - 1, int(q * len(samples)))], 3) if samples else None
        cpu = (c1.user - c0.user) + (c1.system - c0.system)
        bus_msgs = (q1 - q0) + (s1["trades_in"] - s0["trades_in"])  # published: L2 (seqs) + trades
        l2_rate = args.l2_rate
        return {"variant": variant, "clients": args.clients, "client_procs": args.client_procs, "mode": args.mode,
                "source": "sim+ingest" if args.live else "feeder", "l2_rate": l2_rate,
                "trade_rate": None if args.live else args.trade_rate,
                "trades_received": len(samples), "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99),
                "p999_ms": pct(0.999), "max_ms": round(samples[-1], 3) if samples else None, "frames": kinds,
                "publisher_cpu_share": round(cpu / (t1 - t0), 3),
                "publisher_cpu_user_sys_s": [round(c1.user - c0.user, 2), round(c1.system - c0.system, 2)],
                "bus_msgs_per_s": round(bus_msgs / (t1 - t0)),
                "publisher_l2_in_per_s": round((s1["l2_in"] - s0["l2_in"]) / (t1 - t0)),
                "load_1min": [round(load0, 2), round(load1, 2)],
                "frames_per_socket_write": _frames_per_write(s0, s1),
                "publisher_cpu_us_per_bus_msg": round(cpu / max(1, bus_msgs) * 1e6, 2),
                # the publisher's own part: trades from the feeder's stamp to the publisher's receive
                # (bus) and to the write into a client socket (send), bucket bounds of /metrics
                "publisher_trade_bus_latency": _bucket_quantiles(h0["bus"], h1["bus"]),
                "publisher_trade_send_latency": _bucket_quantiles(h0["send"], h1["send"]),
                "publisher_log_errors": procs.log("publisher").count("Traceback")}
    finally:
        procs.stop_all()
        if feeder is not None and feeder.is_alive():  # it runs past the measurement: stopped here
            feeder.terminate()
            feeder.join(10)
        if cfg is not None:  # a stopped feeder leaves its shared memory: removed, as every benchmark does
            from pipeline.config import load_config
            from pipeline.shm import DEV_SHM
            for seg in DEV_SHM.glob(f"{load_config(cfg).shm_prefix}*"):
                seg.unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--client-procs", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--l2-rate", type=float, default=20000.0)
    ap.add_argument("--trade-rate", type=float, default=200.0)
    ap.add_argument("--mode", choices=["trades", "snapshots", "deltas"], default="trades")
    ap.add_argument("--live", action="store_true", help="sim + ingest instead of the feeder")
    ap.add_argument("--py-spy", default=None, help="record a py-spy profile of the publisher into this file "
                                                   "(.svg flame graph, .json speedscope, .txt collapsed stacks); "
                                                   "with --before, one per variant and repeat (NAME.before1.EXT ...)")
    ap.add_argument("--before", default=None, metavar="REV",
                    help="also run the publisher of git revision REV, alternating with this checkout's")
    ap.add_argument("--repeat", type=int, default=1, help="runs per variant (with --before: alternating)")
    args = ap.parse_args(argv)
    if not args.before and args.repeat <= 1:
        print(json.dumps(run(args)), flush=True)
        return
    code = short = None
    if args.before:
        code, short = checkout(args.before)
    spy = args.py_spy
    rows = []
    print(json.dumps({"machine": f"{os.cpu_count()} cores", "load_1min": round(os.getloadavg()[0], 2)}), flush=True)
    try:
        for i in range(max(1, args.repeat)):
            for name, tree in ([(f"before {short}", code)] if code is not None else []) + [("current", None)]:
                if spy:
                    p = Path(spy)
                    args.py_spy = str(p.with_name(f"{p.stem}.{name.split()[0]}{i + 1}{p.suffix}"))
                row = run(args, tree, name)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if code is not None:
            shutil.rmtree(code, ignore_errors=True)
    print(json.dumps(summary(rows)), flush=True)


def summary(rows: list[dict]) -> dict:
    """Per variant the median of each figure over its runs; ratios current / before."""
    import statistics

    figures = ("p50_ms", "p99_ms", "p999_ms", "publisher_cpu_us_per_bus_msg", "publisher_cpu_share",
               "publisher_l2_in_per_s", "frames_per_socket_write")
    out: dict = {}
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        out[name] = {f: (round(statistics.median(v), 3) if (v := [r[f] for r in mine if r[f] is not None]) else None)
                     for f in figures}
        out[name]["runs"] = len(mine)
    before = next((n for n in out if n.startswith("before")), None)
    if before is not None and "current" in out:
        out["ratio_current_to_before"] = {
            f: (round(out["current"][f] / out[before][f], 3) if out["current"][f] is not None and out[before][f]
                else None) for f in figures}
    return {"summary": out}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
