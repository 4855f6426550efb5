"""Raw recording (ingest/capture.py) without an ingest: events in, pipeline-capture/1 files out,
read back by `pipeline replay`'s loader (pipeline/sim/replay.py)."""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from ingest import capture
from ingest.capture import CaptureWriter, RawCaptureConfig, capture_files, parse_raw_config
from pipeline.config import ConfigError, SectionContext
from pipeline.sim.replay import ReplayPlan

HOUR = 3600.0
T0 = 1_764_633_600.0 + 3590.0  # 00:59:50 UTC


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _writer(tmp_path, clock, **kw) -> CaptureWriter:
    return CaptureWriter(RawCaptureConfig(dir=tmp_path / "raw", **kw), "binance", "binance",
                         stats_path=tmp_path / "raw-binance.stats.json", clock=clock)


def _record(w: CaptureWriter, n: int, t: float) -> None:
    url = "ws://127.0.0.1:1/stream?streams=btcusdt@depth@100ms"
    for i in range(n):
        frame = json.dumps({"stream": "btcusdt@depth@100ms", "data": {"u": i, "note": "é"}}).encode()
        w.append((int((t + i / 1000) * 1e9), "ws", url, frame))


def test_events_become_a_capture_that_replay_loads(tmp_path):
    clock = Clock(T0)
    w = _writer(tmp_path, clock)
    w.ws_out("ws://127.0.0.1:1/stream?streams=btcusdt@depth@100ms", '{"method":"SUBSCRIBE","params":[],"id":1}')
    w.rest("http://127.0.0.1:1/api/v3/depth?symbol=BTCUSDT&limit=1000", b'{"lastUpdateId":5,"bids":[],"asks":[]}',
           int(T0 * 1e9))
    _record(w, 100, T0)
    w._flush()
    w.close()
    (path,) = capture_files(tmp_path / "raw", "binance")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        header = json.loads(fh.readline())
        events = [json.loads(line) for line in fh]
    assert header["format"] == "pipeline-capture/1" and header["exchange"] == "binance"
    assert [e["src"] for e in events[:2]] == ["ws_out", "rest"] and len(events) == 102
    assert json.loads(events[2]["data"])["data"]["note"] == "é"  # the frame's text, untouched
    plan = ReplayPlan.load(path)
    assert len(plan.frames) == 100 and plan.rest_body("/api/v3/depth", "limit=1000&symbol=BTCUSDT")
    stats = json.loads((tmp_path / "raw-binance.stats.json").read_text())
    assert stats["events"] == 102 and stats["files"] == 1 and stats["dropped"] == 0


def test_hourly_files_and_a_recording_replayed_across_them(tmp_path):
    clock = Clock(T0)
    w = _writer(tmp_path, clock)
    _record(w, 10, T0)
    w._flush()
    clock.now = T0 + 20  # 01:00:10: the next hour
    _record(w, 10, clock.now)
    w._flush()
    w.close()
    files = capture_files(tmp_path / "raw", "binance")
    assert [p.name for p in files] == ["binance_2025-12-02T00-59-50.jsonl.gz", "binance_2025-12-02T01-00-10.jsonl.gz"]
    assert len(ReplayPlan.load(*files).frames) == 20


def test_a_file_cut_by_a_crash_replays_up_to_the_cut(tmp_path, caplog):
    clock = Clock(T0)
    w = _writer(tmp_path, clock)
    _record(w, 50, T0)
    w._flush()
    _record(w, 50, T0 + 1)
    w._flush()
    (path,) = capture_files(tmp_path / "raw", "binance")
    data = path.read_bytes()
    path.write_bytes(data[:-30])  # the last gzip member cut short, as by kill -9 mid-write
    with caplog.at_level(logging.WARNING):
        plan = ReplayPlan.load(path)
    assert 50 <= len(plan.frames) < 100 and "cut short" in caplog.text


def test_disk_budget_removes_the_oldest_files_with_a_warning(tmp_path, caplog):
    clock = Clock(T0)
    w = _writer(tmp_path, clock, max_bytes=3000, rotate_s=1.0)
    with caplog.at_level(logging.WARNING):
        for i in range(6):
            clock.now = T0 + i
            _record(w, 200, clock.now)
            w._flush()
        w.close()
    files = capture_files(tmp_path / "raw", "binance")
    assert w.files == 6 and w.files_removed >= 1 and len(files) == 6 - w.files_removed
    assert sum(p.stat().st_size for p in files[:-1]) <= 3000
    assert "over max_bytes" in caplog.text


def test_bad_raw_config_names_the_key(tmp_path):
    ctx = SectionContext(base_dir=tmp_path, data_dir=tmp_path / "data", exchanges={})
    assert parse_raw_config({}, "sinks.raw", ctx).dir == tmp_path / "data" / "raw"
    for table, key in (({"max_bytes": 0}, "sinks.raw.max_bytes"), ({"compresslevel": 12}, "sinks.raw.compresslevel"),
                       ({"exchanges": ["nope"]}, "sinks.raw.exchanges[0]"), ({"size": 1}, "sinks.raw")):
        with pytest.raises(ConfigError) as info:
            parse_raw_config(table, "sinks.raw", ctx)
        assert info.value.key.startswith(key), info.value


def test_raw_is_not_a_program_and_its_status_reads_the_ingests_stats(tmp_path):
    from click.testing import CliRunner

    from pipeline.app import cli as cli_mod
    from pipeline.app.config import parse_config
    from pipeline.app.supervise import programs
    from sinks.raw_settings import SINK

    config = parse_config('[pipeline]\nrun_dir = "run"\n[exchanges.binance]\nsymbols = ["BTCUSDT"]\n'
                          '[sinks.raw]\ndir = "raw"\n', tmp_path)
    assert [n for n, _ in programs(config, None)] == ["ingest-binance", "publisher"]
    config.run_dir.mkdir(parents=True)
    clock = Clock(T0)
    w = CaptureWriter(config.sinks["raw"], "binance", "binance", stats_path=config.run_dir / "raw-binance.stats.json",
                      clock=clock)
    _record(w, 10, T0)
    w._flush()
    w.close()
    entry = SINK.status(config)
    assert entry["name"] == "raw" and entry["events"] == 10 and entry["files"] == 1 and entry["state"] == "stopped"
    from pipeline.app.status import collect, render_table
    assert entry["queued"] == entry["dropped"] == 0
    assert "sink raw (stopped)" in render_table(collect(config))  # `pipeline status`, nothing running
    r = CliRunner().invoke(cli_mod.cli, ["sink", "raw"], env={"PIPELINE_CONFIG": ""})
    assert r.exit_code != 0 and "inside each ingest" in r.output


def test_a_stuck_writer_cannot_grow_the_queue_past_the_bound(tmp_path, monkeypatch, caplog):
    """The writer thread never runs (as if blocked on a disk): the event loop's trim keeps the queue
    bounded, counts what it dropped, and what is kept is the newest, in order."""
    monkeypatch.setattr(capture, "MAX_QUEUED", 1000)
    w = _writer(tmp_path, Clock(T0))  # not started
    dropped = 0
    with caplog.at_level(logging.WARNING):
        for batch in range(10):
            _record(w, 300, T0 + batch)
            dropped += w.trim()  # the stats loop, every 0.25 s
            assert len(w.queue) <= 1000
    assert dropped == w.dropped == 3000 - len(w.queue) and "dropped" in caplog.text
    kept = [e[0] for e in w.queue]  # receive times: the newest kept, in order
    assert kept == sorted(kept) and kept[-1] == int((T0 + 9 + 299 / 1000) * 1e9)
    w._flush()
    w.close()
    stats = json.loads((tmp_path / "raw-binance.stats.json").read_text())
    assert stats["dropped"] == 3000 - stats["events"]


_RECORDER = """
import sys, time
from pathlib import Path
from ingest.capture import CaptureWriter, RawCaptureConfig
w = CaptureWriter(RawCaptureConfig(dir=Path(sys.argv[1]), flush_interval_s=0.01), "binance", "binance")
w.start()
i = 0
url = "ws://127.0.0.1:1/stream?streams=btcusdt@depth@100ms"
while True:
    for _ in range(200):
        w.append((time.time_ns(), "ws", url, b'{"stream":"btcusdt@depth@100ms","data":{"u":%d}}' % i))
        i += 1
    time.sleep(0.002)
"""


def test_kill_9_while_recording_leaves_files_replay_reads_up_to_the_cut(tmp_path):
    """A recorder process killed with SIGKILL while writing: its file is read up to the cut, every
    frame in it whole and in order, none missing before the last one read."""
    raw = tmp_path / "raw"
    proc = subprocess.Popen([sys.executable, "-c", _RECORDER, str(raw)],
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            files = capture_files(raw, "binance")
            if files and files[0].stat().st_size > 20_000:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the recorder wrote nothing")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    (path,) = capture_files(raw, "binance")
    plan = ReplayPlan.load(path)
    seen = [json.loads(f.data)["data"]["u"] for f in plan.frames]
    assert len(seen) > 100 and seen == list(range(len(seen)))


def test_each_shard_records_under_its_unit_and_status_sums_them(tmp_path):
    from pipeline.app.config import parse_config
    from sinks.raw_settings import SINK

    config = parse_config('[pipeline]\nrun_dir = "run"\n[exchanges.binance]\nsymbols = ["BTCUSDT", "ETHUSDT"]\n'
                          'processes = 2\n[sinks.raw]\ndir = "raw"\n', tmp_path)
    config.run_dir.mkdir(parents=True)
    for k, n in ((0, 10), (1, 7)):
        unit = f"binance.{k}"
        w = CaptureWriter(config.sinks["raw"], unit, "binance", stats_path=config.run_dir / f"raw-{unit}.stats.json",
                          clock=Clock(T0))
        _record(w, n, T0)
        w._flush()
        w.close()
    assert [p.name for p in capture_files(config.sinks["raw"].dir, "binance.1")] == [
        "binance.1_2025-12-02T00-59-50.jsonl.gz"]
    entry = SINK.status(config)
    assert entry["events"] == 17 and entry["files"] == 2 and set(entry["exchanges"]) == {"binance.0", "binance.1"}
