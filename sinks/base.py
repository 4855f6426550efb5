"""What a sink is to the rest of the pipeline: a process that records the bus somewhere.

A sink is a module exposing an object of this shape (kept light: the CSV sink's is in
sinks/csv_settings.py and imports its recording code only in ``run``) and one line in ``sinks.SINKS``; from that
line the config loader gives it its ``[sinks.NAME]`` table, ``pipeline sink NAME`` runs it,
`pipeline run` supervises it as program ``sink-NAME`` when the table is present, and `pipeline
status` lists what ``status`` returns under ``sinks``.  By convention its settings have a ``dir``
(DESIGN.md contract 2) and the process writes ``RUN_DIR/sink-NAME.pid`` and
``sink-NAME.stats.json`` (sinks/status.py reads them).
"""

from __future__ import annotations

from typing import Any, Protocol

from pipeline.config import Config, SectionContext


class Sink(Protocol):
    def parse_config(self, table: dict, key: str, ctx: SectionContext) -> Any:
        """Its ``[sinks.NAME]`` table -> frozen settings; ConfigError naming ``sinks.NAME.KEY``."""

    def run(self, config: Config) -> None:
        """Record until SIGTERM/SIGINT (the process `pipeline sink NAME`)."""

    def status(self, config: Config) -> dict[str, Any]:
        """Its entry of ``sinks`` in `pipeline status --json` (works while it is down)."""
