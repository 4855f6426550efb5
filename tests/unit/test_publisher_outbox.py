"""A client's outbox: lane order, trades never conflated, L2 backlog conflated into snapshot marks."""

from __future__ import annotations

from publisher.outbox import Outbox

A, B = ("sim", "A"), ("sim", "B")


def drain(ob):
    out = []
    while (item := ob.pop()) is not None:
        out.append(item)
    return out


def test_control_then_trades_then_snapshots_then_deltas():
    ob = Outbox(max_trades=10, max_deltas=10, max_lag_s=5)
    ob.push_delta(A, b"dA1", 1)
    ob.want_snapshot(B)
    assert ob.push_trade(b"t1", 2, 100) is None
    ob.push_control(b"c1")
    assert ob.push_trade(b"t2", 3, 101) is None
    assert drain(ob) == [(b"c1", "control", 0), (b"t1", "trade", 2), (b"t2", "trade", 3), (B, "snapshot", 0),
                         (b"dA1", "l2", 1)]


def test_trade_overflow_asks_for_a_close_and_drops_nothing():
    ob = Outbox(max_trades=3, max_deltas=10, max_lag_s=5)
    for i in range(3):
        assert ob.push_trade(b"t%d" % i, 0, 0) is None
    reason = ob.push_trade(b"t3", 0, 0)
    assert reason and "3 trades queued" in reason
    assert [f for f, _, _ in drain(ob)] == [b"t0", b"t1", b"t2"]  # the queue was not touched


def test_trade_lag_asks_for_a_close():
    ob = Outbox(max_trades=100, max_deltas=10, max_lag_s=1.0)
    assert ob.push_trade(b"t0", 0, 1_000_000) is None
    assert ob.push_trade(b"t1", 0, 1_500_000) is None
    assert "waited 1.1 s" in ob.push_trade(b"t2", 0, 2_100_000)


def test_delta_backlog_is_conflated_into_one_snapshot_per_key():
    ob = Outbox(max_trades=10, max_deltas=3, max_lag_s=5)
    assert ob.push_delta(A, b"a1", 0) == []
    assert ob.push_delta(B, b"b1", 0) == []
    assert ob.push_delta(A, b"a2", 0) == []
    assert ob.push_delta(A, b"a3", 0) == [A, B]  # the 4th: every queued key becomes a snapshot mark
    assert ob.conflations == 1 and ob.dropped == 4
    assert drain(ob) == [(A, "snapshot", 0), (B, "snapshot", 0)]


def test_a_key_is_either_marked_or_has_deltas_never_both():
    ob = Outbox(max_trades=10, max_deltas=10, max_lag_s=5)
    ob.push_delta(A, b"a1", 0)
    ob.push_delta(B, b"b1", 0)
    ob.want_snapshot(A)  # the snapshot supersedes A's queued deltas
    assert drain(ob) == [(A, "snapshot", 0), (b"b1", "l2", 0)]
    ob.push_delta(A, b"a2", 0)
    ob.want_snapshot(A)
    ob.want_snapshot(A)  # marks are a set
    ob.drop(B)
    assert drain(ob) == [(A, "snapshot", 0)]


def test_control_lane_is_bounded():
    ob = Outbox(max_trades=10, max_deltas=10, max_lag_s=5)
    results = [ob.push_control(b"x") for _ in range(300)]
    assert all(results[:256]) and not any(results[256:])
