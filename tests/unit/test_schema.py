import msgpack

from pipeline import schema


def test_trade_and_l2_round_trip_and_decode_with_plain_msgpack():
    t = schema.Trade(exchange="sim", symbol="BTCUSDT", epoch=1, seq=7, ts_exchange=1, ts_received=2,
                     ts_published=3, price=60000.5, amount=0.25, side="sell", trade_id="42")
    l2 = schema.L2Update(exchange="sim", symbol="BTCUSDT", epoch=1, seq=8, ts_exchange=1, ts_received=2,
                         snapshot=False, state="live", update_id=99, depth=50,
                         bids=[(1.5, 0.0)], asks=[(2.5, 3.0)])
    for msg in (t, l2):
        assert schema.decode(schema.encode(msg)) == msg
    plain = msgpack.unpackb(schema.encode(l2))
    assert plain["kind"] == "l2" and plain["bids"] == [[1.5, 0.0]] and plain["seq"] == 8
    assert msgpack.unpackb(schema.encode(t))["kind"] == "trade"


def test_topics():
    assert schema.l2_topic("sim", "BTCUSDT") == b"l2.sim.BTCUSDT"
    assert schema.parse_topic(schema.trade_topic("a-b", "X.Y")) == ("trade", "a-b", "X.Y")
