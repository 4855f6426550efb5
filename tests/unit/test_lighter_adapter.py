"""The Lighter adapter on documented frames and real REST bodies, its nonce rule, and
bad input (shared/docs/exchange-protocols.md section 7)."""

import json
from decimal import Decimal

import pytest

from captures import SAMPLES
from ingest.adapters.lighter import APPLY, GAP, SKIP, LighterAdapter
from ingest.events import DepthDiff, DepthSnapshot, Instrument, VenueNotice
from ingest.sync import APPLY_DIFF, INSTALL_SNAPSHOT, STALE_RESUBSCRIBE, BookSync, SyncState
from pipeline.book import ViewBook
from pipeline.config import ExchangeConfig
from pipeline.errors import ConfigError, MalformedFrame, SnapshotError, UnknownFrame

LT = SAMPLES / "lighter"


def sample(name):
    return json.loads((LT / name).read_text())


def adapter(*symbols, discover=True, **kw):
    a = LighterAdapter(ExchangeConfig(name="lt", adapter="lighter", symbols=symbols or ("ETH",), **kw))
    if discover and a.discovery_request() is not None:
        a.apply_discovery(details_body())
    return a


def details_body(spot=()):
    """The real orderBookDetails body, plus spot markets when asked."""
    body = sample("nautilus_http_order_book_details.json") if LT.is_dir() else {"order_book_details": [
        {"symbol": "ETH", "market_id": 0}], "spot_order_book_details": []}
    body["spot_order_book_details"] = [{"symbol": s, "market_id": i} for s, i in spot]
    return json.dumps(body).encode()


def book(kind, mid, nonce, begin=None, bids=(), asks=(), offset=7):
    ob = {"code": 0, "asks": [{"price": p, "size": s} for p, s in asks],
          "bids": [{"price": p, "size": s} for p, s in bids], "offset": offset, "nonce": nonce,
          "last_updated_at": 1_700_000_000_000_001}
    if begin is not None:
        ob["begin_nonce"] = begin
    return json.dumps({"channel": f"order_book:{mid}", "offset": offset, "order_book": ob,
                       "timestamp": 1_700_000_000_000, "type": kind}, separators=(",", ":"))


def trade_frame(kind, mid, *trades, liquidations=()):
    t = lambda tid, maker_ask, px="10.0", sz="1.0": {  # noqa: E731
        "trade_id": tid, "trade_id_str": str(tid), "price": px, "size": sz, "is_maker_ask": maker_ask,
        "timestamp": 1_700_000_000_123, "transaction_time": 1_700_000_000_123_456, "type": "trade"}
    return json.dumps({"channel": f"trade:{mid}", "type": kind, "trades": [t(*x) for x in trades],
                       "liquidation_trades": [t(*x) for x in liquidations], "nonce": 1})


@pytest.mark.shared
def test_documented_snapshot_then_chained_update_apply():
    a = adapter()
    snap = a.parse_frame((LT / "nautilus_ws_order_book_subscribed.json").read_bytes(), 1)
    assert isinstance(snap, DepthSnapshot) and snap.symbol == "ETH" and snap.last_id == 904845
    assert snap.bids == [(2000.0, 0.02)] and snap.asks == [(2325.0, 99.0), (2341.25, 340.1028)]
    assert snap.ts_exchange_us == 1778138389655150
    upd = sample("nautilus_ws_order_book_update.json")
    diff = a.parse_frame(json.dumps(upd), 2)
    assert isinstance(diff, DepthDiff) and (diff.first_id, diff.last_id, diff.prev_id) == (
        9182390020, 9182390020, 9182389998)
    assert diff.asks == [(2064.54, 0.3285)] and diff.bids == [] and diff.ts_exchange_us == 1774884082309144
    # the two documentation frames are from different days: chain the update to the snapshot
    upd["order_book"]["begin_nonce"] = snap.last_id
    diff = a.parse_frame(json.dumps(upd), 2)
    sync = BookSync("ETH", a.check, a.snapshot_usable, a.traits.in_stream)
    sync.connected()
    assert sync.snapshot_received(snap) == INSTALL_SNAPSHOT and sync.replay == []
    sync.installed()
    vb = ViewBook(10)
    vb.load_snapshot(snap.bids, snap.asks)
    assert sync.diff_received(diff) is APPLY_DIFF and sync.book_id == 9182390020
    vb.apply(diff.bids, diff.asks)
    assert vb.view() == ([(2000.0, 0.02)], [(2064.54, 0.3285), (2325.0, 99.0), (2341.25, 340.1028)])
    # the same update again is skipped; an unchained one is a gap: stale, resubscribe
    assert sync.diff_received(diff) == ()
    upd["order_book"].update(nonce=9182390030, begin_nonce=9182390025)
    assert sync.diff_received(a.parse_frame(json.dumps(upd), 3)) == STALE_RESUBSCRIBE
    assert sync.state is SyncState.BUFFERING and sync.counts.gaps == 1


@pytest.mark.shared
def test_empty_book_snapshot_works_and_its_first_update_chains_from_nonce_zero():
    a = adapter("39")  # a numeric symbol is a market id: no discovery needed
    assert a.discovery_request() is None
    snap = a.parse_frame((LT / "nautilus_ws_order_book_subscribed_empty.json").read_bytes(), 1)
    assert (snap.symbol, snap.last_id, snap.bids, snap.asks) == ("39", 0, [], [])
    diff = a.parse_frame(book("update/order_book", 39, 5, 0, bids=[("1.5", "2")]), 1)
    assert a.check(diff, snap.last_id, True) == APPLY


@pytest.mark.shared
def test_trade_frames_and_dedup_across_reconnects():
    a = adapter()
    evs = a.parse_frame((LT / "nautilus_ws_trade_subscribed.json").read_bytes(), 5)
    assert len(evs) == 1
    t = evs[0]
    assert (t.symbol, t.price, t.amount, t.side, t.trade_id, t.ts_exchange_us) == (
        "ETH", 2181.83, 0.1336, "sell", "16164557907", 1773854156654000)  # is_maker_ask false: taker sold
    # the update sample repeats the same trade id: a repeat, dropped
    assert a.parse_frame((LT / "nautilus_ws_trade_update.json").read_bytes(), 6) is None
    for g in a.stream_groups():
        a.connection_opened(g)
    evs = a.parse_frame(trade_frame("subscribed/trade", 0, (16164557907, False), (16164557908, True),
                                    liquidations=[(16164557909, False)]), 7)
    # liquidation_trades are liquidations now (issue 13), not trades
    from ingest.events import LiquidationEvent
    assert [(type(e).__name__, e.side) for e in evs] == [("LiquidationEvent", "sell"), ("TradeEvent", "buy")]
    assert isinstance(evs[0], LiquidationEvent) and evs[0].liquidation_id == "16164557909"
    assert evs[1].trade_id == "16164557908"


@pytest.mark.shared
def test_discovery_maps_symbols_and_names_missing_ones():
    a = LighterAdapter(ExchangeConfig(name="lt", adapter="lighter", symbols=("ETH", "ETH/USDC", "2049")))
    req = a.discovery_request()
    assert req.url == "https://mainnet.zklighter.elliot.ai/api/v1/orderBookDetails" and req.method == "GET"
    with pytest.raises(ConfigError):
        a.market_id("ETH")  # before discovery: a clear error, not a KeyError
    a.apply_discovery(details_body(spot=[("ETH/USDC", 2048), ("LIT/USDC", 2049)]))
    assert [a.market_id(s) for s in a.symbols] == [0, 2048, 2049]
    assert a.instrument("ETH") == Instrument("ETH", "USD", "perp")
    assert a.instrument("ETH/USDC") == Instrument("ETH", "USDC", "spot")
    assert a.instrument("2049") == Instrument("LIT", "USDC", "spot")   # numeric id, named by discovery
    assert LighterAdapter(ExchangeConfig(name="lt", adapter="lighter", symbols=("3000",))).instrument("3000") == \
        Instrument("3000", "", "spot")
    b = LighterAdapter(ExchangeConfig(name="lt", adapter="lighter", symbols=("ETH", "BTC", "DOGE")))
    with pytest.raises(ConfigError, match="BTC, DOGE"):
        b.apply_discovery(details_body())
    with pytest.raises(SnapshotError):
        b.apply_discovery(b"<html>502</html>")
    assert adapter("eth").market_id("eth") == 0  # case folded when unambiguous


def test_stream_groups_resubscribe_and_rest_request():
    a = adapter("7", "12", discover=False)
    groups = a.stream_groups()
    assert [g.kind for g in groups] == ["depth", "trades"]
    assert groups[0].url == "wss://mainnet.zklighter.elliot.ai/stream"
    assert [json.loads(f) for f in groups[0].subscribe] == [
        {"type": "subscribe", "channel": "order_book/7"}, {"type": "subscribe", "channel": "order_book/12"}]
    assert [json.loads(f) for f in groups[1].subscribe] == [
        {"type": "subscribe", "channel": f"{c}/{m}"} for m in (7, 12) for c in ("trade", "ticker", "market_stats")]
    only = adapter("7", "12", discover=False, channels=("trades", "book")).stream_groups()[1]
    assert [json.loads(f) for f in only.subscribe] == [
        {"type": "subscribe", "channel": "trade/7"}, {"type": "subscribe", "channel": "trade/12"}]
    assert [json.loads(f) for f in a.resubscribe("12")] == [
        {"type": "unsubscribe", "channel": "order_book/12"}, {"type": "subscribe", "channel": "order_book/12"}]
    req = a.snapshot_request("7")
    assert req.url == "https://mainnet.zklighter.elliot.ai/api/v1/orderBookOrders?market_id=7&limit=250"
    assert (a.traits.snapshot_source.value, a.traits.book_cap, json.loads(a.traits.app_ping)) == ("ws", 0, {"type": "ping"})


@pytest.mark.shared
def test_rest_order_book_orders_aggregate_into_levels():
    a = adapter()
    s = a.parse_snapshot("ETH", (LT / "nautilus_http_order_book_orders.json").read_bytes(), 1)
    assert (s.last_id, s.bids, s.asks) == (0, [(2361.17, 3.4125)], [(2361.32, 0.0317)])
    # several orders at one price are summed exactly, levels come best first
    o = lambda p, q: {"price": p, "remaining_base_amount": q, "initial_base_amount": q}  # noqa: E731
    body = {"code": 200, "asks": [o("10.2", "0.1"), o("10.1", "0.2"), o("10.2", "0.2"), o("10.3", "0")],
            "bids": [o("9.9", "0.1"), o("9.8", "1"), o("9.9", "0.2")]}
    s = a.parse_snapshot("ETH", json.dumps(body).encode(), 1)
    assert s.asks == [(10.1, 0.2), (10.2, float(Decimal("0.1") + Decimal("0.2")))] and s.asks[1][1] == 0.3
    assert s.bids == [(9.9, 0.3), (9.8, 1.0)]
    with pytest.raises(MalformedFrame):
        a.parse_snapshot("ETH", json.dumps({"asks": [o("x", "1")]}).encode(), 1)
    with pytest.raises(MalformedFrame):
        a.parse_snapshot("ETH", json.dumps({"asks": [o("10", "1")], "bids": [o("11", "1")]}).encode(), 1)


def test_check_nonce_rule():
    a = adapter("1", discover=False)
    d = lambda nonce, begin: DepthDiff("1", nonce, nonce, begin, [], [], 0, 0)  # noqa: E731
    assert a.check(d(20, 10), 10, True) == APPLY
    assert a.check(d(20, 10), 20, False) == SKIP      # duplicate
    assert a.check(d(15, 5), 20, False) == SKIP       # older
    assert a.check(d(30, 25), 20, False) == GAP       # one removed between
    assert a.check(d(30, 20), 10, False) == GAP       # reordered: the newer one first
    assert a.check(d(30, -1), 20, False) == APPLY     # no begin_nonce: cannot check
    assert a.check(d(20, -1), 20, False) == SKIP      # ... but not older than the book


@pytest.mark.shared
def test_older_protocol_frames_without_begin_nonce():
    ex = json.loads((LT / "docs_examples.json").read_text())["examples"]
    a = adapter()
    ccxt = a.parse_frame(json.dumps(ex["ws_order_book_update_ccxt_comment_2025_11"]), 1)
    assert (ccxt.last_id, ccxt.prev_id, ccxt.bids) == (3107818665, -1, [(2979.36, 0.0)])
    legacy = a.parse_frame(json.dumps(ex["ws_order_book_update_legacy_docs_format"]), 1)
    assert (legacy.last_id, legacy.prev_id) == (41692864, -1)  # offset is the only id
    assert a.parse_frame(json.dumps(ex["ws_pong"]), 1) is None
    ping = a.parse_frame(json.dumps(ex["ws_ping"]), 1)
    assert isinstance(ping, VenueNotice) and ping.kind == "ping"  # the runner answers {"type":"pong"}


def test_control_frames():
    a = adapter("0", discover=False)
    assert a.parse_frame('{"type":"connected","session_id":"abc"}', 1) is None
    assert a.parse_frame('{"type":"unsubscribed","channel":"order_book:0"}', 1) is None
    err = a.parse_frame('{"error":{"code":30009,"message":"Too Many Requests"}}', 1)
    assert err.kind == "error" and err.detail["error"]["code"] == 30009
    with pytest.raises(UnknownFrame):
        a.parse_frame('{"type":"update/height","channel":"height:0","height":5}', 1)  # a ticker is a quote now
    with pytest.raises(UnknownFrame):
        a.parse_frame(book("update/order_book", 5, 2, 1), 1)  # a market we did not subscribe


@pytest.mark.parametrize("frame", [
    book("update/order_book", 0, 10, 9, bids=[("100", "-1")]),
    book("update/order_book", 0, 10, 9, asks=[("0", "1")]),
    book("update/order_book", 0, 10, 9, asks=[("NaN", "1")]),
    book("update/order_book", 0, 10, 9, asks=[("1", "Infinity")]),
    book("update/order_book", 0, 10, 11),                                  # begin after nonce
    book("update/order_book", 0, -3, None),
    book("subscribed/order_book", 0, 10, 0, bids=[("101", "1")], asks=[("100", "1")]),   # crossed
    book("update/order_book", 0, 10, 9).replace('"nonce":10', '"nonce":"ten"'),
    book("update/order_book", 0, 10, 9)[:-20],
    json.dumps({"channel": "order_book:0", "type": "update/order_book"}),
    json.dumps({"channel": "order_book:0", "type": "update/order_book", "order_book": [1]}),
    trade_frame("update/trade", 0, (1, True, "-5")),
    trade_frame("update/trade", 0, (1, True, "5", "0")),
    trade_frame("update/trade", 0, (-1, True)),
    json.dumps({"channel": "trade:0", "type": "update/trade", "trades": [{"price": "1"}]}),
])
def test_bad_frames_are_malformed_with_the_symbol(frame):
    with pytest.raises(MalformedFrame) as info:
        adapter("0", discover=False).parse_frame(frame, 1)
    assert info.value.symbol == "0"


@pytest.mark.parametrize("frame", ["", "null", "[]", "7", '{"type":5}', b"\xff"])
def test_non_objects_are_malformed(frame):
    with pytest.raises(MalformedFrame):
        adapter("0", discover=False).parse_frame(frame, 1)
