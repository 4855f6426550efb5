"""The ``sinks`` section of ``pipeline status``: what each sink process reports.

The CSV sink writes its counters to ``RUN_DIR/sink-csv.stats.json`` every second
(sinks/csv_sink.py); this module reads them back with the process state, so
``pipeline status`` needs no connection to the sink.
"""

from __future__ import annotations

import json
import time

from pipeline.config import Config
from pipeline.pidfile import pid_alive, read_pid

PROCESS_NAME = "sink-csv"


def stats_path(config: Config):
    return config.run_dir / f"{PROCESS_NAME}.stats.json"


def csv_sink(config: Config, now_us: int | None = None) -> dict:
    """One ``sinks`` entry for the CSV sink (docs/operations.md lists the keys)."""
    now_us = now_us or time.time_ns() // 1000
    pid = read_pid(config.run_dir / f"{PROCESS_NAME}.pid")
    entry = {"name": "csv", "state": "running" if pid and pid_alive(pid) else ("dead" if pid else "stopped"), "pid": pid,
             "dir": str(config.csv.dir) if config.csv else None}
    try:
        stats = json.loads(stats_path(config).read_text())
    except (OSError, ValueError):
        stats = None
    if isinstance(stats, dict):
        entry.update({k: v for k, v in stats.items() if k not in ("name", "pid")})
        last = stats.get("last_write_us") or 0
        entry["last_write_age_s"] = round((now_us - last) / 1e6, 3) if last else None
        entry["stats_age_s"] = round((now_us - stats.get("updated_us", now_us)) / 1e6, 3)
    return entry


def sinks(config: Config) -> list[dict]:
    """Every configured sink (empty when none is)."""
    return [csv_sink(config)] if config.csv is not None else []
