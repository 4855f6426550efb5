"""The runner carries out what the feed asks (ingest/runner.py ``_carry_out``): a REST fetch is
queued once however often it is asked, a resubscribe without a connection waits for the
next connection, and the feed's requests after a gap reach the right one of the two."""

from __future__ import annotations

import asyncio

from ingest.adapters import create
from ingest.events import DepthConnected, DepthDiff, DepthDisconnected, DepthSnapshot, Request
from ingest.feed import BusPublisher, FeedBooks
from ingest.runner import Runner
from ingest.sync import Action
from pipeline.config import ExchangeConfig
from pipeline.shm import BookWriter


def runner(shm_prefix, adapter_name, symbol):
    cfg = ExchangeConfig(name="ex", adapter=adapter_name, symbols=(symbol,), depth=5)
    adapter = create(cfg)
    writer = BookWriter(shm_prefix, "ex", [symbol], 5, epoch=1)
    feed = FeedBooks("ex", adapter, writer, BusPublisher(None, None), epoch=1)
    return Runner(cfg, adapter, feed, asyncio.Event()), feed, writer


def test_a_gap_on_a_rest_venue_queues_one_snapshot_fetch(shm_prefix):
    r, feed, writer = runner(shm_prefix, "binance", "BTCUSDT")
    try:
        r._carry_out(feed.receive(DepthConnected(("BTCUSDT",))) or ())
        r._carry_out(feed.receive(DepthDiff("BTCUSDT", 5, 6, -1, [], [], 0, 1)) or ())  # first diff: fetch
        assert list(r._snap_queue) == ["BTCUSDT"]
        r._carry_out([Request(Action.FETCH_SNAPSHOT, "BTCUSDT")])  # asked again while pending
        assert list(r._snap_queue) == ["BTCUSDT"]
        r._snap_queue.clear()
        r._snap_pending.clear()
        r._carry_out(feed.receive(DepthSnapshot("BTCUSDT", 5, [(1.0, 1.0)], [(2.0, 1.0)], 0, 2)) or ())
        assert feed.live("BTCUSDT") and not r._snap_queue
        r._carry_out(feed.receive(DepthDiff("BTCUSDT", 9, 9, -1, [], [], 0, 3)) or ())  # 7..8 missing
        assert list(r._snap_queue) == ["BTCUSDT"] and not feed.live("BTCUSDT")
    finally:
        writer.close(unlink=True)


def test_an_in_stream_venue_resubscribes_and_without_a_connection_waits(shm_prefix):
    r, feed, writer = runner(shm_prefix, "bybit", "BTCUSDT")
    try:
        r._carry_out(feed.receive(DepthConnected(("BTCUSDT",))) or ())
        r._carry_out(feed.receive(DepthSnapshot("BTCUSDT", 5, [(1.0, 1.0)], [(2.0, 1.0)], 0, 2)) or ())
        out = feed.receive(DepthDiff("BTCUSDT", 7, 7, 6, [], [], 0, 3))  # 6 missing
        assert out == [Request(Action.RESUBSCRIBE, "BTCUSDT")]
        r._carry_out(out)  # no connection: nothing to send on; the next one subscribes afresh
        assert not r._snap_queue and r._resubscribes == {}
    finally:
        writer.close(unlink=True)


def test_a_rest_answer_asked_for_before_a_reconnect_is_dropped_and_the_new_connection_asks_anew(shm_prefix):
    """The REST answer for the old connection arrives after the new one opened and before its
    first diff: installed, it would make a live book from before the reconnect that the first
    diff then breaks (a counted gap).  It is dropped; the new connection's own fetch installs."""
    r, feed, writer = runner(shm_prefix, "binance", "BTCUSDT")
    body = b'{"lastUpdateId":5,"bids":[["1.0","1.0"]],"asks":[["2.0","1.0"]]}'

    async def rest(session, req, what):
        return body

    r._rest = rest
    req = r.adapter.snapshot_request("BTCUSDT")
    try:
        r._depth_connected(("BTCUSDT",), None)
        r._carry_out(feed.receive(DepthDiff("BTCUSDT", 5, 6, -1, [], [], 0, 1)) or ())
        assert list(r._snap_queue) == ["BTCUSDT"]
        r._snap_queue.popleft()                       # a worker takes it (connection 1)...
        feed.receive(DepthDisconnected(("BTCUSDT",), "closed", 2))
        r._depth_connected(("BTCUSDT",), None)        # ...and the connection is replaced meanwhile
        assert asyncio.run(r._fetch_snapshot(None, "BTCUSDT", req, 1))
        assert not feed.live("BTCUSDT") and feed.feeds["BTCUSDT"].counts.gaps == 0
        r._carry_out(feed.receive(DepthDiff("BTCUSDT", 8, 9, -1, [], [], 0, 3)) or ())  # its first diff
        assert list(r._snap_queue) == ["BTCUSDT"]      # asked anew, not taken for the dropped one
        r._snap_queue.popleft()
        body = b'{"lastUpdateId":8,"bids":[["1.0","1.0"]],"asks":[["2.0","1.0"]]}'
        assert asyncio.run(r._fetch_snapshot(None, "BTCUSDT", req, 2))
        assert feed.live("BTCUSDT") and feed.feeds["BTCUSDT"].counts.gaps == 0 and not r._snap_pending
    finally:
        writer.close(unlink=True)
