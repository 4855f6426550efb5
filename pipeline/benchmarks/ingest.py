"""``pipeline bench ingest``: the ingest hot path on a recorded capture, offline.

A capture (shared/docs/capture-format.md) is loaded into memory first; then every
inbound WebSocket frame goes, in one process and in capture order, through what the
ingest process does with it (ingest/runner.py's frame handler, ingest/feed.py):

    adapter.parse_frame -> FeedBooks.receive: BookSync (venue sequencing rule) -> ViewBook apply + view delta
    -> BookWriter.write_view_doubles (a real shared-memory segment, seqlock) -> BusPublisher
    (msgpack encode + send on real ZeroMQ PUB sockets, ipc, with a live subscriber in
    another process draining both)

Every frame goes through the feed's one entry point, as in the runner:
``feed.receive(feed.parse_frame(frame, recv_ns))`` (lists of events included).
REST depth bodies recorded in the capture are fed, at their place in the capture, to
``adapter.parse_snapshot`` and ``FeedBooks.receive``: the books sync exactly as
they would live (exchange-protocols.md sections 1-2; Binance family only, the venues
whose snapshot comes from REST).  GC settings are the ingest's (ingest/main.py).

Two passes over the same frames, each with fresh books:
- the timed pass, uninstrumented: ``messages``, ``seconds``, ``msgs_per_s``,
  ``level_changes_per_s``, ``cpu_us_per_msg`` (process CPU, including ZeroMQ's I/O
  thread) and ``main_thread_cpu_us_per_msg`` come from it.  On a loaded machine the CPU
  figures are the ones to compare: wall time there measures the neighbours too;
- an instrumented pass: ``perf_counter`` around each stage (parse; sync + book apply +
  view delta + building the bus message; shared-memory write; bus encode + send), the
  measured cost of one timer read subtracted; ``stages_us`` (us per message, averaged
  over all messages) comes from it.  Instrumentation slows the pass, so its stages add
  up to about, not exactly, the timed pass's us per message.

``messages`` counts every inbound WebSocket frame (depth, trades, bookTicker, anything
else the capture holds); ``frames`` breaks it down by kind.
"""

from __future__ import annotations

import gc
import gzip
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import click

from pipeline.book import BOOK_IMPLEMENTATION

CAPTURE_FORMAT = "pipeline-capture/1"
REST_ADAPTERS = ("binance", "binance_futures")

# The subscriber process: one SUB socket connected to both PUB endpoints, draining.
# It answers the probes (so the parent knows both subscriptions are through) and
# prints how many messages it got at each end marker.
DRAIN = r"""
import sys, zmq
s = zmq.Context().socket(zmq.SUB)
s.setsockopt(zmq.RCVHWM, 0)
s.setsockopt(zmq.SUBSCRIBE, b"")
for ep in sys.argv[1:]:
    s.connect(ep)
print("connected", flush=True)
probes, n = set(), 0
while True:
    topic = s.recv()
    s.recv()
    if topic[:1] == b"\xfe":
        if topic[:6] == b"\xfeprobe":
            probes.add(topic)
            if len(probes) == 2:
                print("ready", flush=True)
                probes.add(b"done")
        elif topic == b"\xfeend":
            print(n, flush=True)
            n = 0
        elif topic == b"\xfequit":
            break
        continue
    n += 1
"""


class BenchError(click.ClickException):
    """A capture or option this benchmark cannot run."""


@dataclass
class Capture:
    """A capture in memory: ``items`` in capture order, each a ws frame (bytes) or a
    REST depth body as (symbol, body bytes)."""

    header: dict
    adapter: str
    symbols: list[str]
    items: list = field(default_factory=list)
    ws_frames: int = 0
    rest_bodies: int = 0


def _depth_symbol(url: str) -> str | None:
    """Symbol of a REST depth request URL (``.../depth?symbol=BTCUSDT&limit=1000``), else None."""
    parts = urlsplit(url)
    if not parts.path.rstrip("/").endswith("/depth"):
        return None
    sym = parse_qs(parts.query).get("symbol")
    return sym[0].upper() if sym else None


def load_capture(path: str, adapter: str | None = None) -> Capture:
    """Read a capture into memory. Raises BenchError for a file that is not one."""
    opener = gzip.open if path.endswith(".gz") else open
    items: list = []
    symbols: dict[str, None] = {}
    ws = rest = 0
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            try:
                header = json.loads(fh.readline())
            except ValueError as exc:
                raise BenchError(f"{path}: no capture header: {exc}") from None
            if not isinstance(header, dict) or header.get("format") != CAPTURE_FORMAT:
                raise BenchError(f"{path}: not a {CAPTURE_FORMAT} capture")
            for n, line in enumerate(fh, start=2):
                if not line.strip():
                    continue
                try:
                    ev = json.loads(line)
                    src, data = ev["src"], ev["data"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise BenchError(f"{path} line {n}: not a capture event: {exc}") from None
                if src == "ws":
                    frame = data.encode()
                    items.append(frame)
                    ws += 1
                    # combined-stream name -> symbol (Binance family: "<symbol lowercase>@<stream>")
                    if frame.startswith(b'{"stream":"'):
                        at = frame.find(b"@", 11)
                        if at > 0:
                            symbols.setdefault(frame[11:at].decode("ascii", "replace").upper())
                elif src == "rest":
                    sym = _depth_symbol(ev.get("url", ""))
                    if sym is not None:
                        items.append((sym, data.encode()))
                        symbols.setdefault(sym)
                        rest += 1
    except OSError as exc:
        raise BenchError(f"cannot read capture: {exc}") from None
    name = adapter or header.get("adapter")
    if name not in REST_ADAPTERS:
        raise BenchError(f"adapter {name!r}: bench ingest replays REST-snapshot venues ({', '.join(REST_ADAPTERS)})")
    syms = list(header.get("symbols") or symbols)
    if not syms:
        raise BenchError(f"{path}: no symbols found in the capture")
    return Capture(header, name, syms, items, ws, rest)


# ----------------------------------------------------------------------- the bus
class Bus:
    """Two real PUB sockets (pipeline/bus.py settings) and a draining subscriber process."""

    def __init__(self):
        import zmq

        from pipeline import bus

        self.zmq = zmq
        self.dir = tempfile.mkdtemp(prefix="l2pbench", dir="/tmp")
        self.endpoints = (f"ipc://{self.dir}/trades.sock", f"ipc://{self.dir}/l2.sock")
        self.ctx = zmq.Context()
        self.trades = bus.make_pub(self.ctx, self.endpoints[0])
        self.l2 = bus.make_pub(self.ctx, self.endpoints[1])
        self.drain = subprocess.Popen([sys.executable, "-c", DRAIN, *self.endpoints], stdout=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, text=True)
        self._expect("connected", 10.0)
        deadline = time.monotonic() + 10.0
        while True:  # PUB/SUB: send probes until the subscriber has seen one on each socket
            self.trades.send_multipart([b"\xfeprobe-t", b""])
            self.l2.send_multipart([b"\xfeprobe-l", b""])
            if self._readable(0.02):
                self._expect("ready", 1.0)
                break
            if time.monotonic() > deadline:
                raise BenchError("the bus subscriber did not connect within 10 s")

    def _readable(self, timeout: float) -> bool:
        return bool(select.select([self.drain.stdout], [], [], timeout)[0])

    def _expect(self, word: str, timeout: float) -> str:
        if not self._readable(timeout):
            raise BenchError(f"bus subscriber: no {word!r} within {timeout} s")
        line = self.drain.stdout.readline().strip()
        if word and line != word:
            raise BenchError(f"bus subscriber said {line!r}, expected {word!r}")
        return line

    def delivered(self, timeout: float = 30.0) -> int:
        """Messages the subscriber received since the last call (waits until it has drained)."""
        self.l2.send_multipart([b"\xfeend", b""])
        return int(self._expect("", timeout))

    def close(self) -> None:
        from pipeline import bus

        try:
            self.l2.send_multipart([b"\xfequit", b""])
            self.drain.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.drain.kill()
            self.drain.wait()
        for sock in (self.trades, self.l2):
            sock.close(linger=0)
        self.ctx.term()
        for ep in self.endpoints:
            bus.unlink_ipc(ep)
        try:
            os.rmdir(self.dir)
        except OSError:
            pass


# --------------------------------------------------------------------- the passes
class Stages:
    """perf_counter totals and call counts per stage, for the instrumented pass."""

    def __init__(self):
        self.parse = self.handlers = self.shm = self.bus = 0.0
        self.n_parse = self.n_handlers = self.n_shm = self.n_bus = 0

    def wrap(self, obj, name: str, stage: str) -> None:
        """Time ``obj.name`` into ``stage`` (an instance attribute shadows the method)."""
        fn = getattr(obj, name)
        pc = time.perf_counter
        count = "n_" + stage

        def timed(*a):
            t = pc()
            fn(*a)
            setattr(self, stage, getattr(self, stage) + pc() - t)
            setattr(self, count, getattr(self, count) + 1)

        setattr(obj, name, timed)

    def per_message_us(self, n: int) -> dict:
        """us per message by stage, what the timers themselves cost taken out.

        ``c``: one timer pair as seen inside a stage; ``w``: a call through a timed
        wrapper, as seen from the enclosing handler timer (both measured here).
        """
        c, w = _timer_costs()
        shm = self.shm - self.n_shm * c
        bus = self.bus - self.n_bus * c
        parse = self.parse - self.n_parse * c
        book = self.handlers - self.n_handlers * c - shm - bus - (self.n_shm + self.n_bus) * w
        n = max(n, 1)
        return {k: round(max(v, 0.0) / n * 1e6, 3) for k, v in
                (("parse", parse), ("sync_book", book), ("shm_write", shm), ("bus_send", bus))}


def _timer_costs() -> tuple[float, float]:
    """(timer pair, timed-wrapper call) costs in seconds, best of 5 runs of 20,000."""
    pc = time.perf_counter
    probe = Stages()

    class Noop:
        def f(self, *a):
            pass

    obj = Noop()
    probe.wrap(obj, "f", "shm")
    f = obj.f
    c = w = float("inf")
    for _ in range(5):
        acc = 0.0
        t0 = pc()
        for _ in range(20_000):
            t = pc()
            acc += pc() - t
        c = min(c, (pc() - t0) / 20_000)
        t0 = pc()
        for _ in range(20_000):
            f(1, 2, 3)
        w = min(w, (pc() - t0) / 20_000)
    return c, w


def _make_feed(cap: Capture, adapter, writer, publisher):
    from ingest.events import DepthConnected
    from ingest.feed import FeedBooks

    feed = FeedBooks(cap.header.get("exchange", "bench"), adapter, writer, publisher, epoch=1)
    feed.receive(DepthConnected(tuple(cap.symbols)))
    return feed


def run_pass(cap: Capture, adapter, feed, stages: Stages | None = None, record=None) -> dict:
    """Feed every capture item to ``feed`` through its one entry point, as the runner
    does (``feed.receive(feed.parse_frame(frame, recv_ns))``); time it (or its stages).
    ``record``: a raw recorder's ``append`` (ingest/capture.py), called for each frame
    first, as the runner's recording frame handler does.

    The feed's requests (snapshot fetches) are dropped: the capture's REST bodies come
    in order anyway."""
    from ingest.events import BboEvent, DepthDiff, Malformed, TradeEvent, Unknown

    parse, parse_snapshot, receive = feed.parse_frame, adapter.parse_snapshot, feed.receive
    # as the ingest: L2 is written to shm and sent once per batch of depth frames
    # (FeedBooks.flush; the runner's batches are at most DRAIN_BATCH frames)
    flush = feed.flush
    from ingest.wsclient import DRAIN_BATCH
    n = 0
    time_ns = time.time_ns
    by_type: dict[type, int] = {}
    levels = 0
    pc = time.perf_counter
    if stages is not None:  # the shm and bus stages of this feed, timed
        stages.wrap(feed.writer, "write_view_doubles", "shm")
        stages.wrap(feed.publisher, "send_l2", "bus")
        stages.wrap(feed.publisher, "send_trade", "bus")
        stages.wrap(feed.publisher, "flush_l2", "bus")
    c0, m0, t0 = time.process_time(), time.thread_time(), pc()
    try:
        for item in cap.items:
            if type(item) is not bytes:
                sym, body = item
                receive(parse_snapshot(sym, body, time_ns()))
                continue
            if stages is None:
                if record is not None:
                    recv_ns = time_ns()
                    record((recv_ns, "ws", "ws://bench", item))
                    ev = parse(item, recv_ns)
                else:
                    ev = parse(item, time_ns())
                t = type(ev)
                k = t if t is not list else type(ev[0])  # several events in one frame: the first's kind
                by_type[k] = by_type.get(k, 0) + 1
                if t is DepthDiff:
                    levels += len(ev.bids) + len(ev.asks)
                    receive(ev)
                    n += 1
                    if n == DRAIN_BATCH:
                        n = 0
                        flush()
                else:
                    receive(ev)
                continue
            ta = pc()
            ev = parse(item, time_ns())
            tb = pc()
            stages.parse += tb - ta
            stages.n_parse += 1
            t = type(ev)
            k = t if t is not list else type(ev[0])
            by_type[k] = by_type.get(k, 0) + 1
            if t is Malformed or t is Unknown:
                receive(ev)
                continue
            if t is DepthDiff:
                levels += len(ev.bids) + len(ev.asks)
            tb = pc()
            receive(ev)
            if t is DepthDiff:
                n += 1
                if n == DRAIN_BATCH:
                    n = 0
                    flush()
            stages.handlers += pc() - tb
            stages.n_handlers += 1
        flush()
    finally:
        seconds, cpu, main_cpu = pc() - t0, time.process_time() - c0, time.thread_time() - m0
        if stages is not None:
            del feed.writer.write_view_doubles, feed.publisher.send_l2, feed.publisher.send_trade, feed.publisher.flush_l2
    kinds = {"depth": by_type.get(DepthDiff, 0), "trade": by_type.get(TradeEvent, 0), "bbo": by_type.get(BboEvent, 0),
             "unknown": by_type.get(Unknown, 0), "malformed": by_type.get(Malformed, 0)}
    kinds["other"] = sum(by_type.values()) - sum(kinds.values())
    return {"seconds": seconds, "cpu": cpu, "main_cpu": main_cpu, "levels": levels, "frames": kinds}


def _books_json(feed, reader) -> dict:
    """Final full books (best first) and the shared-memory views, for checks."""
    out = {}
    for sym, f in feed.feeds.items():
        snap = reader.read(sym)
        out[sym] = {
            "update_id": f.sync.book_id, "state": f.sync.book_state.name.lower(),
            "bids": [[p, s] for p, s in zip(reversed(f.book.bids.prices), reversed(f.book.bids.sizes))],
            "asks": [[p, s] for p, s in zip(f.book.asks.prices, f.book.asks.sizes)],
            "shm": {"update_id": snap.update_id, "state": snap.state.name.lower(),
                    "bids": snap.bids.tolist(), "asks": snap.asks.tolist()},
        }
    return out


def _recorded_pass(cap: Capture, adapter, writer, publisher, record_dir: str) -> dict:
    """One timed pass with raw recording on ([sinks.raw]): the recorder's thread compresses and
    writes while the pass runs; its last flush and close are inside the measured CPU."""
    from ingest.capture import CaptureWriter, RawCaptureConfig

    rec = CaptureWriter(RawCaptureConfig(dir=record_dir), cap.header.get("exchange", "bench"), cap.adapter)
    rec.start()
    feed = _make_feed(cap, adapter, writer, publisher)
    c0, m0 = time.process_time(), time.thread_time()
    r = run_pass(cap, adapter, feed, record=rec.append)
    rec.close()
    r["cpu"], r["main_cpu"], r["bytes"] = time.process_time() - c0, time.thread_time() - m0, rec.bytes
    return r


def run_bench(path: str, adapter_name: str | None = None, depth: int = 50, repeat: int = 1, stages: bool = True,
              dump_books: str | None = None, record_dir: str | None = None) -> dict:
    """Load ``path``, run the timed pass(es) and the instrumented pass; return the report.
    With ``record_dir``, as many passes again with raw recording on, alternating with the plain ones."""
    from ingest import adapters
    from ingest.feed import BusPublisher
    from pipeline.config import ExchangeConfig
    from pipeline.shm import NAMES_DIR, BookReader, BookWriter, ShmSpace

    t_load = time.perf_counter()
    cap = load_capture(path, adapter_name)
    t_load = time.perf_counter() - t_load
    cfg = ExchangeConfig(name=cap.header.get("exchange") or cap.adapter, adapter=cap.adapter,
                         symbols=tuple(cap.symbols), depth=depth)
    adapter = adapters.create(cfg)
    names = tempfile.mkdtemp(prefix="l2pbench", dir="/tmp")  # where the segment's name is published
    prefix = ShmSpace(f"l2pbench{os.getpid()}", f"{names}/{NAMES_DIR}")
    writer = BookWriter(prefix, cfg.name, cap.symbols, depth, epoch=1)
    bus = None
    gc_threshold = gc.get_threshold()
    try:
        bus = Bus()
        publisher = BusPublisher(bus.trades, bus.l2, batch=True)
        # as in the ingest process (ingest/main.py): start-up objects frozen, young GC less often
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        runs, feed, recorded = [], None, []
        for _ in range(repeat):
            feed = _make_feed(cap, adapter, writer, publisher)
            r = run_pass(cap, adapter, feed)
            r["delivered"] = bus.delivered()
            runs.append(r)
            if record_dir:
                recorded.append(_recorded_pass(cap, adapter, writer, publisher, record_dir))
                bus.delivered()
        report_feed = feed
        gaps = {s: f.counts.gaps for s, f in report_feed.feeds.items()}
        states = {s: f.sync.book_state.name.lower() for s, f in report_feed.feeds.items()}
        l2_sent = sum(f.counts.l2_seq for f in report_feed.feeds.values())
        trades_sent = sum(f.counts.trade_seq for f in report_feed.feeds.values())
        books = None
        if dump_books:
            with BookReader.open(prefix, cfg.name) as reader:
                books = _books_json(report_feed, reader)
        stage_report = None
        if stages:
            st = Stages()
            ri = run_pass(cap, adapter, _make_feed(cap, adapter, writer, publisher), st)
            bus.delivered()
            stage_report = st.per_message_us(cap.ws_frames)
            stage_report["total_instrumented"] = round(ri["seconds"] / max(cap.ws_frames, 1) * 1e6, 3)
    finally:
        gc.unfreeze()
        gc.set_threshold(*gc_threshold)
        if bus is not None:
            bus.close()
        writer.close(unlink=True)
        shutil.rmtree(names, ignore_errors=True)
    if dump_books:
        with open(dump_books, "w") as fh:
            json.dump(books, fh)
    n = cap.ws_frames
    secs = [r["seconds"] for r in runs]
    med = statistics.median(secs)
    best = runs[secs.index(min(secs))]
    report = {
        "capture": path, "adapter": cap.adapter, "symbols": len(cap.symbols), "depth": depth,
        "messages": n, "seconds": round(med, 4),
        "msgs_per_s": round(n / med) if med > 0 else None,
        "level_changes_per_s": round(runs[0]["levels"] / med) if med > 0 else None,
        "levels_per_depth_msg": round(runs[0]["levels"] / max(runs[0]["frames"]["depth"], 1), 2),
        "cpu_us_per_msg": round(statistics.median(r["cpu"] for r in runs) / max(n, 1) * 1e6, 3),
        "main_thread_cpu_us_per_msg": round(statistics.median(r["main_cpu"] for r in runs) / max(n, 1) * 1e6, 3),
        "us_per_msg": round(med / max(n, 1) * 1e6, 3),
        "frames": runs[0]["frames"], "rest_snapshots": cap.rest_bodies,
        "bus": {"l2_sent": l2_sent, "trades_sent": trades_sent, "delivered_to_subscriber": runs[-1]["delivered"]},
        "gaps": gaps, "states": states,
        "stages_us": stage_report or {},
        "stages_method": ("separate instrumented pass: perf_counter around parse, on_diff/on_trade, "
                          "BookWriter.write_view_doubles and BusPublisher.send_*; timer cost subtracted; "
                          "sync_book = sync + book apply + view delta + message build"),
        "load_seconds": round(t_load, 2), "python": sys.version.split()[0],
        "book": BOOK_IMPLEMENTATION,
    }
    if recorded:
        cpu = statistics.median(r["cpu"] for r in recorded) / max(n, 1) * 1e6
        main = statistics.median(r["main_cpu"] for r in recorded) / max(n, 1) * 1e6
        rsec = statistics.median(r["seconds"] for r in recorded)
        report["recording"] = {
            "msgs_per_s": round(n / rsec) if rsec > 0 else None,
            "wall_ratio": round(rsec / med, 3) if med > 0 else None,  # pass time with / without (GIL shared with the writer)
            "cpu_us_per_msg": round(cpu, 3), "main_thread_cpu_us_per_msg": round(main, 3),
            "cpu_ratio": round(cpu / report["cpu_us_per_msg"], 3) if report["cpu_us_per_msg"] else None,
            "main_thread_cpu_ratio": (round(main / report["main_thread_cpu_us_per_msg"], 3)
                                      if report["main_thread_cpu_us_per_msg"] else None),
            "gzip_bytes_per_msg": round(recorded[0]["bytes"] / max(n, 1), 1), "dir": record_dir,
        }
    if repeat > 1:
        report["runs_msgs_per_s"] = [round(n / s) for s in secs]
        report["best_msgs_per_s"] = round(n / best["seconds"])
    return report


def _print_human(r: dict) -> None:
    click.echo(f"capture {r['capture']} ({r['adapter']}, {r['symbols']} symbols, depth {r['depth']})")
    click.echo(f"book: {r['book']}")
    f = r["frames"]
    click.echo(f"messages {r['messages']:,} (depth {f['depth']:,}, trades {f['trade']:,}, bbo {f['bbo']:,}, "
               f"unknown {f['unknown']:,}, malformed {f['malformed']:,}) in {r['seconds']:.3f} s")
    click.echo(f"  {r['msgs_per_s']:,} msgs/s  {r['level_changes_per_s']:,} level changes/s  "
               f"{r['us_per_msg']} us/msg wall")
    click.echo(f"  CPU {r['cpu_us_per_msg']} us/msg (process, incl. ZeroMQ's I/O thread), "
               f"{r['main_thread_cpu_us_per_msg']} us/msg (main thread)")
    if r.get("runs_msgs_per_s"):
        click.echo(f"  runs: {', '.join(f'{x:,}' for x in r['runs_msgs_per_s'])} msgs/s (median above)")
    if r["stages_us"]:
        s = r["stages_us"]
        click.echo(f"  us/msg by stage: parse {s['parse']}  sync+book {s['sync_book']}  shm write {s['shm_write']}  "
                   f"bus encode+send {s['bus_send']}  (instrumented pass total {s['total_instrumented']})")
        click.echo(f"  ({r['stages_method']})")
    b = r["bus"]
    click.echo(f"  bus: {b['l2_sent']:,} L2 + {b['trades_sent']:,} trade messages, subscriber got "
               f"{b['delivered_to_subscriber']:,}; gaps {sum(r['gaps'].values())}")
    if "recording" in r:
        rec = r["recording"]
        click.echo(f"  with raw recording: {rec['msgs_per_s']:,} msgs/s (time x{rec['wall_ratio']}), "
                   f"{rec['cpu_us_per_msg']} us CPU/msg (x{rec['cpu_ratio']}), main thread "
                   f"{rec['main_thread_cpu_us_per_msg']} us/msg (x{rec['main_thread_cpu_ratio']}), "
                   f"{rec['gzip_bytes_per_msg']} gzip bytes/msg")


@click.command(name="ingest")
@click.option("--capture", "capture", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A pipeline-capture/1 file (e.g. from `pipeline bench gen-capture`).")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
@click.option("--exchange-adapter", "adapter", type=click.Choice(REST_ADAPTERS), default=None,
              help="Adapter to parse with (default: the capture header's).")
@click.option("--depth", type=click.IntRange(min=1), default=50, show_default=True, help="View depth (shm, bus).")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Timed passes (fresh books each); the median is reported.")
@click.option("--no-stages", is_flag=True, help="Skip the instrumented pass.")
@click.option("--dump-books", type=click.Path(dir_okay=False), default=None,
              help="Write the final books and shared-memory views (JSON) here, for checks.")
@click.option("--record", "record_dir", type=click.Path(file_okay=False), default=None,
              help="Also time passes with raw recording ([sinks.raw]) into this directory; report both CPU figures.")
def command(capture: str, as_json: bool, adapter: str | None, depth: int, repeat: int, no_stages: bool,
            dump_books: str | None, record_dir: str | None) -> None:
    """Replay a capture through the real adapter, sync, book, shm and bus; report msgs/s."""
    report = run_bench(capture, adapter, depth, repeat, not no_stages, dump_books, record_dir)
    if as_json:
        click.echo(json.dumps(report))
    else:
        _print_human(report)
