"""What a long-running server is to the rest of the pipeline (the WebSocket publisher; gRPC next).

A server is one module exposing an object of this shape and one line in ``publisher.SERVERS``;
from that line `pipeline run` supervises it (program NAME), the CLI gets its command (`pipeline
publish`, `pipeline grpc`) with ``--host``, ``--port`` and ``--ready-file``, the config loader
gives it its top-level ``[NAME]`` table, and `pipeline status` shows what ``status`` returns under
the key NAME.  A server whose port is taken exits with status ``EXIT_PORT_IN_USE`` and one line
(pipeline/app/cli.py), which supervisord does not retry.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any, Protocol

from pipeline.config import Config, SectionContext

log = logging.getLogger(__name__)


class Stop:
    """What ends a server's ``run``: SIGTERM/SIGINT, or an internal error (kept in ``failure``
    so ``run`` can raise it after its orderly shutdown).  ``event`` is set by either."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str):
        self.event = asyncio.Event()
        self.failure: list[BaseException] = []
        self._name = name
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.event.set)

    def fail(self, exc: BaseException) -> None:
        log.error("%s stopping on an internal error: %r", self._name, exc, exc_info=exc)
        self.failure.append(exc)
        self.event.set()


class Server(Protocol):
    def parse_config(self, table: dict, key: str, ctx: SectionContext) -> Any:
        """Its ``[NAME]`` table (``{}`` when absent and the server is default_on) -> frozen settings."""

    def address(self, config: Config) -> tuple[str, int]:
        """The configured (host, port) it listens on."""

    def banner(self, config: Config) -> str:
        """One line `pipeline run` prints at start: where to connect."""

    def run(self, config: Config, host: str | None, port: int | None, ready_file: str | None) -> None:
        """Serve until SIGTERM/SIGINT; host/port override the config; write the bound port to ready_file.
        Raises OSError when it cannot listen."""

    def status(self, config: Config) -> dict[str, Any]:
        """Its section of `pipeline status --json`, read from run_dir (works while it is down)."""
