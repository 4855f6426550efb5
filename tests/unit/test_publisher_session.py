"""Per-client session: throttle phases, delta verdicts (Clone pattern per client), subscriptions, rate."""

from __future__ import annotations

import pytest

from pipeline.config import parse_config
from publisher.requests import Mode, RequestError, Subscribe, Unsubscribe
from publisher.session import BookSub, Phase, RateLimiter, Session, Verdict
from publisher.settings import load_settings

CONFIG = """
[pipeline]
run_dir = "r"
[exchanges.sim]
adapter = "binance"
symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
depth = 20
[publisher]
max_subscriptions = 2
max_requests_per_s = 2
"""


@pytest.fixture
def settings(tmp_path):
    return load_settings(parse_config(CONFIG, tmp_path), environ={})


def test_snapshot_mode_sends_at_most_one_snapshot_per_throttle_interval():
    sub = BookSub(Mode.SNAPSHOTS, 10, throttle_ms=100)
    assert sub.phase is Phase.PENDING  # a new subscription starts with a snapshot
    sub.snapshot_sent(1_000_000, epoch=1, seq=5)
    assert sub.phase is Phase.WAITING
    assert sub.book_changed(1_040_000) == 1_100_000  # too early: scheduled for sent + 100 ms
    assert sub.phase is Phase.SCHEDULED
    assert sub.book_changed(1_060_000) is None  # already scheduled: nothing more
    assert sub.timer_fired() and sub.phase is Phase.PENDING
    assert sub.book_changed(1_200_000) is None  # pending: the snapshot will carry this change too
    sub.snapshot_sent(1_250_000, 1, 9)
    assert sub.book_changed(1_400_000) == 0  # interval already over: send now
    assert sub.phase is Phase.PENDING


def test_timer_of_a_replaced_phase_does_nothing():
    sub = BookSub(Mode.SNAPSHOTS, 10, 100)
    sub.snapshot_sent(0 + 1, 1, 1)
    assert not sub.timer_fired()  # WAITING, not SCHEDULED
    assert sub.phase is Phase.WAITING


def test_delta_mode_follows_the_clone_rules():
    sub = BookSub(Mode.DELTAS, 5, 100)
    assert sub.delta(1, 11) is Verdict.SKIP  # snapshot still pending
    sub.snapshot_sent(0, epoch=1, seq=10)
    assert sub.phase is Phase.LIVE
    assert sub.delta(1, 9) is Verdict.SKIP and sub.delta(1, 10) is Verdict.SKIP  # covered by the snapshot
    assert sub.delta(1, 11) is Verdict.SEND and sub.seq == 11
    assert sub.delta(0, 12) is Verdict.SKIP  # an older epoch still in flight
    assert sub.delta(1, 13) is Verdict.RESYNC and sub.phase is Phase.PENDING  # gap
    sub.snapshot_sent(0, 1, 20)
    assert sub.delta(2, 1) is Verdict.RESYNC  # new epoch: the ingest restarted
    sub.snapshot_sent(0, 2, 1)
    assert sub.delta(2, 2, continuous=False) is Verdict.RESYNC  # the publisher's own book jumped
    sub.snapshot_sent(0, 2, 50)
    assert sub.delta(2, 40, continuous=False) is Verdict.SKIP  # the client's snapshot is newer


def test_default_subscription_is_everything_until_the_first_subscribe(settings):
    s = Session(1, settings)
    assert set(s.subs) == {("sim", "BTCUSDT"), ("sim", "ETHUSDT"), ("sim", "SOLUSDT")}
    assert all(sub.trades and sub.book.mode is Mode.SNAPSHOTS and sub.book.depth == 10 for sub in s.subs.values())
    changes = s.subscribe(Subscribe(1, "sim", ("ETHUSDT",), False, True, 5, Mode.DELTAS, 100))
    assert set(s.subs) == {("sim", "ETHUSDT")}
    removed = [k for k, old, new in changes if new is None]
    assert set(removed) == {("sim", "BTCUSDT"), ("sim", "ETHUSDT"), ("sim", "SOLUSDT")}
    sub = s.subs[("sim", "ETHUSDT")]
    assert not sub.trades and sub.book.mode is Mode.DELTAS and sub.book.depth == 5


def test_subscribe_adds_channels_and_resubscribing_replaces_the_book(settings):
    s = Session(1, settings)
    s.subscribe(Subscribe(1, "sim", ("BTCUSDT",), True, False, 10, Mode.SNAPSHOTS, 100))
    first = s.subscribe(Subscribe(2, "sim", ("BTCUSDT",), False, True, 10, Mode.SNAPSHOTS, 100))
    sub = s.subs[("sim", "BTCUSDT")]
    assert sub.trades and sub.book is not None  # trades kept, book added
    again = s.subscribe(Subscribe(3, "sim", ("BTCUSDT",), False, True, 10, Mode.SNAPSHOTS, 100))
    assert s.subs[("sim", "BTCUSDT")].book is not sub.book  # a fresh snapshot: how a client resyncs
    assert first and again


def test_unsubscribe_removes_channels_then_keys(settings):
    s = Session(1, settings)
    s.unsubscribe(Unsubscribe(1, "sim", ("BTCUSDT",), True, False))
    assert not s.subs[("sim", "BTCUSDT")].trades and s.subs[("sim", "BTCUSDT")].book is not None
    s.unsubscribe(Unsubscribe(2, "sim", ("BTCUSDT",), False, True))
    assert s.subs[("sim", "BTCUSDT")].others == {"quotes", "derivative_ticker", "liquidations"}  # the default's
    s.unsubscribe(Unsubscribe(2, "sim", ("BTCUSDT",), False, False, frozenset({"quotes", "derivative_ticker",
                                                                               "liquidations"})))
    assert ("sim", "BTCUSDT") not in s.subs
    s.unsubscribe(Unsubscribe(3, None, None, True, True, frozenset({"quotes", "derivative_ticker", "liquidations"})))
    assert s.subs == {}


def test_too_many_subscriptions_is_refused_and_changes_nothing(settings):
    s = Session(1, settings)
    with pytest.raises(RequestError, match="too many subscriptions: 3"):
        s.subscribe(Subscribe(1, "sim", ("BTCUSDT", "ETHUSDT", "SOLUSDT"), True, True, 10, Mode.SNAPSHOTS, 100))
    assert s.default and len(s.subs) == 3
    s.subscribe(Subscribe(2, "sim", ("BTCUSDT", "ETHUSDT"), True, True, 10, Mode.SNAPSHOTS, 100))
    with pytest.raises(RequestError):
        s.subscribe(Subscribe(3, "sim", ("SOLUSDT",), True, True, 10, Mode.SNAPSHOTS, 100))


def test_rate_limit_allows_bursts_up_to_the_rate_then_refills():
    lim = RateLimiter(2)
    assert lim.allow(1_000_000) and lim.allow(1_000_001) and not lim.allow(1_000_002)
    assert lim.allow(1_600_000)  # 0.6 s later: 1.2 tokens back


def test_a_client_that_keeps_flooding_is_recognised(settings):
    s = Session(1, settings)
    results = [s.admit(1_000_000 + i) for i in range(15)]
    assert results[:2] == [True, True] and not any(results[2:])
    assert s.flooding()  # 13 refusals in a second > 5 x 2
