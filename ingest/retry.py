"""Pure retry policy: capped, jittered backoff and the REST request-weight budget.

Both take the clock / random source as arguments, so tests iterate them without
sleeping (websockets client.py ``backoff`` is the model for the generator).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Iterator


def backoff(initial: float = 0.5, factor: float = 2.0, cap: float = 30.0,
            rng: random.Random | None = None) -> Iterator[float]:
    """Delays before reconnect attempts: exponential, capped, with full jitter.

    The n-th delay is uniform in [d/2, d] with d = min(cap, initial * factor**n):
    never 0 (no hot loop), never above the cap, and spread so that many processes
    reconnecting at once do not hit the venue's connection limit together.
    """
    rng = rng or random.Random()
    d = initial
    while True:
        yield rng.uniform(d / 2, d)
        d = min(cap, d * factor)


class WeightBudget:
    """Request-weight budget over a sliding 60 s window, plus venue back-off orders.

    ``delay(weight, now)`` says how long to wait before a request of that weight may
    go; ``spend`` records it; ``observe_used`` takes the venue's own used-weight
    header (Binance ``X-MBX-USED-WEIGHT-1M``), which counts other clients on the
    same IP too; ``penalize`` obeys a 429/418 ``Retry-After``.
    """

    WINDOW = 60.0

    def __init__(self, limit_per_minute: int):
        self.limit = limit_per_minute
        self._spent: deque[tuple[float, int]] = deque()
        self._spent_total = 0
        self._venue_used = 0
        self._venue_used_at = -1e18
        self.blocked_until = 0.0

    def _expire(self, now: float) -> None:
        while self._spent and self._spent[0][0] <= now - self.WINDOW:
            self._spent_total -= self._spent.popleft()[1]

    def used(self, now: float) -> int:
        self._expire(now)
        venue = self._venue_used if now - self._venue_used_at < self.WINDOW else 0
        return max(self._spent_total, venue)

    def delay(self, weight: int, now: float) -> float:
        """Seconds to wait before spending ``weight`` (0 when it fits now)."""
        if now < self.blocked_until:
            return self.blocked_until - now
        if self.used(now) + weight <= self.limit:
            return 0.0
        if self._spent:
            # wait until enough old requests leave the window (at least a little)
            need = self.used(now) + weight - self.limit
            freed = 0
            for t, w in self._spent:
                freed += w
                if freed >= need:
                    return max(0.05, t + self.WINDOW - now)
        # the venue says the IP is busy (other clients): wait for its minute to roll over
        return max(0.05, self._venue_used_at + self.WINDOW - now) if self._venue_used_at > 0 else 1.0

    def spend(self, weight: int, now: float) -> None:
        self._spent.append((now, weight))
        self._spent_total += weight

    def observe_used(self, used: int, now: float) -> None:
        self._venue_used, self._venue_used_at = used, now

    def penalize(self, retry_after: float, now: float) -> None:
        self.blocked_until = max(self.blocked_until, now + retry_after)
