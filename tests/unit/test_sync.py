"""The sync state machine with the Binance spot and USD-M rules (exchange-protocols.md 1-2)."""

import pytest

from ingest.adapters.binance import BinanceFuturesAdapter, BinanceSpotAdapter
from ingest.events import DepthDiff, DepthSnapshot
from ingest.sync import BookSync, IllegalTransition, SnapshotTooOld, SyncState
from pipeline.errors import SequenceGap


def spot(U, u):
    return DepthDiff("X", U, u, -1, [], [], 0, 0)


def fut(U, u, pu):
    return DepthDiff("X", U, u, pu, [], [], 0, 0)


def snap(last_id):
    return DepthSnapshot("X", last_id, [], [], 0, 0)


def machine(adapter):
    s = BookSync("X", adapter.check, adapter.snapshot_usable)
    s.connected()
    return s


def test_spot_buffers_then_drops_covered_and_applies_from_the_straddling_event():
    s = machine(BinanceSpotAdapter)
    for ev in (spot(1, 5), spot(6, 9), spot(10, 12)):
        assert s.diff_received(ev) is False  # nothing applied while buffering
    applied = s.snapshot_received(snap(7))
    assert [(e.first_id, e.last_id) for e in applied] == [(6, 9), (10, 12)]
    assert s.state is SyncState.LIVE and s.book_id == 12
    assert s.diff_received(spot(13, 13)) is True
    assert s.diff_received(spot(10, 13)) is False  # already covered


def test_spot_snapshot_older_than_first_buffered_event_is_refused():
    s = machine(BinanceSpotAdapter)
    s.diff_received(spot(10, 12))
    with pytest.raises(SnapshotTooOld):
        s.snapshot_received(snap(5))
    assert s.state is SyncState.BUFFERING
    assert [e.first_id for e in s.snapshot_received(snap(9))] == [10]  # 9 + 1 == U: usable


def test_spot_gap_after_live_goes_back_to_buffering_with_the_revealing_event():
    s = machine(BinanceSpotAdapter)
    s.snapshot_received(snap(100))
    s.diff_received(spot(101, 105))
    with pytest.raises(SequenceGap):
        s.diff_received(spot(107, 110))
    assert s.state is SyncState.BUFFERING and [e.first_id for e in s.buffer] == [107]


def test_gap_inside_the_buffer_is_detected_at_snapshot_time():
    s = machine(BinanceSpotAdapter)
    s.diff_received(spot(1, 5))
    s.diff_received(spot(8, 9))
    with pytest.raises(SequenceGap):
        s.snapshot_received(snap(3))
    assert [e.first_id for e in s.buffer] == [8]


def test_futures_first_event_straddles_snapshot_then_pu_chains():
    s = machine(BinanceFuturesAdapter)
    s.diff_received(fut(90, 95, 80))       # u < id: dropped at alignment
    s.diff_received(fut(96, 104, 95))      # U <= 100 <= u: first to apply
    s.diff_received(fut(110, 120, 104))    # ids not contiguous, pu chains: fine
    applied = s.snapshot_received(snap(100))
    assert [e.last_id for e in applied] == [104, 120]
    assert s.diff_received(fut(121, 130, 120)) is True
    with pytest.raises(SequenceGap):
        s.diff_received(fut(140, 150, 135))  # pu != previous u


def test_futures_snapshot_must_not_predate_first_event():
    s = machine(BinanceFuturesAdapter)
    s.diff_received(fut(96, 104, 95))
    with pytest.raises(SnapshotTooOld):
        s.snapshot_received(snap(95))


def test_diff_before_connect_is_an_illegal_transition():
    s = BookSync("X", BinanceSpotAdapter.check, BinanceSpotAdapter.snapshot_usable)
    with pytest.raises(IllegalTransition):
        s.diff_received(spot(1, 2))
    with pytest.raises(IllegalTransition):
        s.snapshot_received(snap(1))


def test_disconnect_drops_the_buffer_and_requires_a_new_connection():
    s = machine(BinanceSpotAdapter)
    s.diff_received(spot(1, 2))
    s.disconnected()
    assert s.state is SyncState.DISCONNECTED and not s.buffer
    s.connected()
    assert s.state is SyncState.BUFFERING


def test_buffer_is_bounded():
    s = BookSync("X", BinanceSpotAdapter.check, BinanceSpotAdapter.snapshot_usable, max_buffer=3)
    s.connected()
    for i in range(10):
        s.diff_received(spot(i, i))
    assert len(s.buffer) == 3 and s.overflowed == 7
