"""Lighter through adapter -> sync -> feed -> shared memory, against a reference written
here independently (Decimal strings in dicts, the section 7 nonce rule spelled out
again).  No real Lighter capture with a known origin exists (samples/README.md), so
the stream is generated: documentation-shaped frames whose ``begin_nonce`` is the
previous ``nonce`` (nonces advance by irregular steps, as in the real update sample),
with levels inserted, modified and deleted on both sides of a fixed spread."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest

from captures import SAMPLES
from ingest.adapters.lighter import LighterAdapter
from feeds import FeedRun
from pipeline.config import ExchangeConfig
from pipeline.shm import BookState

DEPTH = 10  # shallower than the generated book: levels move in and out of the view


class Market:
    """A generated Lighter order book for market 0: snapshot and update frames."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.nonce = 904845
        self.offset = 2164
        self.bids = {Decimal(1990) - Decimal(i) / 4: self._size() for i in range(30)}
        self.asks = {Decimal(2010) + Decimal(i) / 4: self._size() for i in range(30)}

    def _size(self) -> Decimal:
        return Decimal(self.rng.randint(1, 500_000)) / 10_000

    def _envelope(self, kind: str, ob: dict) -> str:
        self.offset += self.rng.randint(1, 9)  # increasing, not contiguous
        ob.update(code=0, offset=self.offset, nonce=self.nonce, last_updated_at=1778138389655150 + self.offset)
        return json.dumps({"channel": "order_book:0", "last_updated_at": ob["last_updated_at"], "offset": self.offset,
                           "order_book": ob, "timestamp": 1778138582602 + self.offset, "type": kind})

    @staticmethod
    def _wire(side: dict, levels=None) -> list[dict]:
        items = levels if levels is not None else sorted(side.items())
        return [{"price": f"{p:.2f}", "size": f"{q:.4f}"} for p, q in items]

    def snapshot(self) -> str:
        ob = {"asks": self._wire(self.asks), "bids": self._wire(self.bids, sorted(self.bids.items(), reverse=True)),
              "begin_nonce": 0}
        return self._envelope("subscribed/order_book", ob)

    def update(self) -> str:
        changes = {"bids": [], "asks": []}
        for name, side, lo in (("bids", self.bids, Decimal(1980)), ("asks", self.asks, Decimal(2010))):
            for _ in range(self.rng.randint(0, 4)):
                p = lo + Decimal(self.rng.randint(0, 48)) / 4  # bids 1980..1992, asks 2010..2022
                if p in side and self.rng.random() < 0.4:
                    del side[p]
                    changes[name].append((p, Decimal(0)))
                else:
                    side[p] = self._size()
                    changes[name].append((p, side[p]))
        begin = self.nonce
        self.nonce += self.rng.randint(1, 30)
        ob = {"asks": self._wire(None, changes["asks"]), "bids": self._wire(None, changes["bids"]),
              "begin_nonce": begin}
        return self._envelope("update/order_book", ob)


class Reference:
    """Section 7: install the snapshot's nonce; apply an update only if begin_nonce == nonce."""

    def __init__(self):
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.nonce = None

    def frame(self, text: str) -> None:
        msg = json.loads(text)
        ob = msg["order_book"]
        if msg["type"] == "subscribed/order_book":
            self.bids, self.asks = {}, {}
        else:
            assert ob["begin_nonce"] == self.nonce, "reference: nonce chain broken"
        for side, levels in ((self.bids, ob["bids"]), (self.asks, ob["asks"])):
            for lv in levels:
                p, q = Decimal(lv["price"]), Decimal(lv["size"])
                if q == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
        self.nonce = ob["nonce"]

    def top(self, n: int):
        b = sorted(self.bids.items(), reverse=True)[:n]
        a = sorted(self.asks.items())[:n]
        return [(float(p), float(q)) for p, q in b], [(float(p), float(q)) for p, q in a]


class Harness(FeedRun):
    """The real feed and shared memory (tests/feeds.py), with resync requests recorded (the
    runner would answer them with adapter.resubscribe and the venue with a new snapshot)."""

    def __init__(self):
        self.adapter = LighterAdapter(ExchangeConfig(name="lt", adapter="lighter", symbols=("0",), depth=DEPTH))
        # a numeric config symbol is the market id itself: no discovery needed
        super().__init__(self.adapter, ["0"], depth=DEPTH, exchange="lt")

    @property
    def resyncs(self) -> list[str]:
        return [r.symbol for r in self.requests]

    def send(self, text: str):
        self.frame(text, 1)

    def view(self):
        snap, _ = self.shm("0", depth=DEPTH)
        return snap, [tuple(x) for x in snap.bids.tolist()], [tuple(x) for x in snap.asks.tolist()]

    def stats(self):
        return self.shm("0")[1]


@pytest.fixture
def harness():
    h = Harness()
    yield h
    h.close()


def test_generated_stream_equals_the_reference_after_every_update(harness):
    m, ref = Market(1), Reference()
    for i in range(400):
        text = m.snapshot() if i == 0 else m.update()
        ref.frame(text)
        harness.send(text)
        snap, bids, asks = harness.view()
        assert snap.state is BookState.LIVE
        assert (bids, asks) == ref.top(DEPTH), f"frame {i}"
        assert harness.feed.feeds["0"].sync.book_id == ref.nonce  # shm's id moves only with the view
    st = harness.stats()
    assert st["gaps"] == 0 and st["updates"] == 399 and st["malformed"] == 0 and not harness.resyncs


@pytest.mark.parametrize("mutation", ["removed", "reordered"])
def test_removed_or_reordered_update_is_a_gap_and_a_resubscribed_snapshot_recovers(harness, mutation):
    m, ref = Market(2), Reference()
    frames = [m.snapshot()] + [m.update() for _ in range(40)]
    if mutation == "removed":
        del frames[20]
    else:
        frames[20], frames[21] = frames[21], frames[20]
    for text in frames:
        harness.send(text)
    assert harness.stats()["gaps"] == 1 and harness.resyncs == ["0"]
    assert harness.view()[0].state is BookState.STALE
    # the runner resubscribes: the venue answers with a fresh snapshot, then updates go on
    assert [json.loads(f)["type"] for f in harness.adapter.resubscribe("0")] == ["unsubscribe", "subscribe"]
    text = m.snapshot()
    ref.frame(text)
    harness.send(text)
    for _ in range(30):
        text = m.update()
        ref.frame(text)
        harness.send(text)
    snap, bids, asks = harness.view()
    assert snap.state is BookState.LIVE and (bids, asks) == ref.top(DEPTH)
    assert harness.stats()["resyncs"] == 1 and harness.stats()["gaps"] == 1


def test_a_duplicated_update_is_skipped_not_a_gap(harness):
    m, ref = Market(3), Reference()
    for i in range(60):
        text = m.snapshot() if i == 0 else m.update()
        ref.frame(text)
        harness.send(text)
        if i % 7 == 3:
            harness.send(text)  # delivered twice
    snap, bids, asks = harness.view()
    assert (bids, asks) == ref.top(DEPTH) and snap.state is BookState.LIVE
    assert harness.stats()["gaps"] == 0 and harness.stats()["dropped"] > 0


def test_a_snapshot_on_a_live_book_replaces_it(harness):
    """A second subscribed/order_book (a resubscribe that raced a healthy book) replaces
    the book and the chain continues from its nonce."""
    m, ref = Market(4), Reference()
    for i in range(30):
        text = m.snapshot() if i in (0, 15) else m.update()
        ref.frame(text)
        harness.send(text)
    assert harness.view()[1:] == ref.top(DEPTH) and harness.stats()["gaps"] == 0


@pytest.mark.shared
def test_documentation_frames_through_the_feed(harness):
    """The documented snapshot, then the documented update chained to it (the two
    samples are from different days, so begin_nonce is set to the snapshot's nonce)."""
    lt = SAMPLES / "lighter"
    snap = json.loads((lt / "nautilus_ws_order_book_subscribed.json").read_text())
    upd = json.loads((lt / "nautilus_ws_order_book_update.json").read_text())
    upd["order_book"]["begin_nonce"] = snap["order_book"]["nonce"]
    ref = Reference()
    for msg in (snap, upd):
        ref.frame(json.dumps(msg))
        harness.send(json.dumps(msg))
    s, bids, asks = harness.view()
    assert (bids, asks) == ref.top(DEPTH) == ([(2000.0, 0.02)], [(2064.54, 0.3285), (2325.0, 99.0),
                                                                  (2341.25, 340.1028)])
    assert s.update_id == 9182390020 and s.state is BookState.LIVE
