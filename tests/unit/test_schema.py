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


def test_a_malformed_topic_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="KIND.EXCHANGE.SYMBOL"):
        schema.parse_topic(b"trade.sim")


def test_the_registry_holds_the_design_contracts_of_trade_and_l2():
    """DESIGN.md: topic KINDs (contract 4), WebSocket kinds (5), CSV datatypes (6); trades never conflated."""
    assert set(schema.KINDS) == {"trade", "l2"}
    t, l2 = schema.KINDS["trade"], schema.KINDS["l2"]
    assert (t.topic_prefix, t.socket, t.conflatable, t.ws_kinds, t.tardis_datatype) == (
        "trade", schema.Socket.HOT, False, ("trade",), "trades")
    assert (l2.topic_prefix, l2.socket, l2.conflatable, l2.ws_kinds, l2.tardis_datatype) == (
        "l2", schema.Socket.L2, True, ("order_book_l2", "order_book_l2_update"), "incremental_book_L2")
    assert (t.tag, l2.tag) == ("trade", "l2")  # the payload's "kind" field
    assert l2.topic("okx", "BTC-USDT-SWAP") == b"l2.okx.BTC-USDT-SWAP"
    assert t.subscription() == b"trade." and t.subscription("sim") == b"trade.sim."
    assert schema.kind_of(b"l2.sim.BTCUSDT") is l2 and schema.kind_of(b"trade.sim.X.Y") is t


def test_every_registered_kind_decodes_through_the_bus_union():
    """A kind added to the registry without its payload in BusMessage would not decode."""
    import typing

    assert set(typing.get_args(schema.BusMessage)) == {k.payload for k in schema.KINDS.values()}
    assert len({k.topic_prefix for k in schema.KINDS.values()}) == len(schema.KINDS)


def test_topics_are_exact_per_symbol_or_a_prefix_per_exchange():
    assert schema.topics(schema.TRADE, ["a", "b"], ["X"]) == [b"trade.a.X", b"trade.b.X"]
    assert schema.topics(schema.L2, ["a", "b"]) == [b"l2.a.", b"l2.b."]


def test_the_kinds_table_in_docs_bus_md_is_the_registry():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "bus.md").read_text()
    section = doc.split("## Event kinds", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| `")]
    documented = {}
    for name, prefix, payload, socket, conflatable, ws, datatype in rows:
        documented[name.strip("`")] = (prefix.strip("`"), payload.split()[0].strip("`"), socket.split()[0],
                                       conflatable.startswith("yes"), tuple(w.strip(" `") for w in ws.split(",")),
                                       datatype.strip("`"))
    in_code = {k.name: (k.topic_prefix, k.payload.__name__, "hot" if k.socket is schema.Socket.HOT else "L2",
                        k.conflatable, k.ws_kinds, k.tardis_datatype) for k in schema.KINDS.values()}
    assert documented == in_code
