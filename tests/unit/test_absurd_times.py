"""Absurd venue times (issue 19 item 10): a trade stamped in the year ~142,000 was published and
written to the CSV as it was.  A venue time at or after 2100, or negative, is a malformed event:
counted for its symbol, never published or applied."""

from __future__ import annotations

from feeds import FeedRun
from ingest.adapters.base import APPLY, Adapter, AdapterTraits, SnapshotSource
from ingest.events import DepthDiff, DepthSnapshot, TradeEvent

NOW_US = 1_764_720_000_000_000  # 2025-12-03
YEAR_142000_US = 4_418_000_000_000_000_000


class StreamAdapter(Adapter):
    name = "plain"

    def __init__(self):
        self.traits = AdapterTraits(SnapshotSource.STREAM)

    @staticmethod
    def check(ev, book_id, first):
        return APPLY

    @staticmethod
    def snapshot_usable(snapshot_id, first):
        return True


def test_a_trade_or_diff_stamped_absurdly_is_malformed_counted_and_never_published():
    run = FeedRun(StreamAdapter(), ["A"], depth=5)
    try:
        recv = NOW_US * 1000
        run.receive(DepthSnapshot("A", 10, [(99.0, 1.0)], [(101.0, 1.0)], NOW_US, recv))
        assert run.live("A")
        run.receive(TradeEvent("A", 100.0, 1.0, "buy", "1", NOW_US, recv))
        run.receive(TradeEvent("A", 100.0, 1.0, "buy", "2", YEAR_142000_US, recv))
        run.receive(TradeEvent("A", 100.0, 1.0, "sell", "3", -5, recv))
        run.receive(DepthDiff("A", 11, 11, 10, [(99.5, 2.0)], [], YEAR_142000_US, recv))
        run.receive(TradeEvent("A", 100.0, 1.0, "sell", "4", NOW_US + 1, recv))
        assert [t.trade_id for t in run.trades] == ["1", "4"]
        assert [t.seq for t in run.trades] == [1, 2]  # the seq stays contiguous: nothing was published
        assert run.counts("A").malformed == 3
        view, stats = run.shm("A")
        assert view.bids.tolist() == [[99.0, 1.0]] and stats["updates"] == 0  # the absurd diff was not applied
    finally:
        run.close()
