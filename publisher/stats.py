"""Publisher statistics in ``RUN_DIR/publisher.stats.json``, for `pipeline status`.

The publisher rewrites the file about once a second (write to a temporary file, then
rename, so a reader never sees half of it).  ``read`` returns the ``publisher`` section
of `pipeline status --json` (shape in docs/operations.md): the hub's statistics plus
``state``, ``pid``, ``url`` and ``age_s``; ``state`` is ``down`` when the file is
missing or its writer is not running, and ``stale`` when it stopped being refreshed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pipeline.config import Config
from pipeline.pidfile import pid_alive
from publisher.settings import publisher_config

STATS_FILE = "publisher.stats.json"
STALE_AFTER_S = 5.0


def path(config: Config) -> Path:
    return Path(config.run_dir) / STATS_FILE


def url(config: Config) -> str:
    c = publisher_config(config)
    return f"ws://{c.host}:{c.port}/"


def write(config: Config, stats: dict, listen_url: str) -> None:
    p = path(config)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "written_at": time.time(), "url": listen_url, **stats}))
    os.replace(tmp, p)


def remove(config: Config) -> None:
    path(config).unlink(missing_ok=True)


def read(config: Config, now: float | None = None) -> dict:
    """The ``publisher`` section of `pipeline status --json`."""
    now = time.time() if now is None else now
    try:
        data = json.loads(path(config).read_text())
    except (FileNotFoundError, ValueError):
        return {"state": "down", "pid": None, "url": url(config), "clients": 0}
    pid = data.pop("pid", None)
    if not pid_alive(pid):
        return {"state": "down", "pid": None, "url": url(config), "clients": 0}
    age = now - float(data.pop("written_at", 0.0))
    return {"state": "up" if age <= STALE_AFTER_S else "stale", "pid": pid, "age_s": round(age, 3), **data}
