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
    assert set(schema.KINDS) == {"trade", "l2", "quote", "derivative_ticker", "liquidation", "cvd", "trade_bar", "l4",
                                 "trade_gap"}
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
                                       conflatable.startswith("yes"),
                                       () if ws.startswith("none") else tuple(w.strip(" `") for w in ws.split(",")),
                                       None if datatype.startswith("none") else datatype.strip("`"))
    in_code = {k.name: (k.topic_prefix, k.payload.__name__, "hot" if k.socket is schema.Socket.HOT else "L2",
                        k.conflatable, k.ws_kinds, k.tardis_datatype) for k in schema.KINDS.values()}
    assert documented == in_code


def test_the_registry_holds_the_design_contracts_of_the_other_kinds():
    """DESIGN.md contract 4 prefixes (quote, ticker, liq), contract 5 WebSocket kinds, contract 6
    datatypes; quotes and liquidations on the hot socket; liquidations never conflated."""
    got = {k.name: (k.topic_prefix, k.socket, k.conflatable, k.ws_kinds, k.tardis_datatype)
           for k in (schema.QUOTE, schema.DERIVATIVE_TICKER, schema.LIQUIDATION, schema.CVD, schema.TRADE_BAR)}
    hot, l2 = schema.Socket.HOT, schema.Socket.L2
    assert got == {
        "quote": ("quote", hot, True, ("quote",), "quotes"),
        "derivative_ticker": ("ticker", l2, True, ("derivative_ticker",), "derivative_ticker"),
        "liquidation": ("liq", hot, False, ("liquidation",), "liquidations"),
        "cvd": ("cvd", l2, True, ("cvd",), None),
        "trade_bar": ("bar", l2, False, ("trade_bar",), None),
    }
    assert schema.kind_of(b"liq.bybit.BTCUSDT") is schema.LIQUIDATION
    assert schema.DERIVATIVE_TICKER.topic("okx", "BTC-USDT-SWAP") == b"ticker.okx.BTC-USDT-SWAP"


def test_every_kind_round_trips_and_an_absent_ticker_field_is_nil_not_zero():
    common = dict(exchange="sim", symbol="BTCUSDT", epoch=1, seq=3, ts_exchange=10, ts_received=11, ts_published=12)
    msgs = [
        schema.Quote(**common, bid_price=1.5, bid_amount=2.0, ask_price=None, ask_amount=None, update_id=7),
        schema.DerivativeTicker(**common, mark_price=60000.5, funding_rate=0.0001, funding_timestamp=1_700_000_000_000_000),
        schema.Liquidation(**common, side="sell", price=59000.0, amount=0.5, liquidation_id="x1"),
        schema.Cvd(**common, cvd=-1.5, buy_volume=2.0, sell_volume=3.5, since=0, trade_seq=9),
        schema.TradeBar(**common, interval="1s", interval_us=1_000_000, open_time=9, open=1.0, high=2.0, low=0.5,
                        close=1.5, volume=4.0, buy_volume=3.0, sell_volume=1.0, trades=3, first_trade_seq=1,
                        last_trade_seq=3),
    ]
    for msg in msgs:
        payload = schema.encode(msg)
        assert schema.decode(payload) == msg
        kind = schema.KINDS[msgpack.unpackb(payload)["kind"]]
        assert kind.payload is type(msg) and schema.decoder(kind)(payload) == msg
    ticker = msgpack.unpackb(schema.encode(msgs[1]))
    assert ticker["index_price"] is None and ticker["open_interest"] is None and ticker["mark_price"] == 60000.5
    assert set(schema.TICKER_FIELDS) <= set(schema.DerivativeTicker.__struct_fields__)


def test_the_trade_gap_kind_is_added_without_touching_the_others():
    """Issue 19 item 5: trade ids a venue skipped, on the hot socket (in order with the trades it speaks
    of), never conflated, for bus consumers only: no WebSocket kind (DESIGN.md contract 5 lists them),
    no tardis datatype (contract 6); its topic prefix shares no prefix with ``trade.``."""
    g = schema.KINDS["trade_gap"]
    assert (g.topic_prefix, g.socket, g.conflatable, g.ws_kinds, g.tardis_datatype, g.tag) == (
        "tgap", schema.Socket.HOT, False, (), None, "trade_gap")
    assert not g.topic("sim", "BTCUSDT").startswith(schema.TRADE.subscription())
    msg = schema.TradeGap(exchange="sim", symbol="BTCUSDT", epoch=1, seq=1, ts_exchange=5, ts_received=6,
                          state=schema.GAP_MISSING, first_id=101, last_id=109, count=9, backfill=True)
    assert schema.decode(schema.encode(msg)) == msg
    plain = msgpack.unpackb(schema.encode(msg))
    assert (plain["kind"], plain["first_id"], plain["last_id"], plain["count"], plain["backfilled"]) == (
        "trade_gap", 101, 109, 9, 0)
    # the trade payload is not touched by it: what says a trade came from REST is the marker before it
    assert set(schema.Trade.__struct_fields__) == {"exchange", "symbol", "epoch", "seq", "ts_exchange", "ts_received",
                                                   "ts_published", "price", "amount", "side", "trade_id", "instrument",
                                                   "liquidation"}
