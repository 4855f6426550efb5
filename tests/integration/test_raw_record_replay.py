"""Raw recording ([sinks.raw]) of a live run, replayed: sim -> ingest (recording) and, from the files,
`pipeline replay` -> a second ingest; every book both runs published for the same update id is
equal, and so are the final books.  Real processes on loopback; the books are read off the bus
by the consumer library as any strategy would."""

from __future__ import annotations

import gzip
import json
import signal
from pathlib import Path

import pytest

from helpers import PIPELINE, Procs, eventually, feeds, short_tmpdir, start_sim
from pipeline.config import load_config
from pipeline.consumer import Book, Consumer

pytestmark = pytest.mark.integration
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def _config(workdir: Path, port: int, run_dir: str, raw: bool) -> Path:
    path = workdir / f"{run_dir}.toml"
    path.write_text(f"""
[pipeline]
run_dir = "{run_dir}"
[exchanges.sim]
adapter = "binance"
symbols = {json.dumps(SYMBOLS)}
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
    try:
        sim_port = start_sim(procs, symbols=",".join(SYMBOLS), rate=300)
        live_cfg = _config(workdir, sim_port, "run-live", raw=True)
        live, ingest = _books_by_update_id(live_cfg, procs, "ingest-live",
                                           lambda seen: len({s for s, _ in seen}) == 2 and len(seen) >= 160)  # ~8 s: diffs every 100 ms
        assert procs.stop(ingest, signal.SIGTERM) == 0  # it writes what it queued and closes its file
        raw = sorted((workdir / "data" / "raw").glob("sim_*.jsonl.gz"))
        assert raw
        with gzip.open(raw[0], "rt") as fh:
            header = json.loads(fh.readline())
            events = [json.loads(line) for line in fh]
        assert header["format"] == "pipeline-capture/1" and header["adapter"] == "binance"
        assert {e["src"] for e in events} >= {"ws", "rest"}
        assert all(e["ts"] > 1e9 and e["url"].startswith(("ws://", "http://")) for e in events)

        ready = workdir / "replay.port"
        procs.start("replay", PIPELINE + ["replay", *map(str, raw), "--port", "0", "--rate", "2",
                                          "--ready-file", str(ready)])
        replay_port = int(eventually(lambda: ready.exists() and ready.read_text().strip(), 20, what="replay ready"))
        last = {sym: max(u for s, u in live if s == sym) for sym in SYMBOLS}
        replayed, _ = _books_by_update_id(_config(workdir, replay_port, "run-replay", raw=False), procs,
                                       "ingest-replay", lambda seen: all((s, last[s]) in seen for s in SYMBOLS))
    finally:
        procs.stop_all()
    common = set(live) & set(replayed)
    assert len(common) >= 20, (len(live), len(replayed))
    for key in sorted(common):
        assert replayed[key] == live[key], key
    for sym in SYMBOLS:
        assert replayed[(sym, last[sym])] == live[(sym, last[sym])]
