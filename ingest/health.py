"""Failures of an ingest process, counted and explained where `pipeline status` reads them.

A venue that cannot be reached (DNS, refused, TLS) never delivers a frame, so frame and
update counters stay at 0 and the books at "syncing": only failure counts and the last
error say why.  The runner reports each failed connection attempt, each lost connection
and each failed REST request here; this module turns them into short texts and writes
them to the health records of the shared-memory segment (pipeline/shm.py): the exchange's,
every concerned feed's and the connection's own.  Errors are rare, so each is written at
once (a few microseconds), not batched by the stats loop.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from urllib.parse import urlsplit

import aiohttp

from ingest.events import StreamGroup
from ingest.wsclient import HandshakeFailed
from pipeline.shm import H_PROCESS_STATS, PROCESS_STATS, BookWriter, ConnState

_CONNECT_FAILURES = H_PROCESS_STATS + PROCESS_STATS.index("connect_failures")
_REST_ERRORS = H_PROCESS_STATS + PROCESS_STATS.index("rest_errors")
_SSL_SOURCE = re.compile(r" \(_ssl\.c:\d+\)$")  # OpenSSL's source line, noise to a reader


def describe_failure(exc: BaseException) -> str:
    """A short text for a failed connection or request: what kind of failure, then its detail.

    aiohttp wraps the socket error (ClientConnectorError.os_error); the kind comes from the
    innermost one, so a DNS failure reads the same on a WebSocket and on a REST request.
    """
    if isinstance(exc, aiohttp.ClientConnectorCertificateError) and not isinstance(exc.certificate_error, OSError):
        return f"TLS certificate rejected: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return describe_failure(exc.os_error)
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed: {exc.strerror or exc}"
    if isinstance(exc, ConnectionRefusedError):
        detail = str(exc) if (exc.strerror or "").lower() != "connection refused" else ""
        return f"connection refused: {detail}" if detail else "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate rejected: {getattr(exc, 'verify_message', None) or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {_SSL_SOURCE.sub('', str(exc))}"  # e.g. [SSL: WRONG_VERSION_NUMBER] wrong version number
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timed out"
    if isinstance(exc, HandshakeFailed):
        return f"handshake failed: {exc}"
    if isinstance(exc, ConnectionResetError):
        return f"connection reset: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def connection_label(group: StreamGroup) -> str:
    """``kind scheme://host:port/path``: the query (a long stream list on Binance) left out."""
    u = urlsplit(group.url)
    return f"{group.kind} {u.scheme}://{u.netloc}{u.path}"


class Health:
    """Writes the failures of one exchange into its segment's health records."""

    def __init__(self, writer: BookWriter, clock=time.time_ns):
        self.writer = writer
        self.clock = clock
        self._connections: dict[StreamGroup, int | None] = {}
        self.symbols_changed()

    def symbols_changed(self) -> None:
        """The writer's slots changed hands (a runtime addition): follow them."""
        self._index = {sym: i for i, sym in enumerate(self.writer.symbols) if sym}

    def _feeds(self, symbols) -> list[int]:
        rec = self.writer.records
        return [rec.feed(self._index[s]) for s in symbols if s in self._index]

    def add_connection(self, group: StreamGroup) -> None:
        """A connection the runner will hold: it gets a record (the first MAX_CONNECTIONS do)."""
        j = len(self._connections)
        r = self.writer.records.connection(j)
        self._connections[group] = r
        self.writer.set_connections(j + 1)
        if r is not None:
            self.writer.update_record(r, self.clock(), label=connection_label(group), state=ConnState.CONNECTING,
                                      symbols=len(group.symbols))

    def connecting(self, group: StreamGroup) -> None:
        r = self._connections.get(group)
        if r is not None:
            self.writer.update_record(r, self.clock(), state=ConnState.CONNECTING)

    def connection_opened(self, group: StreamGroup) -> None:
        r = self._connections.get(group)
        if r is not None:
            self.writer.update_record(r, self.clock(), state=ConnState.OPEN, opened=1)

    def connect_failed(self, group: StreamGroup, exc: BaseException) -> str:
        """An attempt that never opened: counted for the process, the connection and its feeds."""
        text = f"{group.kind} connect: {describe_failure(exc)}"
        self.writer.header[_CONNECT_FAILURES] += 1
        self._connection_down(group, text, failed=1)
        return text

    def connection_lost(self, group: StreamGroup, reason: str) -> None:
        """An open connection ended for ``reason`` (not a failed attempt: counted in reconnects)."""
        self._connection_down(group, f"{group.kind} connection lost: {reason}", failed=0)

    def _connection_down(self, group: StreamGroup, text: str, failed: int) -> None:
        now = self.clock()
        w = self.writer
        r = self._connections.get(group)
        if r is not None:
            w.update_record(r, now, error=text, connect_failures=failed, state=ConnState.DOWN)
        for fr in self._feeds(group.symbols):
            w.update_record(fr, now, error=text, connect_failures=failed)
        w.update_record(0, now, error=text, connect_failures=failed)

    def rest_failed(self, what: str, text: str) -> None:
        """A REST request that failed (``what``: the symbol of a snapshot, or e.g. "discovery",
        which concerns every feed: no symbol can subscribe before it succeeds)."""
        now = self.clock()
        w = self.writer
        w.header[_REST_ERRORS] += 1
        text = f"REST {what}: {text}"
        feeds = self._feeds((what,)) if what in self._index else self._feeds(self._index)
        for fr in feeds:
            w.update_record(fr, now, error=text, rest_errors=1)
        w.update_record(0, now, error=text, rest_errors=1)
