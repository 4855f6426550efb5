"""Book-sync state machine for one symbol: the snapshot/stream join, gaps, resyncs.

The model (shared/docs/exchange-protocols.md section 0 rules 4-5, sections 1-2)::

    DISCONNECTED --connected()--> BUFFERING --snapshot_received(ok)--> LIVE
         ^                          ^   |                               |
         |                          |   +--snapshot too old: refetch    |
         +----disconnected()--------+-------- gap / mismatch -----------+

- BUFFERING: every diff is buffered (bounded) while a REST snapshot is fetched.  The
  book is empty and nothing is applied: a delta never touches an empty book.
- snapshot_received: the snapshot must not be older than the first buffered diff
  (else SnapshotTooOld: fetch again, keep buffering).  Buffered diffs covered by
  the snapshot are dropped, the rest must chain from it by the venue's rule; the
  book is *replaced* by the snapshot (an old book is never merged into a new one).
- LIVE: each diff is checked by the venue rule (adapter.check): SKIP (already
  covered), APPLY, or GAP.  A gap sends the symbol back to BUFFERING with the diff
  that revealed it as the first buffered event; only this symbol resyncs.
- disconnected: the depth connection died; buffers are dropped (no venue lets a
  book resume across sockets) and the book waits for the next connection.

Illegal transitions raise IllegalTransition at once: they are our bugs.
The machine is pure: it returns what to apply and says when to fetch a snapshot;
the caller owns the book, the clock and the network.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Callable

from ingest.events import DepthDiff, DepthSnapshot
from pipeline.errors import SequenceGap, SnapshotError

from ingest.adapters.base import APPLY, GAP, SKIP  # noqa: F401  (the one Verdict)


class SyncState(enum.Enum):
    DISCONNECTED = "disconnected"
    BUFFERING = "buffering"
    LIVE = "live"


class IllegalTransition(RuntimeError):
    """A sync method called in a state that does not allow it (a bug of ours)."""


class SnapshotTooOld(SnapshotError):
    """The snapshot predates the first buffered diff: fetch a newer one."""


class BookSync:
    """Sequencing of one symbol's depth stream against REST snapshots."""

    __slots__ = ("symbol", "check", "snapshot_usable", "state", "book_id", "first_pending",
                 "buffer", "max_buffer", "overflowed")

    def __init__(self, symbol: str, check: Callable[[DepthDiff, int, bool], int],
                 snapshot_usable: Callable[[int, DepthDiff | None], bool], max_buffer: int = 50_000):
        self.symbol = symbol
        self.check = check
        self.snapshot_usable = snapshot_usable
        self.state = SyncState.DISCONNECTED
        self.book_id = -1            # venue update id the book reflects
        self.first_pending = False   # the next applied diff is the first after a snapshot
        self.buffer: deque[DepthDiff] = deque()
        self.max_buffer = max_buffer
        self.overflowed = 0

    def _assert_state(self, *states: SyncState) -> None:
        if self.state not in states:
            raise IllegalTransition(f"{self.symbol}: in state {self.state.value}, expected "
                                    f"{' or '.join(s.value for s in states)}")

    # ---------------------------------------------------------------- transitions
    def connected(self) -> None:
        """The depth connection is open: start buffering; the caller fetches a snapshot."""
        self._assert_state(SyncState.DISCONNECTED)
        self.state = SyncState.BUFFERING
        self.buffer.clear()
        self.book_id = -1

    def disconnected(self) -> None:
        self.state = SyncState.DISCONNECTED
        self.buffer.clear()
        self.book_id = -1

    def diff_received(self, ev: DepthDiff) -> bool:
        """Feed one diff. Returns True when the caller must apply it to the book.

        Raises SequenceGap (state becomes BUFFERING, with ``ev`` buffered) when the
        diff does not chain; the caller marks the book stale and fetches a snapshot.
        """
        state = self.state
        if state is SyncState.LIVE:
            verdict = self.check(ev, self.book_id, self.first_pending)
            if verdict == APPLY:
                self.book_id = ev.last_id
                self.first_pending = False
                return True
            if verdict == SKIP:
                return False
            expected = self.book_id
            self.state = SyncState.BUFFERING
            self.buffer.clear()
            self.buffer.append(ev)
            raise SequenceGap(f"{self.symbol}: book at update id {expected}, next event covers "
                              f"{ev.first_id}..{ev.last_id} (pu {ev.prev_id})")
        if state is SyncState.BUFFERING:
            self.buffer.append(ev)
            if len(self.buffer) > self.max_buffer:
                self.buffer.popleft()  # the snapshot will be newer than what we drop
                self.overflowed += 1
            return False
        raise IllegalTransition(f"{self.symbol}: diff received while {state.value}")

    def snapshot_received(self, snap: DepthSnapshot, in_stream: bool = False) -> list[DepthDiff]:
        """Align a snapshot with the buffer.

        Returns the buffered diffs to apply after installing the snapshot, in order;
        the state is then LIVE.  Raises SnapshotTooOld (still BUFFERING) when the
        snapshot predates the buffer, or SequenceGap when the buffer does not chain.
        ``in_stream``: the snapshot came in the same ordered stream as the diffs (Bybit,
        OKX, Lighter), so everything buffered before it is older: dropped.
        """
        self._assert_state(SyncState.BUFFERING)
        if in_stream:
            self.buffer.clear()
        first = self.buffer[0] if self.buffer else None
        if not self.snapshot_usable(snap.last_id, first):
            raise SnapshotTooOld(f"{self.symbol}: snapshot at {snap.last_id} older than first buffered "
                                 f"event {first.first_id if first else '-'}")
        book_id, first_pending = snap.last_id, True
        to_apply: list[DepthDiff] = []
        for ev in self.buffer:
            verdict = self.check(ev, book_id, first_pending)
            if verdict == SKIP:
                continue
            if verdict == GAP:
                # the buffer itself has a hole after the snapshot: keep what follows it
                rest = list(self.buffer)
                self.buffer = deque(rest[rest.index(ev):])
                raise SequenceGap(f"{self.symbol}: buffered events do not chain from snapshot "
                                  f"{snap.last_id} at {ev.first_id}..{ev.last_id}")
            to_apply.append(ev)
            book_id, first_pending = ev.last_id, False
        self.buffer.clear()
        self.book_id, self.first_pending = book_id, first_pending
        self.state = SyncState.LIVE
        return to_apply

    def replaced(self, snapshot_id: int) -> None:
        """A live book was replaced by an in-stream snapshot (Bybit resends one, every
        Hyperliquid frame is one): the next diff chains from ``snapshot_id``."""
        self._assert_state(SyncState.LIVE)
        self.book_id = snapshot_id
        self.first_pending = True

    def invalidate(self) -> None:
        """Drop the book (a BBO/checksum mismatch): buffer again and wait for a snapshot."""
        self._assert_state(SyncState.LIVE, SyncState.BUFFERING)
        self.state = SyncState.BUFFERING
        self.buffer.clear()
