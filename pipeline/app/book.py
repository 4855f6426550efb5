"""`pipeline book EXCHANGE SYMBOL`: one symbol's view from shared memory, and when it is not
live, why.

A book is live when its view says so and the ingest that writes it is alive and beating
(pipeline.status.HEARTBEAT_LIMIT_S).  Otherwise the command still prints what the view holds
(a stale book keeps its last levels), says why it is not live (state, connection, failure
counts, the last error) and exits with NOT_LIVE_EXIT, so a script never takes an empty or
frozen book for a market.  Exit codes (docs/operations.md): 0 live, 1 no book at all (no
segment, unknown symbol), 2 bad usage or config, 3 not live.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.pidfile import pid_alive
from pipeline.shm import BookReader, BookSnapshot, BookState, HealthRecord
from pipeline.status import HEARTBEAT_LIMIT_S, iso_time, last_error

NOT_LIVE_EXIT = 3


@dataclass(frozen=True)
class BookView:
    """A view read from shared memory with what says whether to trust it."""

    snap: BookSnapshot
    stats: dict[str, int]
    health: HealthRecord
    writer_alive: bool
    heartbeat_age_s: float
    now_ns: int

    @property
    def reason(self) -> str | None:
        """Why the book is not live (None when it is)."""
        return not_live_reason(self.snap.state, self.stats, self.health, self.writer_alive, self.heartbeat_age_s,
                               self.now_ns)

    @property
    def age_s(self) -> float | None:
        """Seconds since the view last changed (None: never)."""
        rx = self.snap.ts_received_us
        return round(max(0, self.now_ns // 1000 - rx) / 1e6, 3) if rx else None


def read(prefix: str, exchange: str, symbol: str, depth: int | None = None, now_ns: int | None = None,
         unit: str | None = None) -> BookView:
    """Read ``symbol``'s view and health.  Raises SharedMemoryError (no segment, unknown symbol).
    ``unit``: the segment of the symbol's ingest process (pipeline/shards.py ``unit_of``)."""
    with BookReader.open(prefix, unit or exchange) as reader:
        snap = reader.read(symbol, depth=depth)
        stats = reader.stats(symbol)
        health = reader.feed_health(symbol)
        pid, heartbeat_ns = reader.pid, reader.heartbeat_ns
    now_ns = now_ns or time.time_ns()
    return BookView(snap, stats, health, pid_alive(pid), max(0, now_ns - heartbeat_ns) / 1e9, now_ns)


def not_live_reason(state: BookState, stats: dict[str, int], health: HealthRecord, writer_alive: bool,
                    heartbeat_age_s: float, now_ns: int) -> str | None:
    """One line: why a book is not live, with the failures and last error that explain it."""
    if not writer_alive:
        why = "its ingest process is gone (the view is what it left)"
    elif heartbeat_age_s > HEARTBEAT_LIMIT_S:
        why = f"its ingest stopped updating shared memory {heartbeat_age_s:.1f}s ago"
    elif state is BookState.LIVE:
        return None
    elif state is BookState.SYNCING:
        why = ("syncing: not connected" if not stats.get("connected") else
               f"syncing: connected, waiting for a snapshot ({stats.get('buffered', 0)} diffs buffered)")
    elif state is BookState.STALE:
        since = stats.get("stale_since_ns", 0)
        why = "stale: resyncing" + (f" for {max(0, now_ns - since) / 1e9:.1f}s" if since else "")
    else:
        why = state.name.lower()
    if health.connect_failures or health.rest_errors:
        why += f"; {health.connect_failures} failed connects, {health.rest_errors} REST errors"
    if health.error_ns:
        why += f"; last error {max(0, now_ns - health.error_ns) / 1e9:.1f}s ago: {health.error}"
    return why


def to_json(view: BookView) -> dict:
    """The JSON of `pipeline book --json` (docs/operations.md)."""
    snap = view.snap
    return {**snap.to_json(), "update_id": snap.update_id,
            "time_exchange": iso_time(snap.ts_exchange_us * 1000) if snap.ts_exchange_us else None,
            "time_received": iso_time(snap.ts_received_us * 1000) if snap.ts_received_us else None,
            "age_s": view.age_s, "reason": view.reason, **last_error(view.health, view.now_ns)}


def header_lines(exchange: str, symbol: str, view: BookView) -> list[str]:
    """The lines above the ladder: identity and age, then NOT LIVE and why when it is not."""
    snap = view.snap
    age = f"{view.age_s:.2f}s" if view.age_s is not None else "never updated"
    lines = [f"{exchange} {symbol}  state {snap.state.name.lower()}  epoch {snap.epoch}  seq {snap.seq}  "
             f"update id {snap.update_id}  age {age}"]
    reason = view.reason
    if reason is not None:
        lines.append(f"NOT LIVE: {reason}")
    return lines
