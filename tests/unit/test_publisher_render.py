"""JSON events: the fields every event carries, ISO-8601 UTC times with microseconds and Z."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from pipeline import schema
from publisher import render


def test_iso_times_keep_microseconds_and_end_in_z():
    us = 1_714_564_800_123_456  # 2024-05-01T12:00:00.123456Z
    assert render.iso(us) == "2024-05-01T12:00:00.123456Z"
    assert render.iso(us + 1_000_000 - 123_456) == "2024-05-01T12:00:01.000000Z"
    assert render.iso(0) is None  # the venue gave no time
    parsed = datetime.strptime(render.iso(us), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert int(parsed.timestamp() * 1_000_000) == us


def test_trade_event_fields():
    t = schema.Trade(exchange="sim", symbol="BTCUSDT", epoch=1, seq=7, ts_exchange=1_714_564_800_000_000,
                     ts_received=1_714_564_800_000_500, price=60000.5, amount=0.25, side="sell", trade_id="42")
    e = json.loads(render.trade(t, 1_714_564_800_000_900))
    assert e == {"kind": "trade", "exchange": "sim", "symbol": "BTCUSDT",
                 "time_exchange": "2024-05-01T12:00:00.000000Z", "time_received": "2024-05-01T12:00:00.000500Z",
                 "time_published": "2024-05-01T12:00:00.000900Z", "seq": 7, "price": 60000.5, "amount": 0.25,
                 "side": "sell", "trade_id": "42"}
    assert list(e)[:6] == ["kind", "exchange", "symbol", "time_exchange", "time_received", "time_published"]


def test_book_snapshot_and_update_share_a_shape():
    common = dict(epoch=3, seq=10, state="live", depth=2, bids=[(100.0, 1.0), (99.5, 2.0)], asks=[(100.5, 3.0)],
                  ts_exchange=0, ts_received=1_714_564_800_000_000, published_us=1_714_564_800_000_001)
    snap = json.loads(render.book("sim", "X", **common))
    upd = json.loads(render.book("sim", "X", update=True, **common))
    assert snap["kind"] == "order_book_l2" and upd["kind"] == "order_book_l2_update"
    assert snap["bids"] == [[100.0, 1.0], [99.5, 2.0]] and snap["time_exchange"] is None
    assert {k for k in snap if k != "kind"} == {k for k in upd if k != "kind"}


def test_status_and_control_frames():
    s = json.loads(render.status("sim", "X", state="stale", reason="gap", epoch=1, seq=2, received_us=1,
                                 published_us=2))
    assert s["kind"] == "status" and s["state"] == "stale" and s["reason"] == "gap"
    assert {"time_exchange", "time_received", "time_published"} <= s.keys()
    e = json.loads(render.error("bad", "id1", 5))
    assert e == {"kind": "error", "id": "id1", "message": "bad", "time_published": render.iso(5)}


def test_trade_events_forward_the_instrument_when_the_bus_has_one():
    import json as _json

    from pipeline import schema
    from publisher import render as _render
    t = schema.Trade(exchange="okx", symbol="BTC-USDT-SWAP", epoch=1, seq=3, ts_exchange=0, ts_received=5,
                     price=1.5, amount=2.0, side="sell", trade_id="9",
                     instrument=schema.Instrument(base="BTC", quote="USDT", kind="perp"))
    m = _json.loads(_render.trade(t, 6))
    assert m["instrument"] == {"base": "BTC", "quote": "USDT", "kind": "perp"}
    assert m["time_exchange"] is None  # the other fields keep their nulls
    bare = schema.Trade(exchange="sim", symbol="X", epoch=1, seq=1, ts_exchange=1, ts_received=1,
                        price=1.0, amount=1.0, side="buy", trade_id="1")
    assert "instrument" not in _json.loads(_render.trade(bare, 2))


def test_book_events_carry_the_instrument_only_when_known():
    import json as _json

    from pipeline import schema
    from publisher import render as _render
    ins = schema.Instrument(base="ETH", quote="USD", kind="perp")
    for update in (False, True):
        m = _json.loads(_render.book("hyperliquid", "ETH", epoch=1, seq=2, state="live", depth=5, bids=[(1.0, 2.0)],
                                     asks=[(1.5, 1.0)], ts_exchange=0, ts_received=1, published_us=2, update=update,
                                     instrument=ins))
        assert m["instrument"] == {"base": "ETH", "quote": "USD", "kind": "perp"}
        bare = _json.loads(_render.book("sim", "X", epoch=1, seq=2, state="live", depth=5, bids=[], asks=[],
                                        ts_exchange=0, ts_received=1, published_us=2, update=update))
        assert "instrument" not in bare and bare["time_exchange"] is None
