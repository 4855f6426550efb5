"""``[sinks.raw]``: raw recording of what each ingest receives (the writer is ingest/capture.py).

Unlike the other sinks it is not a process of its own: frames are recorded where they arrive,
inside each ingest (its registry line says ``in_ingest``), so `pipeline run` starts no program for
it and `pipeline sink raw` only says so.  This object gives the config loader the table's check and
`pipeline status` its entry (from ``RUN_DIR/raw-EXCHANGE.stats.json``, written by each ingest; ``running`` while an ingest that
records runs).
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ingest.capture import RawCaptureConfig, capture_files, parse_raw_config, raw_config, stats_file
from pipeline import shards
from pipeline.config import Config, SectionContext
from pipeline.pidfile import pid_alive, read_pid


class RawSinkPlugin:
    def parse_config(self, table: dict, key: str, ctx: SectionContext) -> RawCaptureConfig:
        return parse_raw_config(table, key, ctx)

    def run(self, config: Config) -> None:
        raise click.ClickException("the raw sink records inside each ingest process (`pipeline ingest NAME`, "
                                   "`pipeline run`) when the config has [sinks.raw]; it has no process of its own")

    def status(self, config: Config) -> dict[str, Any]:
        settings = raw_config(config) or RawCaptureConfig()
        names = settings.exchanges or tuple(config.exchanges)
        # each ingest process records under its unit name: NAME, or NAME.K for shard K (pipeline/shards.py)
        units = [sx.unit for name, sx in shards.each(config) if name in names]
        per = {}
        for name in units:
            try:
                per[name] = json.loads(stats_file(config, name).read_text())
            except (OSError, ValueError):
                continue
        running = [n for n in units if (pid := read_pid(config.run_dir / f"ingest-{n}.pid")) and pid_alive(pid)]
        files = [p for n in units for p in capture_files(settings.dir, n)]
        return {"name": "raw", "state": "running" if running else "stopped", "pid": None, "dir": str(settings.dir),
                "files": len(files),
                "bytes": sum(p.stat().st_size for p in files if p.exists()),
                "events": sum(s.get("events", 0) for s in per.values()),
                "queued": sum(s.get("queued", 0) for s in per.values()),  # waiting for the writer at its last stats
                "dropped": sum(s.get("dropped", 0) for s in per.values()),
                "files_removed": sum(s.get("files_removed", 0) for s in per.values()),
                "errors": sum(s.get("errors", 0) for s in per.values()),
                "exchanges": per, "stats_age_s": round(time.time() - max(
                    (s.get("updated", 0) for s in per.values()), default=time.time()), 3)}


SINK = RawSinkPlugin()
