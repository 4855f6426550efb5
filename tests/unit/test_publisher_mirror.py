"""The publisher's mirror: exact per-depth view diffs, steps, and Clone-pattern recovery from shared memory."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from pipeline import schema
from pipeline.book import ViewBook
from pipeline.config import parse_config
from pipeline.shm import BookState, BookWriter
from publisher.mirror import BookMirror, top, view_diff

CONFIG = """
[pipeline]
run_dir = "{run}"
[exchanges.sim]
adapter = "binance"
symbols = ["BTCUSDT"]
depth = 8
"""


class FakeIngest:
    """Bus messages of one book as the ingest makes them: ViewBook deltas, contiguous seq, shm first."""

    def __init__(self, depth: int, epoch: int = 1, writer: BookWriter | None = None, seed: int = 1):
        self.view = ViewBook(depth)
        self.depth, self.epoch, self.writer = depth, epoch, writer
        self.seq = 0
        self.rng = random.Random(seed)
        self.topic = schema.l2_topic("sim", "BTCUSDT")

    def _message(self, snapshot: bool, bids, asks) -> tuple[bytes, bytes]:
        self.seq += 1
        if self.writer is not None:
            vb, va = self.view.view()
            self.writer.write_view(0, self.seq, BookState.LIVE, 0, 1, self.seq, [p for p, _ in vb],
                                   [s for _, s in vb], [p for p, _ in va], [s for _, s in va])
        msg = schema.L2Update(exchange="sim", symbol="BTCUSDT", epoch=self.epoch, seq=self.seq, ts_exchange=0,
                              ts_received=1, snapshot=snapshot, state="live", update_id=self.seq, depth=self.depth,
                              bids=list(bids), asks=list(asks))
        return self.topic, schema.encode(msg)

    def snapshot(self) -> tuple[bytes, bytes]:
        bids = [(100.0 - i, 1.0 + i) for i in range(12)]
        asks = [(101.0 + i, 2.0 + i) for i in range(12)]
        self.view.clear()
        self.view.load_snapshot(bids, asks)
        vb, va = self.view.view()
        return self._message(True, vb, va)

    def change(self) -> tuple[bytes, bytes]:
        """A random change near the top that alters the view (retries until it does)."""
        while True:
            side = self.rng.random() < 0.5
            price = (100.0 - self.rng.randrange(0, 14)) if side else (101.0 + self.rng.randrange(0, 14))
            size = 0.0 if self.rng.random() < 0.3 else round(self.rng.uniform(0.1, 5), 3)
            db, da = self.view.apply([(price, size)] if side else [], [] if side else [(price, size)])
            if db or da:
                return self._message(False, db, da)


def apply_levels(book: dict, changes) -> None:
    for p, s in changes:
        if s > 0:
            book[p] = s
        else:
            book.pop(p, None)


levels = st.dictionaries(st.integers(1, 40).map(float), st.integers(1, 9).map(float), max_size=12)


@given(levels, levels)
def test_view_diff_turns_one_view_into_the_other(before, after):
    old = sorted(before.items(), reverse=True)
    new = sorted(after.items(), reverse=True)
    book = dict(old)
    apply_levels(book, view_diff(old, new))
    assert book == dict(new)


def test_steps_carry_exact_diffs_for_each_tracked_depth(tmp_path):
    mirror = BookMirror(parse_config(CONFIG.format(run=tmp_path / "r"), tmp_path))
    ingest = FakeIngest(depth=8)
    mirror.track(("sim", "BTCUSDT"), 3)
    step = mirror.apply_l2(*ingest.snapshot())
    assert step is not None and not step.continuous and step.diffs == {3: None}  # first book: no delta
    client = {3: (dict(step.book.top(3)[0]), dict(step.book.top(3)[1]))}
    for _ in range(300):
        step = mirror.apply_l2(*ingest.change())
        assert step.continuous and step.prev_seq + 1 == step.book.seq
        bids, asks = step.diffs[3]
        apply_levels(client[3][0], bids)
        apply_levels(client[3][1], asks)
        want_bids, want_asks = top(step.book, 3)
        assert sorted(client[3][0].items(), reverse=True) == want_bids
        assert sorted(client[3][1].items()) == want_asks
    mirror.untrack(("sim", "BTCUSDT"), 3)
    assert mirror.tracked_depths(("sim", "BTCUSDT")) == []
    mirror.close()


def test_a_gap_reloads_from_shared_memory_and_is_not_a_delta(tmp_path):
    config = parse_config(CONFIG.format(run=tmp_path / "r"), tmp_path)
    writer = BookWriter(config.shm_prefix, "sim", ["BTCUSDT"], 8, epoch=1)
    try:
        mirror = BookMirror(config)
        mirror.track(("sim", "BTCUSDT"), 8)  # a delta client: the levels are mirrored
        ingest = FakeIngest(depth=8, writer=writer)
        mirror.apply_l2(*ingest.snapshot())
        for _ in range(5):
            mirror.apply_l2(*ingest.change())
        ingest.change()  # lost on the bus
        step = mirror.apply_l2(*ingest.change())
        assert step is not None and not step.continuous and step.book.seq == ingest.seq
        assert top(step.book, 8) == tuple(map(list, ingest.view.view()))
        assert mirror.trackers[("sim", "BTCUSDT")].gaps == 1
        # a snapshot for a client: from shared memory, which may be ahead of the bus
        ingest.change()
        view = mirror.snapshot(("sim", "BTCUSDT"), 4)
        assert view.seq == ingest.seq and view.bids == [list(x) for x in ingest.view.view()[0][:4]]
        mirror.close()
    finally:
        writer.close(unlink=True)


def test_snapshot_without_shared_memory_falls_back_to_the_mirror(tmp_path):
    mirror = BookMirror(parse_config(CONFIG.format(run=tmp_path / "r"), tmp_path))
    assert mirror.snapshot(("sim", "BTCUSDT"), 5).state == "down"  # nothing at all yet
    ingest = FakeIngest(depth=8)
    mirror.apply_l2(*ingest.snapshot())
    mirror.apply_l2(*ingest.change())
    view = mirror.snapshot(("sim", "BTCUSDT"), 5)
    assert view.seq == 2 and (view.bids, view.asks) == top(mirror.book("sim", "BTCUSDT"), 5)
    mirror.close()


def test_a_book_no_delta_client_follows_is_light_and_its_snapshots_come_from_shared_memory(tmp_path):
    """Without delta clients only the header of each L2 message is read; a delta client makes the
    mirror load the book from shared memory and diff exactly from there; when it leaves, light again."""
    config = parse_config(CONFIG.format(run=tmp_path / "r"), tmp_path)
    writer = BookWriter(config.shm_prefix, "sim", ["BTCUSDT"], 8, epoch=1)
    key = ("sim", "BTCUSDT")
    try:
        mirror = BookMirror(config)
        ingest = FakeIngest(depth=8, writer=writer)
        step = mirror.apply_l2(*ingest.snapshot())
        assert step.prev_state is None and step.book.state == "live" and step.diffs == {}
        for _ in range(20):
            step = mirror.apply_l2(*ingest.change())
            assert step.continuous and step.book.seq == ingest.seq and step.diffs == {}
        assert mirror.light_messages == 21 and not mirror.mirrored(key)
        assert step.book.bids == {} and key not in mirror.trackers  # no levels kept
        ingest.change()  # lost on the bus: not continuous, nothing to reload
        step = mirror.apply_l2(*ingest.change())
        assert not step.continuous and step.prev_seq == ingest.seq - 2
        view = mirror.snapshot(key, 4)
        assert view.seq == ingest.seq and view.bids == [list(x) for x in ingest.view.view()[0][:4]]

        # a delta client subscribes: the levels come from shared memory, then exact diffs
        mirror.track(key, 3)
        assert mirror.mirrored(key) and mirror.book(*key).seq == ingest.seq
        client = (dict(ingest.view.view()[0][:3]), dict(ingest.view.view()[1][:3]))
        for _ in range(50):
            step = mirror.apply_l2(*ingest.change())
            assert step.continuous
            apply_levels(client[0], step.diffs[3][0])
            apply_levels(client[1], step.diffs[3][1])
            assert sorted(client[0].items(), reverse=True) == ingest.view.view()[0][:3]
            assert sorted(client[1].items()) == ingest.view.view()[1][:3]
        light = mirror.light_messages

        # it leaves: light again, carrying on from the mirror's seq
        mirror.untrack(key, 3)
        step = mirror.apply_l2(*ingest.change())
        assert step.continuous and step.prev_state == "live" and mirror.light_messages == light + 1
        mirror.close()
    finally:
        writer.close(unlink=True)


def test_without_shared_memory_every_book_is_mirrored(tmp_path):
    mirror = BookMirror(parse_config(CONFIG.format(run=tmp_path / "r"), tmp_path))
    ingest = FakeIngest(depth=8)
    mirror.apply_l2(*ingest.snapshot())
    step = mirror.apply_l2(*ingest.change())
    assert step.continuous and mirror.light_messages == 0
    assert top(step.book, 8) == tuple(map(list, ingest.view.view()))
    mirror.close()
