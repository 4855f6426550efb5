"""The lag estimator of `pipeline status` (pipeline/lag.py): p50 <= p99 <= max from one window,
each percentile at most one 1/8-octave bucket above the exact one, old intervals leaving."""

from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st

from pipeline.lag import EXACT, MAX_US, N_BUCKETS, LagWindow, bucket_of, bucket_upper, buckets_of


def exact_percentile(samples, q: float) -> int:
    """Nearest rank, written from the definition: the smallest value with at least q*n samples <= it."""
    ordered = sorted(samples)
    rank = max(1, -(-int(q * len(ordered) * 1_000_000) // 1_000_000))  # ceil without float surprises
    return ordered[rank - 1]


def test_buckets_are_contiguous_exact_below_16us_and_within_an_eighth_above():
    previous_upper = -1
    for i in range(N_BUCKETS):
        upper = bucket_upper(i)
        lower = previous_upper + 1
        assert bucket_of(lower) == i and bucket_of(upper) == i
        if upper < EXACT:
            assert lower == upper
        else:
            assert upper - lower + 1 <= lower / 8 + 1e-9  # width <= 12.5% of the smallest member
        previous_upper = upper
    assert previous_upper == MAX_US and bucket_of(MAX_US * 4) == N_BUCKETS - 1 and bucket_of(-5) == 0


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=300))
def test_numpy_buckets_equal_the_scalar_ones(values):
    assert buckets_of(np.array(values, np.int64)).tolist() == [bucket_of(v) for v in values]


@given(st.lists(st.lists(st.integers(min_value=0, max_value=5_000_000), max_size=60), min_size=1, max_size=12))
def test_percentiles_agree_with_the_exact_ones_over_the_window(intervals):
    window = LagWindow(intervals=8)
    for samples in intervals:
        window.samples.extend(samples)
        window.roll()
    kept = [v for samples in intervals[-8:] for v in samples]
    p50, p99, top = window.figures()
    if not kept:
        assert (p50, p99, top) == (0, 0, 0)
        return
    assert top == max(kept)
    assert p50 <= p99 <= top  # the figures agree: a p50 above its max is impossible
    for q, got in ((0.5, p50), (0.99, p99)):
        true = exact_percentile(kept, q)
        assert true <= got <= min(bucket_upper(bucket_of(true)), top)


def test_a_spike_leaves_the_window_after_its_minute():
    window = LagWindow(intervals=240)
    window.samples.extend([100] * 50 + [90_000])
    window.roll()
    assert window.figures() == (103, 90_000, 90_000)  # 100 lies in the bucket 100..103
    for _ in range(239):
        window.samples.extend([100] * 50)
        window.roll()
    assert window.figures()[2] == 90_000
    window.samples.extend([100] * 50)
    window.roll()
    p50, p99, top = window.figures()
    assert (p50, p99, top) == (100, 100, 100)  # capped at the exact max


def test_the_reported_bug_cannot_happen():
    """Issue 16: `publish lag 259us (max 97)`, an EWMA of a long window above the max of a short one."""
    window = LagWindow(intervals=4)
    window.samples.extend([300] * 1000)
    window.roll()
    for _ in range(3):
        window.samples.extend([90, 97])
        window.roll()
    p50, p99, top = window.figures()
    assert p50 <= p99 <= top == 300
    window.samples.extend([90, 97])
    window.roll()  # the 300s leave the window
    assert window.figures() == (95, 97, 97)  # 90 lies in the bucket 88..95; 97 is capped at the max


def test_the_last_intervals_alone_show_a_recent_rise():
    window = LagWindow(intervals=240)
    for _ in range(100):
        window.samples.extend([100] * 20)
        window.roll()
    for _ in range(4):
        window.samples.extend([40_000] * 20)
        window.roll()
    assert window.percentile(0.5) == 103  # the minute is still mostly 100 us
    assert window.percentile(0.5, last=4) == 40_000  # its bucket's edge, capped at the exact max
    assert window.percentile(0.5, last=5) == window.percentile(0.5, last=4)  # 80 of 100 samples are 40 ms
