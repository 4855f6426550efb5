"""A trade that liquidated a position is marked on the trade itself (``liquidation``, issue 11),
on every surface that carries trades and allows an added field: the bus payload (old payloads
decode as unmarked, old decoders skip the new key), the trade ring, the WebSocket JSON (the key only
when true) and gRPC ``Trade`` (field 11).  CSV and Parquet trades keep tardis' fixed columns."""

from __future__ import annotations

import json

import msgspec

from l2pipeline.v1 import marketdata_pb2 as pb
from pipeline import schema
from pipeline.trade_ring import TradeRingReader, TradeRingWriter
from publisher import render
from publisher.grpc_hub import trade_message

COMMON = dict(exchange="hln", symbol="BTC", epoch=3, seq=9, ts_exchange=1_714_564_800_000_000,
              ts_received=1_714_564_800_000_500, price=81308.0, amount=0.5, side="sell", trade_id="316059956208702")


class OldTrade(msgspec.Struct, tag="trade", tag_field="kind", kw_only=True):
    """schema.Trade as it was before the mark (a consumer built against the old schema)."""

    exchange: str
    symbol: str
    epoch: int
    seq: int
    ts_exchange: int
    ts_received: int
    ts_published: int = 0
    price: float
    amount: float
    side: str
    trade_id: str
    instrument: schema.Instrument | None = None


def test_the_bus_payload_stays_readable_both_ways():
    marked = schema.Trade(**COMMON, liquidation=True)
    wire = schema.encode(marked)
    assert msgspec.msgpack.decode(wire)["liquidation"] is True          # plain msgpack sees the key
    assert schema.decode(wire) == marked and schema.decode_trade(wire).liquidation is True
    old = msgspec.msgpack.Decoder(OldTrade).decode(wire)                 # an old decoder skips it
    assert (old.trade_id, old.price, old.side) == (COMMON["trade_id"], 81308.0, "sell")
    # a payload of an older ingest (no key) decodes as not a liquidation
    from_old = schema.decode(msgspec.msgpack.encode(OldTrade(**COMMON)))
    assert isinstance(from_old, schema.Trade) and from_old.liquidation is False


def test_the_trade_ring_keeps_the_mark(shm_prefix):
    w = TradeRingWriter(shm_prefix, "hln", ["BTC"], capacity=8, epoch=3)
    try:
        w.append(0, 1, 1, 2, 81308.0, 0.5, "sell", "a", True)
        w.append(0, 2, 1, 2, 81308.0, 0.5, "buy", "b")
        with TradeRingReader.open(shm_prefix, "hln") as r:
            one, two = r.read("BTC", 1), r.read("BTC", 2)
            assert (one.side, one.trade_id, one.liquidation) == ("sell", "a", True)
            assert (two.side, two.trade_id, two.liquidation) == ("buy", "b", False)
    finally:
        w.close()


def test_websocket_trade_events_carry_the_mark_only_when_true():
    marked = json.loads(render.trade(schema.Trade(**COMMON, liquidation=True), 1_714_564_800_000_900))
    plain = json.loads(render.trade(schema.Trade(**COMMON), 1_714_564_800_000_900))
    assert marked["liquidation"] is True and marked["trade_id"] == COMMON["trade_id"]
    assert "liquidation" not in plain
    assert {k: v for k, v in marked.items() if k != "liquidation"} == plain


def test_grpc_trades_carry_the_mark():
    m = pb.Trade.FromString(trade_message(schema.Trade(**COMMON, liquidation=True)))
    assert m.liquidation is True and m.trade_id == COMMON["trade_id"] and m.side == pb.Trade.SELL
    assert pb.Trade.FromString(trade_message(schema.Trade(**COMMON))).liquidation is False
