"""The README's and docs' snippets, pasted as they are into a running demo, do what the text says.

The demo stack is `pipeline run` of the demo's programs (sim, ingest `sim`, publisher, CSV sink)
under supervisord, as tests/integration/helpers.py starts them, on free ports and a short run_dir.
Each snippet is taken from its markdown file (tests/docs_snippets.py) and changed only to point at
that stack, as a reader's own demo would be found:

- `127.0.0.1:9001` / `--port 9001` -> the stack's publisher port; `127.0.0.1:9100` -> the sim's port;
  `127.0.0.1:50051` -> the stack's gRPC port;
- `.venv/bin/` -> this interpreter's bin directory; `/tmp/sim.port` -> a file of this test;
  `examples/grpc_books.py` -> the repository's (the working directory is the stack's);
- `PIPELINE_CONFIG` names the stack's config for `pipeline` commands, and `examples/print_books.py`
  gets the same config as its argument (its documented form for a config file);
- the working directory is the stack's, so `data/csv/` is the demo's CSV directory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from docs_snippets import RUN, ROOT, by_id
from helpers import PIPELINE, Procs, eventually, feeds, free_port, short_tmpdir, status, write_config
from pipeline.config import DEMO_SYMBOLS

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


class Demo:
    def __init__(self, workdir: Path, config: Path, sim_port: int, publisher_port: int, grpc_port: int = 50051):
        self.workdir, self.config = workdir, config
        self.sim_port, self.publisher_port, self.grpc_port = sim_port, publisher_port, grpc_port
        self.env = {**os.environ, "PIPELINE_CONFIG": str(config), "PYTHONUNBUFFERED": "1"}

    def adapt(self, text: str, sim_port: int | None = None, ready_file: Path | None = None) -> str:
        text = text.replace("127.0.0.1:9001", f"127.0.0.1:{self.publisher_port}")
        text = text.replace("--port 9001", f"--port {self.publisher_port}")
        text = text.replace("127.0.0.1:9100", f"127.0.0.1:{sim_port or self.sim_port}")
        text = text.replace("127.0.0.1:50051", f"127.0.0.1:{self.grpc_port}")
        text = text.replace(".venv/bin/", f"{BIN}/")
        text = text.replace("examples/print_books.py", f"{ROOT}/examples/print_books.py {self.config}")
        text = text.replace("examples/grpc_books.py", f"{ROOT}/examples/grpc_books.py")
        if ready_file is not None:
            text = text.replace("/tmp/sim.port", str(ready_file))
        return text

    def run(self, argv: list[str], timeout: float = 120) -> str:
        out = subprocess.run(argv, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"{argv[-1][:300]}\nexit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        return out.stdout

    def python(self, text: str, timeout: float = 120) -> str:
        return self.run([sys.executable, "-c", text], timeout)

    def sh(self, text: str, timeout: float = 120) -> str:
        return self.run(["bash", "-e", "-c", text], timeout)


class Running:
    """A snippet that runs until Ctrl-C: its output lines as they come, then SIGINT."""

    def __init__(self, argv: list[str], demo: Demo):
        self.proc = subprocess.Popen(argv, cwd=demo.workdir, env=demo.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def read_until(self, done, timeout: float = 60) -> list[str]:
        """Lines until ``done(lines)`` is true (fails after ``timeout`` seconds)."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while not done(seen):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and self.lines.empty():
                raise AssertionError(f"exit {self.proc.poll()}; output:\n" + "\n".join(seen[-30:]) +
                                     "\n" + (self.proc.stderr.read() if self.proc.poll() is not None else ""))
            try:
                seen.append(self.lines.get(timeout=min(left, 0.5)))
            except queue.Empty:
                pass
        return seen

    def interrupt(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")


def csv_rows(path: Path) -> int:
    try:
        return path.read_text().count("\n") - 1
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="module")
def demo():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    sim_port, publisher_port, grpc_port = free_port(), free_port(), free_port()
    config = write_config(workdir, sim_port, DEMO_SYMBOLS,
                          sim_table=f"[sim]\nport = {sim_port}\nsymbols = {json.dumps(DEMO_SYMBOLS)}\nrate = 500\n"
                                    f"[publisher]\nport = {publisher_port}\n[grpc]\nport = {grpc_port}\n",
                          extra="[sinks.csv]\n[sinks.parquet]\nflush_interval_s = 1.0\n[sinks.raw]\n")
    run = procs.start("run", PIPELINE + ["--config", str(config), "run"])
    try:
        eventually(lambda: feeds(config) and all(f["state"] == "live" for f in feeds(config).values()), 60, 0.3,
                   "demo books live")
        csv_dir = workdir / "data" / "csv"
        eventually(lambda: csv_rows(csv_dir / f"sim_trades_{today()}_BTCUSDT.csv") >= 10, 60, 0.3,
                   "trades in the demo's CSV file")
        eventually(lambda: status(config).get("grpc", {}).get("state") == "up", 60, 0.3, "the gRPC server up")
        eventually(lambda: list((workdir / "data" / "parquet" / "exchange=sim" / "datatype=trades").rglob("*.parquet"))
                   and list((workdir / "data" / "parquet" / "exchange=sim").rglob("datatype=incremental_book_L2/*/*.parquet")),
                   60, 0.3, "files in the demo's Parquet datasets")
        eventually(lambda: status(config).get("sinks") and any(
            s["name"] == "raw" and s["events"] > 0 for s in status(config)["sinks"]), 60, 0.3, "the demo's raw recording")
        yield Demo(workdir, config, sim_port, publisher_port, grpc_port)
    finally:
        procs.stop(run, signal.SIGINT, timeout=40)  # Ctrl-C, as the README says
        procs.stop_all()


def test_every_snippet_to_run_has_a_check_here():
    checks = {name.removeprefix("test_snippet_").replace("_", "-") for name in globals()
              if name.startswith("test_snippet_")}
    assert checks == set(RUN)


# ---------------------------------------------------------------- README.md


def test_snippet_readme_cli(demo):
    status, book, book_json, print_books = [demo.adapt(line) for line in by_id("readme-cli").text.splitlines()]
    out = demo.sh(status)
    assert re.search(r"^sim\s+BTCUSDT\s+live\s", out, re.M), out

    out = demo.sh(book).splitlines()  # "sim BTCUSDT  state live ...", a header, then "size bid | ask size" rows
    assert "state live" in out[0], out
    best = next(line for line in out if re.match(r"^\s*[\d.]+\s+[\d.]+\s+\|\s+[\d.]+", line))
    left, right = best.split("|")
    assert float(left.split()[-1]) < float(right.split()[0]), out
    top = json.loads(demo.sh(book_json))
    assert len(top["bids"]) == len(top["asks"]) == 5
    assert top["bids"][0][0] < top["asks"][0][0]

    running = Running(["bash", "-c", "exec " + print_books], demo)
    try:
        lines = running.read_until(lambda seen: any(s.startswith("trade ") for s in seen)
                                   and any(s.startswith("book") and "BTCUSDT" in s for s in seen))
    finally:
        running.interrupt()
    for line in lines:
        m = re.search(r"bid (\S+) ask (\S+)", line)
        if line.startswith("book") and "[live]" in line and m:
            assert float(m.group(1)) < float(m.group(2)), line


def test_snippet_readme_websocket(demo):
    out = demo.sh(demo.adapt(by_id("readme-websocket").text), timeout=60).splitlines()
    assert out[0].startswith("snapshot seq"), out
    assert sum(line.startswith("delta    seq") for line in out) == 5, out
    seq = None
    for line in out:  # each delta follows the line before it; a new snapshot restarts the chain
        n = int(line.split()[2])
        if line.startswith("delta"):
            assert n == seq + 1, out
        seq = n


def test_snippet_grpc_example(demo):
    out = demo.sh(demo.adapt(by_id("grpc-example").text), timeout=60).splitlines()
    books = [line for line in out if line.startswith("book  BTCUSDT")]
    assert len(books) == 5 and "snapshot" in books[0], out
    seq = None
    for line in books:  # "book  BTCUSDT delta seq N: bid B ask A (live)"
        n = int(line.split("seq ")[1].split(":")[0])
        if " delta " in line:
            assert n == seq + 1, out
        seq = n
        m = re.search(r"bid (\S+) ask (\S+)", line)
        assert float(m.group(1)) < float(m.group(2)), line


def test_snippet_grpc_python(demo):
    out = demo.sh(demo.adapt(by_id("grpc-python").text), timeout=60).splitlines()
    m = re.match(r"^GetBook seq (\d+) best bid (\S+) best ask (\S+)$", out[0])
    assert m and float(m.group(2)) < float(m.group(3)), out
    assert out[1].startswith("snapshot seq") and len(out) == 7, out
    seq = None
    for line in out[1:]:
        n = int(line.split()[2])
        if line.startswith("delta"):
            assert n == seq + 1, out
        seq = n


def test_snippet_readme_csv(demo):
    # the snippet's paths are the demo's: its CSV directory is data/csv under where it started
    env = {k: v for k, v in demo.env.items() if k != "PIPELINE_CONFIG"}
    code = "from pipeline.app.config import load_config; print(load_config(None).sinks['csv'].dir)"
    out = subprocess.run([sys.executable, "-c", code], cwd=demo.workdir, env=env, capture_output=True, text=True,
                         timeout=60)
    assert Path(out.stdout.strip()) == demo.workdir.resolve() / "data" / "csv", out
    out = demo.python(demo.adapt(by_id("readme-csv").text), timeout=300)
    m = re.search(r"^(\d+) trades, (\d+) book rows; the file starts with a snapshot: True$", out, re.M)
    assert m and int(m.group(1)) >= 10 and int(m.group(2)) > 0, out
    events = re.search(r"^(\d+) hftbacktest events$", out, re.M)
    assert events and int(events.group(1)) > int(m.group(1)), out


# ---------------------------------------------------------------- docs/csv.md


def test_snippet_csv_pandas(demo):
    out = demo.python(demo.adapt(by_id("csv-pandas").text), timeout=120).split()
    bid, ask = float(out[-2]), float(out[-1])
    assert 0 < bid < ask


def test_snippet_csv_hftbacktest(demo):
    demo.python(demo.adapt(by_id("csv-hftbacktest").text), timeout=300)
    assert (demo.workdir / f"btcusdt_{today()}.npz").stat().st_size > 0


# ---------------------------------------------------------------- docs/parquet.md


def test_snippet_parquet_pandas(demo):
    out = demo.python(demo.adapt(by_id("parquet-pandas").text), timeout=120).split()
    bid, ask = float(out[-2]), float(out[-1])
    assert 0 < bid < ask


def test_snippet_parquet_polars(demo):
    out = demo.python(demo.adapt(by_id("parquet-polars").text), timeout=120)
    rows = re.findall(r"│ (\w+)\s+┆ (\d+)\s+┆ ([\d.]+)\s+│", out)
    assert {r[0] for r in rows} == set(DEMO_SYMBOLS) and all(int(r[1]) > 0 for r in rows), out


def test_snippet_parquet_duckdb(demo):
    out = demo.python(demo.adapt(by_id("parquet-duckdb").text), timeout=120)
    rows = eval(out.strip())  # a list of (symbol, trades, vwap) tuples, as DuckDB prints them
    assert {r[0] for r in rows} == set(DEMO_SYMBOLS) and all(r[1] > 0 and r[2] > 0 for r in rows), out


# ---------------------------------------------------------------- docs/operations.md


def test_snippet_raw_read(demo):
    fmt, exchange, counts = demo.python(demo.adapt(by_id("raw-read").text), timeout=120).split(" ", 2)
    counts = eval(counts)  # the dict the snippet prints
    assert (fmt, exchange) == ("pipeline-capture/1", "sim") and counts["ws"] > 0 and counts["rest"] > 0, counts


# ---------------------------------------------------------------- docs/websocket.md


def test_snippet_websocket_client(demo):
    running = Running([sys.executable, "-c", demo.adapt(by_id("websocket-client").text)], demo)
    try:
        lines = running.read_until(lambda seen: sum(s.startswith("order_book_l2_update ") for s in seen) >= 5)
    finally:
        running.interrupt()
    assert "'kind': 'welcome'" in lines[0]
    # the default subscription may still deliver a snapshot or a trade before the reply
    (reply,) = [i for i, line in enumerate(lines) if line.startswith("subscribed")]
    book = [line.split() for line in lines[reply:] if line.startswith("order_book_l2")]
    assert book[0][0] == "order_book_l2" and book[0][1] == "BTCUSDT"
    for prev, cur in zip(book, book[1:]):
        if cur[0] == "order_book_l2_update":
            assert int(cur[2]) == int(prev[2]) + 1, lines


def test_snippet_websocket_loadtest(demo):
    result = json.loads(demo.sh(demo.adapt(by_id("websocket-loadtest").text), timeout=120).splitlines()[-1])
    assert result["clients"] == 10 and result["trades"] > 0 and result["p50_ms"] > 0


# ---------------------------------------------------------------- docs/sim.md


def _sim_snippet(demo: Demo, snippet_id: str, tmp_path: Path, then=None) -> None:
    ready = tmp_path / "sim.port"
    running = Running([sys.executable, "-c", demo.adapt(by_id(snippet_id).text, ready_file=ready)], demo)
    try:
        port = int(eventually(lambda: ready.exists() and ready.read_text().strip(), 30, what="sim ready file"))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/state", timeout=10) as r:
            state = json.loads(r.read())
        assert state["symbols"], state
        if then:
            then(port)
    finally:
        code = running.interrupt()
    assert code == 0, running.proc.stderr.read()


def test_snippet_sim_run(demo, tmp_path):
    _sim_snippet(demo, "sim-run", tmp_path)


def test_snippet_sim_faults(demo, tmp_path):
    """Against a sim of its own (the `sim-run` snippet's), not the demo's: a stall would disturb the demo."""
    def faults(port: int) -> None:
        replies = [json.loads(line) for line in demo.sh(demo.adapt(by_id("sim-faults").text, sim_port=port))
                   .replace("}{", "}\n{").splitlines() if line.strip()]
        assert len(replies) == 3 and all(r["ok"] for r in replies), replies
    _sim_snippet(demo, "sim-run", tmp_path, then=faults)


def test_snippet_sim_venue_run(demo, tmp_path):
    _sim_snippet(demo, "sim-venue-run", tmp_path)
