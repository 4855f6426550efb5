"""The hub reading L2 from shared memory (issue 15 item 3): bus subscriptions only for books delta
clients follow, snapshots polled from shared memory, and the join race of a new subscription.

No sockets: the bus reader's subscribe/unsubscribe calls are recorded, the bus messages are the
ones a fake ingest makes (shared memory written first, as the ingest does), and only those the
subscription would let through are handed to the hub.  Timers run when the test says.
"""

from __future__ import annotations

import json

from pipeline import schema
from pipeline.config import parse_config
from pipeline.shm import BookWriter
from publisher.hub import Hub
from publisher.mirror import BookMirror
from publisher.settings import load_settings
from test_publisher_mirror import CONFIG, FakeIngest, apply_levels

KEY = ("sim", "BTCUSDT")
TOPIC = schema.L2.topic(*KEY)


class Timers:
    def __init__(self):
        self.due: list = []

    def __call__(self, delay, fn, *args):
        self.due.append((fn, args))

    def run(self, name: str) -> None:
        """Run the pending timers whose function is called ``name`` (each once)."""
        todo = [(f, a) for f, a in self.due if f.__name__ == name]
        self.due = [(f, a) for f, a in self.due if f.__name__ != name]
        for f, a in todo:
            f(*a)


class Setup:
    def __init__(self, tmp_path):
        self.config = parse_config(CONFIG.format(run=tmp_path / "r"), tmp_path)
        self.writer = BookWriter(self.config.shm_prefix, "sim", ["BTCUSDT"], 8, epoch=1)
        self.ingest = FakeIngest(depth=8, writer=self.writer)
        self.timers = Timers()
        self.mirror = BookMirror(self.config)
        self.now = 1_700_000_000_000_000
        self.hub = Hub(load_settings(self.config), self.mirror, self.timers, clock=lambda: self.now)
        self.subscribed = {schema.L2.subscription("sim")}  # what the reader subscribed at its start
        self.calls: list[tuple[str, bytes]] = []

        def sub(topic):
            assert topic not in self.subscribed
            self.subscribed.add(topic)
            self.calls.append(("+", topic))

        def unsub(topic):
            self.subscribed.remove(topic)
            self.calls.append(("-", topic))

        self.hub.read_l2(sub, unsub)

    def poll(self) -> None:
        """A throttle interval later: the poll of shared memory."""
        self.now += 200_000
        self.timers.run("_throttle_due")  # snapshots scheduled meanwhile
        self.timers.run("_poll")

    def bus(self, message) -> None:
        """One message from the ingest: to the hub when the subscriptions let it through."""
        topic, payload = message
        if any(topic.startswith(t) for t in self.subscribed):
            self.hub.on_l2(topic, payload)

    def frames(self, client) -> list[dict]:
        out = []
        while (item := self.hub.next_frame(client)) is not None:
            out.append(json.loads(item[0]))
        return out

    def close(self):
        self.mirror.close()
        self.writer.close(unlink=True)


def test_snapshot_clients_need_no_l2_subscription_and_a_joining_delta_client_gets_contiguous_deltas(tmp_path):
    s = Setup(tmp_path)
    try:
        s.bus(s.ingest.snapshot())  # before the first poll the exchange is read whole (learns the instrument)
        s.poll()  # shared memory is readable: exact topics only, the instrument known
        assert s.subscribed == set() and s.hub.statistics()["l2_subscriptions"]["whole"] == []
        silent = s.hub.connect("p", lambda: None, lambda c, r: None)
        first = [f for f in s.frames(silent) if f["kind"] == "order_book_l2"]
        assert [f["seq"] for f in first] == [s.ingest.seq]
        l2_in = s.hub.counts["l2_in"]
        for _ in range(30):
            s.bus(s.ingest.change())  # the feed runs; none of it reaches the hub
        assert s.hub.counts["l2_in"] == l2_in
        s.poll()  # the poll sees the book moved: the snapshot client's next snapshot
        snap = [f for f in s.frames(silent) if f["kind"] == "order_book_l2"]
        assert [f["seq"] for f in snap] == [s.ingest.seq]
        assert snap[0]["bids"] == [list(x) for x in s.ingest.view.view()[0][:8]]

        # a delta client joins: the topic is subscribed, its snapshot waits for the first message
        c = s.hub.connect("d", lambda: None, lambda c_, r: None)
        s.frames(c)
        s.hub.receive(c, json.dumps({"op": "subscribe", "exchange": "sim", "symbols": ["BTCUSDT"],
                                     "channels": ["book"], "mode": "deltas", "depth": 3}))
        assert s.calls[-1] == ("+", TOPIC)
        assert [f["kind"] for f in s.frames(c)] == ["subscribed"]  # no snapshot yet
        # the subscription has not reached the ingest yet: these are lost to the publisher
        s.subscribed.discard(TOPIC)
        for _ in range(5):
            s.bus(s.ingest.change())
        s.subscribed.add(TOPIC)
        book = ({}, {})
        seq = None
        for _ in range(40):
            s.bus(s.ingest.change())
            for f in s.frames(c):
                if f["kind"] == "order_book_l2":
                    assert seq is None, "one snapshot only"
                    book[0].clear(), book[1].clear()
                else:
                    assert f["kind"] == "order_book_l2_update" and f["seq"] == seq + 1
                apply_levels(book[0], [tuple(x) for x in f["bids"]])
                apply_levels(book[1], [tuple(x) for x in f["asks"]])
                seq = f["seq"]
        assert seq == s.ingest.seq
        assert sorted(book[0].items(), reverse=True) == s.ingest.view.view()[0][:3]
        assert sorted(book[1].items()) == s.ingest.view.view()[1][:3]
        assert not [f for f in s.frames(silent) if f["kind"] == "status"]  # no spurious resync announced

        # the last delta client leaves: unsubscribed
        s.hub.disconnect(c)
        assert s.calls[-1] == ("-", TOPIC) and s.subscribed == set()
        s.poll()
        assert [f["seq"] for f in s.frames(silent) if f["kind"] == "order_book_l2"] == [s.ingest.seq]
    finally:
        s.close()


def test_a_quiet_book_is_loaded_from_shared_memory_when_no_message_comes(tmp_path):
    s = Setup(tmp_path)
    try:
        s.bus(s.ingest.snapshot())
        s.poll()
        c = s.hub.connect("d", lambda: None, lambda c_, r: None)
        s.hub.receive(c, json.dumps({"op": "subscribe", "exchange": "sim", "symbols": ["BTCUSDT"],
                                     "channels": ["book"], "mode": "deltas", "depth": 3}))
        assert [f["kind"] for f in s.frames(c)] == ["welcome", "subscribed"]  # no snapshot yet
        s.timers.run("_join_timeout")  # nothing came and shared memory did not move: a quiet book
        snap = [f for f in s.frames(c) if f["kind"] == "order_book_l2"]
        assert [f["seq"] for f in snap] == [s.ingest.seq]
        s.bus(s.ingest.change())
        upd = s.frames(c)
        assert [(f["kind"], f["seq"]) for f in upd] == [("order_book_l2_update", s.ingest.seq)]
    finally:
        s.close()


def test_a_moving_book_waits_for_its_first_message(tmp_path):
    s = Setup(tmp_path)
    try:
        s.bus(s.ingest.snapshot())
        s.poll()
        c = s.hub.connect("d", lambda: None, lambda c_, r: None)
        s.hub.receive(c, json.dumps({"op": "subscribe", "exchange": "sim", "symbols": ["BTCUSDT"],
                                     "channels": ["book"], "mode": "deltas", "depth": 3}))
        s.frames(c)
        s.subscribed.discard(TOPIC)  # not in effect yet, while the book moves
        s.bus(s.ingest.change())
        s.timers.run("_join_timeout")  # shared memory moved: wait on
        assert s.frames(c) == []
        s.subscribed.add(TOPIC)
        s.bus(s.ingest.change())
        got = s.frames(c)
        assert [(f["kind"], f["seq"]) for f in got] == [("order_book_l2", s.ingest.seq)]
        s.bus(s.ingest.change())
        assert [(f["kind"], f["seq"]) for f in s.frames(c)] == [("order_book_l2_update", s.ingest.seq)]
    finally:
        s.close()


def test_a_new_epoch_in_shared_memory_is_announced_and_snapshotted(tmp_path):
    s = Setup(tmp_path)
    try:
        s.bus(s.ingest.snapshot())
        s.poll()
        silent = s.hub.connect("p", lambda: None, lambda c, r: None)
        s.frames(silent)
        # the ingest is killed and restarts: a new segment, a new epoch
        s.writer.close(unlink=True)
        s.writer = BookWriter(s.config.shm_prefix, "sim", ["BTCUSDT"], 8, epoch=2)
        s.ingest = FakeIngest(depth=8, epoch=2, writer=s.writer)
        s.bus(s.ingest.snapshot())
        s.poll()
        got = s.frames(silent)
        status = [f for f in got if f["kind"] == "status"]
        snaps = [f for f in got if f["kind"] == "order_book_l2"]
        assert status and status[0]["epoch"] == 2 and "new epoch" in status[0]["reason"]
        assert [(f["epoch"], f["seq"]) for f in snaps] == [(2, s.ingest.seq)]
        assert s.hub.counts["l2_in"] == 1  # only the very first message, before shared memory was found
    finally:
        s.close()
