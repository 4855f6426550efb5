"""One client's view of the pipeline: its subscriptions, their throttles and seqs, its request rate.

Pure: no sockets, no clock of its own (every method takes ``now_us``), no event loop.

Subscriptions are kept per (exchange, symbol) key: ``trades`` on or off, and at most
one book subscription.  A client that sends nothing has the *default subscription*:
every key, trades and book snapshots at the default depth and its exchange's throttle.
Its first ``subscribe`` replaces the default (a client that subscribes gets exactly
what it asked for); ``unsubscribe`` removes from whatever is there.  Subscribing to a
key again replaces its book subscription, which sends a fresh snapshot: that is how a
client resyncs.

A book subscription in **snapshot mode** moves through three phases::

    PENDING ---(snapshot sent at t)---> WAITING ---(book changed, t+throttle passed)---> PENDING
                                           |
                                           +---(book changed before t+throttle)---> SCHEDULED
    SCHEDULED ---(timer at t+throttle)---> PENDING

so a symbol gets at most one snapshot per throttle interval, always of the latest view
(rendered when it is sent, never queued as a backlog), and none while it does not change.

In **delta mode** the subscription keeps the (epoch, seq) of the view the client holds.
A delta for seq + 1 is sent and advances it; an older one is skipped (the client's
snapshot already covers it); anything else -- a gap, a new epoch, a resync of the
publisher's own book -- sends the client a fresh snapshot instead (PENDING).  This is
the Clone pattern (DESIGN.md) applied once more, per client.
"""

from __future__ import annotations

import enum
from typing import Any

from publisher.requests import DEFAULT_OTHER, Mode, RequestError, Subscribe, Unsubscribe
from publisher.settings import Settings

Key = tuple[str, str]


class Phase(enum.Enum):
    PENDING = "pending"      # a snapshot is queued; it is rendered when it is sent
    WAITING = "waiting"      # snapshot sent; the next goes after the next change of the book
    SCHEDULED = "scheduled"  # changed within the throttle interval: a timer will queue the snapshot
    LIVE = "live"            # delta mode: the client holds the view at (epoch, seq)


class Verdict(enum.Enum):
    SEND = "send"      # the next delta of the client's view
    SKIP = "skip"      # already covered, or a snapshot is on its way
    RESYNC = "resync"  # the client needs a snapshot


class BookSub:
    """A book subscription of one key (see the module docstring for its phases)."""

    __slots__ = ("mode", "depth", "throttle_us", "epoch", "seq", "last_sent_us", "phase", "timer")

    def __init__(self, mode: Mode, depth: int, throttle_ms: int):
        self.mode = mode
        self.depth = depth
        self.throttle_us = throttle_ms * 1000
        self.epoch = 0
        self.seq = 0
        self.last_sent_us = 0
        self.phase = Phase.PENDING  # every book subscription starts with a snapshot
        self.timer: Any = None  # the scheduler's handle while SCHEDULED

    @property
    def throttle_ms(self) -> int:
        return self.throttle_us // 1000

    def snapshot_sent(self, now_us: int, epoch: int, seq: int) -> None:
        self.last_sent_us, self.epoch, self.seq = now_us, epoch, seq
        self.phase = Phase.WAITING if self.mode is Mode.SNAPSHOTS else Phase.LIVE

    def book_changed(self, now_us: int) -> int | None:
        """Snapshot mode: the book changed. Returns 0 to queue a snapshot now, a due time
        (µs) to schedule one, or None when one is already pending or scheduled."""
        if self.phase is not Phase.WAITING:
            return None
        due = self.last_sent_us + self.throttle_us
        if now_us >= due or now_us < self.last_sent_us:  # (a wall clock stepped back: do not stall)
            self.phase = Phase.PENDING
            return 0
        self.phase = Phase.SCHEDULED
        return due

    def timer_fired(self) -> bool:
        """Snapshot mode: the throttle interval ended; True when a snapshot is now due."""
        self.timer = None
        if self.phase is Phase.SCHEDULED:
            self.phase = Phase.PENDING
            return True
        return False

    def delta(self, epoch: int, seq: int, continuous: bool = True) -> Verdict:
        """Delta mode: may the change that made the view (epoch, seq) go to this client?

        ``continuous`` is false when the publisher's own book jumped to (epoch, seq) (a
        reload): there is no delta to send, and a client behind that point resyncs.
        """
        if self.phase is not Phase.LIVE:
            return Verdict.SKIP
        if epoch != self.epoch:
            # epochs are ingest start times: an older one is a message still in flight
            return Verdict.SKIP if epoch < self.epoch else self.resync()
        if seq <= self.seq:
            return Verdict.SKIP
        if not continuous or seq != self.seq + 1:
            return self.resync()
        self.seq = seq
        return Verdict.SEND

    def resync(self) -> Verdict:
        self.phase = Phase.PENDING
        return Verdict.RESYNC

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Sub:
    """What one client takes of one key: trades, a book subscription, and the other channels
    (requests.OTHER_CHANNELS names: quotes, derivative_ticker, liquidations, cvd, trade_bars).

    Quotes are throttled like L2 snapshots (``quote_throttle_us``, the subscription's
    ``throttle_ms`` in snapshot mode, 0 = every quote in delta mode): a quote goes out at once
    when the last one went out at least an interval ago, else the latest is held and sent when
    the interval ends (the hub's timer), so a symbol gets at most one quote per interval, always
    the latest."""

    __slots__ = ("trades", "book", "others", "quote_throttle_us", "quote_sent_us", "quote_held", "quote_timer")

    def __init__(self, trades: bool, book: BookSub | None, others: frozenset[str] = frozenset(),
                 quote_throttle_ms: int = 0):
        self.trades = trades
        self.book = book
        self.others = others
        self.quote_throttle_us = quote_throttle_ms * 1000
        self.quote_sent_us = 0  # when the last quote was queued
        self.quote_held: tuple[bytes, int] | None = None  # (frame, received µs) waiting for the interval's end
        self.quote_timer: Any = None

    def cancel_quote_timer(self) -> None:
        if self.quote_timer is not None:
            self.quote_timer.cancel()
            self.quote_timer = None


Change = tuple[Key, Sub | None, Sub | None]  # (key, old, new): the hub re-indexes old -> new


class RateLimiter:
    """Token bucket: ``rate`` requests per second, bursts of up to ``rate``."""

    __slots__ = ("rate", "tokens", "stamp_us")

    def __init__(self, rate: float):
        self.rate = rate
        self.tokens = rate
        self.stamp_us = 0

    def allow(self, now_us: int) -> bool:
        elapsed = max(0, now_us - self.stamp_us) / 1e6 if self.stamp_us else 0.0
        self.stamp_us = now_us
        self.tokens = min(self.rate, self.tokens + elapsed * self.rate)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Session:
    """Subscriptions and request accounting of one client."""

    def __init__(self, client_id: int, settings: Settings):
        self.client_id = client_id
        self.settings = settings
        limits = settings.limits
        self.limiter = RateLimiter(limits.max_requests_per_s)
        self.refused = 0  # requests refused by the rate limit in the current second
        self.refused_window_us = 0
        self.default = True
        self.subs: dict[Key, Sub] = {}
        for ex, feed in settings.feeds.items():
            depth = min(limits.default_depth, feed.depth)
            for sym in feed.symbols:
                self.subs[(ex, sym)] = Sub(True, BookSub(Mode.SNAPSHOTS, depth, feed.throttle_ms), DEFAULT_OTHER,
                                           feed.throttle_ms)

    def follow(self, exchange: str, symbols) -> list[Change]:
        """Symbols added to the pipeline while this client is connected: a client on the default
        subscription ("everything") gets them as it got the others; one that chose gets nothing new."""
        if not self.default:
            return []
        feed = self.settings.feeds[exchange]
        depth = min(self.settings.limits.default_depth, feed.depth)
        changes: list[Change] = []
        for sym in symbols:
            key = (exchange, sym)
            if key not in self.subs:
                self.subs[key] = sub = Sub(True, BookSub(Mode.SNAPSHOTS, depth, feed.throttle_ms), DEFAULT_OTHER,
                                           feed.throttle_ms)
                changes.append((key, None, sub))
        return changes

    def default_summary(self) -> dict:
        return {"channels": ["trades", "book", *sorted(DEFAULT_OTHER)], "mode": Mode.SNAPSHOTS.value, "depth": self.settings.limits.default_depth,
                "throttle_ms": {ex: f.throttle_ms for ex, f in self.settings.feeds.items()}}

    # ----------------------------------------------------------------- requests
    def admit(self, now_us: int) -> bool:
        """Rate limit: True when a request may be served now."""
        if self.limiter.allow(now_us):
            return True
        if now_us - self.refused_window_us >= 1_000_000:
            self.refused_window_us, self.refused = now_us, 0
        self.refused += 1
        return False

    def flooding(self) -> bool:
        """More refused requests in a second than 5x the limit: the client ignores our errors."""
        return self.refused > 5 * self.settings.limits.max_requests_per_s

    def subscribe(self, req: Subscribe) -> list[Change]:
        """Apply a subscribe request. Raises RequestError past max_subscriptions (nothing changes)."""
        keys = [(req.exchange, s) for s in req.symbols]
        base = {} if self.default else self.subs
        total = len(base.keys() | set(keys))
        limit = self.settings.limits.max_subscriptions
        if total > limit:
            raise RequestError(f"too many subscriptions: {total} (exchange, symbol) pairs, at most {limit}", req.id)
        changes: list[Change] = []
        if self.default:
            changes += [(k, s, None) for k, s in self.subs.items()]
            self.subs = {}
            self.default = False
        for key in keys:
            old = self.subs.get(key)
            book = BookSub(req.mode, req.depth, req.throttle_ms) if req.book else (old.book if old else None)
            if "quotes" in req.others or old is None:
                quote_ms = req.throttle_ms if req.mode is Mode.SNAPSHOTS else 0
            else:
                quote_ms = old.quote_throttle_us // 1000
            new = Sub(req.trades or bool(old and old.trades), book, req.others | (old.others if old else frozenset()),
                      quote_ms)
            self.subs[key] = new
            changes.append((key, old, new))
        return changes

    def unsubscribe(self, req: Unsubscribe) -> list[Change]:
        self.default = False
        changes: list[Change] = []
        for key, old in list(self.subs.items()):
            if req.exchange is not None and key[0] != req.exchange:
                continue
            if req.symbols is not None and key[1] not in req.symbols:
                continue
            trades = old.trades and not req.trades
            book = None if req.book else old.book
            others = old.others - req.others
            if trades == old.trades and book is old.book and others == old.others:
                continue
            new = (Sub(trades, book, others, old.quote_throttle_us // 1000)
                   if (trades or book is not None or others) else None)
            if new is None:
                del self.subs[key]
            else:
                self.subs[key] = new
            changes.append((key, old, new))
        return changes

    def book_sub(self, key: Key) -> BookSub | None:
        sub = self.subs.get(key)
        return sub.book if sub is not None else None
