"""The ingest's publish-lag figures (ingest/feed.py with pipeline/lag.py): samples of the
publish path reach the process header as p50 <= p99 <= max when the stats loop rolls them,
and stay bounded when nothing rolls them (a benchmark driving FeedBooks without the runner)."""

from __future__ import annotations

import time

from ingest.adapters.base import AdapterTraits, SnapshotSource
from ingest.feed import P, FeedBooks
from pipeline.lag import MAX_INTERVAL_SAMPLES
from pipeline.shm import BookReader, BookWriter


class RestAdapter:
    traits = AdapterTraits(SnapshotSource.REST)

    @staticmethod
    def check(ev, book_id, first):  # no book event in these tests
        raise AssertionError

    snapshot_usable = check

    @staticmethod
    def instrument(symbol):
        return None


def test_publish_lag_samples_reach_the_header_as_agreeing_figures(shm_prefix):
    writer = BookWriter(shm_prefix, "venue", ["BTCUSDT"], 5, epoch=1)
    try:
        feed = FeedBooks("venue", RestAdapter(), writer, publisher=None, epoch=1)
        for lag_us in [200] * 792 + [5_000] * 8:  # every 8th update is sampled: 99 x 200 us, 1 x 5 ms
            feed._note_lag(time.time_ns() - lag_us * 1000)
        feed.flush_lag_stats()
        with BookReader.open(shm_prefix, "venue") as reader:
            ps = reader.process_stats()
        # (a sample is the given lag plus the few us until _note_lag reads the clock)
        assert 200 <= ps["publish_lag_us"] < 400 and ps["publish_lag_1s_us"] == ps["publish_lag_us"]
        assert ps["publish_lag_us"] <= ps["publish_lag_p99_us"] <= ps["publish_lag_max_us"]
        assert ps["publish_lag_max_us"] >= 5_000
        assert writer.header[P["publish_lag_p99_us"]] == ps["publish_lag_p99_us"]
    finally:
        writer.close()


def test_samples_stay_bounded_when_nothing_rolls_them(shm_prefix):
    writer = BookWriter(shm_prefix, "venue", ["BTCUSDT"], 5, epoch=1)
    try:
        feed = FeedBooks("venue", RestAdapter(), writer, publisher=None, epoch=1)
        now = time.time_ns()
        for _ in range(8 * 3 * MAX_INTERVAL_SAMPLES):  # 3 x the cap in samples
            feed._note_lag(now)
        assert len(feed.publish_lag.samples) <= MAX_INTERVAL_SAMPLES + 0x10000 // 8  # checked every 64 Ki updates
    finally:
        writer.close()
