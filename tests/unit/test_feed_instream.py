"""FeedBooks with an in-stream venue (docs/adapters.md): snapshots in the WS stream install
or replace the book, top-N trimming, checksums and crossed books as integrity failures,
resync requests.  A consumer rebuilding from the published messages must always equal
the shared-memory view, and a bad book must never be published as live.  Every event
goes in through ``FeedBooks.receive``, the entry point the runner uses."""

from __future__ import annotations

import pytest

from ingest.events import DepthConnected, DepthDiff, DepthDisconnected, DepthOpen, DepthSnapshot, Instrument
from ingest.feed import BusPublisher, FeedBooks
from ingest.sync import Action, IllegalTransition
from ingest.adapters.base import APPLY, GAP, SKIP, Adapter, AdapterTraits, SnapshotSource
from pipeline.shm import BookReader, BookWriter


class InStreamAdapter(Adapter):
    """Bybit-like rules: u must be previous u + 1; checksum = sum of the top 3 sizes x 1000."""

    name = "instream"

    def __init__(self, cap: int = 0):
        self.traits = AdapterTraits(SnapshotSource.STREAM, book_cap=cap, checksum=True)

    @staticmethod
    def check(ev, book_id, first):
        if ev.last_id <= book_id:
            return SKIP
        return APPLY if ev.last_id == book_id + 1 else GAP

    @staticmethod
    def snapshot_usable(snapshot_id, first):
        return True

    def checksum(self, symbol, book):
        bp, bs, ap, as_ = book.view_arrays()
        return int(sum(bs[:3]) * 1000 + sum(as_[:3]) * 1000)

    def instrument(self, symbol):
        return Instrument("BTC", "USDT", "perp")


class Recorder(BusPublisher):
    def __init__(self):
        super().__init__(None, None)
        self.l2 = []
        self.trades = []

    def send_l2(self, topic, msg):
        self.l2.append(msg)

    def send_trade(self, topic, msg):
        self.trades.append(msg)


class Consumer:
    """Rebuilds the view from bus messages only (snapshot replaces, deltas apply)."""

    def __init__(self):
        self.bids, self.asks, self.state, self.seq = {}, {}, None, 0

    def feed(self, msgs):
        for m in msgs:
            assert m.seq == self.seq + 1, "bus seq must be contiguous"
            self.seq = m.seq
            if m.snapshot:
                self.bids, self.asks = dict(m.bids), dict(m.asks)
            else:
                for side, levels in ((self.bids, m.bids), (self.asks, m.asks)):
                    for p, s in levels:
                        if s == 0:
                            side.pop(p, None)
                        else:
                            side[p] = s
            self.state = m.state

    def view(self):
        return sorted(self.bids.items(), reverse=True), sorted(self.asks.items())


def _diff(u, bids=(), asks=(), checksum=0):
    return DepthDiff("BTCUSDT", u, u, u - 1, list(bids), list(asks), u * 1000, u * 10**6, checksum)


def _snap(u, bids, asks, checksum=0):
    return DepthSnapshot("BTCUSDT", u, list(bids), list(asks), u * 1000, u * 10**6, checksum)


def stats_now(f, reader):
    """The symbol's counters as `pipeline status` reads them after the stats loop copied them."""
    f.copy_stats()
    return reader.stats("BTCUSDT")


def send(f, ev, wanted=None, action=None):
    """``f.receive(ev)``; the symbols of the snapshots it requests go to ``wanted`` (all of
    them of kind ``action`` when given)."""
    for req in f.receive(ev) or ():
        assert action is None or req.action is action, req
        if wanted is not None:
            wanted.append(req.symbol)


@pytest.fixture
def feed(shm_prefix):
    made = []

    def make(cap=0, depth=5):
        writer = BookWriter(shm_prefix, "venue", ["BTCUSDT"], depth, epoch=1)
        rec = Recorder()
        wanted = []
        f = FeedBooks("venue", InStreamAdapter(cap), writer, rec, epoch=1)
        send(f, DepthConnected(("BTCUSDT",)), wanted)
        f.wanted = wanted
        made.append(writer)
        return f, rec, wanted, BookReader.open(shm_prefix, "venue")

    yield make
    for w in made:
        w.close(unlink=True)


def _shm(reader):
    """(state, seq, bids, asks) of the shared-memory view, levels as tuples best first."""
    v = reader.read("BTCUSDT")
    return (v.state.name.lower(), v.seq, [tuple(x) for x in v.bids.tolist()],
            [tuple(x) for x in v.asks.tolist()])


BIDS = [(100.0, 1.0), (99.0, 2.0), (98.0, 3.0)]
ASKS = [(101.0, 1.0), (102.0, 2.0), (103.0, 3.0)]


def test_stream_snapshot_installs_then_diffs_chain_and_consumer_equals_shm(feed):
    f, rec, wanted, reader = feed()
    send(f, _diff(7, [(100.0, 5.0)]), wanted)          # before the snapshot: older by construction, dropped
    send(f, _snap(10, BIDS, ASKS), wanted)
    send(f, _diff(11, [(100.5, 1.5)], [(101.0, 0.0)]), wanted)
    send(f, _diff(11, [(100.5, 9.9)]), wanted)         # covered: skipped
    send(f, _diff(12, [], [(100.8, 4.0)]), wanted)
    c = Consumer()
    c.feed(rec.l2)
    assert rec.l2[0].snapshot and rec.l2[0].state == "live"
    assert rec.l2[0].instrument.kind == "perp"
    assert c.view() == ([(100.5, 1.5), (100.0, 1.0), (99.0, 2.0), (98.0, 3.0)],
                        [(100.8, 4.0), (102.0, 2.0), (103.0, 3.0)])
    assert _shm(reader) == ("live", c.seq, *c.view())
    assert wanted == []  # an in-stream venue needs no REST snapshot


def test_live_replacement_publishes_exact_delta_not_a_new_snapshot(feed):
    f, rec, wanted, reader = feed()
    send(f, _snap(10, BIDS, ASKS), wanted)
    send(f, _snap(1, [(100.0, 1.0), (97.0, 1.0)], [(101.5, 2.0)]), wanted)  # e.g. Bybit u=1 after a restart
    assert [m.snapshot for m in rec.l2] == [True, False]
    c = Consumer()
    c.feed(rec.l2)
    assert c.view() == ([(100.0, 1.0), (97.0, 1.0)], [(101.5, 2.0)])
    send(f, _diff(2, [(97.0, 0.0)]), wanted)  # the chain continues from the replacement's id
    c.feed(rec.l2[2:])
    assert c.view() == ([(100.0, 1.0)], [(101.5, 2.0)])
    assert stats_now(f, reader)["gaps"] == 0


def test_gap_marks_stale_requests_resync_and_next_snapshot_recovers(feed):
    f, rec, wanted, reader = feed()
    send(f, _snap(10, BIDS, ASKS), wanted)
    send(f, _diff(12, [(100.0, 7.0)]), wanted, Action.RESUBSCRIBE)  # 11 is missing: in-stream resync
    assert wanted == ["BTCUSDT"] and f.feeds["BTCUSDT"].sync.state.value == "buffering"
    assert rec.l2[-1].snapshot and rec.l2[-1].state == "stale"
    assert _shm(reader)[0] == "stale"
    send(f, _snap(20, BIDS, ASKS), wanted)
    c = Consumer()
    c.feed(rec.l2)
    assert c.state == "live" and c.view() == (BIDS, ASKS)
    stats = stats_now(f, reader)
    assert stats["gaps"] == 1 and stats["resyncs"] == 1


def test_checksum_verified_and_mismatch_resyncs_without_publishing_bad_book(feed):
    f, rec, wanted, reader = feed()
    good = int((1 + 2 + 3) * 1000 + (1 + 2 + 3) * 1000)
    send(f, _snap(10, BIDS, ASKS, checksum=good), wanted)
    send(f, _diff(11, [(98.0, 4.0)], checksum=good + 1000), wanted)
    n = len(rec.l2)
    send(f, _diff(12, [(99.0, 5.0)], checksum=12345), wanted)   # wrong
    stats = stats_now(f, reader)
    assert stats["checksum_ok"] == 2 and stats["checksum_failed"] == 1
    assert wanted == ["BTCUSDT"]
    assert [m.state for m in rec.l2[n:]] == ["stale"]      # no live delta with the bad book
    assert _shm(reader)[0] == "stale"


def test_crossed_book_is_an_integrity_failure(feed):
    f, rec, wanted, reader = feed()
    send(f, _snap(10, BIDS, ASKS), wanted)
    send(f, _diff(11, [(101.0, 1.0)]), wanted)                   # bid at the best ask
    assert stats_now(f, reader)["checksum_failed"] == 1
    assert wanted == ["BTCUSDT"]
    assert all(m.state != "live" for m in rec.l2[1:])


def test_top_n_venue_book_is_trimmed_and_view_stays_exact(feed):
    f, rec, wanted, reader = feed(cap=3, depth=5)
    send(f, _snap(10, BIDS, ASKS), wanted)
    send(f, _diff(11, [(100.5, 1.0)], [(100.9, 1.0)]), wanted)  # pushes 98 and 103 out of the venue's top 3
    send(f, _diff(12, [(100.5, 0.0)], [(100.9, 0.0)]), wanted)  # no level comes back: the venue dropped them
    c = Consumer()
    c.feed(rec.l2)
    assert c.view() == ([(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0), (102.0, 2.0)])
    assert _shm(reader)[2:] == c.view()


class BatchRecorder(Recorder):
    """A batch-mode publisher: L2 messages queue until flush_l2 (as BusPublisher(batch=True))."""

    def __init__(self):
        super().__init__()
        self.batch = True
        self.pending = []

    def send_l2(self, topic, msg):
        self.pending.append(msg)

    def flush_l2(self):
        self.l2 += self.pending
        self.pending = []


def test_batch_mode_writes_shm_once_before_sending_and_consumer_still_equals_shm(shm_prefix):
    writer = BookWriter(shm_prefix, "venue", ["BTCUSDT"], 5, epoch=1)
    try:
        rec = BatchRecorder()
        f = FeedBooks("venue", InStreamAdapter(), writer, rec, epoch=1)
        reader = BookReader.open(shm_prefix, "venue")
        send(f, DepthConnected(("BTCUSDT",)))
        send(f, _snap(10, BIDS, ASKS))
        f.flush()
        assert _shm(reader)[:2] == ("live", 1) and len(rec.l2) == 1
        for u in range(11, 20):
            send(f, _diff(u, [(100.0 + u / 100, 1.0)]))
        # nothing written or sent until the flush: shm and bus never disagree
        assert _shm(reader)[1] == 1 and len(rec.l2) == 1 and len(rec.pending) == 9
        f.flush()
        c = Consumer()
        c.feed(rec.l2)
        assert _shm(reader) == ("live", 10, *c.view())
    finally:
        writer.close(unlink=True)


class RestAdapter(InStreamAdapter):
    """A REST-snapshot venue whose snapshots are cut at 3 levels per side."""

    def __init__(self):
        self.traits = AdapterTraits(SnapshotSource.REST, snapshot_limit=3)


def test_view_reaching_past_a_cut_rest_snapshot_resyncs(shm_prefix):
    """Binance rule (section 1 step 7): beyond a snapshot's limit the venue's levels are
    unknown; once the view reaches there the book is resynced, not published."""
    writer = BookWriter(shm_prefix, "venue", ["BTCUSDT"], 2, epoch=1)
    try:
        rec, wanted = Recorder(), []
        f = FeedBooks("venue", RestAdapter(), writer, rec, epoch=1)
        reader = BookReader.open(shm_prefix, "venue")
        send(f, DepthConnected(("BTCUSDT",)), wanted)
        send(f, _snap(10, BIDS, ASKS), wanted)          # 3 levels a side: cut at the limit
        send(f, _diff(11, [(100.0, 0.0)]), wanted)          # view 99, 98: still inside the snapshot
        assert wanted == [] and _shm(reader)[0] == "live"
        send(f, _diff(12, [(99.0, 0.0), (97.0, 1.0)]), wanted, Action.FETCH_SNAPSHOT)  # 97: past the floor
        assert wanted == ["BTCUSDT"]
        assert _shm(reader)[0] == "stale" and rec.l2[-1].state == "stale"
        send(f, _snap(20, [(98.0, 1.0), (97.0, 1.0), (96.0, 1.0)], ASKS), wanted)
        assert _shm(reader)[0] == "live"
    finally:
        writer.close(unlink=True)


def test_lost_connection_publishes_stale_then_a_new_connection_resyncs(feed):
    """DepthDisconnected of a live book: a stale snapshot on the bus and in shm, stale since
    the time the runner reported, not connected; the next connection's snapshot makes it
    live again, counted as a resync."""
    f, rec, wanted, reader = feed()
    send(f, _snap(10, BIDS, ASKS), wanted)
    send(f, DepthDisconnected(("BTCUSDT",), "idle for 60s", 123_456_789), wanted)
    assert rec.l2[-1].snapshot and rec.l2[-1].state == "stale" and _shm(reader)[0] == "stale"
    stats = stats_now(f, reader)
    assert stats["connected"] == 0 and stats["stale_since_ns"] == 123_456_789
    send(f, DepthConnected(("BTCUSDT",)), wanted)
    send(f, _snap(20, BIDS, ASKS), wanted)
    stats = stats_now(f, reader)
    assert _shm(reader)[0] == "live" and stats["resyncs"] == 1 and stats["connected"] == 1
    assert stats["stale_since_ns"] == 0 and wanted == []  # an in-stream venue: the stream brings it


def test_connected_only_once_the_handshake_is_done(feed):
    """A connection still in its handshake (DNS, TCP, TLS, upgrade) is not "connected" in status,
    though its diffs already buffer: a venue whose DNS fails said "connected, waiting for a snapshot"."""
    f, rec, wanted, reader = feed()
    send(f, DepthDisconnected(("BTCUSDT",), "DNS lookup failed", 1), wanted)
    send(f, DepthConnected(("BTCUSDT",), open=False), wanted)
    assert stats_now(f, reader)["connected"] == 0
    send(f, DepthOpen(("BTCUSDT",)), wanted)
    assert stats_now(f, reader)["connected"] == 1
    send(f, _snap(10, BIDS, ASKS), wanted)
    assert _shm(reader)[0] == "live"


def test_a_diff_for_a_disconnected_symbol_is_a_bug_that_raises(feed):
    """Issue 10: the feed used to swallow IllegalTransition.  The runner drops a connection's
    queued frames before reporting it lost, so a diff after that is our bug: it raises."""
    f, rec, wanted, reader = feed()
    send(f, _snap(10, BIDS, ASKS), wanted)
    send(f, DepthDisconnected(("BTCUSDT",), "closed", 1), wanted)
    with pytest.raises(IllegalTransition):
        f.receive(_diff(11, [(100.0, 2.0)]))
