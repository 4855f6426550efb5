"""The hyperliquid_node adapter and the file-tailing transport on small made-up node files:
gaps, unknown orders, the periodic snapshot check, options; partial lines, hour rollover and
the search for the first block after a snapshot (ingest/filetail.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feeds import Recorder
from ingest.adapters import create
from ingest.adapters.hyperliquid_node import HyperliquidNodeAdapter, node_time_ns, size_units
from ingest.events import DepthConnected, DepthDiff, FileStream, LiquidationEvent, TradeEvent
from ingest.feed import FeedBooks
from ingest.filetail import Tail, hour_files
from pipeline.config import ExchangeConfig
from pipeline.errors import ConfigError
from pipeline.shm import BookWriter

H = 100  # the snapshot's block


def order(oid, side, px, sz, coin="BTC"):
    return ["0xuser", {"coin": coin, "side": side, "limitPx": px, "sz": sz, "oid": oid}]


def snapshot(height=H, btc=None, eth=None) -> bytes:
    btc = btc if btc is not None else [[order(1, "B", "99.0", "1.5"), order(2, "B", "98.0", "2")],
                                       [order(3, "A", "101.0", "0.25"), order(4, "A", "101.0", "0.5")]]
    coins = [["BTC", btc]]
    if eth is not None:
        coins.append(["ETH", eth])
    return json.dumps([height, coins]).encode()


def diff(oid, side, px, d, coin="BTC"):
    return {"user": "0xu", "oid": oid, "coin": coin, "side": side, "px": px, "raw_book_diff": d}


def block(n, events, t="2026-05-05T17:39:13.024084407"):
    return json.dumps({"local_time": "2026-05-05T17:39:13.394386432", "block_time": t, "block_number": n,
                       "events": events}).encode()


def fill(tid, side, crossed, px="101.0", sz="0.1", coin="BTC", **extra):
    return ["0xuser", {"coin": coin, "px": px, "sz": sz, "side": side, "time": 1, "crossed": crossed,
                       "tid": tid, "oid": 9, **extra}]


DEPTH_STREAM, TRADE_STREAM = FileStream("depth", Path("/x")), FileStream("trades", Path("/y"))
STATUS_STREAM = FileStream("statuses", Path("/z"))


def statuses(n, *events):
    """A node_order_statuses line: events (status, oid, coin)."""
    return block(n, [{"time": "2026-05-05T17:39:13.024084407", "user": "0xu", "hash": None, "builder": None,
                      "status": s, "order": {"coin": coin, "side": "B", "limitPx": "1.0", "sz": "1", "oid": oid,
                                             "timestamp": 1, "tif": "Gtc", "cloid": None}}
                     for s, oid, coin in events])


@pytest.fixture
def node(shm_prefix, tmp_path):
    """(adapter, feed, recorder) with BTC and ETH loaded from ``snapshot()`` and live."""
    writers = []

    def make(symbols=("BTC", "ETH"), snap=None, mode="by_block", capacity=None, statuses=False):
        cfg = ExchangeConfig(name="hln", adapter="hyperliquid_node", symbols=symbols, depth=10,
                             options={"node_data_dir": tmp_path, "snapshot_file": tmp_path / "s.json", "mode": mode,
                                      "order_statuses": statuses})
        a = HyperliquidNodeAdapter(cfg)
        w = BookWriter(shm_prefix, "hln", list(symbols), 10, epoch=1, capacity=capacity)
        writers.append(w)
        rec = Recorder()
        f = FeedBooks("hln", a, w, rec, epoch=1)
        f.receive(DepthConnected(symbols))
        f.receive(a.load_snapshot(*a.decode_snapshot(snap or snapshot(eth=[[], [order(7, "A", "5.0", "1")]])), 1))
        return a, f, rec

    yield make
    for w in writers:
        w.close(unlink=True)


def feed_line(a, f, stream, line):
    """A line through the adapter into the feed; what the feed asks of the runner."""
    return f.receive(a.parse_line(stream, line, 5))


def test_snapshot_levels_and_a_block_as_one_diff_per_changed_coin(node):
    a, f, rec = node()
    assert f.feeds["BTC"].book.view() == ([(99.0, 1.5), (98.0, 2.0)], [(101.0, 0.75)])
    assert f.live("BTC") and f.live("ETH")
    evs = a.parse_line(DEPTH_STREAM, block(H + 1, [
        diff(5, "B", "99.0", {"new": {"sz": "0.1"}}),
        diff(3, "A", "101.0", {"update": {"origSz": "0.25", "newSz": "0.05"}}),
        diff(2, "B", "98.0", "remove")]), 5)
    assert [e.symbol for e in evs] == ["BTC"]  # ETH did not change: no diff for it
    (d,) = evs
    assert (d.first_id, d.last_id, d.prev_id) == (H + 1, H + 1, H)
    assert sorted(d.bids) == [(98.0, 0.0), (99.0, 1.6)] and d.asks == [(101.0, 0.55)]
    assert d.ts_exchange_us == node_time_ns("2026-05-05T17:39:13.024084407") // 1000
    f.receive(evs)
    assert f.feeds["BTC"].book.view() == ([(99.0, 1.6)], [(101.0, 0.55)])
    # the next BTC diff chains from block H + 1, even two blocks later
    assert a.parse_line(DEPTH_STREAM, block(H + 2, []), 5) is None
    (d,) = a.parse_line(DEPTH_STREAM, block(H + 3, [diff(5, "B", "99.0", "remove")]), 5)
    assert d.prev_id == H + 1
    assert f.receive(d) is None and f.feeds["BTC"].counts.gaps == 0


def test_blocks_the_snapshot_covers_are_skipped(node):
    a, f, rec = node()
    assert a.parse_line(DEPTH_STREAM, block(H, [diff(1, "B", "99.0", "remove")]), 5) is None
    assert a.parse_line(DEPTH_STREAM, block(H - 7, [diff(1, "B", "99.0", "remove")]), 5) is None
    assert a.counts["unknown_oid"] == 0 and a.height == H and not a.lost()


def test_a_block_gap_is_a_counted_gap_for_every_coin_and_a_resync(node):
    a, f, rec = node()
    feed_line(a, f, DEPTH_STREAM, block(H + 1, []))
    out = feed_line(a, f, DEPTH_STREAM, block(H + 3, [diff(1, "B", "99.0", "remove")]))
    assert {r.symbol for r in out} == {"BTC", "ETH"}  # resync requests for the runner
    assert a.counts["block_gaps"] == 1 and a.lost()
    assert all(f.feeds[s].counts.gaps == 1 and not f.live(s) for s in ("BTC", "ETH"))
    assert a.parse_line(DEPTH_STREAM, block(H + 4, []), 5) is None  # nothing until a new snapshot
    f.receive(a.load_snapshot(*a.decode_snapshot(snapshot(H + 4)), 9))
    assert f.live("BTC") and f.feeds["BTC"].counts.resyncs == 1 and not a.lost()


def test_an_unknown_oid_is_counted_and_resyncs_only_its_coin(node):
    a, f, rec = node()
    out = feed_line(a, f, DEPTH_STREAM, block(H + 1, [diff(999, "B", "99.0", "remove"),
                                                      diff(7, "A", "5.0", "remove", coin="ETH")]))
    assert [r.symbol for r in out] == ["BTC"] and a.counts["unknown_oid"] == 1
    assert not f.live("BTC") and f.live("ETH") and f.feeds["ETH"].book.view() == ([], [])
    assert a.lost()


def test_the_periodic_check_compares_every_order_and_a_mismatch_rebuilds_from_it(node):
    a, f, rec = node()
    feed_line(a, f, DEPTH_STREAM, block(H + 1, [diff(5, "B", "97.0", {"new": {"sz": "1"}})]))
    # a check snapshot at H + 2 equal to our books after H + 2: compared at the end of H + 2
    same = snapshot(H + 2, btc=[[order(1, "B", "99.0", "1.5"), order(2, "B", "98.0", "2"),
                                 order(5, "B", "97.0", "1")], [order(3, "A", "101.0", "0.25"),
                                                                 order(4, "A", "101.0", "0.5")]],
                    eth=[[], [order(7, "A", "5.0", "1")]])
    assert a.hold_check(*a.decode_snapshot(same))
    assert a.check_now(1) == []  # the books are at H + 1: not yet
    assert feed_line(a, f, DEPTH_STREAM, block(H + 2, [])) is None
    assert f.feeds["BTC"].counts.checksum_ok == 1 and f.feeds["ETH"].counts.checksum_ok == 1
    # one order's size differs in the next check (the level totals would hide a swap: by oid)
    other = snapshot(H + 2, btc=[[order(1, "B", "99.0", "1.4"), order(2, "B", "98.0", "2"),
                                  order(5, "B", "97.0", "1.1")], [order(3, "A", "101.0", "0.25"),
                                                                  order(4, "A", "101.0", "0.5")]],
                     eth=[[], [order(7, "A", "5.0", "1")]])
    assert a.hold_check(*a.decode_snapshot(other))
    out = f.receive(a.check_now(7))  # the books are at H + 2: compared at once
    assert [r.symbol for r in out] == ["BTC"]
    assert f.feeds["BTC"].counts.checksum_failed == 1 and not f.live("BTC") and f.live("ETH")
    f.receive(a.rebuild_from_check(8))  # the runner: the books again from that snapshot
    assert f.live("BTC") and f.feeds["BTC"].book.view()[0] == [(99.0, 1.4), (98.0, 2.0), (97.0, 1.1)]
    assert a.counts["snapshot_checks"] == 2
    # a check older than the books is not held (counted)
    feed_line(a, f, DEPTH_STREAM, block(H + 3, []))
    assert not a.hold_check(*a.decode_snapshot(snapshot(H + 2)))
    assert a.counts["snapshot_checks_missed"] == 1


def test_fills_become_one_trade_per_tid_with_the_taker_side(node):
    a, f, rec = node()
    evs = a.parse_line(TRADE_STREAM, json.dumps({
        "local_time": "2026-05-05T17:39:13.394386432", "block_time": "2026-05-05T17:39:13.024084407",
        "block_number": H + 1, "events": [fill(11, "A", False), fill(11, "B", True),   # taker buy
                                          fill(12, "B", False, liquidation={"liquidatedUser": "0x1",
                                                                             "markPx": "1", "method": "market"}),
                                          fill(13, "A", True, coin="SOL")]}).encode(), 5)  # not followed
    trades = [e for e in evs if isinstance(e, TradeEvent)]
    assert [(t.trade_id, t.side) for t in trades] == [("11", "buy"), ("12", "sell")]  # 12: only the maker read
    assert [t.liquidation for t in trades] == [False, True]  # the trade itself is marked too
    # 12 is a liquidation: the liquidated user's fill (here the one read, a buy) gives the side
    (liq,) = [e for e in evs if isinstance(e, LiquidationEvent)]
    assert (liq.symbol, liq.side, liq.price, liq.amount, liq.liquidation_id) == ("BTC", "buy", 101.0, 0.1, "12")
    assert a.counts["liquidations"] == 1
    f.receive(evs)
    assert f.feeds["BTC"].counts.trades == 2 and f.feeds["BTC"].counts.liquidations == 1
    assert [(m.trade_id, m.liquidation) for m in rec.trades] == [("11", False), ("12", True)]  # on the bus
    assert [(m.side, m.liquidation_id) for m in rec.kinds["liquidation"]] == [("buy", "12")]
    # a block read again (the same line) publishes nothing twice
    assert a.parse_line(TRADE_STREAM, block(H + 1, []), 5) is None


def test_streaming_fills_pair_across_lines_and_blocks_close_at_the_end_of_a_read(node):
    a, f, rec = node(mode="streaming")
    line = lambda n, evs: json.dumps({"local_time": "2026-05-05T17:39:13.394386432",  # noqa: E731
                                      "block_time": "2026-05-05T17:39:13.024084407", "block_number": n,
                                      "events": evs}).encode()
    assert a.parse_line(TRADE_STREAM, line(H + 1, [fill(21, "A", False)]), 5) is None
    assert a.parse_line(TRADE_STREAM, line(H + 1, [fill(21, "B", True)]), 5) is None
    (t,) = a.parse_line(TRADE_STREAM, line(H + 2, []), 5)  # the next block closes H + 1
    assert (t.trade_id, t.side) == ("21", "buy")
    # the depth stream: a block closed by the end of a read, then more of its lines
    assert a.parse_line(DEPTH_STREAM, line(H + 1, [diff(5, "B", "99.0", {"new": {"sz": "1"}})]), 5) is None
    (d,) = a.end_of_batch(DEPTH_STREAM, 6)
    f.receive(d)
    assert a.end_of_batch(DEPTH_STREAM, 7) is None  # a read that found nothing new
    (d2,) = a.parse_line(DEPTH_STREAM, line(H + 1, [diff(6, "B", "99.0", {"new": {"sz": "1"}})]), 7) or \
        a.end_of_batch(DEPTH_STREAM, 8)
    assert (d2.last_id, d2.prev_id) == (H + 1, H + 1)
    f.receive(d2)
    assert f.feeds["BTC"].book.view()[0][0] == (99.0, 3.5) and f.feeds["BTC"].counts.gaps == 0


@pytest.mark.parametrize("text,units", [("0.18385", 18385000), ("2", 200000000), ("0.000000010", 1),
                                        ("12.5", 1250000000)])
def test_sizes_are_exact_integer_units(text, units):
    assert size_units(text) == units


@pytest.mark.parametrize("options,key,reason", [
    ({"mode": "fast"}, "exchanges.hln.mode", 'expected "by_block" or "streaming"'),
    ({"snapshot_url": "ftp://x"}, "exchanges.hln.snapshot_url", "expected an http"),
    ({"l4": "yes"}, "exchanges.hln.l4", "expected true or false"),
    ({"poll_interval_s": 0}, "exchanges.hln.poll_interval_s", "expected a positive number"),
    ({"fast": True}, "exchanges.hln.fast", "unknown key"),
])
def test_bad_options_name_the_key(options, key, reason):
    with pytest.raises(ConfigError) as info:
        create(ExchangeConfig(name="hln", adapter="hyperliquid_node", symbols=("BTC",), options=options))
    assert info.value.key == key and reason in info.value.reason


def test_defaults_and_the_snapshot_request(tmp_path):
    a = HyperliquidNodeAdapter(ExchangeConfig(name="hln", adapter="hyperliquid_node", symbols=("BTC", "@107")))
    assert a.options.node_data_dir == Path("~/hl/data").expanduser() and a.options.mode == "by_block"
    assert a.options.snapshot_check_interval_s > 0 and a.traits.transport == "files" and a.traits.checksum
    req = a.bootstrap_request()
    assert req.url == "http://127.0.0.1:3001/info" and req.method == "POST"
    body = json.loads(req.body)
    assert body["type"] == "fileSnapshot" and body["includeHeightInOutput"] is True
    assert body["request"] == {"type": "l4Snapshots", "includeUsers": True, "includeTriggerOrders": False}
    assert Path(body["outPath"]) == a.bootstrap_path()
    assert [s.root.name for s in a.file_streams()] == ["hourly", "hourly"]
    assert [s.root.parent.name for s in a.file_streams()] == ["node_raw_book_diffs_by_block", "node_fills_by_block"]
    assert a.instrument("@107").kind == "spot" and a.instrument("xyz:NVDA").base == "xyz:NVDA"


# ------------------------------------------------------------------ the transport


def write_hour(root: Path, day: str, hour: str, first: int, last: int, tail: bytes = b"") -> Path:
    p = root / day / hour
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"".join(block(n, []) + b"\n" for n in range(first, last + 1)) + tail)
    return p


def test_hour_files_sort_hours_as_numbers(tmp_path):
    for d, h in (("20260505", "10"), ("20260505", "9"), ("20260506", "0"), ("20260505", "23")):
        write_hour(tmp_path, d, h, 1, 1)
    assert [(p.parent.name, p.name) for p in hour_files(tmp_path)] == [
        ("20260505", "9"), ("20260505", "10"), ("20260505", "23"), ("20260506", "0")]


def test_positioning_finds_the_first_block_after_the_snapshot(tmp_path):
    write_hour(tmp_path, "20260505", "8", 1, 500)
    write_hour(tmp_path, "20260505", "9", 501, 2000)
    tail = Tail(FileStream("depth", tmp_path), HyperliquidNodeAdapter.line_id)
    for after, hour, first in ((1234, "9", 1235), (500, "9", 501), (499, "8", 500), (0, "8", 1), (1999, "9", 2000)):
        assert tail.position_after(after)
        lines, _ = tail.read(0.0)
        assert tail.path.name == hour and json.loads(lines[0])["block_number"] == first, after
    assert tail.position_after(2000)  # past everything written: at the end, waiting
    assert tail.read(0.0)[0] == []
    tail.close()


def test_a_partial_line_waits_and_the_old_hour_is_drained_before_the_next(tmp_path):
    old = write_hour(tmp_path, "20260505", "9", 1, 3, tail=b'{"local_time":"x","block_')
    tail = Tail(FileStream("depth", tmp_path), HyperliquidNodeAdapter.line_id)
    assert tail.position_after(0)
    lines, at_end = tail.read(0.0)
    assert [json.loads(x)["block_number"] for x in lines] == [1, 2, 3]  # the partial one is not given
    with open(old, "ab") as f:  # the writer finishes the line, then the hour ends
        f.write(b'time":"2026-05-05T17:39:13.024084407","block_number":4,"events":[]}\n')
    write_hour(tmp_path, "20260505", "10", 5, 6)
    with open(old, "ab") as f:  # a last line written after the next hour appeared
        f.write(block(5, []) + b"\n")
    seen = []
    for _ in range(6):
        lines, _ = tail.read(0.0)
        seen += [json.loads(x)["block_number"] for x in lines]
    assert seen == [4, 5, 5, 6] and tail.path.name == "10" and tail.partial_dropped == 0
    tail.close()


def test_a_partial_line_at_the_end_of_an_hour_is_counted_and_dropped(tmp_path):
    write_hour(tmp_path, "20260505", "9", 1, 1, tail=b'{"local_time":"trunc')
    write_hour(tmp_path, "20260505", "10", 2, 2)
    tail = Tail(FileStream("depth", tmp_path), HyperliquidNodeAdapter.line_id)
    assert tail.position_after(0)
    seen = []
    for _ in range(4):
        seen += [json.loads(x)["block_number"] for x in tail.read(0.0)[0]]
    assert seen == [1, 2] and tail.partial_dropped == 1
    tail.close()


def test_the_benchmark_reads_a_small_synthetic_node_without_gaps(capsys):
    from pipeline.benchmarks.hyperliquid_node import main

    assert main(["--coins", "4", "--orders", "20", "--blocks", "6", "--events", "30", "--depth", "5"]) == 0
    out = capsys.readouterr().out
    assert "per CPU second" in out and "0 gaps" in out


@pytest.mark.parametrize("mode", ["by_block", "streaming"])
def test_the_benchmark_with_order_statuses_checks_them_all(capsys, mode):
    from pipeline.benchmarks.hyperliquid_node import main

    assert main(["--coins", "4", "--orders", "20", "--blocks", "6", "--events", "30", "--depth", "5",
                 "--statuses", "60", "--mode", mode]) == 0
    out = capsys.readouterr().out
    assert "0 mismatches, 0 blocks unchecked" in out and "status events/s" in out


def _add(a, f, coin):
    """What the control socket does for ``pipeline subscribe hln COIN``."""
    a.add_symbol(coin)
    f.add_symbol(coin, 1)
    f.receive(DepthConnected((coin,)))


def test_a_coin_added_at_runtime_waits_for_its_own_snapshot_while_the_others_update(node):
    """Issue 11: adding a coin does not pause the others.  Its diffs are kept from the next block
    on; a snapshot taken beside the tail (older than the books here) + the kept diffs = its book,
    published as a snapshot at the books' block; then it chains like the others.  A removed
    coin's book is dropped."""
    a, f, rec = node(symbols=("BTC",), capacity=2)
    f.receive(a.parse_line(DEPTH_STREAM, block(H + 1, [diff(5, "B", "99.0", {"new": {"sz": "0.1"}})]), 5))
    _add(a, f, "ETH")
    assert not a.lost() and a.pending_coins() == ["ETH"]  # no full resync: BTC reads on
    evs = a.parse_line(DEPTH_STREAM, block(H + 2, [diff(9, "A", "6.5", {"new": {"sz": "1"}}, coin="ETH"),
                                                   diff(8, "A", "6.0", "remove", coin="ETH"),
                                                   diff(5, "B", "99.0", "remove")]), 5)
    assert [(e.symbol, e.last_id) for e in evs] == [("BTC", H + 2)]  # BTC updates; ETH's diffs are kept
    f.receive(evs)
    assert f.feeds["BTC"].book.view() == ([(99.0, 1.5), (98.0, 2.0)], [(101.0, 0.75)]) and not f.live("ETH")
    # the snapshot (taken when the books were at H + 1) has ETH's order 8: the kept block H + 2 follows
    out = a.offer_coin_snapshot(*a.decode_snapshot(snapshot(H + 1, eth=[[], [order(8, "A", "6.0", "2")]])), 9)
    assert [(type(e).__name__, e.symbol, e.last_id) for e in out] == [("DepthSnapshot", "ETH", H + 2)]
    f.receive(out)
    assert f.live("ETH") and f.feeds["ETH"].book.view() == ([], [(6.5, 1.0)]) and a.pending_coins() == []
    # ETH then chains from H + 2 like the others
    (d,) = a.parse_line(DEPTH_STREAM, block(H + 3, [diff(9, "A", "6.5", {"update": {"origSz": "1", "newSz": "0.5"}},
                                                         coin="ETH")]), 5)
    assert (d.symbol, d.prev_id) == ("ETH", H + 2) and f.receive(d) is None
    assert f.feeds["ETH"].book.view() == ([], [(6.5, 0.5)])
    assert f.feeds["BTC"].counts.resyncs == 0 and f.feeds["BTC"].counts.gaps == 0
    assert f.feeds["ETH"].counts.gaps == 0 and a.counts["coins_added"] == 1 and a.counts["unknown_oid"] == 0
    a.remove_symbol("ETH")
    assert a.symbols == ("BTC",) and not a.lost()
    assert a.parse_line(DEPTH_STREAM, block(H + 4, [diff(9, "A", "6.5", "remove", coin="ETH")]), 5) is None


def test_an_added_coins_snapshot_ahead_of_the_books_waits_and_a_stale_one_is_refused(node):
    a, f, rec = node(symbols=("BTC",), capacity=2)
    f.receive(a.parse_line(DEPTH_STREAM, block(H + 1, []), 5))
    _add(a, f, "ETH")   # kept from H + 2 on
    # a snapshot from before the first kept block cannot start the book: refused, asked again
    assert a.offer_coin_snapshot(*a.decode_snapshot(snapshot(H, eth=[[], []])), 9) == []
    assert a.counts["coin_snapshots_stale"] == 1 and a.pending_coins() == ["ETH"]
    # a snapshot at H + 3 while the books are at H + 1: held until the diffs reach H + 3
    assert a.offer_coin_snapshot(*a.decode_snapshot(snapshot(H + 3, eth=[[order(20, "B", "5.0", "1")], []])),
                                 9) == []
    assert a.pending_coins() == []  # (it has its snapshot)
    f.receive(a.parse_line(DEPTH_STREAM, block(H + 2, [diff(11, "B", "4.0", {"new": {"sz": "3"}}, coin="ETH")]), 5))
    # block H + 3 is in the snapshot already: its ETH diffs are not applied again
    out = a.parse_line(DEPTH_STREAM, block(H + 3, [diff(20, "B", "5.0", {"new": {"sz": "1"}}, coin="ETH"),
                                                   diff(5, "B", "99.0", {"new": {"sz": "0.1"}})]), 5)
    assert [(type(e).__name__, e.symbol, e.last_id) for e in out] == [("DepthDiff", "BTC", H + 3),
                                                                      ("DepthSnapshot", "ETH", H + 3)]
    f.receive(out)
    assert f.live("ETH") and f.feeds["ETH"].book.view() == ([(5.0, 1.0)], [])
    (d,) = a.parse_line(DEPTH_STREAM, block(H + 4, [diff(20, "B", "5.0", "remove", coin="ETH")]), 5)
    assert d.prev_id == H + 3 and f.receive(d) is None and f.feeds["ETH"].book.view() == ([], [])
    assert a.counts["unknown_oid"] == 0 and f.feeds["BTC"].counts.gaps == 0


def test_an_added_coin_in_streaming_mode_takes_the_open_blocks_kept_lines_after_its_snapshot(node):
    a, f, rec = node(symbols=("BTC",), capacity=2, mode="streaming")
    f.receive(a.parse_line(DEPTH_STREAM, block(H + 1, [diff(5, "B", "99.0", {"new": {"sz": "0.1"}})]), 5))
    _add(a, f, "ETH")  # block H + 1 is open: its earlier ETH lines were not kept, so from H + 2 on
    assert a.offer_coin_snapshot(*a.decode_snapshot(snapshot(H, eth=[[], []])), 9) == []  # too old
    f.receive(a.parse_line(DEPTH_STREAM, block(H + 2, [diff(30, "A", "7.0", {"new": {"sz": "1"}}, coin="ETH")]), 5))
    f.receive(a.parse_line(DEPTH_STREAM, block(H + 2, [diff(31, "A", "7.5", {"new": {"sz": "2"}}, coin="ETH")]), 5))
    # the snapshot is at H + 1: the books are at H + 1, block H + 2 is open with two kept ETH lines
    out = a.offer_coin_snapshot(*a.decode_snapshot(snapshot(H + 1, eth=[[], [order(29, "A", "8.0", "1")]])), 9)
    assert [(type(e).__name__, e.symbol, e.last_id) for e in out] == [("DepthSnapshot", "ETH", H + 1)]
    f.receive(out)
    assert f.feeds["ETH"].book.view() == ([], [(8.0, 1.0)])
    # the open block's lines are part of H + 2's diff, as for every other coin
    evs = a.end_of_batch(DEPTH_STREAM, 10)
    assert sorted((e.symbol, e.prev_id, e.last_id) for e in evs) == [("ETH", H + 1, H + 2)]
    f.receive(evs)
    assert f.feeds["ETH"].book.view() == ([], [(7.0, 1.0), (7.5, 2.0), (8.0, 1.0)])
    assert a.counts["unknown_oid"] == 0 and f.feeds["ETH"].counts.gaps == 0


def test_a_full_resync_while_a_coin_waits_gives_it_its_book_too(node):
    a, f, rec = node(symbols=("BTC",), capacity=2)
    _add(a, f, "ETH")
    f.receive(a.load_snapshot(*a.decode_snapshot(snapshot(H + 2, eth=[[], [order(8, "A", "6.0", "2")]])), 9))
    assert a.pending_coins() == [] and not a.lost() and f.live("ETH")
    assert f.feeds["ETH"].book.view() == ([], [(6.0, 2.0)])
    # a snapshot the transport was taking for it meanwhile is of no use now
    assert a.offer_coin_snapshot(*a.decode_snapshot(snapshot(H + 3, eth=[[], []])), 9) == []
    assert f.feeds["ETH"].book.view() == ([], [(6.0, 2.0)])

def test_order_statuses_are_checked_against_the_books_diffs_block_by_block(node, tmp_path):
    """``order_statuses = true``: the statuses file is read too; per block, an order whose last
    status is ``open`` has a diff in that block, a ``canceled``/``*Canceled``/``filled`` one is
    not on the book after it; rejections and coins not followed are skipped.  Statuses read
    before the book reaches their block wait for it; a block the book never read is unchecked."""
    a, f, rec = node(statuses=True)
    assert [s.name for s in a.file_streams()] == ["depth", "trades", "statuses"]
    assert [s.root.parent.name for s in a.file_streams()][2] == "node_order_statuses_by_block"
    # block H + 1: 5 opens (diff), 1 cancels (diff remove), order 3 is partly filled (update, no status)
    assert a.parse_line(STATUS_STREAM, statuses(H + 1, ("open", 5, "BTC"), ("canceled", 2, "BTC"),
                                               ("badAloPxRejected", 77, "BTC"), ("open", 9, "SOL"),
                                               ("open", 40, "BTC"), ("filled", 40, "BTC")), 5) is None
    assert a.counts["statuses_checked"] == 0  # the book is not at H + 1 yet: they wait
    feed_line(a, f, DEPTH_STREAM, block(H + 1, [diff(5, "B", "99.0", {"new": {"sz": "0.1"}}),
                                                diff(2, "B", "98.0", "remove"),
                                                diff(3, "A", "101.0", {"update": {"origSz": "0.25", "newSz": "0.05"}})]))
    # 5 open, 2 canceled, 40 open then filled at once (a taker that never rested): all agree
    assert (a.counts["statuses_checked"], a.counts["status_mismatches"]) == (3, 0)
    # block H + 2 read by the book first: an open order without a diff, a canceled one still on
    # the book (1), a reduceOnlyCanceled one that is off it (4, removed here)
    feed_line(a, f, DEPTH_STREAM, block(H + 2, [diff(4, "A", "101.0", "remove")]))
    a.parse_line(STATUS_STREAM, statuses(H + 2, ("open", 50, "BTC"), ("canceled", 1, "BTC"),
                                         ("reduceOnlyCanceled", 4, "BTC")), 5)
    assert (a.counts["statuses_checked"], a.counts["status_mismatches"]) == (6, 2)
    assert f.live("BTC")  # counted, not resynced: the periodic snapshot check rebuilds books
    # statuses of a block the book skipped (before a snapshot, or past the kept marks) are not checked
    a.parse_line(STATUS_STREAM, statuses(H - 3, ("open", 60, "BTC")), 5)
    assert a.counts["status_blocks_unchecked"] == 1 and a.counts["statuses_checked"] == 6


def test_order_statuses_in_streaming_mode_wait_for_the_block_to_end(node):
    a, f, rec = node(statuses=True, mode="streaming")
    assert a.file_streams()[2].root.parent.name == "node_order_statuses_streaming"
    feed_line(a, f, DEPTH_STREAM, block(H + 1, [diff(5, "B", "99.0", {"new": {"sz": "0.1"}})]))
    a.parse_line(STATUS_STREAM, statuses(H + 1, ("open", 5, "BTC")), 5)
    a.parse_line(STATUS_STREAM, statuses(H + 1, ("canceled", 2, "BTC")), 5)  # more lines of block H + 1
    assert a.counts["statuses_checked"] == 0  # not whole yet (a later block has not begun)
    feed_line(a, f, DEPTH_STREAM, block(H + 1, [diff(2, "B", "98.0", "remove")]))  # the book's last line of it
    a.parse_line(STATUS_STREAM, statuses(H + 2, ("open", 6, "BTC")), 5)  # statuses: H + 1 is whole
    assert a.counts["statuses_checked"] == 0  # the book's H + 1 may still get lines
    feed_line(a, f, DEPTH_STREAM, block(H + 2, [diff(6, "B", "97.0", {"new": {"sz": "1"}})]))
    assert (a.counts["statuses_checked"], a.counts["status_mismatches"]) == (2, 0)


def test_order_statuses_are_off_by_default(node):
    a, f, rec = node()
    assert [s.name for s in a.file_streams()] == ["depth", "trades"]


@pytest.mark.parametrize("mode", ["by_block", "streaming"])
def test_the_node_simulators_files_agree_with_its_snapshots_and_their_order_statuses(tmp_path, shm_prefix, mode):
    """`pipeline sim --protocol hyperliquid_node` in-process: its snapshot + every block it wrote,
    read by the adapter, is its next snapshot's book; its order statuses agree with the diffs."""
    from pipeline.sim.base import SimOptions
    from pipeline.sim.hyperliquid_node import NodeServer

    sim = NodeServer(SimOptions(symbols=("BTC", "ETH"), seed=3, out=str(tmp_path / "data"), levels=40))
    (tmp_path / "s.json").write_text(json.dumps(sim.snapshot()))
    for i in range(1, 1501):
        sim.on_update(sim.market.step(), 1_700_000_000_000 + i)
        if i % 10 == 0:
            sim.write_block()
    end = sim.snapshot()  # (writes the last events as a block first)
    cfg = ExchangeConfig(name="hln", adapter="hyperliquid_node", symbols=("BTC", "ETH"), depth=10,
                         options={"node_data_dir": tmp_path / "data", "snapshot_file": tmp_path / "s.json",
                                  "mode": mode, "order_statuses": True})
    a = HyperliquidNodeAdapter(cfg)
    a.load_snapshot(*a.decode_snapshot((tmp_path / "s.json").read_bytes()), 1)
    streams = {s.name: s for s in a.file_streams()}
    for name in ("depth", "trades", "statuses"):  # the statuses read after the book: they are checked at once
        for path in hour_files(streams[name].root):
            for line in path.read_bytes().splitlines():
                a.parse_line(streams[name], line, 5)
        a.end_of_batch(streams[name], 6)
    a.parse_line(streams["depth"], block(end[0] + 1, []), 7)  # (streaming: the last block ends)
    a.parse_line(streams["statuses"], statuses(end[0] + 1), 7)
    c = a.counts
    assert c["unknown_oid"] == c["block_gaps"] == 0 and a.height >= end[0]
    assert c["statuses_checked"] > 500 and c["status_mismatches"] == 0 and c["status_blocks_unchecked"] == 0
    _, want = a.decode_snapshot(json.dumps(end).encode())
    for coin in ("BTC", "ETH"):
        assert a._books[coin].levels() == want[coin].levels() and a._books[coin].crc() == want[coin].crc()


def test_a_replay_adds_a_coin_from_its_snapshot_file_by_reading_the_books_again(tmp_path, shm_prefix):
    """The FileRunner's side of a runtime add on a replay (``snapshot_file``): the file's snapshot
    is older than the new coin's kept blocks and never gets newer, so the runner falls back to a
    full resync from it (the book streams re-read): the coin goes live with the right book."""
    import asyncio
    import time as _time

    from ingest.filetail import FileRunner

    day = tmp_path / "data" / "node_raw_book_diffs_by_block" / "hourly" / "20260505"
    day.mkdir(parents=True)
    (tmp_path / "data" / "node_fills_by_block" / "hourly" / "20260505").mkdir(parents=True)
    (tmp_path / "data" / "node_fills_by_block" / "hourly" / "20260505" / "17").write_bytes(b"")
    (day / "17").write_bytes(b"\n".join([
        block(H + 1, [diff(5, "B", "99.0", {"new": {"sz": "0.1"}}), diff(9, "A", "6.5", {"new": {"sz": "1"}}, coin="ETH")]),
        block(H + 2, [diff(7, "A", "5.0", "remove", coin="ETH")]),
        block(H + 3, [diff(5, "B", "99.0", "remove")])]) + b"\n")
    (tmp_path / "s.json").write_bytes(snapshot(eth=[[], [order(7, "A", "5.0", "1")]]))
    cfg = ExchangeConfig(name="hln", adapter="hyperliquid_node", symbols=("BTC",), depth=10,
                         options={"node_data_dir": tmp_path / "data", "snapshot_file": tmp_path / "s.json",
                                  "poll_interval_s": 0.005})
    a = HyperliquidNodeAdapter(cfg)
    w = BookWriter(shm_prefix, "hln", ["BTC"], 10, epoch=1, capacity=2)
    try:
        f = FeedBooks("hln", a, w, Recorder(), epoch=1)
        runner = FileRunner(cfg, a, f, None)

        async def run():
            runner.stop = stop = asyncio.Event()
            task = asyncio.create_task(runner.run())
            deadline = _time.monotonic() + 30
            while a.height < H + 3 and _time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            a.add_symbol("ETH")
            f.add_symbol("ETH", 1)
            runner.add_symbols(("ETH",))
            # live at the snapshot's block first, then the re-read blocks move it on: wait for the end
            while not (f.live("ETH") and f.feeds["ETH"].book.view() == ([], [(6.5, 1.0)])
                       and a.height == H + 3) and _time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            stop.set()
            await task

        asyncio.run(run())
        assert f.live("ETH") and f.feeds["ETH"].book.view() == ([], [(6.5, 1.0)])
        assert f.feeds["BTC"].book.view() == ([(99.0, 1.5), (98.0, 2.0)], [(101.0, 0.75)]) and a.height == H + 3
        assert a.counts["coin_snapshots_stale"] >= 1 and runner.bootstraps == 2 and a.counts["unknown_oid"] == 0
    finally:
        w.close(unlink=True)
