"""The hub without a network: what each client's outbox gets, in what order, and when a client is closed."""

from __future__ import annotations

import json

import pytest

from pipeline import schema
from pipeline.config import parse_config
from publisher.hub import Hub
from publisher.mirror import BookMirror, top
from publisher.settings import load_settings
from test_publisher_mirror import FakeIngest, apply_levels

CONFIG = """
[pipeline]
run_dir = "{run}"
[exchanges.sim]
adapter = "binance"
symbols = ["BTCUSDT"]
depth = 8
[publisher]
client_queue = 5
client_l2_queue = 10
max_requests_per_s = 5
default_depth = 4
"""
KEY = ("sim", "BTCUSDT")


class Clock:
    def __init__(self) -> None:
        self.us = 1_700_000_000_000_000

    def __call__(self) -> int:
        return self.us


class Timers:
    """call_later that records; tests fire what is due."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.pending: list = []

    def __call__(self, delay_s, fn, *args):
        handle = _Handle(self.clock.us + int(delay_s * 1e6), fn, args)
        self.pending.append(handle)
        return handle

    def fire_due(self) -> None:
        due = [h for h in self.pending if h.when <= self.clock.us and not h.cancelled]
        self.pending = [h for h in self.pending if h not in due and not h.cancelled]
        for h in due:
            h.fn(*h.args)


class _Handle:
    def __init__(self, when, fn, args):
        self.when, self.fn, self.args, self.cancelled = when, fn, args, False

    def cancel(self):
        self.cancelled = True


class Peer:
    """A client as the server would drive it: wake counts, close records, drain reads the outbox."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self.wakes = 0
        self.closed: tuple[int, str] | None = None
        self.client = hub.connect("test:1", self._wake, self._close)

    def _wake(self):
        self.wakes += 1

    def _close(self, code, reason):
        self.closed = (code, reason)

    def drain(self) -> list[dict]:
        out = []
        while (item := self.hub.next_frame(self.client)) is not None:
            out.append(json.loads(item[0]))
        return out

    def send(self, obj) -> None:
        self.hub.receive(self.client, obj if isinstance(obj, str) else json.dumps(obj))


@pytest.fixture
def env(tmp_path):
    config = parse_config(CONFIG.format(run=tmp_path / "r"), tmp_path)
    clock = Clock()
    timers = Timers(clock)
    mirror = BookMirror(config)
    hub = Hub(load_settings(config, {}), mirror, timers, clock=clock, version="test")
    ingest = FakeIngest(depth=8)
    hub.on_l2(*ingest.snapshot())
    yield hub, clock, timers, ingest
    mirror.close()


def trade_payload(seq: int) -> bytes:
    return schema.encode(schema.Trade(exchange="sim", symbol="BTCUSDT", epoch=1, seq=seq, ts_exchange=1,
                                      ts_received=2, price=100.0, amount=1.0, side="buy", trade_id=str(seq)))


def kinds(frames):
    return [f["kind"] for f in frames]


def test_silent_client_gets_welcome_then_snapshot_then_trades(env):
    hub, clock, timers, ingest = env
    p = Peer(hub)
    hub.on_trade(trade_payload(1))
    frames = p.drain()
    assert kinds(frames) == ["welcome", "trade", "order_book_l2"]  # trades before L2
    w = frames[0]
    assert w["exchanges"] == {"sim": {"symbols": ["BTCUSDT"], "depth": 8, "throttle_ms": 100}}
    assert w["default"]["depth"] == 4 and w["limits"]["client_queue"] == 5
    book = frames[2]
    assert book["depth"] == 4 and len(book["bids"]) == 4 and book["seq"] == 1 and book["state"] == "live"


def test_snapshots_are_throttled_per_symbol_and_carry_the_latest_view(env):
    hub, clock, timers, ingest = env
    p = Peer(hub)
    p.drain()  # welcome + first snapshot at t0
    clock.us += 30_000
    hub.on_l2(*ingest.change())
    clock.us += 30_000
    hub.on_l2(*ingest.change())
    assert p.drain() == []  # inside the 100 ms interval: nothing yet, one timer
    assert len(timers.pending) == 1 and timers.pending[0].when == 1_700_000_000_100_000
    clock.us += 40_000
    timers.fire_due()
    frames = p.drain()
    assert kinds(frames) == ["order_book_l2"] and frames[0]["seq"] == ingest.seq  # the latest, not a backlog
    clock.us += 500_000
    assert p.drain() == []  # no change, no snapshot
    hub.on_l2(*ingest.change())
    assert [f["seq"] for f in p.drain()] == [ingest.seq]  # interval long over: at once


def test_delta_client_rebuilds_the_book_with_contiguous_seq(env):
    hub, clock, timers, ingest = env
    p = Peer(hub)
    p.send({"op": "subscribe", "exchange": "sim", "channels": ["book"], "mode": "deltas", "depth": 3, "id": 9})
    frames = p.drain()
    assert kinds(frames) == ["welcome", "subscribed", "order_book_l2"]
    assert frames[1]["id"] == 9 and frames[1]["mode"] == "deltas"
    bids, asks = dict(map(tuple, frames[2]["bids"])), dict(map(tuple, frames[2]["asks"]))
    seq = frames[2]["seq"]
    for i in range(200):
        hub.on_l2(*ingest.change())
        if i % 7 == 0:
            for f in p.drain():
                assert f["kind"] == "order_book_l2_update" and f["seq"] == seq + 1 and f["depth"] == 3
                seq = f["seq"]
                apply_levels(bids, f["bids"])
                apply_levels(asks, f["asks"])
    for f in p.drain():
        seq = f["seq"]
        apply_levels(bids, f["bids"])
        apply_levels(asks, f["asks"])
    assert seq == ingest.seq
    want_bids, want_asks = top(hub.mirror.book(*KEY), 3)
    assert sorted(bids.items(), reverse=True) == want_bids and sorted(asks.items()) == want_asks


def test_slow_delta_client_is_conflated_to_the_latest_view_and_goes_on(env):
    hub, clock, timers, ingest = env
    p = Peer(hub)
    p.send({"op": "subscribe", "exchange": "sim", "channels": ["book"], "mode": "deltas", "depth": 8})
    p.drain()
    for _ in range(25):  # more than client_l2_queue = 10 without reading
        hub.on_l2(*ingest.change())
    frames = p.drain()
    assert frames[0]["kind"] == "order_book_l2"  # the backlog became one snapshot ...
    assert p.client.outbox.conflations >= 1 and len(frames) <= 11
    snap = frames[0]
    assert (snap["bids"], snap["asks"]) == tuple([list(x) for x in side] for side in ingest.view.view())
    assert [f["seq"] for f in frames[1:]] == list(range(snap["seq"] + 1, ingest.seq + 1))  # ... then deltas
    hub.on_l2(*ingest.change())
    assert [f["seq"] for f in p.drain()] == [ingest.seq]
    assert hub.statistics()["conflated"] >= 1 and hub.statistics()["dropped"] >= 10


def test_client_too_slow_for_its_trades_is_closed_not_silently_dropped(env):
    hub, clock, timers, ingest = env
    fast, slow = Peer(hub), Peer(hub)
    for seq in range(1, 8):
        hub.on_trade(trade_payload(seq))
        fast.drain()
    assert slow.closed is not None and slow.closed[0] == 1013 and "too slow" in slow.closed[1]
    assert fast.closed is None
    hub.on_trade(trade_payload(8))
    assert [f["seq"] for f in fast.drain() if f["kind"] == "trade"] == [8]
    hub.disconnect(slow.client)
    st = hub.statistics()
    assert st["disconnected"] == {"slow": 1} and st["clients"] == 1 and st["undelivered_trades"] == 5


def test_bad_requests_get_errors_and_the_subscription_stays(env):
    hub, clock, timers, ingest = env
    p = Peer(hub)
    p.drain()
    p.send("{oops")
    p.send({"op": "subscribe", "exchange": "nope", "id": "x"})
    p.send({"op": "ping", "id": 3})
    frames = p.drain()
    assert kinds(frames) == ["error", "error", "pong"] and frames[1]["id"] == "x" and frames[2]["id"] == 3
    hub.on_trade(trade_payload(1))
    assert kinds(p.drain()) == ["trade"]  # still subscribed to the default
    assert hub.statistics()["bad_requests"] == 2


def test_request_rate_is_limited_and_a_flood_is_closed(env):
    hub, clock, timers, ingest = env
    p = Peer(hub)
    p.drain()
    for i in range(7):
        p.send({"op": "ping", "id": i})
    frames = p.drain()
    assert kinds(frames) == ["pong"] * 5 + ["error"] * 2 and "rate limit" in frames[-1]["message"]
    for i in range(40):
        p.send({"op": "ping", "id": i})
    assert p.closed is not None and p.closed[0] == 1008


def test_websocket_pings_count_as_requests_and_a_ping_flood_is_closed(env):
    # issue 19 item 1: websockets answers a ping itself; the hub charges it like a request
    hub, clock, timers, ingest = env
    p = Peer(hub)
    p.drain()
    for _ in range(5):
        hub.ping_received(p.client, backlogged=False)
    p.send({"op": "ping", "id": "over"})  # the pings used the second's budget
    assert kinds(p.drain()) == ["error"]
    for _ in range(40):
        hub.ping_received(p.client, backlogged=False)
    assert p.closed is not None and p.closed[0] == 1008 and "ping" in p.closed[1]
    st = hub.statistics()
    assert st["disconnected"] == {"flood": 1} and st["pings"] >= 30 and st["rate_limited"] >= 25


def test_pongs_a_client_does_not_read_count_against_its_control_lane(env):
    hub, clock, timers, ingest = env
    p = Peer(hub)
    p.drain()
    for i in range(300):  # under the rate limit, but its socket stays backlogged: the pongs pile up
        clock.us += 250_000
        hub.ping_received(p.client, backlogged=True)
        if p.closed:
            break
    assert p.closed is not None and p.closed[0] == 1008 and "unread" in p.closed[1]
    assert 250 <= i <= 257  # the control lane's bound (256), not the rate, closed it
    q = Peer(hub)  # a reading client (its socket drains between pings) is never closed for its pings
    for _ in range(300):
        clock.us += 250_000
        hub.ping_received(q.client, backlogged=False)
    assert q.closed is None


def test_unsubscribe_stops_trades_and_books(env):
    hub, clock, timers, ingest = env
    p = Peer(hub)
    p.drain()
    p.send({"op": "unsubscribe", "exchange": "sim", "channels": ["trades"]})
    hub.on_trade(trade_payload(1))
    clock.us += 1_000_000
    hub.on_l2(*ingest.change())
    assert kinds(p.drain()) == ["unsubscribed", "order_book_l2"]
    p.send({"op": "unsubscribe"})
    clock.us += 1_000_000
    hub.on_l2(*ingest.change())
    hub.on_trade(trade_payload(2))
    timers.fire_due()
    assert kinds(p.drain()) == ["unsubscribed"]


def test_book_going_stale_is_announced_as_a_status_event(env):
    hub, clock, timers, ingest = env
    p = Peer(hub)
    p.drain()
    ingest.seq += 1
    stale = schema.L2Update(exchange="sim", symbol="BTCUSDT", epoch=1, seq=ingest.seq, ts_exchange=0, ts_received=1,
                            snapshot=True, state="stale", depth=8, bids=[(100.0, 1.0)], asks=[(101.0, 1.0)])
    hub.on_l2(schema.l2_topic("sim", "BTCUSDT"), schema.encode(stale))
    frames = p.drain()
    assert frames[0]["kind"] == "status" and frames[0]["state"] == "stale"


def test_trades_go_straight_to_a_ready_socket_but_never_ahead_of_queued_frames(env):
    hub, clock, timers, ingest = env
    written: list[dict] = []
    ready = {"socket": True}

    def try_send(frame, kind, received_us):
        if ready["socket"]:
            written.append(json.loads(frame))
        return ready["socket"]

    client = hub.connect("test:2", lambda: None, lambda code, reason: None, try_send)
    hub.on_trade(trade_payload(1))  # the welcome is still queued: the trade waits behind it
    assert [f["kind"] for f in written] == []
    frames = []
    while (item := hub.next_frame(client)) is not None:
        frames.append(json.loads(item[0]))
    assert kinds(frames) == ["welcome", "trade", "order_book_l2"]
    hub.on_trade(trade_payload(2))  # nothing queued: written at once, no sender wake-up needed
    assert [f["seq"] for f in written] == [2] and len(client.outbox) == 0
    ready["socket"] = False  # the socket is over its write limit: the outbox takes it
    hub.on_trade(trade_payload(3))
    assert len(client.outbox.trades) == 1
    ready["socket"] = True
    hub.on_trade(trade_payload(4))  # a trade is queued: this one queues behind it, order kept
    assert [f["seq"] for f in written] == [2] and len(client.outbox.trades) == 2
    assert hub.statistics()["sent"]["trades"] == 2


def test_a_trade_waiting_on_the_bus_goes_out_before_a_pending_snapshot_is_rendered(env):
    """Snapshot rendering is L2 work outside the bus pump: the hub drains the bus's trades first."""
    hub, clock, timers, ingest = env
    written: list[dict] = []

    def try_send(frame, kind, received_us):
        written.append(json.loads(frame))
        return True

    bus_trades = [trade_payload(1)]  # a trade arrived while the client's snapshot was pending

    def poll_trades():
        while bus_trades:
            hub.on_trade(bus_trades.pop(0))

    hub.poll_trades = poll_trades
    client = hub.connect("test:3", lambda: None, lambda code, reason: None, try_send)
    frames = []
    while (item := hub.next_frame(client)) is not None:  # welcome, then the snapshot mark
        frames.append(json.loads(item[0]))
    # the trade went straight to the socket while the snapshot was about to be rendered
    assert kinds(frames) == ["welcome", "order_book_l2"]
    assert kinds(written) == ["trade"] and written[0]["seq"] == 1 and not bus_trades


def test_clients_due_for_the_same_view_share_one_rendering(env):
    hub, clock, timers, ingest = env
    a, b = Peer(hub), Peer(hub)
    fa = a.drain()[-1]
    clock.us += 500
    fb = b.drain()[-1]
    assert fa == fb  # same view, same bytes (rendered once)
    hub.on_l2(*ingest.change())  # the book moved
    c = Peer(hub)
    fc = c.drain()[-1]
    assert fc["seq"] == fa["seq"] + 1 and fc["time_published"] != fa["time_published"]
    clock.us += 2_000  # an old rendering is not reused even if the book is quiet (its stamp would be old)
    d = Peer(hub)
    assert d.drain()[-1]["time_published"] != fc["time_published"]


def _other(kind, seq: int, **fields) -> tuple:
    common = dict(exchange="sim", symbol="BTCUSDT", epoch=1, seq=seq, ts_exchange=1_700_000_000_000_000,
                  ts_received=1_700_000_000_000_100)
    return kind, schema.encode(kind.payload(**common, **fields))


def test_silent_client_gets_quotes_tickers_and_liquidations_and_a_slow_one_the_latest_quote(env):
    """Issue 13: a client that sends nothing gets trades, liquidations, quotes and tickers (not CVD
    or bars); quotes are throttled like L2 snapshots (at most one per interval, the latest), quotes and
    tickers are conflated to the latest per symbol in its queue, liquidations never."""
    hub, clock, timers, ingest = env
    p = Peer(hub)
    p.drain()
    for seq in (1, 2, 3):
        hub.on_other("quotes", *_other(schema.QUOTE, seq, bid_price=99.0 + seq, bid_amount=1.0, ask_price=101.0,
                                       ask_amount=2.0, update_id=seq))
    hub.on_other("liquidations", *_other(schema.LIQUIDATION, 1, side="sell", price=98.0, amount=0.5))
    hub.on_other("liquidations", *_other(schema.LIQUIDATION, 2, side="buy", price=102.0, amount=0.25))
    hub.on_other("derivative_ticker", *_other(schema.DERIVATIVE_TICKER, 1, mark_price=100.5,
                                              funding_timestamp=1_700_003_600_000_000))
    hub.on_other("cvd", *_other(schema.CVD, 1, cvd=1.0, buy_volume=1.0, sell_volume=0.0, since=0, trade_seq=1))
    frames = p.drain()
    assert kinds(frames) == ["liquidation", "liquidation", "quote", "derivative_ticker"]
    quote, ticker = frames[2], frames[3]
    assert quote["seq"] == 1 and quote["bid_price"] == 100.0  # the first at once, the others held (throttle)
    clock.us += 99_000
    timers.fire_due()
    assert p.drain() == []  # the interval (100 ms here, the feed's throttle_ms) has not ended
    clock.us += 1_000
    timers.fire_due()
    [held] = p.drain()
    assert held["seq"] == 3 and held["bid_price"] == 102.0 and held["update_id"] == 3  # the latest only
    for f in frames:
        assert f["exchange"] == "sim" and f["symbol"] == "BTCUSDT"
        assert f["time_exchange"] == "2023-11-14T22:13:20.000000Z" and f["time_received"].endswith("00100Z")
    assert ticker["mark_price"] == 100.5 and ticker["index_price"] is None
    assert ticker["funding_timestamp"] == "2023-11-14T23:13:20.000000Z"
    assert [(f["side"], f["price"]) for f in frames[:2]] == [("sell", 98.0), ("buy", 102.0)]


def test_quotes_follow_the_subscription_throttle_and_delta_mode_gets_every_quote(env):
    hub, clock, timers, ingest = env
    slow, fast = Peer(hub), Peer(hub)
    slow.send({"op": "subscribe", "exchange": "sim", "channels": ["quotes"], "throttle_ms": 500, "id": 1})
    fast.send({"op": "subscribe", "exchange": "sim", "channels": ["quotes"], "mode": "deltas", "id": 2})
    slow.drain(), fast.drain()
    got_slow, got_fast = [], []
    for seq in range(1, 11):  # a quote every 100 ms for 1 s
        hub.on_other("quotes", *_other(schema.QUOTE, seq, bid_price=99.0 + seq, bid_amount=1.0, ask_price=200.0,
                                       ask_amount=2.0))
        got_fast += [f["seq"] for f in fast.drain()]  # a client that reads as fast as they come
        got_slow += [f["seq"] for f in slow.drain()]
        clock.us += 100_000
        timers.fire_due()
        got_slow += [f["seq"] for f in slow.drain()]
    assert got_fast == list(range(1, 11))
    assert got_slow == [1, 5, 10]  # at most one per 500 ms, the latest at the end of each interval
    slow.send({"op": "unsubscribe", "exchange": "sim", "channels": ["quotes"]})
    slow.drain()
    hub.on_other("quotes", *_other(schema.QUOTE, 11, bid_price=1.0, bid_amount=1.0, ask_price=2.0, ask_amount=1.0))
    clock.us += 1_000_000
    timers.fire_due()
    assert slow.drain() == [] and not [h for h in timers.pending if not h.cancelled]


def test_cvd_and_bars_go_to_the_clients_that_subscribe_to_them(env):
    hub, clock, timers, ingest = env
    p = Peer(hub)
    p.send({"op": "subscribe", "exchange": "sim", "channels": ["cvd", "trade_bars"], "id": 1})
    assert kinds(p.drain())[-1] == "subscribed"
    hub.on_other("quotes", *_other(schema.QUOTE, 1, bid_price=1.0, bid_amount=1.0, ask_price=2.0, ask_amount=1.0))
    hub.on_other("cvd", *_other(schema.CVD, 1, cvd=-2.0, buy_volume=1.0, sell_volume=3.0, since=0, trade_seq=4))
    hub.on_other("trade_bars", *_other(schema.TRADE_BAR, 1, interval="1s", interval_us=1_000_000,
                                       open_time=1_700_000_000_000_000, open=1.0, high=2.0, low=0.5, close=1.5,
                                       volume=4.0, buy_volume=3.0, sell_volume=1.0, trades=3, first_trade_seq=1,
                                       last_trade_seq=3))
    frames = p.drain()
    assert kinds(frames) == ["trade_bar", "cvd"]  # no quotes: not asked for
    bar, cvd = frames
    assert (bar["interval"], bar["open"], bar["close"], bar["trades"]) == ("1s", 1.0, 1.5, 3)
    assert bar["open_time"] == "2023-11-14T22:13:20.000000Z"
    assert (cvd["cvd"], cvd["trade_seq"]) == (-2.0, 4)
    p.send({"op": "unsubscribe", "exchange": "sim", "channels": ["cvd"]})
    p.drain()
    hub.on_other("cvd", *_other(schema.CVD, 2, cvd=0.0, buy_volume=3.0, sell_volume=3.0, since=0, trade_seq=5))
    assert p.drain() == []
    assert hub.statistics()["other_in"]["cvd"] == 2


def test_a_sender_holding_a_batch_gets_bus_trades_queued_behind_it_never_written_ahead(env):
    """The server's sender takes several queued frames for one write (publisher/server.py); a trade
    drained from the bus meanwhile (next_frame polls the trades before rendering a snapshot) must
    not go to the socket ahead of the frames it holds: it queues, and the batch takes it."""
    hub, clock, timers, ingest = env
    written: list[dict] = []

    def try_send(frame, kind, received_us):
        written.append(json.loads(frame))
        return True

    bus_trades = [trade_payload(1)]

    def poll_trades():
        while bus_trades:
            hub.on_trade(bus_trades.pop(0))

    hub.poll_trades = poll_trades
    client = hub.connect("test:4", lambda: None, lambda code, reason: None, try_send)
    batch = [hub.next_frame(client)]  # the welcome, taken but not yet written
    client.holding = True
    while len(client.outbox) and (item := hub.next_frame(client)) is not None:
        batch.append(item)
    client.holding = False
    assert written == []  # nothing ahead of the welcome; the trade goes in the same write as the snapshot
    assert kinds(json.loads(f) for f, _, _ in batch) == ["welcome", "order_book_l2", "trade"]
