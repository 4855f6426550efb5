"""pipeline/bus.py on real ZeroMQ sockets: send/recv of one message, and the trades-first Reader.

inproc transport in one context: a message is in the subscriber's pipe when ``send`` returns, so
what is "waiting" at a read is known exactly, with no sleep.  XPUB sockets stand in for the ingest's
PUB sockets; receiving the subscription from them proves the subscriber is connected.
"""

from __future__ import annotations

import itertools

import pytest
import zmq

from pipeline import bus, schema

_names = itertools.count()


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def _pubs(ctx):
    """Bound (hot, l2) XPUB sockets on fresh inproc endpoints."""
    n = next(_names)
    socks, eps = [], []
    for name in ("trades", "l2"):
        s = ctx.socket(zmq.XPUB)
        ep = f"inproc://bus-test-{n}-{name}"
        s.bind(ep)
        socks.append(s)
        eps.append(ep)
    return socks, eps


def _subscribed(pub, topics):
    """Receive the subscriptions of ``topics`` on an XPUB (the reader is connected)."""
    want = {b"\x01" + t for t in topics}
    while want:
        assert pub.poll(5000), f"no subscription for {want}"
        want.discard(pub.recv())


def _trade(symbol="BTCUSDT", seq=1):
    return schema.encode(schema.Trade(exchange="sim", symbol=symbol, epoch=1, seq=seq, ts_exchange=1,
                                      ts_received=1, price=1.0, amount=1.0, side="buy", trade_id=str(seq)))


def _l2(symbol="BTCUSDT", seq=1):
    return schema.encode(schema.L2Update(exchange="sim", symbol=symbol, epoch=1, seq=seq, ts_exchange=1,
                                         ts_received=1, snapshot=False, state="live", depth=5,
                                         bids=[(1.0, float(seq))], asks=[]))


def _reader(ctx, eps, **kw):
    hot_topics, l2_topics = [schema.TRADE.subscription("sim")], [schema.L2.subscription("sim")]
    reader = bus.Reader(ctx, [eps[0]], [eps[1]], hot_topics, l2_topics, **kw)
    return reader, hot_topics, l2_topics


def test_send_and_recv_move_topic_and_payload_as_two_frames(ctx):
    (hot, _), (ep, _) = _pubs(ctx)
    sub = bus.make_sub(ctx, [ep], [b"trade."])
    _subscribed(hot, [b"trade."])
    topic = schema.TRADE.topic("sim", "BTCUSDT")
    bus.send(hot, topic, _trade())
    assert sub.poll(5000)
    assert bus.recv(sub) == (topic, _trade())
    with pytest.raises(zmq.Again):
        bus.recv(sub, zmq.NOBLOCK)
    sub.close(0)


def test_a_waiting_trade_is_handed_out_before_the_l2_sent_ahead_of_it(ctx):
    (hot, l2), eps = _pubs(ctx)
    reader, ht, lt = _reader(ctx, eps)
    _subscribed(hot, ht)
    _subscribed(l2, lt)
    order = []
    reader.on(on_hot=lambda t, p: order.append(("trade", schema.decode_trade(p).seq)),
              on_l2=lambda t, p: order.append(("l2", schema.decode_l2(p).seq)))
    for seq in range(1, 6):
        bus.send(l2, schema.L2.topic("sim", "BTCUSDT"), _l2(seq=seq))
    bus.send(hot, schema.TRADE.topic("sim", "BTCUSDT"), _trade(seq=1))
    assert reader.wait(5.0)
    assert reader.read() == 1  # the trade ends the step: the caller hands it on before any L2
    assert order == [("trade", 1)]
    while reader.read():
        pass
    assert order == [("trade", 1)] + [("l2", s) for s in range(1, 6)]
    assert not reader.pending()
    reader.close()


def test_a_trade_that_arrives_during_l2_reading_overtakes_the_rest(ctx):
    (hot, l2), eps = _pubs(ctx)
    reader, ht, lt = _reader(ctx, eps)  # hot socket drained after every 4th L2 message
    _subscribed(hot, ht)
    _subscribed(l2, lt)
    order = []

    def on_l2(topic, payload):
        seq = schema.decode_l2(payload).seq
        order.append(("l2", seq))
        if seq == 1:  # a trade comes in while L2 is being read
            bus.send(hot, schema.TRADE.topic("sim", "BTCUSDT"), _trade(seq=7))

    reader.on(on_hot=lambda t, p: order.append(("trade", schema.decode_trade(p).seq)), on_l2=on_l2)
    for seq in range(1, 11):
        bus.send(l2, schema.L2.topic("sim", "BTCUSDT"), _l2(seq=seq))
    assert reader.read() == 5
    assert order == [("l2", 1), ("l2", 2), ("l2", 3), ("l2", 4), ("trade", 7)]
    assert reader.read() == 6 and order[-1] == ("l2", 10)
    reader.close()


def test_an_exact_reader_drops_the_symbols_its_subscription_prefix_also_matches(ctx):
    (hot, l2), eps = _pubs(ctx)
    wanted = [schema.TRADE.topic("sim", "BTCUSD"), schema.TRADE.topic("sim", "BTC-USDT")]
    reader = bus.Reader(ctx, [eps[0]], [], wanted, None, exact=wanted)
    _subscribed(hot, wanted)
    got = []
    reader.on(on_hot=lambda t, p: got.append(t))
    for sym in ("BTCUSDT", "BTCUSD", "BTC-USDT-SWAP", "BTC-USDT", "BTCUSD"):
        bus.send(hot, schema.TRADE.topic("sim", sym), _trade(sym))
    assert reader.read() == 5  # five received (ZeroMQ matched every one by prefix) ...
    assert got == [b"trade.sim.BTCUSD", b"trade.sim.BTC-USDT", b"trade.sim.BTCUSD"]  # ... three handed out
    reader.close()


def test_reader_rejects_a_check_interval_that_is_not_a_power_of_two(ctx):
    with pytest.raises(ValueError, match="power of two"):
        bus.Reader(ctx, [], [], hot_check_every=3)


async def _async_collect(ctx, hot, l2, eps):
    import asyncio

    reader, ht, lt = _reader(ctx, eps)
    _subscribed(hot, ht)
    _subscribed(l2, lt)
    order, done = [], asyncio.Event()

    def on_l2(topic, payload):
        order.append(("l2", schema.decode_l2(payload).seq))
        if len(order) == 4:
            done.set()

    reader.on(on_hot=lambda t, p: order.append(("trade", schema.decode_trade(p).seq)), on_l2=on_l2)
    for seq in range(1, 4):
        bus.send(l2, schema.L2.topic("sim", "BTCUSDT"), _l2(seq=seq))
    bus.send(hot, schema.TRADE.topic("sim", "BTCUSDT"), _trade(seq=9))
    reader.start(asyncio.get_running_loop())
    await asyncio.wait_for(done.wait(), 10)
    reader.close()
    return order


def test_the_asyncio_reader_hands_out_the_waiting_trade_first(ctx):
    import asyncio

    (hot, l2), eps = _pubs(ctx)
    order = asyncio.run(_async_collect(ctx, hot, l2, eps))
    assert order == [("trade", 9), ("l2", 1), ("l2", 2), ("l2", 3)]


def test_a_kind_added_to_the_registry_reaches_its_own_callback_on_a_shared_socket(ctx):
    """Quotes and liquidations share the hot socket with trades: the registry line routes them; a
    reader with no callback for a kind drops it instead of misreading it as a trade."""
    quote = schema.QUOTE
    (hot, _), eps = _pubs(ctx)
    reader = bus.Reader(ctx, [eps[0]], [], [b"trade.", b"quote."], None)
    _subscribed(hot, [b"trade.", b"quote."])
    got = []
    reader.on_kinds({schema.TRADE: lambda t, p: got.append(("trade", t)), quote: lambda t, p: got.append(("quote", t))})
    bus.send(hot, schema.TRADE.topic("sim", "X"), _trade("X"))
    bus.send(hot, quote.topic("sim", "X"), _trade("X"))
    assert reader.read() == 2
    assert got == [("trade", b"trade.sim.X"), ("quote", b"quote.sim.X")]
    reader.on_kinds({schema.TRADE: lambda t, p: got.append(("trade only", t))})
    bus.send(hot, quote.topic("sim", "X"), _trade("X"))
    bus.send(hot, schema.TRADE.topic("sim", "Y"), _trade("Y"))
    assert reader.read() == 2
    assert got[2:] == [("trade only", b"trade.sim.Y")]
    reader.close()
