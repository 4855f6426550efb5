"""`pipeline bench chaos`: the fault-injection run of issue 19, bounded in time, on loopback.

sim (``--rate`` updates/s on ``--symbols`` symbols) -> ingest -> publisher and CSV sink, as real
processes (pipeline/benchmarks/e2e_stack.py), with two checkers in this process:

- a ZeroMQ recorder: every trade on the bus (by symbol and venue id), and the seq of every
  trade and L2 message per (symbol, epoch): a break inside one epoch is a loss on the bus;
- a WebSocket delta checker: one client subscribed to every book in ``deltas`` mode, checking
  the documented rule (docs/websocket.md: each ``order_book_l2_update`` is the next seq of the
  epoch of the last snapshot), reconnecting when the publisher is killed.

Then, in turn: every sim fault (docs/sim.md), each with what brings it out (a dropped diff makes
the ingest fetch the faulted snapshot), and kill -9 of the ingest, the publisher and the sink,
each started again at once (as supervisord would).  At the end the market is paused and:

- every book in shared memory equals the sim's REST book (top ``depth`` levels);
- every trade the recorder saw on the bus is in the CSV trades files, once;
- the counters add up: no seq break inside an epoch on the bus or on the WebSocket, the CSV
  sink's ``trades_lost`` is 0, malformed frames were counted.

Figures printed beside the issue's regression bar (kill -9 recovery 1.5-2.7 s with a new
epoch, 224,288 of 224,288 bus trades in the CSV, ~2.0 M L2 messages and 1.93 M WebSocket
deltas with no seq break, dropped diffs recovered in a median 23 ms).  Exit status 1 when a
check fails.  One run on a shared box: the times are figures, not assertions.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import statistics
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import click

from pipeline.benchmarks.e2e_stack import EXCHANGE, PIPELINE, Stack, StackError, symbol_names, wait_for
from pipeline.shm import BookReader

BAR = {  # the regression bar (issue 19, first paragraph)
    "kill_recovery_s": "1.5-2.7",
    "bus_trades_in_csv": "224,288 of 224,288",
    "l2_messages": "~2.0 M, no seq break",
    "ws_deltas": "1.93 M, no seq break",
    "drop_recovery_ms": "median 23",
}


def sim_fault(port: int, **params) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/sim/fault", data=json.dumps(params).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


# ------------------------------------------------------------------ checkers

class BusRecorder(threading.Thread):
    """Every trade on the bus, and seq breaks inside an epoch (trades and L2), per symbol."""

    def __init__(self, stack: Stack):
        super().__init__(name="bus-recorder", daemon=True)
        self.stack = stack
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.trades: set[tuple[str, str]] = set()
        self.trade_msgs = 0
        self.l2_msgs = 0
        self.trade_breaks = 0
        self.l2_breaks = 0
        self.epochs: set[int] = set()
        self.stale_at: dict[str, float] = {}   # symbol -> when its last non-live L2 message came
        self.recovered: dict[str, list[tuple[float, float]]] = defaultdict(list)  # (stale at, live again at)

    def run(self) -> None:
        import zmq

        from pipeline import bus, schema
        ctx = zmq.Context()
        reader = bus.Reader.for_config(ctx, self.stack.config, [EXCHANGE], kinds=(schema.TRADE, schema.L2))
        last_trade: dict[str, tuple[int, int]] = {}
        last_l2: dict[str, tuple[int, int]] = {}

        def on_trade(_topic: bytes, payload: bytes) -> None:
            t = schema.decode_trade(payload)
            self.trade_msgs += 1
            self.trades.add((t.symbol, t.trade_id))
            self.epochs.add(t.epoch)
            prev = last_trade.get(t.symbol)
            if prev is not None and prev[0] == t.epoch and t.seq != prev[1] + 1:
                self.trade_breaks += 1
            last_trade[t.symbol] = (t.epoch, t.seq)

        def on_l2(_topic: bytes, payload: bytes) -> None:
            m = schema.decode_l2(payload)
            self.l2_msgs += 1
            if m.state != "live":
                self.stale_at.setdefault(m.symbol, time.monotonic())
            elif m.symbol in self.stale_at:
                self.recovered[m.symbol].append((self.stale_at.pop(m.symbol), time.monotonic()))
            prev = last_l2.get(m.symbol)
            if prev is not None and prev[0] == m.epoch and m.seq != prev[1] + 1:
                self.l2_breaks += 1
            last_l2[m.symbol] = (m.epoch, m.seq)

        reader.on_kinds({schema.TRADE: on_trade, schema.L2: on_l2})
        self.ready.set()
        try:
            while not self.stop.is_set():
                if reader.wait(0.1):
                    reader.read(max_l2=64)
        finally:
            reader.close()
            ctx.term()


class WsChecker(threading.Thread):
    """One WebSocket client in deltas mode on every book, reconnecting when the publisher dies."""

    def __init__(self, port: int, symbols: list[str]):
        super().__init__(name="ws-checker", daemon=True)
        self.port, self.symbols = port, symbols
        self.stop = threading.Event()
        self.deltas = 0
        self.snapshots = 0
        self.breaks = 0
        self.connections = 0
        self.trades = 0

    def run(self) -> None:
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        while not self.stop.is_set():
            try:
                with connect(f"ws://127.0.0.1:{self.port}/", open_timeout=5, max_size=None) as ws:
                    self.connections += 1
                    ws.recv(timeout=5)  # welcome
                    ws.send(json.dumps({"op": "subscribe", "exchange": EXCHANGE, "symbols": self.symbols,
                                        "channels": ["trades", "book"], "mode": "deltas"}))
                    at: dict[str, tuple[int, int]] = {}
                    while not self.stop.is_set():
                        try:
                            raw = ws.recv(timeout=0.5)
                        except TimeoutError:
                            continue
                        m = json.loads(raw)
                        kind = m.get("kind")
                        if kind == "order_book_l2":
                            self.snapshots += 1
                            at[m["symbol"]] = (m["epoch"], m["seq"])
                        elif kind == "order_book_l2_update":
                            self.deltas += 1
                            prev = at.get(m["symbol"])
                            if prev is None or prev != (m["epoch"], m["seq"] - 1):
                                self.breaks += 1
                            at[m["symbol"]] = (m["epoch"], m["seq"])
                        elif kind == "trade":
                            self.trades += 1
            except (OSError, WebSocketException, TimeoutError):
                time.sleep(0.2)  # the publisher is down (killed): connect again


# ------------------------------------------------------------------ the run

def _book_matches_rest(stack: Stack, reader: BookReader, sym: str, depth: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.sim_port}/api/v3/depth?symbol={sym}&limit=1000",
                                timeout=10) as r:
        rest = json.loads(r.read())
    bids = [[float(p), float(q)] for p, q in rest["bids"][:depth]]
    asks = [[float(p), float(q)] for p, q in rest["asks"][:depth]]
    view = reader.read(sym, depth=depth)
    return view.state.name == "LIVE" and view.bids.tolist() == bids and view.asks.tolist() == asks


def _csv_trades(csv_dir: Path) -> list[tuple[str, str]]:
    out = []
    for p in sorted(csv_dir.glob("*_trades_*.csv*")):
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt", newline="") as fh:
            out += [(row["symbol"], row["id"]) for row in csv.DictReader(fh)]
    return out


class Chaos:
    def __init__(self, stack: Stack, recorder: BusRecorder, log):
        self.stack, self.recorder, self.log = stack, recorder, log
        self.figures: dict = defaultdict(list)

    def reader(self) -> BookReader:
        return BookReader.open(self.stack.config.shm_prefix, EXCHANGE)

    def _states(self) -> dict[str, tuple[str, int]]:
        with self.reader() as r:
            return {s: (r.read(s, depth=1).state.name, r.stats(s)["resyncs"]) for s in self.stack.symbols}

    def drop_and_time(self, sym: str, what: str, resyncs: int = 1) -> tuple[float, float]:
        """Drop one diff of ``sym``; (seconds from the request, seconds from the book's stale
        message) until the bus carries it live again (``resyncs`` times: a frozen book takes two)."""
        rec = self.recorder
        n = len(rec.recovered[sym])
        t0 = time.monotonic()
        sim_fault(self.stack.sim_port, name="drop_diff", symbol=sym)
        wait_for(lambda: len(rec.recovered[sym]) >= n + resyncs, 60, f"{sym} live again after {what}", 0.002)
        stale, live = rec.recovered[sym][n]
        last = rec.recovered[sym][n + resyncs - 1][1]
        return last - t0, live - stale

    def all_live(self, timeout: float = 60) -> None:
        wait_for(lambda: all(s == "LIVE" for s, _ in self._states().values()), timeout, "every book live", 0.02)

    def faults(self) -> None:
        port, syms = self.stack.sim_port, self.stack.symbols
        for i in range(20):  # plain drops: the recovery time of a gap
            since_request, since_stale = self.drop_and_time(syms[i % len(syms)], "a dropped diff")
            self.figures["drop_recovery_s"].append(since_stale)
            self.figures["drop_request_to_live_s"].append(since_request)
            time.sleep(0.2)
        self.log(f"  drop_diff x20: stale -> live median {statistics.median(self.figures['drop_recovery_s']) * 1e3:.0f} ms"
                 f" (request -> live {statistics.median(self.figures['drop_request_to_live_s']) * 1e3:.0f} ms)")
        sent = sum(sim_fault(port, name="malformed", kind=kind).get("connections", 1)
                   for kind in ("depth", "trade", "any"))

        def malformed() -> int:
            with self.reader() as r:
                return r.process_stats()["malformed_frames"] + sum(r.stats(s)["malformed"] for s in syms)
        try:
            wait_for(lambda: malformed() >= sent, 10, "malformed frames counted")
        except StackError:
            pass
        self.figures["malformed_sent"], self.figures["malformed_counted"] = sent, malformed()
        self.log(f"  malformed depth, trade, any: {sent} frames sent, {self.figures['malformed_counted']} counted")
        for name, args in (("rest_status", {"status": 500}), ("rest_status", {"status": 429}),
                           ("rest_delay", {"seconds": 1.5}), ("rest_empty", {}), ("rest_oversize", {}),
                           ("rest_ahead", {"ids": 10**9})):
            sim_fault(port, name=name, count=1, **args)
            # a snapshot ahead of the stream goes live, then is caught frozen (3 s of skips): two resyncs
            took, _ = self.drop_and_time(syms[0], name, 2 if name == "rest_ahead" else 1)
            self.figures[f"{name}_recovery_s"].append(took)
            self.log(f"  {name} {args or ''} + drop_diff: live again after {took:.2f} s")
            time.sleep(0.3)
        sim_fault(port, name="disconnect")
        t0 = time.monotonic()
        time.sleep(0.2)
        self.all_live()
        self.log(f"  disconnect: every book live after {time.monotonic() - t0:.2f} s")
        sim_fault(port, name="stall", seconds=3)
        time.sleep(3.5)
        self.all_live()
        self.log("  stall 3 s: every book live after it")
        sim_fault(port, name="disconnect_every", seconds=2)
        samples = []
        t_end = time.monotonic() + 8
        while time.monotonic() < t_end:
            samples.append(all(s == "LIVE" for s, _ in self._states().values()))
            time.sleep(0.1)
        sim_fault(port, name="disconnect_every", seconds=0)
        self.figures["storm_live"] = sum(samples) / len(samples)
        self.log(f"  disconnect every 2 s for 8 s: every book live {self.figures['storm_live']:.0%} of the time")
        self.all_live()

    def kills(self) -> None:
        st = self.stack
        for name in ("ingest", "publisher", "sink-csv"):
            with self.reader() as r:
                epoch = r.epoch
            p = st.procs[name]
            t0 = time.monotonic()
            os.kill(p.pid, signal.SIGKILL)
            p.wait(10)
            base = PIPELINE + ["--config", str(st.config_path)]
            if name == "ingest":
                st.start_process(name, base + ["ingest", EXCHANGE])

                def recovered():
                    with self.reader() as r:
                        return r.epoch != epoch and all(r.read(s, depth=1).state.name == "LIVE" for s in st.symbols)
                wait_for(recovered, 60, "the ingest back with a new epoch, every book live", 0.02)
            elif name == "publisher":
                ready = st.workdir / "publisher.port"
                ready.unlink(missing_ok=True)
                st.start_process(name, base + ["publish", "--port", str(st.ws_port), "--ready-file", str(ready)])
                wait_for(lambda: ready.exists() and ready.read_text().strip(), 60, "the publisher back")
            else:
                stats = st.run_dir / "sink-csv.stats.json"
                mtime = stats.stat().st_mtime_ns if stats.exists() else 0
                st.start_process(name, base + ["sink", "csv"])
                wait_for(lambda: stats.exists() and stats.stat().st_mtime_ns > mtime, 60, "the sink back")
            took = time.monotonic() - t0
            self.figures["kill_recovery_s"].append((name, took))
            self.log(f"  kill -9 {name}: back after {took:.2f} s (restarted at once)")
            time.sleep(2)


def run(rate: float, n_symbols: int, depth: int, soak: float = 3.0, log=print) -> tuple[dict, list[str]]:
    """The whole run; returns (figures, failed checks)."""
    failures: list[str] = []
    stack = Stack(rate=rate, symbols=symbol_names(n_symbols), depth=depth).start()
    try:
        recorder = BusRecorder(stack)
        recorder.start()
        recorder.ready.wait(10)
        ws = WsChecker(stack.ws_port, stack.symbols)
        ws.start()
        chaos = Chaos(stack, recorder, log)
        t_start = time.monotonic()
        time.sleep(soak)  # steady load first (longer runs: more messages to check)
        log("faults:")
        chaos.faults()
        log("kills:")
        chaos.kills()
        time.sleep(3)
        # the end: a paused market, books compared with REST, the sink stopped (flushed), the CSV read
        sim_fault(stack.sim_port, name="pause")
        with chaos.reader() as r:
            def quiet():
                before = [r.read(s).seq for s in stack.symbols]
                time.sleep(0.6)
                return [r.read(s).seq for s in stack.symbols] == before and all(
                    r.read(s).state.name == "LIVE" for s in stack.symbols)
            wait_for(quiet, 30, "books quiet after the pause", 0.0)
            mismatched = [s for s in stack.symbols if not _book_matches_rest(stack, r, s, depth)]
            stats = {s: r.stats(s) for s in stack.symbols}
        if mismatched:
            failures.append(f"books differ from the sim's REST book: {mismatched}")
        time.sleep(2)  # the last trades through the recorder and the sink
        ws.stop.set()
        recorder.stop.set()
        ws.join(5)
        recorder.join(5)
        elapsed = time.monotonic() - t_start
        stack.stop_process("sink-csv")
        sink_stats = json.loads((stack.run_dir / "sink-csv.stats.json").read_text())
        csv_rows = _csv_trades(stack.workdir / "csv")
        csv_set = set(csv_rows)
        missing = recorder.trades - csv_set
        duplicates = len(csv_rows) - len(csv_set)
        if missing:
            failures.append(f"{len(missing)} bus trades not in the CSV, e.g. {sorted(missing)[:3]}")
        if duplicates:
            failures.append(f"{duplicates} duplicate trades in the CSV")
        if recorder.trade_breaks or recorder.l2_breaks:
            failures.append(f"bus seq breaks inside an epoch: trades {recorder.trade_breaks}, L2 {recorder.l2_breaks}")
        if ws.breaks:
            failures.append(f"{ws.breaks} WebSocket delta seq breaks")
        if sink_stats.get("trades_lost"):
            failures.append(f"CSV sink trades_lost {sink_stats['trades_lost']}")
        if chaos.figures["malformed_counted"] < chaos.figures["malformed_sent"]:
            failures.append(f"malformed frames: {chaos.figures['malformed_sent']} sent, "
                            f"{chaos.figures['malformed_counted']} counted")
        if stack.failed():
            failures.append(f"processes exited: {stack.failed()}")
        figures = dict(chaos.figures)
        figures.update({
            "seconds": round(elapsed, 1), "bus_trades": len(recorder.trades), "csv_trades": len(csv_set),
            "bus_trades_missing_in_csv": len(missing), "csv_duplicates": duplicates,
            "l2_messages": recorder.l2_msgs, "bus_breaks": recorder.trade_breaks + recorder.l2_breaks,
            "ws_deltas": ws.deltas, "ws_snapshots": ws.snapshots, "ws_breaks": ws.breaks,
            "ws_connections": ws.connections, "epochs": len(recorder.epochs), "books_equal_rest": not mismatched,
            "sink_trades_lost": sink_stats.get("trades_lost"),
            "sink_gaps_filled": sink_stats.get("gaps_filled"), "trades_missed_upstream": sum(
                st.get("trades_missed", 0) for st in stats.values()),
            "trades_backfilled_from_rest": sum(st.get("trades_backfilled", 0) for st in stats.values()),
        })
        return figures, failures
    finally:
        stack.close()


@click.command("chaos")
@click.option("--rate", default=3000.0, show_default=True, help="sim updates per second (all symbols)")
@click.option("--symbols", "n_symbols", default=4, show_default=True)
@click.option("--depth", default=20, show_default=True)
@click.option("--soak", default=3.0, show_default=True, help="seconds of steady load before the faults")
@click.option("--json", "as_json", is_flag=True, help="print the figures as JSON")
def command(rate: float, n_symbols: int, depth: int, soak: float, as_json: bool) -> None:
    """Fault injection (issue 19): every sim fault and kill -9 of each process under load; books,
    trades and counters checked at the end.  About two minutes."""
    try:
        figures, failures = run(rate, n_symbols, depth, soak, log=(lambda *_: None) if as_json else print)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"figures": figures, "failures": failures}, default=str))
    else:
        med = statistics.median(figures["drop_recovery_s"]) * 1e3
        med_req = statistics.median(figures["drop_request_to_live_s"]) * 1e3
        kills = ", ".join(f"{n} {s:.2f} s" for n, s in figures["kill_recovery_s"])
        click.echo(f"\n{figures['seconds']} s of chaos at {rate:g} updates/s on {n_symbols} symbols")
        click.echo(f"{'figure':28} {'now':42} issue's bar")
        for name, now, bar in (
                ("kill -9, back after", kills, BAR["kill_recovery_s"] + " s"),
                ("bus trades in the CSV", f"{figures['bus_trades'] - figures['bus_trades_missing_in_csv']:,} of "
                                          f"{figures['bus_trades']:,}", BAR["bus_trades_in_csv"]),
                ("L2 messages on the bus", f"{figures['l2_messages']:,}, {figures['bus_breaks']} breaks",
                 BAR["l2_messages"]),
                ("WebSocket deltas", f"{figures['ws_deltas']:,}, {figures['ws_breaks']} breaks", BAR["ws_deltas"]),
                ("dropped diff recovered", f"median {med:.0f} ms (request->live {med_req:.0f} ms)", BAR["drop_recovery_ms"] + " ms"),
                ("books equal the sim's", str(figures["books_equal_rest"]), "-"),
                ("malformed frames counted", f"{figures['malformed_counted']} of {figures['malformed_sent']} sent",
                 "counted, never applied"),
                ("storm: books live", f"{figures['storm_live']:.0%}", "19.5% (item 4)")):
            click.echo(f"{name:28} {now:42} {bar}")
        click.echo("checks: " + ("all passed" if not failures else "FAILED: " + "; ".join(failures)))
    if failures:
        raise SystemExit(1)
