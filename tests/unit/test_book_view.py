"""`pipeline book`: when a book is not live, the one line that says why (pipeline/app/book.py)."""

from __future__ import annotations

from pipeline.app.book import not_live_reason
from pipeline.shm import BookState, ConnState, HealthRecord

NOW = 1_700_000_000_000_000_000
QUIET = HealthRecord("", "", 0, 0, 0, ConnState.CONNECTING, 0, 0, 0)
REFUSED = HealthRecord("", "depth connect: connection refused", NOW - 2_000_000_000, 7, 0, ConnState.CONNECTING,
                       0, 0, 0)


def test_a_live_book_of_a_beating_ingest_has_no_reason():
    assert not_live_reason(BookState.LIVE, {"connected": 1}, REFUSED, True, 0.3, NOW) is None


def test_a_live_view_whose_ingest_stopped_or_died_is_not_live():
    assert not_live_reason(BookState.LIVE, {"connected": 1}, QUIET, True, 9.0, NOW) == \
        "its ingest stopped updating shared memory 9.0s ago"
    assert not_live_reason(BookState.LIVE, {"connected": 1}, QUIET, False, 0.1, NOW).startswith(
        "its ingest process is gone")


def test_syncing_says_whether_it_is_connected_and_the_last_error():
    assert not_live_reason(BookState.SYNCING, {"connected": 0}, REFUSED, True, 0.1, NOW) == \
        "syncing: not connected; 7 failed connects, 0 REST errors; last error 2.0s ago: depth connect: connection refused"
    assert not_live_reason(BookState.SYNCING, {"connected": 1, "buffered": 12}, QUIET, True, 0.1, NOW) == \
        "syncing: connected, waiting for a snapshot (12 diffs buffered)"


def test_stale_says_for_how_long():
    stats = {"connected": 1, "stale_since_ns": NOW - 4_500_000_000}
    assert not_live_reason(BookState.STALE, stats, QUIET, True, 0.1, NOW) == "stale: resyncing for 4.5s"
