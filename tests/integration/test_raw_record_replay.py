"""Raw recording ([sinks.raw]) of a live run, replayed: sim -> ingest (recording) and, from the files,
`pipeline replay` -> a second ingest; every book both runs published for the same update id is
equal, and so are the final books.  One symbol is subscribed at runtime (`pipeline subscribe`) while
the live ingest records: its subscribe frame and REST snapshot are in the recording, and the replayed
ingest (which has it in its config) rebuilds its books too.  Real processes on loopback; the books are
read off the bus by the consumer library as any strategy would."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from helpers import PIPELINE, Procs, eventually, feeds, short_tmpdir, start_sim
from pipeline.config import load_config
from pipeline.consumer import Book, Consumer

pytestmark = pytest.mark.integration
CONFIGURED = ["BTCUSDT", "ETHUSDT"]
RUNTIME = "SOLUSDT"  # subscribed while the live ingest records
SYMBOLS = CONFIGURED + [RUNTIME]


def _config(workdir: Path, port: int, run_dir: str, raw: bool, symbols: list[str]) -> Path:
    path = workdir / f"{run_dir}.toml"
    path.write_text(f"""
[pipeline]
run_dir = "{run_dir}"
[exchanges.sim]
adapter = "binance"
symbols = {json.dumps(symbols)}
max_symbols = 3
depth = 20
ws_url = "ws://127.0.0.1:{port}"
rest_url = "http://127.0.0.1:{port}"
""" + ('[sinks.raw]\ndir = "data/raw"\nflush_interval_s = 0.2\n' if raw else ""))
    return path


def _books_by_update_id(config_path: Path, procs: Procs, name: str, done):
    """Start the ingest of ``config_path`` and collect (symbol, update_id) -> top 20 until ``done(books)``;
    returns them and the ingest process."""
    seen: dict[tuple[str, int], tuple] = {}
    with Consumer(load_config(config_path), trades=False) as consumer:
        ingest = procs.start(name, PIPELINE + ["--config", str(config_path), "ingest", "sim"])

        def on_book(book: Book) -> None:
            if book.state == "live":
                seen[(book.symbol, book.update_id)] = book.top(20)
        consumer.run(on_book=on_book, until=lambda: done(seen))
    return seen, ingest


def test_a_recorded_live_run_replays_to_the_same_books_at_every_update_id():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    subscribed: list[subprocess.CompletedProcess] = []
    try:
        sim_port = start_sim(procs, symbols=",".join(SYMBOLS), rate=300)
        live_cfg = _config(workdir, sim_port, "run-live", raw=True, symbols=CONFIGURED)

        def subscribe() -> None:
            subscribed.append(subprocess.run(PIPELINE + ["--config", str(live_cfg), "subscribe", "sim", RUNTIME],
                                             capture_output=True, text=True, timeout=60))

        adder = threading.Thread(target=subscribe, daemon=True)

        def done(seen) -> bool:
            if len(seen) >= 40 and not adder.is_alive() and not subscribed:
                adder.start()  # the configured books are live and recorded: add one at runtime
            return (len({s for s, _ in seen}) == 3 and len(seen) >= 200
                    and sum(s == RUNTIME for s, _ in seen) >= 30)  # ~10 s: diffs every 100 ms

        live, ingest = _books_by_update_id(live_cfg, procs, "ingest-live", done)
        adder.join(60)
        assert subscribed and subscribed[0].returncode == 0, subscribed and subscribed[0].stderr
        assert procs.stop(ingest, signal.SIGTERM) == 0  # it writes what it queued and closes its file
        raw = sorted((workdir / "data" / "raw").glob("sim_*.jsonl.gz"))
        assert raw
        events = []
        for path in raw:  # one file, or two if the run crossed an hour
            with gzip.open(path, "rt") as fh:
                header = json.loads(fh.readline())
                events += [json.loads(line) for line in fh]
        assert header["format"] == "pipeline-capture/1" and header["adapter"] == "binance"
        assert {e["src"] for e in events} >= {"ws", "rest"}
        assert all(e["ts"] > 1e9 and e["url"].startswith(("ws://", "http://")) for e in events)
        assert set(header) >= {"format", "exchange", "adapter"} and all(list(e) == ["ts", "src", "url", "data"]
                                                                        for e in events)
        # the runtime symbol: its subscribe frame sent, its snapshot's REST body, then its frames
        sent = [e for e in events if e["src"] == "ws_out" and RUNTIME.lower() in e["data"].lower()]
        rest = [e for e in events if e["src"] == "rest" and f"symbol={RUNTIME}" in e["url"] and "depth" in e["url"]]
        frames = [e for e in events if e["src"] == "ws" and f'"{RUNTIME.lower()}@' in e["data"]]
        assert sent and rest and frames and sent[0]["ts"] <= frames[0]["ts"]

        ready = workdir / "replay.port"
        procs.start("replay", PIPELINE + ["replay", *map(str, raw), "--port", "0", "--rate", "2",
                                          "--ready-file", str(ready)])
        replay_port = int(eventually(lambda: ready.exists() and ready.read_text().strip(), 20, what="replay ready"))
        last = {sym: max(u for s, u in live if s == sym) for sym in SYMBOLS}
        replayed, _ = _books_by_update_id(_config(workdir, replay_port, "run-replay", raw=False, symbols=SYMBOLS), procs,
                                       "ingest-replay", lambda seen: all((s, last[s]) in seen for s in SYMBOLS))
    finally:
        procs.stop_all()
    common = set(live) & set(replayed)
    assert len(common) >= 20, (len(live), len(replayed))
    assert sum(s == RUNTIME for s, _ in common) >= 10
    for key in sorted(common):
        assert replayed[key] == live[key], key
    for sym in SYMBOLS:
        assert replayed[(sym, last[sym])] == live[(sym, last[sym])]
