import random

from ingest.retry import WeightBudget, backoff


def test_backoff_is_capped_jittered_and_never_zero():
    delays = backoff(initial=0.5, factor=2.0, cap=8.0, rng=random.Random(3))
    ds = [next(delays) for _ in range(50)]
    assert all(0.25 <= d <= 8.0 for d in ds)
    assert max(ds[:3]) <= 2.0           # grows from small
    assert min(ds[10:]) >= 4.0          # then stays near the cap
    assert len(set(ds)) == len(ds)      # jitter: no two processes in lockstep


def test_weight_budget_waits_for_the_window_and_obeys_retry_after():
    b = WeightBudget(100)
    for i in range(2):
        assert b.delay(50, now=float(i)) == 0
        b.spend(50, now=float(i))
    assert 58.9 < b.delay(50, now=1.0) <= 60.0   # the first request leaves the window at t=60
    assert b.delay(50, now=60.5) == 0
    b.penalize(30.0, now=61.0)
    assert b.delay(1, now=61.0) == 30.0
    assert b.delay(1, now=91.5) == 0


def test_venue_used_weight_header_counts_other_clients():
    b = WeightBudget(100)
    b.observe_used(95, now=0.0)
    assert b.delay(10, now=1.0) > 0
    assert b.delay(10, now=61.0) == 0
