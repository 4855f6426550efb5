"""The gRPC hub without a network: what each stream's outbox gets, the refusals, a slow stream ended."""

from __future__ import annotations

import pytest

from l2pipeline.v1 import marketdata_pb2 as pb
from pipeline import schema
from pipeline.config import parse_config
from publisher.grpc_hub import GrpcHub, Refused
from publisher.grpc_settings import GrpcConfig
from publisher.mirror import BookMirror, top
from publisher.settings import load_settings
from test_publisher_hub import Clock, Timers
from test_publisher_mirror import FakeIngest, apply_levels

CONFIG = """
[pipeline]
run_dir = "{run}"
[exchanges.sim]
adapter = "binance"
symbols = ["BTCUSDT"]
depth = 8
l2_throttle_ms = 100
"""
KEY = ("sim", "BTCUSDT")
DELTAS, SNAPSHOTS = pb.SubscribeBooksRequest.DELTAS, pb.SubscribeBooksRequest.SNAPSHOTS


class Reader:
    """A stream as the server drives it: wakes counted, drain parses what the writer would write."""

    def __init__(self, hub: GrpcHub, stream, message=pb.BookMessage):
        self.hub, self.stream, self.message = hub, stream, message

    def drain(self) -> list:
        out = []
        while (frame := self.hub.next_frame(self.stream)) is not None:
            out.append(self.message.FromString(frame))
        return out


@pytest.fixture
def env(tmp_path):
    config = parse_config(CONFIG.format(run=tmp_path / "r"), tmp_path)
    clock = Clock()
    timers = Timers(clock)
    mirror = BookMirror(config)
    hub = GrpcHub(load_settings(config, {}), GrpcConfig(client_queue=3, client_l2_queue=5, max_streams=3), mirror,
                  timers, clock=clock)
    ingest = FakeIngest(depth=8)
    hub.on_l2(*ingest.snapshot())
    yield hub, clock, timers, ingest
    mirror.close()


def books(hub, depth=4, mode=DELTAS, interval_ms=0):
    wakes = []
    s = hub.open_books("test", hub.check_books("sim", ["BTCUSDT"], depth, mode, interval_ms), lambda: wakes.append(1))
    return Reader(hub, s)


def trade_payload(seq: int) -> bytes:
    return schema.encode(schema.Trade(exchange="sim", symbol="BTCUSDT", epoch=1, seq=seq, ts_exchange=1_000_000,
                                      ts_received=2_500_001, price=100.0, amount=1.5, side="sell", trade_id=str(seq)))


def levels(side) -> list[tuple[float, float]]:
    return [(lv.price, lv.size) for lv in side]


def test_deltas_rebuild_the_view_at_the_clients_depth(env):
    hub, clock, timers, ingest = env
    r = books(hub, depth=4)
    first = r.drain()
    assert len(first) == 1 and first[0].is_snapshot and first[0].seq == 1 and len(first[0].bids) == 4
    assert first[0].state == pb.BOOK_STATE_LIVE
    bids, asks = dict(levels(first[0].bids)), dict(levels(first[0].asks))
    seq = first[0].seq
    for _ in range(200):
        hub.on_l2(*ingest.change())
        for m in r.drain():
            assert not m.is_snapshot and m.seq == seq + 1  # contiguous
            seq = m.seq
            apply_levels(bids, levels(m.bids))
            apply_levels(asks, levels(m.asks))
        want_bids, want_asks = top(hub.mirror.book(*KEY), 4)
        assert sorted(bids.items(), reverse=True) == want_bids and sorted(asks.items()) == want_asks


def test_a_stream_that_falls_behind_gets_the_latest_snapshot_not_a_backlog(env):
    hub, clock, timers, ingest = env
    r = books(hub, depth=8)
    r.drain()
    for _ in range(6):  # one more than client_l2_queue
        hub.on_l2(*ingest.change())
    out = r.drain()
    assert [m.is_snapshot for m in out] == [True] and out[0].seq == ingest.seq
    assert hub.statistics()["conflated"] == 1
    hub.on_l2(*ingest.change())
    assert [(m.is_snapshot, m.seq) for m in r.drain()] == [(False, ingest.seq)]  # deltas go on from there


def test_a_new_epoch_sends_a_fresh_snapshot(env):
    hub, clock, timers, ingest = env
    r = books(hub)
    r.drain()
    restarted = FakeIngest(depth=8, epoch=2, seed=5)
    hub.on_l2(*restarted.snapshot())
    out = r.drain()
    assert [(m.is_snapshot, m.epoch, m.seq) for m in out] == [(True, 2, 1)]


def test_snapshots_mode_sends_at_most_one_per_interval_and_the_latest(env):
    hub, clock, timers, ingest = env
    r = books(hub, mode=SNAPSHOTS, interval_ms=250)
    assert [m.is_snapshot for m in r.drain()] == [True]
    for _ in range(3):
        clock.us += 50_000
        hub.on_l2(*ingest.change())
    assert r.drain() == []  # inside the interval: one timer
    clock.us += 100_000
    timers.fire_due()
    out = r.drain()
    assert [(m.is_snapshot, m.seq) for m in out] == [(True, ingest.seq)]


def test_snapshots_interval_zero_is_the_exchanges_throttle_and_below_the_minimum_is_refused(env):
    hub = env[0]
    assert hub.check_books("sim", [], 0, SNAPSHOTS, 0).interval_ms == 100
    with pytest.raises(Refused) as e:
        hub.check_books("sim", [], 0, SNAPSHOTS, 1)
    assert e.value.code == "INVALID_ARGUMENT" and "minimum" in str(e.value)


@pytest.mark.parametrize("exchange,symbols,depth,mode,code,text", [
    ("nope", [], 0, DELTAS, "NOT_FOUND", "unknown exchange 'nope'"),
    ("sim", ["ETHUSDT"], 0, DELTAS, "NOT_FOUND", "unknown symbol 'ETHUSDT'"),
    ("sim", [], 9, DELTAS, "INVALID_ARGUMENT", "depth 9"),
    ("sim", [], 0, 0, "INVALID_ARGUMENT", "mode must be DELTAS or SNAPSHOTS"),
    ("sim", [], 0, 7, "INVALID_ARGUMENT", "mode must be DELTAS or SNAPSHOTS"),
])
def test_bad_requests_are_refused_with_their_code(env, exchange, symbols, depth, mode, code, text):
    hub = env[0]
    with pytest.raises(Refused) as e:
        hub.check_books(exchange, symbols, depth, mode, 0)
    assert e.value.code == code and text in str(e.value)
    assert hub.statistics()["refused"] == {code: 1}


def test_empty_symbols_is_every_symbol_and_depth_zero_the_whole_view(env):
    req = env[0].check_books("sim", [], 0, DELTAS, 0)
    assert req.symbols == ("BTCUSDT",) and req.depth == 8


def test_trades_are_never_conflated_and_a_stream_that_cannot_keep_them_is_ended(env):
    hub = env[0]
    slow = hub.open_trades("slow", "sim", ("BTCUSDT",), lambda: None)
    fast = Reader(hub, hub.open_trades("fast", "sim", ("BTCUSDT",), lambda: None), pb.Trade)
    got = []
    for seq in range(1, 6):
        hub.on_trade(trade_payload(seq))
        got += fast.drain()
    assert [t.seq for t in got] == [1, 2, 3, 4, 5]
    t = got[0]
    assert (t.exchange, t.symbol, t.price, t.size, t.side, t.trade_id) == ("sim", "BTCUSDT", 100.0, 1.5,
                                                                           pb.Trade.SELL, "1")
    assert (t.time_received.seconds, t.time_received.nanos) == (2, 500_001_000)
    assert slow.closing == "too slow: 3 trades queued (limit 3)"
    assert hub.next_frame(slow) is None  # the server ends the call with RESOURCE_EXHAUSTED
    st = hub.statistics()
    assert st["disconnected"] == {"slow": 1} and st["undelivered_trades"] == 3
    hub.close(slow)
    assert hub.statistics()["clients"] == 1


def test_streams_beyond_the_limit_are_refused(env):
    hub = env[0]
    for _ in range(3):
        hub.open_trades("x", "sim", ("BTCUSDT",), lambda: None)
    with pytest.raises(Refused) as e:
        hub.open_trades("x", "sim", ("BTCUSDT",), lambda: None)
    assert e.value.code == "RESOURCE_EXHAUSTED"


def test_closing_a_stream_untracks_its_depth(env):
    hub = env[0]
    r = books(hub, depth=3)
    assert hub.mirror.tracked_depths(KEY) == [3]
    hub.close(r.stream)
    assert hub.mirror.tracked_depths(KEY) == [] and hub.statistics()["disconnected"] == {"client": 1}


def test_get_book_is_the_view_at_the_depth(env):
    hub, clock, timers, ingest = env
    b = pb.Book.FromString(hub.get_book("sim", "BTCUSDT", 2))
    assert (b.seq, b.state, len(b.bids), len(b.asks)) == (1, pb.BOOK_STATE_LIVE, 2, 2)
    assert levels(b.bids) == top(hub.mirror.book(*KEY), 2)[0]
    with pytest.raises(Refused):
        hub.get_book("sim", "NOPE", 0)


def test_streams_of_every_symbol_take_a_symbol_added_at_runtime(tmp_path):
    """A request that named no symbol means every symbol, those added at runtime too (issue 14: the
    server's monitor learns them from shared memory and calls add_symbol); a request that named its
    symbols keeps them."""
    config = parse_config(CONFIG.replace('["BTCUSDT"]', '["ETHUSDT"]').format(run=tmp_path / "r"), tmp_path)
    clock = Clock()
    mirror = BookMirror(config)
    hub = GrpcHub(load_settings(config, {}), GrpcConfig(), mirror, Timers(clock), clock=clock)
    try:
        named = hub.open_trades("t", "sim", hub.check_symbols("sim", ["ETHUSDT"]), lambda: None)
        every_trades = hub.open_trades("t", "sim", hub.check_symbols("sim", []), lambda: None, all_symbols=True)
        every_books = hub.open_books("t", hub.check_books("sim", [], 4, DELTAS, 0), lambda: None)
        named_books = hub.open_books("t", hub.check_books("sim", ["ETHUSDT"], 4, DELTAS, 0), lambda: None)
        assert hub.add_symbol("sim", "BTCUSDT") == 2
        assert hub.add_symbol("sim", "BTCUSDT") == 0  # once
        ingest = FakeIngest(depth=8)
        hub.on_l2(*ingest.snapshot())
        hub.on_trade(trade_payload(1))
        assert [(t.symbol, t.seq) for t in Reader(hub, every_trades, pb.Trade).drain()] == [("BTCUSDT", 1)]
        assert Reader(hub, named, pb.Trade).drain() == []
        got = [m for m in Reader(hub, every_books).drain() if m.symbol == "BTCUSDT"]
        assert got and got[0].is_snapshot and len(got[0].bids) == 4
        hub.on_l2(*ingest.change())
        more = [m for m in Reader(hub, every_books).drain() if m.symbol == "BTCUSDT"]
        assert more and not more[0].is_snapshot and more[0].seq == got[-1].seq + 1
        assert not [m for m in Reader(hub, named_books).drain() if m.symbol == "BTCUSDT"]
    finally:
        mirror.close()


TOPIC = {"quotes": schema.QUOTE.topic("sim", "BTCUSDT"), "derivative_tickers": schema.DERIVATIVE_TICKER.topic(
    "sim", "BTCUSDT"), "liquidations": schema.LIQUIDATION.topic("sim", "BTCUSDT")}


def quote_payload(seq: int, bid: float | None) -> bytes:
    return schema.encode(schema.Quote(exchange="sim", symbol="BTCUSDT", epoch=1, seq=seq, ts_exchange=1_000_000,
                                      ts_received=2_000_000 + seq, bid_price=bid, bid_amount=1.0 if bid else None,
                                      ask_price=101.0, ask_amount=2.0, update_id=seq))


def test_quotes_stream_with_unstated_values_unset_and_a_slow_stream_gets_the_latest(env):
    from publisher.grpc_hub import EVENT_RPCS

    hub = env[0]
    r = Reader(hub, hub.open_events("quotes", "q", "sim", ("BTCUSDT",), lambda: None), pb.Quote)
    hub.on_event(EVENT_RPCS["quotes"], TOPIC["quotes"], quote_payload(1, None))
    (q,) = r.drain()
    assert (q.exchange, q.symbol, q.epoch, q.seq, q.update_id) == ("sim", "BTCUSDT", 1, 1, 1)
    assert not q.HasField("bid_price") and not q.HasField("bid_size")  # the venue stated none: unset, not 0
    assert (q.ask_price, q.ask_size) == (101.0, 2.0) and q.time_received.nanos == 1_000
    for seq in range(2, 50):  # the stream does not read: only the latest quote of the symbol waits
        hub.on_event(EVENT_RPCS["quotes"], TOPIC["quotes"], quote_payload(seq, 100.0))
    (q,) = r.drain()
    assert (q.seq, q.bid_price, q.bid_size) == (49, 100.0, 1.0)
    assert r.stream.closing is None and hub.statistics()["sent"]["quotes"] == 2


def test_tickers_and_liquidations_stream_and_liquidations_are_never_conflated(env):
    from publisher.grpc_hub import EVENT_RPCS

    hub = env[0]
    tick = Reader(hub, hub.open_events("derivative_tickers", "t", "sim", hub.check_symbols("sim", []), lambda: None,
                                  all_symbols=True),
                  pb.DerivativeTicker)
    hub.on_event(EVENT_RPCS["derivative_tickers"], TOPIC["derivative_tickers"], schema.encode(schema.DerivativeTicker(
        exchange="sim", symbol="BTCUSDT", epoch=1, seq=7, ts_exchange=1, ts_received=2, mark_price=100.5,
        funding_rate=0.0001, funding_timestamp=3_600_000_000)))
    (t,) = tick.drain()
    assert (t.seq, t.mark_price, t.funding_rate, t.funding_time.seconds) == (7, 100.5, 0.0001, 3600)
    assert not t.HasField("index_price") and not t.HasField("open_interest")

    slow = hub.open_events("liquidations", "slow", "sim", ("BTCUSDT",), lambda: None)
    fast = Reader(hub, hub.open_events("liquidations", "fast", "sim", ("BTCUSDT",), lambda: None), pb.Liquidation)
    got = []
    for seq in range(1, 6):
        hub.on_event(EVENT_RPCS["liquidations"], TOPIC["liquidations"], schema.encode(schema.Liquidation(
            exchange="sim", symbol="BTCUSDT", epoch=1, seq=seq, ts_exchange=1, ts_received=2, side="buy",
            price=99.0, amount=0.5, liquidation_id=f"L{seq}")))
        got += fast.drain()
    assert [(x.seq, x.liquidation_id, x.side, x.price, x.size) for x in got] == [
        (n, f"L{n}", pb.Liquidation.BUY, 99.0, 0.5) for n in range(1, 6)]
    assert slow.closing == "too slow: 3 trades queued (limit 3)"  # the never-conflated lane's bound
    st = hub.statistics()
    assert st["sent"]["liquidations"] == 5 and st["events_in"]["liquidations"] == 5
    # an unsubscribed kind's streams stay empty
    assert tick.drain() == []


def test_an_event_no_stream_wants_is_not_decoded(env):
    from publisher.grpc_hub import EVENT_RPCS

    hub = env[0]
    hub.on_event(EVENT_RPCS["quotes"], TOPIC["quotes"], b"\xff not msgpack")  # no quote stream: not read
    assert hub.statistics()["events_in"]["quotes"] == 1
