"""The sync state machine with the Binance spot and USD-M rules (exchange-protocols.md 1-2),
the in-stream style, and the actions each transition returns."""

import pytest

from ingest.adapters.binance import BinanceFuturesAdapter, BinanceSpotAdapter
from ingest.adapters.bybit import BybitSpotAdapter
from ingest.events import DepthDiff, DepthSnapshot
from ingest.sync import (APPLY_DIFF, FETCH, INSTALL_SNAPSHOT, MARK_STALE, NOTHING, PUBLISH, REPLACE_BOOK,
                         STALE_FETCH, STALE_RESUBSCRIBE, BookSync, IllegalTransition, SyncState)
from pipeline.shm import BookState


def spot(U, u):
    return DepthDiff("X", U, u, -1, [], [], 0, 0)


def fut(U, u, pu):
    return DepthDiff("X", U, u, pu, [], [], 0, 0)


def snap(last_id):
    return DepthSnapshot("X", last_id, [], [], 0, 0)


def machine(adapter, in_stream=False):
    s = BookSync("X", adapter.check, adapter.snapshot_usable, in_stream)
    assert s.connected() == NOTHING
    return s


def install(s, snapshot):
    """snapshot_received + installed, as the feed does when the installed book is sound;
    the buffered diffs the feed must apply after the snapshot."""
    assert s.snapshot_received(snapshot) == INSTALL_SNAPSHOT
    replay = s.replay
    assert s.installed() == PUBLISH
    return replay


def test_spot_buffers_then_drops_covered_and_applies_from_the_straddling_event():
    s = machine(BinanceSpotAdapter)
    assert s.diff_received(spot(1, 5)) == FETCH  # the first buffered diff: now fetch the snapshot
    for ev in (spot(6, 9), spot(10, 12)):
        assert s.diff_received(ev) == NOTHING  # nothing applied while buffering
    applied = install(s, snap(7))
    assert [(e.first_id, e.last_id) for e in applied] == [(6, 9), (10, 12)]
    assert s.state is SyncState.LIVE and s.book_id == 12 and s.book_state is BookState.LIVE
    assert s.diff_received(spot(13, 13)) is APPLY_DIFF
    assert s.diff_received(spot(10, 13)) == NOTHING  # already covered
    assert s.counts.dropped == 1


def test_spot_snapshot_older_than_first_buffered_event_is_refused():
    s = machine(BinanceSpotAdapter)
    s.diff_received(spot(10, 12))
    assert s.snapshot_received(snap(5)) == FETCH  # too old: fetch again
    assert s.state is SyncState.BUFFERING and "older than first buffered event 10" in s.why
    assert [e.first_id for e in install(s, snap(9))] == [10]  # 9 + 1 == U: usable


def test_spot_gap_after_live_goes_back_to_buffering_with_the_revealing_event():
    s = machine(BinanceSpotAdapter)
    install(s, snap(100))
    s.diff_received(spot(101, 105))
    assert s.diff_received(spot(107, 110)) == STALE_FETCH  # publish it stale, fetch a snapshot
    assert s.state is SyncState.BUFFERING and [e.first_id for e in s.buffer] == [107]
    assert s.counts.gaps == 1 and s.book_state is BookState.STALE and "sequence gap" in s.why


def test_gap_inside_the_buffer_is_detected_at_snapshot_time():
    s = machine(BinanceSpotAdapter)
    s.diff_received(spot(1, 5))
    s.diff_received(spot(8, 9))
    assert s.snapshot_received(snap(3)) == FETCH
    assert [e.first_id for e in s.buffer] == [8] and s.counts.gaps == 1 and s.state is SyncState.BUFFERING


def test_futures_first_event_straddles_snapshot_then_pu_chains():
    s = machine(BinanceFuturesAdapter)
    s.diff_received(fut(90, 95, 80))       # u < id: dropped at alignment
    s.diff_received(fut(96, 104, 95))      # U <= 100 <= u: first to apply
    s.diff_received(fut(110, 120, 104))    # ids not contiguous, pu chains: fine
    applied = install(s, snap(100))
    assert [e.last_id for e in applied] == [104, 120]
    assert s.diff_received(fut(121, 130, 120)) is APPLY_DIFF
    assert s.diff_received(fut(140, 150, 135)) == STALE_FETCH  # pu != previous u


def test_futures_snapshot_must_not_predate_first_event():
    s = machine(BinanceFuturesAdapter)
    s.diff_received(fut(96, 104, 95))
    assert s.snapshot_received(snap(95)) == FETCH and s.state is SyncState.BUFFERING


def test_diff_before_connect_is_an_illegal_transition():
    s = BookSync("X", BinanceSpotAdapter.check, BinanceSpotAdapter.snapshot_usable)
    with pytest.raises(IllegalTransition):
        s.diff_received(spot(1, 2))
    assert s.snapshot_received(snap(1)) == NOTHING  # a REST answer after its connection died: moot
    stream = BookSync("X", BybitSpotAdapter.check, BybitSpotAdapter.snapshot_usable, in_stream=True)
    with pytest.raises(IllegalTransition):
        stream.snapshot_received(snap(1))  # an in-stream snapshot without its stream: a bug
    with pytest.raises(IllegalTransition):
        s.installed()
    with pytest.raises(IllegalTransition):
        s.book_invalid("x")


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
    assert len(s.buffer) == 3 and s.counts.overflowed == 7 and s.counts.buffered == 3


def test_connecting_twice_without_a_disconnect_is_an_illegal_transition():
    s = machine(BinanceSpotAdapter)
    with pytest.raises(IllegalTransition):
        s.connected()


def test_a_quiet_rest_symbol_fetches_when_overdue_and_only_once():
    s = machine(BinanceSpotAdapter)
    assert s.snapshot_overdue() == FETCH
    assert s.snapshot_overdue() == NOTHING
    assert s.diff_received(spot(1, 2)) == NOTHING  # already asked


def test_disconnect_of_a_live_book_marks_it_stale_and_the_next_install_counts_a_resync():
    s = machine(BinanceSpotAdapter)
    install(s, snap(10))
    assert s.disconnected() == MARK_STALE and s.book_state is BookState.STALE
    assert s.disconnected() == NOTHING  # already down
    s.connected()
    s.diff_received(spot(11, 12))
    install(s, snap(11))
    assert s.counts.resyncs == 1 and s.book_state is BookState.LIVE


def test_book_state_is_syncing_until_first_live_then_stale_when_not_live():
    s = machine(BinanceSpotAdapter)
    assert s.book_state is BookState.SYNCING
    s.diff_received(spot(1, 2))
    assert s.snapshot_received(snap(1)) == INSTALL_SNAPSHOT
    assert s.book_invalid("crossed book after snapshot") == FETCH  # never live: nothing to mark stale
    assert s.book_state is BookState.SYNCING and s.state is SyncState.BUFFERING
    s.diff_received(spot(3, 4))
    install(s, snap(3))
    assert s.book_invalid("checksum mismatch") == STALE_FETCH and s.book_state is BookState.STALE


def test_in_stream_style_snapshot_drops_older_buffer_replaces_a_live_book_and_resyncs_by_resubscribing():
    s = machine(BybitSpotAdapter, in_stream=True)
    assert s.diff_received(DepthDiff("X", 7, 7, 6, [], [], 0, 0)) == NOTHING  # no REST fetch: it comes in-stream
    assert install(s, snap(10)) == []  # the diff buffered before the snapshot is older: dropped
    assert s.diff_received(DepthDiff("X", 11, 11, 10, [], [], 0, 0)) is APPLY_DIFF
    assert s.snapshot_received(snap(1)) == REPLACE_BOOK and s.book_id == 1 and s.state is SyncState.LIVE
    assert s.diff_received(DepthDiff("X", 2, 2, 1, [], [], 0, 0)) is APPLY_DIFF  # chains from the replacement
    assert s.diff_received(DepthDiff("X", 4, 4, 3, [], [], 0, 0)) == STALE_RESUBSCRIBE
    assert s.state is SyncState.BUFFERING and s.counts.gaps == 1
    assert s.snapshot_overdue() == NOTHING


def test_a_rest_snapshot_on_a_live_book_is_moot():
    s = machine(BinanceSpotAdapter)
    install(s, snap(10))
    assert s.snapshot_received(snap(50)) == NOTHING and s.book_id == 10
    assert s.book_invalid("x") == STALE_FETCH


def spot_at(U, u, t_s):
    return DepthDiff("X", U, u, -1, [], [], 0, int(t_s * 1e9))


def test_skips_in_a_row_past_the_bound_are_a_gap_and_a_resync():
    # issue 19 item 2: ids going backwards (or a snapshot ahead of the stream) skipped every
    # diff, uncounted, while the book read "live"
    s = machine(BinanceSpotAdapter)
    install(s, snap(1_000_000))  # far ahead of the stream
    t = 100.0
    for i in range(30):  # 3 s of skipped diffs, 0.1 s apart: within the bound
        assert s.diff_received(spot_at(i + 1, i + 1, t + i * 0.1)) == NOTHING
    assert s.state is SyncState.LIVE and s.counts.gaps == 0
    assert s.diff_received(spot_at(31, 31, t + 3.2)) == STALE_FETCH
    assert s.state is SyncState.BUFFERING and s.book_state is BookState.STALE
    assert s.counts.gaps == 1 and "frozen" in s.why and [e.first_id for e in s.buffer] == [31]


def test_a_burst_of_covered_diffs_and_an_apply_reset_the_skip_run():
    s = machine(BinanceSpotAdapter)
    install(s, snap(100))
    for i in range(1000):  # the diffs in flight when the snapshot was taken: read in one burst
        assert s.diff_received(spot_at(50, 60, 10.0 + i * 1e-5)) == NOTHING
    assert s.diff_received(spot_at(101, 101, 10.5)) is APPLY_DIFF
    assert s.diff_received(spot_at(90, 95, 20.0)) == NOTHING  # a new run starts (one duplicate)
    assert s.diff_received(spot_at(102, 102, 30.0)) is APPLY_DIFF
    assert s.state is SyncState.LIVE and s.counts.gaps == 0 and s.counts.dropped == 1001
