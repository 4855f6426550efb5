"""One client's bounded outgoing queue: trades never conflated, L2 conflated to the latest view.

Pure.  Four lanes, served in this order by the client's sender:

    control    welcome, replies, errors, status events        bounded; overflow = a request flood
    trades     pre-rendered trade frames (and liquidations,   bounded by count and by age; never
               trade bars: never conflated either)            dropped: overflow closes the client
    latest     the latest quote / ticker / CVD frame per      one per (channel, key): a newer frame
               (channel, key)                                 replaces a queued one (conflated)
    snapshots  keys whose latest view is due (ordered set)    at most one per key; rendered when
                                                              sent, so always the current view
    deltas     pre-rendered order_book_l2_update frames       bounded; overflow conflates them

Conflation (DESIGN.md failure model, building-block-costs.md section 7): when a client
falls ``client_l2_queue`` deltas behind, every queued delta is dropped and each of their
keys gets a snapshot mark instead, rendered with the current seq when the client is
ready.  A key is either marked or has deltas queued, never both, so a client never
applies a stale delta on top of a newer snapshot.  Trades are never conflated: a client
that cannot keep up even with trades is closed with a reason (the caller does it).
"""

from __future__ import annotations

from collections import deque

Key = tuple[str, str]
# What pop() returns: (JSON bytes, "control" | "trade" | "l2", ingest receive time in µs or 0),
# or (key, "snapshot", 0) when the caller must render the key's latest view now.
Frame = tuple[object, str, int]

MAX_CONTROL = 256


class Outbox:
    __slots__ = ("max_trades", "max_deltas", "max_lag_us", "control", "trades", "snapshots", "deltas",
                 "conflations", "dropped", "sent", "peak", "latest", "replaced")

    def __init__(self, max_trades: int, max_deltas: int, max_lag_s: float):
        self.max_trades = max_trades
        self.max_deltas = max_deltas
        self.max_lag_us = int(max_lag_s * 1e6)
        self.control: deque[Frame] = deque()
        self.trades: deque[tuple[bytes, int, int]] = deque()  # (frame, ingest receive µs, queued at µs)
        self.snapshots: dict[Key, None] = {}
        self.deltas: deque[tuple[Key, bytes, int]] = deque()
        self.latest: dict[tuple[str, Key], tuple[bytes, int]] = {}  # (channel, key) -> (frame, received µs)
        self.replaced = 0     # latest-lane frames replaced by a newer one before they were sent
        self.conflations = 0  # times the delta backlog was replaced by snapshots
        self.dropped = 0      # deltas dropped by those conflations
        self.sent = 0
        self.peak = 0         # largest depth seen (all lanes)

    def __len__(self) -> int:
        return len(self.control) + len(self.trades) + len(self.latest) + len(self.snapshots) + len(self.deltas)

    def depths(self) -> dict[str, int]:
        return {"control": len(self.control), "trades": len(self.trades), "latest": len(self.latest),
                "snapshots": len(self.snapshots), "deltas": len(self.deltas)}

    def push_latest(self, channel: str, key: Key, frame: bytes, received_us: int) -> None:
        """Queue the latest state of a conflatable kind; it replaces one still queued."""
        slot = (channel, key)
        latest = self.latest
        if slot in latest:
            self.replaced += 1
            del latest[slot]  # re-inserted last: the lane stays in arrival order
        latest[slot] = (frame, received_us)

    def drop_latest(self, channel: str, key: Key) -> None:
        self.latest.pop((channel, key), None)

    # --------------------------------------------------------------------- push
    def push_control(self, frame: bytes) -> bool:
        """Queue a reply or status frame. False: the lane is full (a request flood)."""
        if len(self.control) >= MAX_CONTROL:
            return False
        self.control.append((frame, "control", 0))
        return True

    def push_trade(self, frame: bytes, received_us: int, now_us: int) -> str | None:
        """Queue a trade. Returns why the client must be closed, or None."""
        trades = self.trades
        if len(trades) >= self.max_trades:
            return f"too slow: {len(trades)} trades queued (limit {self.max_trades})"
        if trades and now_us - trades[0][2] > self.max_lag_us:
            return f"too slow: oldest queued trade waited {(now_us - trades[0][2]) / 1e6:.1f} s"
        trades.append((frame, received_us, now_us))
        n = len(self)
        if n > self.peak:
            self.peak = n
        return None

    def push_delta(self, key: Key, frame: bytes, received_us: int) -> list[Key]:
        """Queue a delta. Returns the keys conflated into snapshots (empty when none)."""
        deltas = self.deltas
        deltas.append((key, frame, received_us))
        if len(deltas) <= self.max_deltas:
            n = len(self)
            if n > self.peak:
                self.peak = n
            return []
        keys = list(dict.fromkeys(k for k, _, _ in deltas))
        self.dropped += len(deltas)
        self.conflations += 1
        deltas.clear()
        for k in keys:
            self.snapshots[k] = None
        return keys

    def want_snapshot(self, key: Key) -> None:
        """Mark ``key`` for a snapshot of its latest view; its queued deltas are moot."""
        self._drop_deltas(key)
        self.snapshots[key] = None

    def drop(self, key: Key) -> None:
        """Forget everything queued for ``key``'s book (unsubscribed)."""
        self._drop_deltas(key)
        self.snapshots.pop(key, None)

    def _drop_deltas(self, key: Key) -> None:
        if self.deltas and any(k == key for k, _, _ in self.deltas):
            self.deltas = deque(d for d in self.deltas if d[0] != key)

    # ---------------------------------------------------------------------- pop
    def pop(self) -> Frame | None:
        """The next thing to send (see Frame), or None when the queue is empty."""
        if self.control:
            return self.control.popleft()
        if self.trades:
            frame, received_us, _ = self.trades.popleft()
            return frame, "trade", received_us
        if self.latest:
            slot = next(iter(self.latest))
            frame, received_us = self.latest.pop(slot)
            return frame, "other", received_us
        if self.snapshots:
            key = next(iter(self.snapshots))
            del self.snapshots[key]
            return key, "snapshot", 0
        if self.deltas:
            _, frame, received_us = self.deltas.popleft()
            return frame, "l2", received_us
        return None
