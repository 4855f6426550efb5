"""Real pipeline processes for the benchmarks: start them on loopback, read their counters, stop them.

`Stack` starts `pipeline sim` (free port), writes a config into a fresh run_dir under /tmp
(short path: ipc socket names are capped near 107 bytes), then `pipeline ingest sim`,
`pipeline publish` (free port) and `pipeline sink csv` as they run in production, each
with its own log file.  Everything is stopped by PID (SIGTERM, then SIGKILL) in
`close()`, which also removes whatever a killed process left in /dev/shm under the
run's prefix, so a benchmark leaves no process and no segment behind
(docs/operations.md, "Processes").

`Sampler` reads the figures the processes already publish: the sim's `/sim/state`
(docs/sim.md), the ingest's counters in shared memory (pipeline/shm.py), the CSV sink's
stats file (docs/csv.md) and CPU/RSS per process from psutil.  Used by
`pipeline bench e2e`, pipeline/benchmarks/live_ingest.py and pipeline/benchmarks/csv_sink.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from pipeline import shards
from pipeline.config import Config, load_config
from pipeline.shm import DEV_SHM, BookReader

PIPELINE = [sys.executable, "-m", "pipeline"]
EXCHANGE = "sim"
WELL_KNOWN = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")


class StackError(RuntimeError):
    """A process of the benchmark did not start (its log tail is in the message)."""


def symbol_names(count: int) -> list[str]:
    """``count`` symbols for the sim: the well-known four first, then S001USDT, S002USDT..."""
    if count < 1:
        raise ValueError(f"expected at least one symbol, got {count}")
    names = list(WELL_KNOWN[:count])
    names += [f"S{i:03d}USDT" for i in range(1, count - len(names) + 1)]
    return names


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until truthy; StackError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except StackError:
            raise
        except Exception as exc:  # noqa: BLE001 - not checkable yet (file missing, segment not created)
            last, value = exc, None
        if value:
            return value
        time.sleep(interval)
    raise StackError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({last})" if last else ""))


def config_text(run_dir: Path, sim_port: int, symbols: list[str], *, depth: int = 20,
                publisher_clients: int = 100, csv: bool = True, processes: int = 1) -> str:
    """The pipeline config of a benchmark run: one exchange on the sim, depth@0ms (one frame per update).

    The REST snapshot holds the sim's whole book (limit 1000, weight 50) up to 20 symbols, so a
    market that walks during a run never leaves the range the snapshot covered (which would
    resync the book, as it must); with more symbols, limit 100 (weight 5) keeps 200 symbols
    inside the sim's weight budget.
    """
    snapshot_limit = 1000 if len(symbols) <= 20 else 100
    text = f"""[pipeline]
run_dir = "{run_dir}"
data_dir = "{run_dir.parent / 'data'}"
log_level = "WARNING"

[exchanges.{EXCHANGE}]
adapter = "binance"
symbols = {json.dumps(symbols)}
depth = {depth}
ws_url = "ws://127.0.0.1:{sim_port}"
rest_url = "http://127.0.0.1:{sim_port}"
depth_stream = "depth@0ms"
snapshot_limit = {snapshot_limit}
{'processes = %d' % processes if processes > 1 else ''}

[publisher]
host = "127.0.0.1"
max_clients = {max(100, publisher_clients + 10)}
"""
    if csv:
        text += f'\n[sinks.csv]\ndir = "{run_dir.parent / "csv"}"\nflush_interval_s = 1.0\n'
    return text


@dataclass
class Stack:
    """One benchmark pipeline: sim -> ingest -> (publisher, CSV sink), real processes on loopback."""

    rate: float
    symbols: list[str]
    publisher: bool = True
    sink: bool = True
    depth: int = 20
    max_clients: int = 100
    seed: int = 7
    processes: int = 1  # ingest processes of the exchange (pipeline/shards.py); named ingest.K when > 1
    ingest_code: Path | None = None  # another checkout's code for the ingest (PYTHONPATH), e.g. an old commit's
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="l2pe", dir="/tmp")))
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)   # stopped on purpose (not a failure)
    sim_port: int = 0
    ws_port: int = 0
    config_path: Path | None = None
    config: Config | None = None

    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"

    @property
    def ingests(self) -> list[str]:
        """The names of the ingest processes: ``ingest``, or ``ingest.K`` per shard."""
        return ["ingest"] if self.processes == 1 else [f"ingest.{k}" for k in range(self.processes)]

    # ------------------------------------------------------------------ start
    def start_process(self, name: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        try:
            p = subprocess.Popen(args, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env)
        finally:
            log.close()
        self.procs[name] = p
        return p

    def failed(self) -> list[str]:
        """Processes that exited without being stopped."""
        return [n for n, p in self.procs.items() if n not in self.stopped and p.poll() is not None]

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait_file(self, name: str, path: Path, timeout: float) -> str:
        def ready():
            p = self.procs[name]
            if p.poll() is not None:
                raise StackError(f"{name} exited with {p.returncode}:\n{self.log_tail(name)}")
            return path.exists() and path.read_text().strip()
        try:
            return wait_for(ready, timeout, f"{name} ready")
        except StackError as exc:
            if "exited" in str(exc):
                raise
            raise StackError(f"{exc}\n{self.log_tail(name)}") from None

    def start(self, live_timeout: float = 60.0) -> "Stack":
        """Start every process and wait until each book is live; stops what started on failure."""
        try:
            self._start(live_timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _start(self, live_timeout: float) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        sim_cfg = self.workdir / "sim.toml"
        sim_cfg.write_text(f'[pipeline]\nrun_dir = "{self.run_dir}"\n\n[exchanges.x]\nadapter = "binance"\nsymbols = ["X"]\n')
        ready = self.workdir / "sim.port"
        self.start_process("sim", PIPELINE + [
            "--config", str(sim_cfg), "sim", "--port", "0", "--symbols", ",".join(self.symbols),
            "--rate", str(self.rate), "--seed", str(self.seed), "--levels", "400", "--ready-file", str(ready)])
        self.sim_port = int(self._wait_file("sim", ready, 20))
        self.config_path = self.workdir / "pipeline.toml"
        self.config_path.write_text(config_text(self.run_dir, self.sim_port, self.symbols, depth=self.depth,
                                                publisher_clients=self.max_clients, csv=self.sink,
                                                processes=self.processes))
        self.config = load_config(self.config_path)
        base = PIPELINE + ["--config", str(self.config_path)]
        # all three at once (their start-up overlaps); the sink backfills trades it was not yet
        # subscribed to from the trade ring, and books start with a snapshot block (docs/csv.md)
        if self.sink:
            self.start_process("sink-csv", base + ["sink", "csv"])
        env = None
        if self.ingest_code is not None:  # its packages first on the path (the venv's own install is a finder after it)
            env = {**os.environ, "PYTHONPATH": str(self.ingest_code)}
        for k, name in enumerate(self.ingests):
            self.start_process(name, base + ["ingest", EXCHANGE] + (["--shard", str(k)] if self.processes > 1 else []),
                               env=env)
        if self.publisher:
            ready = self.workdir / "publisher.port"
            self.start_process("publisher", base + ["publish", "--port", "0", "--ready-file", str(ready)])
            self.ws_port = int(self._wait_file("publisher", ready, 30))
        if self.sink:
            self._wait_file("sink-csv", self.run_dir / "sink-csv.stats.json", 30)
        wait_for(self._all_live, live_timeout, f"{len(self.symbols)} books live", 0.1)

    def _all_live(self) -> bool:
        for name in self.ingests:
            p = self.procs[name]
            if p.poll() is not None:
                raise StackError(f"{name} exited with {p.returncode}:\n{self.log_tail(name)}")
        for s in self.symbols:
            with BookReader.open(self.config.shm_prefix, shards.unit_of(self.config, EXCHANGE, s)) as r:
                if r.read(s, depth=1).state.name != "LIVE":
                    return False
        return True

    # ------------------------------------------------------------------- stop
    def stop_processes(self, names: list[str], timeout: float = 10.0) -> None:
        """SIGTERM to each of ``names`` at once, then wait for each; SIGKILL after ``timeout``."""
        procs = [(n, self.procs[n]) for n in names if n in self.procs]
        for name, p in procs:
            self.stopped.add(name)
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def stop_process(self, name: str, timeout: float = 10.0) -> int | None:
        if name not in self.procs:
            return None
        self.stop_processes([name], timeout)
        return self.procs[name].returncode

    def close(self) -> list[str]:
        """Stop every process (clients first, the sim last); returns the shm segments that had to be removed."""
        core = ("sim", "publisher", "sink-csv", *self.ingests)
        self.stop_processes([n for n in self.procs if n not in core])
        self.stop_processes(["publisher", "sink-csv", *self.ingests])
        self.stop_processes(["sim"])
        cleaned = []
        prefix = self.config.shm_prefix if self.config is not None else None
        if prefix:
            for seg in DEV_SHM.glob(f"{prefix}*"):
                cleaned.append(seg.name)
                seg.unlink(missing_ok=True)
        if os.environ.get("L2P_BENCH_KEEP") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)
        return cleaned

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------- figures

def sim_state(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/state", timeout=10) as r:
        return json.loads(r.read())


@dataclass
class Reading:
    """The counters of one instant: sim, ingest (shared memory), sink, CPU times per process."""

    t: float                      # time.monotonic()
    wall_us: int                  # time.time_ns() // 1000
    sim_updates: int
    sim_trades: int
    sim_measured_rate: float
    sim_slow_dropped: int
    ingest_updates: int
    ingest_trades: int
    ingest_gaps: int
    ingest_resyncs: int
    process_stats: dict
    sink: dict | None
    cpu: dict[str, float]         # name -> user + system seconds
    rss: dict[str, int]           # name -> bytes


class Sampler:
    """Reads a `Stack`'s counters; `extra` processes (clients) are included in CPU and RSS by name."""

    def __init__(self, stack: Stack):
        self.stack = stack
        units = [sx.unit for sx in shards.shard_configs(stack.config.exchange(EXCHANGE))]
        self.readers = {u: BookReader.open(stack.config.shm_prefix, u) for u in units}  # one per ingest process
        self.unit_of = {s: shards.unit_of(stack.config, EXCHANGE, s) for s in stack.symbols}
        self.ps: dict[str, list[psutil.Process]] = {}
        for name, p in stack.procs.items():
            self.watch(name, [p.pid])
        if stack.processes > 1:  # "ingest": every ingest process together (each also under its own name)
            self.watch("ingest", [stack.procs[n].pid for n in stack.ingests])

    def watch(self, name: str, pids: list[int]) -> None:
        self.ps[name] = [psutil.Process(pid) for pid in pids]

    def unwatch(self, name: str) -> None:
        self.ps.pop(name, None)

    def close(self) -> None:
        for r in self.readers.values():
            r.close()

    def process_stats(self) -> dict:
        """The ingest processes' header stats together: lags the largest, counters summed."""
        out: dict = {}
        for r in self.readers.values():
            for k, v in r.process_stats().items():
                out[k] = max(out.get(k, 0), v) if "lag" in k else out.get(k, 0) + v
        return out

    def _usage(self) -> tuple[dict[str, float], dict[str, int]]:
        cpu, rss = {}, {}
        for name, procs in self.ps.items():
            c = r = 0
            for p in procs:
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        c += t.user + t.system
                        r += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            cpu[name], rss[name] = c, r
        return cpu, rss

    def read(self) -> Reading:
        state = sim_state(self.stack.sim_port)
        t, wall = time.monotonic(), time.time_ns() // 1000
        stats = [self.readers[self.unit_of[s]].stats(s) for s in self.stack.symbols]
        sink = None
        if self.stack.sink:
            try:
                sink = json.loads((self.stack.run_dir / "sink-csv.stats.json").read_text())
            except (FileNotFoundError, ValueError):
                sink = None
        cpu, rss = self._usage()
        return Reading(
            t=t, wall_us=wall, sim_updates=state["counters"]["updates"],
            sim_trades=sum(s["trades"] for s in state["symbols"].values()),
            sim_measured_rate=float(state.get("measured_rate") or 0.0),
            sim_slow_dropped=state["counters"].get("slow_clients_dropped", 0),
            ingest_updates=sum(s["updates"] for s in stats), ingest_trades=sum(s["trades"] for s in stats),
            ingest_gaps=sum(s["gaps"] for s in stats), ingest_resyncs=sum(s["resyncs"] for s in stats),
            process_stats=self.process_stats(), sink=sink, cpu=cpu, rss=rss)

    def lag_sample(self) -> tuple[int, int]:
        """(publish_lag_1s_us, publish_lag_max_us) from the ingest's header: the p50 over the last
        second (a trend: a growing backlog shows at once) and the max over the last minute."""
        ps = self.process_stats()
        return ps["publish_lag_1s_us"], ps["publish_lag_max_us"]


def leftovers(stack: Stack) -> dict:
    """Processes still running and shm segments still present after `close()` (both should be empty)."""
    alive = [n for n, p in stack.procs.items() if p.poll() is None]
    segs = [s.name for s in DEV_SHM.glob(f"{stack.config.shm_prefix}*")] if stack.config else []
    return {"processes": alive, "shm": segs}
