"""The ``sinks`` section of ``pipeline status``: what each sink process reports.

Every sink process NAME runs as program ``sink-NAME``, writes ``RUN_DIR/sink-NAME.pid`` and its
counters to ``RUN_DIR/sink-NAME.stats.json`` about once a second (sinks/csv_sink.py); this module
reads them back with the process state, so ``pipeline status`` needs no connection to the sink.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pipeline.config import Config
from pipeline.pidfile import pid_alive, read_pid


def process_name(sink: str) -> str:
    """The supervisord program and pid-file name of sink ``sink``."""
    return f"sink-{sink}"


def stats_path(config: Config, sink: str) -> Path:
    return config.run_dir / f"{process_name(sink)}.stats.json"


def sink_status(config: Config, sink: str, directory: str | None, now_us: int | None = None) -> dict:
    """One ``sinks`` entry: name, state, pid, dir, then whatever the sink's stats file holds
    (docs/operations.md lists the CSV sink's keys)."""
    now_us = now_us or time.time_ns() // 1000
    pid = read_pid(config.run_dir / f"{process_name(sink)}.pid")
    entry = {"name": sink, "state": "running" if pid and pid_alive(pid) else ("dead" if pid else "stopped"),
             "pid": pid, "dir": directory}
    try:
        stats = json.loads(stats_path(config, sink).read_text())
    except (OSError, ValueError):
        stats = None
    if isinstance(stats, dict):
        entry.update({k: v for k, v in stats.items() if k not in ("name", "pid")})
        last = stats.get("last_write_us") or 0
        entry["last_write_age_s"] = round((now_us - last) / 1e6, 3) if last else None
        entry["stats_age_s"] = round((now_us - stats.get("updated_us", now_us)) / 1e6, 3)
    return entry


def write_stats(path: Path, stats: dict) -> None:
    """Replace a sink's stats file (atomically: ``pipeline status`` never reads half of one)."""
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(stats))
        os.replace(tmp, path)
    except OSError:
        pass
