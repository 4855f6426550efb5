"""Test helpers: read pipeline-capture/1 files and the shared data folder."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
CAPTURES = DATA / "captures"
SAMPLES = DATA / "samples"


def read_capture(path: Path) -> tuple[dict, list[dict]]:
    """(header, events) of a capture file (format v1, optionally gzipped)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        lines = [json.loads(line) for line in fh if line.strip()]
    header, events = lines[0], lines[1:]
    assert header.get("format") == "pipeline-capture/1", header
    return header, events
