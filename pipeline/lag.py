"""Lag figures that agree with each other: p50, p99 and max over the last minute.

`pipeline status` used to show an EWMA next to the max of the last 0.25 s (``publish lag
259us (max 97)``): two windows, so the "average" could exceed the "max".  Here every figure
comes from one window of samples, so p50 <= p99 <= max always holds.

Recording is on the hot path (the ingest's publish path, every 8th update), so it is one
list append (``samples.append``: 17 ns measured here, against 60 ns for the EWMA and max it
replaced and ~300 ns for bucketing each sample in Python: timeit of the statements).  The stats loop calls ``roll()`` every interval (0.25 s): numpy sorts
the interval's samples into log-linear buckets (exact below 16 us, then 8 per octave, so a
bucket's upper edge is at most 12.5% above any value in it), and the interval's counts join
a ring of the last ``intervals`` ones (a minute) while the oldest leave.  A percentile is
the upper edge of the bucket that holds it, capped at the window's exact max: an estimate
that never reads low, reads high by at most one bucket, and never exceeds the max.
"""

from __future__ import annotations

import numpy as np

SUB_BITS = 3                 # 2**3 = 8 buckets per octave
SUB = 1 << SUB_BITS
EXACT = 2 * SUB              # values below this have a bucket of their own
MAX_US = (1 << 40) - 1       # ~12.7 days: larger samples count as this
N_BUCKETS = EXACT + (MAX_US.bit_length() - SUB_BITS - 1) * SUB
MAX_INTERVAL_SAMPLES = 1 << 16  # more in one interval (2M updates/s at 1 in 8): only when nothing rolls


def bucket_of(us: int) -> int:
    """Bucket index of a sample (microseconds; negative counts as 0, huge as MAX_US)."""
    if us < EXACT:
        return us if us > 0 else 0
    if us > MAX_US:
        us = MAX_US
    shift = us.bit_length() - SUB_BITS - 1
    return EXACT + (shift - 1) * SUB + (us >> shift) - SUB


def bucket_upper(index: int) -> int:
    """The largest sample that falls in bucket ``index``."""
    if index < EXACT:
        return index
    shift, sub = divmod(index - EXACT, SUB)
    shift += 1
    return ((SUB + sub + 1) << shift) - 1


def buckets_of(samples: np.ndarray) -> np.ndarray:
    """``bucket_of`` for an array of samples (int64, microseconds)."""
    us = np.clip(samples, 0, MAX_US)
    _, bits = np.frexp(us.astype(np.float64))  # us = m * 2**bits, 0.5 <= m < 1: bits = us.bit_length()
    shift = np.maximum(bits.astype(np.int64) - SUB_BITS - 1, 1)
    big = EXACT + (shift - 1) * SUB + np.right_shift(us, shift) - SUB
    return np.where(us < EXACT, us, big)


class LagWindow:
    """Samples of one lag over the last ``intervals`` stats intervals.

    The hot path appends to ``samples`` (the same list object for the window's life);
    ``roll()`` once per interval; ``figures()`` gives (p50, p99, max) over the window,
    0s when it holds no sample.
    """

    __slots__ = ("samples", "_ring", "_ring_max", "_total", "_next")

    def __init__(self, intervals: int = 240):
        self.samples: list[int] = []
        self._ring = np.zeros((intervals, N_BUCKETS), np.int64)
        self._ring_max = np.zeros(intervals, np.int64)
        self._total = np.zeros(N_BUCKETS, np.int64)
        self._next = 0

    def roll(self) -> None:
        """Close the current interval: its samples enter the window, the oldest interval leaves."""
        k = self._next
        if self.samples:
            arr = np.array(self.samples, np.int64)
            self.samples.clear()
            now = np.bincount(buckets_of(arr), minlength=N_BUCKETS)
            top = min(int(arr.max()), MAX_US)
        else:
            now, top = 0, 0
        self._total += now - self._ring[k]
        self._ring[k] = now
        self._ring_max[k] = top
        self._next = (k + 1) % len(self._ring)

    def percentile(self, q: float, last: int | None = None) -> int:
        """The ``q``-quantile (0 < q <= 1) of the window's samples (see the module docstring),
        or of the ``last`` intervals' only."""
        if last is None:
            counts, top = self._total, int(self._ring_max.max())
        else:
            rows = [(self._next - 1 - j) % len(self._ring) for j in range(min(last, len(self._ring)))]
            counts, top = self._ring[rows].sum(axis=0), int(self._ring_max[rows].max())
        cum = np.cumsum(counts)
        n = int(cum[-1])
        if n == 0:
            return 0
        rank = max(1, int(np.ceil(q * n)))  # nearest rank
        i = int(np.searchsorted(cum, rank))
        return min(bucket_upper(i), top)

    def figures(self) -> tuple[int, int, int]:
        """(p50, p99, max) in microseconds over the window."""
        return self.percentile(0.5), self.percentile(0.99), int(self._ring_max.max())
