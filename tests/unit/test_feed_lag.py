"""The ingest's publish-lag figures (ingest/feed.py with pipeline/lag.py): the bus publisher
samples the lag of every 8th L2 message where it leaves (local receive -> sent); the samples
reach the process header as p50 <= p99 <= max when the stats loop copies the feed's figures,
and stay bounded when nothing rolls them (a benchmark driving the feed without the runner)."""

from __future__ import annotations

import time

from ingest.adapters.base import AdapterTraits, SnapshotSource
from ingest.feed import P, BusPublisher, FeedBooks
from pipeline import schema
from pipeline.lag import MAX_INTERVAL_SAMPLES
from pipeline.shm import BookReader, BookWriter


class RestAdapter:
    traits = AdapterTraits(SnapshotSource.REST)

    @staticmethod
    def check(ev, book_id, first):  # no book event in these tests
        raise AssertionError

    snapshot_usable = parse_frame = check

    @staticmethod
    def instrument(symbol):
        return None


class Socket:
    """Stands in for a ZeroMQ PUB socket: counts the frames sent."""

    def __init__(self):
        self.frames = 0

    def send(self, data, flags=0):
        self.frames += 1


def l2(lag_us: int) -> schema.L2Update:
    return schema.L2Update(exchange="venue", symbol="BTCUSDT", epoch=1, seq=1, ts_exchange=0,
                           ts_received=time.time_ns() // 1000 - lag_us, snapshot=False, state="live", depth=5,
                           bids=[], asks=[])


def test_publish_lag_samples_reach_the_header_as_agreeing_figures(shm_prefix):
    writer = BookWriter(shm_prefix, "venue", ["BTCUSDT"], 5, epoch=1)
    try:
        sock = Socket()
        publisher = BusPublisher(None, sock, batch=True)
        feed = FeedBooks("venue", RestAdapter(), writer, publisher, epoch=1)
        # every 8th message is sampled: 99 x 200 ms, 1 x 5 s (long, so that the time spent
        # building the 800 messages before the flush does not matter)
        for lag_us in [200_000] * 792 + [5_000_000] * 8:
            publisher.send_l2(b"l2.venue.BTCUSDT", l2(lag_us))
        publisher.flush_l2()
        assert sock.frames == 2 * 800
        feed.copy_stats()  # as the runner's stats loop does
        with BookReader.open(shm_prefix, "venue") as reader:
            ps = reader.process_stats()
        # (a sample is the given lag plus the time until the flush reads the clock)
        assert 200_000 <= ps["publish_lag_us"] < 250_000 and ps["publish_lag_1s_us"] == ps["publish_lag_us"]
        assert ps["publish_lag_us"] <= ps["publish_lag_p99_us"] <= ps["publish_lag_max_us"]
        assert ps["publish_lag_max_us"] >= 5_000_000
        assert writer.header[P["publish_lag_p99_us"]] == ps["publish_lag_p99_us"]
    finally:
        writer.close()


def test_samples_stay_bounded_when_nothing_rolls_them():
    unbatched = BusPublisher(None, Socket())
    msg = l2(0)
    for _ in range(8 * 3 * MAX_INTERVAL_SAMPLES):  # 3 x the cap in samples
        unbatched.send_l2(b"t", msg)
    assert len(unbatched.publish_lag.samples) <= MAX_INTERVAL_SAMPLES + 0x10000 // 8  # checked every 64 Ki
    batched = BusPublisher(None, Socket(), batch=True)
    for _ in range(3):
        for _ in range(8 * MAX_INTERVAL_SAMPLES):
            batched.send_l2(b"t", msg)
        batched.flush_l2()
    assert len(batched.publish_lag.samples) <= MAX_INTERVAL_SAMPLES
