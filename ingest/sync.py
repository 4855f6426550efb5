"""The book-sync state machine of one symbol: every state, every transition, every venue style.

The model (shared/docs/exchange-protocols.md section 0 rules 4-5, sections 1-2)::

                       +-------------- disconnected() (from any state) ---------------+
                       v                                                               |
    DISCONNECTED --connected()--> BUFFERING --snapshot_received(aligned)--> INSTALLING
                                   ^   |  ^                                  |     |
                                   |   |  +-- book_invalid() (bad install) --+     | installed()
                                   |   +-- too old / buffer gap: fetch again       v
                                   +------ gap, book_invalid() ----------------- LIVE --+
                                                                                  ^     | in-stream
                                                                                  +-----+ snapshot: REPLACE

- BUFFERING: every diff is buffered (bounded) until a snapshot comes: from REST
  (REST venues: fetched when the first diff after connecting arrives, or when the
  runner says the snapshot is overdue) or in the stream (everything buffered before
  it is older: dropped).  The book is empty: a diff never touches an empty book.
- snapshot_received: a REST snapshot must not be older than the first buffered diff
  (else fetch again, keep buffering); buffered diffs it covers are dropped, the rest
  must chain from it by the venue's rule (``Adapter.check``).  Then INSTALLING: the
  feed *replaces* the book with the snapshot, applies ``replay`` and verifies the
  result (checksum, crossed), then calls ``installed()`` or ``book_invalid()``.
- LIVE: each diff is checked by the venue rule: SKIP (already covered), APPLY, or
  GAP.  A gap sends only this symbol back to BUFFERING, with the diff that revealed
  it as the first buffered event.  Skips in a row spanning more than ``max_skip_s``
  of receive time are a gap too: update ids went backwards on the connection, or a
  REST snapshot is ahead of the stream, and the book would otherwise stay frozen
  while it reads "live" (issue 19).  A legitimate run of skips (the diffs in flight
  when a snapshot was taken) is read in one burst, well inside the bound.  An in-stream snapshot on a live book replaces it
  (Bybit resends one, every Hyperliquid frame is one); a REST answer is moot there.
- book_invalid: the feed found the book wrong (checksum or BBO mismatch, crossed,
  view past a cut snapshot): back to BUFFERING, resync.
- disconnected: the depth connection died; buffers are dropped (no venue lets a book
  resume across sockets) and the book waits for the next connection.
- removed: the symbol was unsubscribed at runtime (from any state).  REMOVED is final:
  the feed publishes the book once more with the state "removed", and every later input
  (frames still in flight, the connection's events) is accepted and ignored.  A symbol
  added again gets a new machine.

Each transition returns the *actions* its caller must carry out, in order (h11's
_state.py style): APPLY / INSTALL / REPLACE (the feed, on its book), PUBLISH_SNAPSHOT
and MARK_STALE (the feed, on shared memory and the bus), FETCH_SNAPSHOT and
RESUBSCRIBE (the runner, on the network: which one follows from the venue's
``snapshot_source``).  The machine never touches a book, a clock or a socket.

The published state of the book (``book_state``, shm ``BookState`` and the bus's
"live"/"stale"/"syncing") is a projection of this machine, computed here only: LIVE
when LIVE, else STALE once the book has ever been live, else SYNCING.

Illegal transitions raise IllegalTransition at once and are never caught: they are
our bugs (supervisor's ``_assertInState``).  Legal but moot inputs are documented
where they are accepted: a REST snapshot that arrives after its connection died or
after the book went live.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Callable

from ingest.adapters.base import APPLY, GAP, SKIP, Verdict  # noqa: F401  (the one Verdict)
from ingest.events import DepthDiff, DepthSnapshot
from pipeline.shm import BookState


MAX_SKIP_S = 3.0  # skips in a row spanning longer than this (receive time) are a gap


class SyncState(enum.Enum):
    DISCONNECTED = "disconnected"   # no depth connection: nothing to buffer
    BUFFERING = "buffering"         # connected, diffs buffered until a usable snapshot
    INSTALLING = "installing"       # snapshot aligned: the feed installs and verifies it
    LIVE = "live"                   # the book follows the venue diff by diff
    REMOVED = "removed"             # unsubscribed at runtime: final, inputs ignored


class Action(enum.Enum):
    """What a transition asks its caller to do."""

    APPLY = "apply"                        # feed: apply the diff to the book
    INSTALL = "install"                    # feed: replace the book with the snapshot, apply ``replay``, verify
    REPLACE = "replace"                    # feed: replace the live book with the in-stream snapshot (exact delta)
    PUBLISH_SNAPSHOT = "publish_snapshot"  # feed: the book went live: publish its view as a snapshot
    MARK_STALE = "mark_stale"              # feed: the book left LIVE: publish it as stale, stop trusting it
    FETCH_SNAPSHOT = "fetch_snapshot"      # runner: fetch a REST snapshot of the symbol
    RESUBSCRIBE = "resubscribe"            # runner: make the venue send a fresh in-stream snapshot


NOTHING: tuple[Action, ...] = ()
APPLY_DIFF = (Action.APPLY,)
INSTALL_SNAPSHOT = (Action.INSTALL,)
REPLACE_BOOK = (Action.REPLACE,)
PUBLISH = (Action.PUBLISH_SNAPSHOT,)
FETCH = (Action.FETCH_SNAPSHOT,)
RESUBSCRIBE = (Action.RESUBSCRIBE,)
STALE_FETCH = (Action.MARK_STALE, Action.FETCH_SNAPSHOT)
STALE_RESUBSCRIBE = (Action.MARK_STALE, Action.RESUBSCRIBE)
MARK_STALE = (Action.MARK_STALE,)


class IllegalTransition(RuntimeError):
    """A sync method called in a state that does not allow it (a bug of ours)."""


class SyncCounts:
    """The counters this machine keeps (a plain record; the feed's per-symbol record
    subclasses it and the stats loop copies it to shared memory)."""

    __slots__ = ("gaps", "resyncs", "buffered", "dropped", "overflowed")

    def __init__(self):
        self.gaps = 0         # sequence gaps detected (live, or inside the buffer at a snapshot)
        self.resyncs = 0      # snapshots installed after the first
        self.buffered = 0     # diffs buffered now
        self.dropped = 0      # live diffs skipped as already covered
        self.overflowed = 0   # buffered diffs dropped because the buffer was full


class BookSync:
    """Sequencing of one symbol's depth stream against its snapshots."""

    __slots__ = ("symbol", "check", "snapshot_usable", "in_stream", "state", "book_id", "first_pending",
                 "buffer", "max_buffer", "replay", "ever_live", "snapshot_wanted", "book_state", "why",
                 "counts", "_resync", "_stale_resync", "max_skip_ns", "skip_since_ns")

    def __init__(self, symbol: str, check: Callable[[DepthDiff, int, bool], Verdict],
                 snapshot_usable: Callable[[int, DepthDiff | None], bool], in_stream: bool = False,
                 counts: SyncCounts | None = None, max_buffer: int = 50_000, max_skip_s: float = MAX_SKIP_S):
        self.symbol = symbol
        self.check = check
        self.snapshot_usable = snapshot_usable
        self.in_stream = in_stream   # snapshots come in the stream (resync = resubscribe), else from REST
        self.state = SyncState.DISCONNECTED
        self.book_id = -1            # venue update id the book reflects
        self.first_pending = False   # the next applied diff is the first after a snapshot
        self.buffer: deque[DepthDiff] = deque()
        self.max_buffer = max_buffer
        self.replay: list[DepthDiff] = []   # INSTALLING: buffered diffs to apply after the snapshot
        self.ever_live = False
        self.snapshot_wanted = False  # REST: fetch once the first diff after connecting is buffered
        self.book_state = BookState.SYNCING
        self.why = ""                 # what caused the last resync (for the caller's log line)
        self.counts = counts if counts is not None else SyncCounts()
        self._resync = RESUBSCRIBE if in_stream else FETCH
        self._stale_resync = STALE_RESUBSCRIBE if in_stream else STALE_FETCH
        self.max_skip_ns = int(max_skip_s * 1e9)
        self.skip_since_ns = 0        # receive time of the first of the skips in a row (0: none)

    def _assert_state(self, *states: SyncState) -> None:
        if self.state not in states:
            raise IllegalTransition(f"{self.symbol}: in state {self.state.value}, expected "
                                    f"{' or '.join(s.value for s in states)}")

    def _leave_live(self, why: str) -> tuple[Action, ...]:
        """LIVE/INSTALLING -> BUFFERING with an empty buffer; the resync actions."""
        was_live = self.state is SyncState.LIVE
        self.state = SyncState.BUFFERING
        self.buffer.clear()
        self.counts.buffered = 0
        self.skip_since_ns = 0
        self.why = why
        if self.ever_live:
            self.book_state = BookState.STALE
        return self._stale_resync if was_live else self._resync

    # ---------------------------------------------------------------- transitions
    def connected(self) -> tuple[Action, ...]:
        """The depth connection is open: buffer.  REST venues fetch a snapshot once the
        first diff is buffered (so it is not older than the stream); in-stream venues
        get one after subscribing.  Moot once REMOVED."""
        if self.state is SyncState.REMOVED:
            return NOTHING
        self._assert_state(SyncState.DISCONNECTED)
        self.state = SyncState.BUFFERING
        self.buffer.clear()
        self.book_id = -1
        self.snapshot_wanted = not self.in_stream
        return NOTHING

    def removed(self) -> tuple[Action, ...]:
        """The symbol was unsubscribed (legal in any state): REMOVED, for good; publish it so."""
        self.state = SyncState.REMOVED
        self.buffer.clear()
        self.replay = []
        self.counts.buffered = 0
        self.snapshot_wanted = False
        self.book_state = BookState.REMOVED
        return PUBLISH

    def disconnected(self) -> tuple[Action, ...]:
        """The depth connection died (legal in any state; moot once REMOVED)."""
        if self.state is SyncState.REMOVED:
            return NOTHING
        was_live = self.state is SyncState.LIVE
        self.state = SyncState.DISCONNECTED
        self.buffer.clear()
        self.counts.buffered = 0
        self.book_id = -1
        self.snapshot_wanted = False
        if self.ever_live:
            self.book_state = BookState.STALE
        return MARK_STALE if was_live else NOTHING

    def diff_received(self, ev: DepthDiff) -> tuple[Action, ...]:
        """One diff: APPLY_DIFF when the caller must apply it to the book (hot path)."""
        state = self.state
        if state is SyncState.LIVE:
            verdict = self.check(ev, self.book_id, self.first_pending)
            if verdict is APPLY:
                self.book_id = ev.last_id
                self.first_pending = False
                self.skip_since_ns = 0
                return APPLY_DIFF
            expected = self.book_id
            if verdict is SKIP:
                since = self.skip_since_ns
                if not since:
                    self.skip_since_ns = ev.recv_ns or 1
                    self.counts.dropped += 1
                    return NOTHING
                if ev.recv_ns - since <= self.max_skip_ns:
                    self.counts.dropped += 1
                    return NOTHING
                why = (f"frozen: every diff for {(ev.recv_ns - since) / 1e9:.1f}s was already covered by the book "
                       f"at update id {expected} (now {ev.first_id}..{ev.last_id}: ids went backwards, or the "
                       f"snapshot is ahead of the stream)")
            else:
                why = (f"sequence gap: book at update id {expected}, next event covers "
                       f"{ev.first_id}..{ev.last_id} (pu {ev.prev_id})")
            actions = self._leave_live(why)
            self.buffer.append(ev)
            self.counts.buffered = 1
            self.counts.gaps += 1
            return actions
        if state is SyncState.REMOVED:
            return NOTHING  # in flight when it was unsubscribed
        if state is SyncState.BUFFERING:
            buffer = self.buffer
            buffer.append(ev)
            if len(buffer) > self.max_buffer:
                buffer.popleft()  # the snapshot will be newer than what we drop
                self.counts.overflowed += 1
            self.counts.buffered = len(buffer)
            if self.snapshot_wanted:
                self.snapshot_wanted = False
                return FETCH
            return NOTHING
        raise IllegalTransition(f"{self.symbol}: diff received while {state.value}")

    def snapshot_overdue(self) -> tuple[Action, ...]:
        """REST venues: no diff came soon after connecting (a quiet symbol): fetch anyway."""
        if self.state is SyncState.BUFFERING and self.snapshot_wanted:  # (never when REMOVED)
            self.snapshot_wanted = False
            return FETCH
        return NOTHING

    def snapshot_received(self, snap: DepthSnapshot) -> tuple[Action, ...]:
        """A snapshot: INSTALL_SNAPSHOT (``replay`` holds the buffered diffs to apply after
        it), REPLACE_BOOK (in-stream, live book), a refetch, or NOTHING (moot)."""
        state = self.state
        if state is SyncState.LIVE:
            if not self.in_stream:
                return NOTHING  # moot: a REST answer to a request made before the book went live
            self.book_id = snap.last_id
            self.first_pending = True
            return REPLACE_BOOK
        if state is SyncState.DISCONNECTED and not self.in_stream or state is SyncState.REMOVED:
            return NOTHING  # moot: the connection died (or the symbol went) while the request was under way
        self._assert_state(SyncState.BUFFERING)
        if self.in_stream:
            self.buffer.clear()  # same ordered stream: everything buffered before it is older
        first = self.buffer[0] if self.buffer else None
        if not self.snapshot_usable(snap.last_id, first):
            self.why = (f"snapshot at {snap.last_id} older than first buffered event "
                        f"{first.first_id if first else '-'}")
            return self._resync
        book_id, first_pending = snap.last_id, True
        replay: list[DepthDiff] = []
        check = self.check
        for ev in self.buffer:
            verdict = check(ev, book_id, first_pending)
            if verdict is SKIP:
                continue
            if verdict is GAP:
                # the buffer itself has a hole after the snapshot: keep what follows it
                rest = list(self.buffer)
                self.buffer = deque(rest[rest.index(ev):])
                self.counts.buffered = len(self.buffer)
                self.counts.gaps += 1
                self.why = (f"buffered events do not chain from snapshot {snap.last_id} at "
                            f"{ev.first_id}..{ev.last_id}")
                return self._resync
            replay.append(ev)
            book_id, first_pending = ev.last_id, False
        self.buffer.clear()
        self.replay = replay
        self.book_id, self.first_pending = book_id, first_pending
        self.skip_since_ns = 0
        self.state = SyncState.INSTALLING
        return INSTALL_SNAPSHOT

    def installed(self) -> tuple[Action, ...]:
        """The feed installed the snapshot and found the book sound: LIVE, publish it."""
        self._assert_state(SyncState.INSTALLING)
        self.state = SyncState.LIVE
        self.replay = []
        self.counts.buffered = 0
        if self.ever_live:
            self.counts.resyncs += 1
        self.ever_live = True
        self.book_state = BookState.LIVE
        return PUBLISH

    def book_invalid(self, why: str) -> tuple[Action, ...]:
        """The feed found the book wrong (checksum or BBO mismatch, crossed, view past a
        cut snapshot): drop it, buffer again, resync."""
        self._assert_state(SyncState.LIVE, SyncState.INSTALLING)
        self.replay = []
        return self._leave_live(why)
