"""The Hyperliquid adapter on documented and real frames, and on bad input
(shared/docs/exchange-protocols.md section 6)."""

import json

import pytest

from captures import SAMPLES
from ingest.adapters.hyperliquid import APPLY, SKIP, HyperliquidAdapter
from ingest.events import DepthDiff, DepthSnapshot, Instrument, TradeEvent, VenueNotice
from pipeline.config import ExchangeConfig
from pipeline.errors import ConfigError, MalformedFrame, UnknownFrame

HL = SAMPLES / "hyperliquid"


def adapter(*coins, **kw):
    return HyperliquidAdapter(ExchangeConfig(name="hl", adapter="hyperliquid", symbols=coins or ("BTC",), **kw))


def book_frame(coin="BTC", time=1000, bids=(("100.0", "1.5"),), asks=(("101.0", "2.0"),)):
    lv = lambda side: [{"px": p, "sz": s, "n": 1} for p, s in side]  # noqa: E731
    return json.dumps({"channel": "l2Book", "data": {"coin": coin, "time": time, "levels": [lv(bids), lv(asks)]}},
                      separators=(",", ":"))


def trade(coin="BTC", side="B", px="101.0", sz="0.5", time=1000, tid=7):
    return {"coin": coin, "side": side, "px": px, "sz": sz, "hash": "0x" + "0" * 64, "time": time, "tid": tid,
            "users": ["0xa", "0xb"]}


def trades_frame(*trades):
    return json.dumps({"channel": "trades", "data": list(trades)}, separators=(",", ":"))


def test_l2book_frame_is_a_snapshot_at_its_block_time():
    a = adapter()
    s = a.parse_frame(book_frame(time=1737918843542), 9)
    assert isinstance(s, DepthSnapshot) and s.symbol == "BTC" and s.last_id == 1737918843542
    assert s.bids == [(100.0, 1.5)] and s.asks == [(101.0, 2.0)]
    assert s.ts_exchange_us == 1737918843542000 and s.recv_ns == 9


def test_older_book_frame_is_dropped_equal_time_passes_and_a_new_connection_forgets():
    a = adapter("BTC", "ETH")
    assert a.parse_frame(book_frame(time=2000), 1).last_id == 2000
    assert a.parse_frame(book_frame(time=1999), 1) is None          # older block: dropped, no error
    assert a.parse_frame(book_frame(time=2000), 1).last_id == 2000  # same block (the capture repeats)
    assert a.parse_frame(book_frame("ETH", time=5), 1).last_id == 5  # per coin
    depth = next(g for g in a.stream_groups() if g.kind == "depth")
    a.connection_opened(depth)
    assert a.parse_frame(book_frame(time=1500), 1).last_id == 1500  # per connection


def test_trades_map_side_and_drop_repeats_across_reconnects():
    a = adapter()
    evs = a.parse_frame(trades_frame(trade(side="B", tid=1), trade(side="A", tid=2, px="100.0")), 3)
    assert [(e.side, e.price, e.amount, e.trade_id, e.ts_exchange_us) for e in evs] == [
        ("buy", 101.0, 0.5, "1", 1_000_000), ("sell", 100.0, 0.5, "2", 1_000_000)]
    assert all(isinstance(e, TradeEvent) for e in evs)
    for g in a.stream_groups():
        a.connection_opened(g)
    # the backlog after a resubscribe repeats trades: only the new one comes out
    evs = a.parse_frame(trades_frame(trade(tid=1), trade(side="A", tid=2), trade(tid=3, time=1001)), 4)
    assert [e.trade_id for e in evs] == ["3"]
    assert a.parse_frame(trades_frame(trade(tid=3, time=1001)), 5) is None
    # the key is (coin, time, tid): the same tid at another time is another trade
    assert [e.trade_id for e in a.parse_frame(trades_frame(trade(tid=3, time=1002)), 5)] == ["3"]


def test_trade_memory_is_bounded():
    a = adapter()
    a.TRADE_KEYS_PER_COIN = 10
    a._seen["BTC"].size = 10
    for i in range(100):
        a.parse_frame(trades_frame(trade(tid=i, time=i)), 1)
    assert len(a._seen["BTC"]) == 10


def test_a_rejected_trades_frame_leaves_no_key_behind():
    a = adapter()
    with pytest.raises(MalformedFrame):
        a.parse_frame(trades_frame(trade(tid=1), trade(tid=2, side="X")), 1)
    assert [e.trade_id for e in a.parse_frame(trades_frame(trade(tid=1)), 1)] == ["1"]


@pytest.mark.shared
def test_documented_control_frames():
    ex = json.loads((HL / "docs_examples.json").read_text())["examples"]
    a = adapter("BTC", "SOL")
    assert a.parse_frame(json.dumps(ex["ws_pong"]), 1) is None
    assert a.parse_frame(json.dumps(ex["ws_subscription_response"]), 1) is None
    err = a.parse_frame('{"channel":"error","data":"Invalid subscription"}', 1)
    assert isinstance(err, VenueNotice) and err.kind == "error" and err.detail["error"] == "Invalid subscription"
    assert json.loads(a.traits.app_ping) == ex["ws_ping"]
    assert json.loads(a.stream_groups()[0].subscribe[0]) == ex["ws_subscribe_l2book"]
    with pytest.raises(UnknownFrame):
        a.parse_frame('{"channel":"activeSpotAssetCtx","data":{"coin":"BTC"}}', 1)  # bbo is a quote now


@pytest.mark.shared
@pytest.mark.parametrize("name,coin,levels", [
    ("nautilus_rest_l2book_btc_5levels.json", "BTC", 5),
    ("sdk_cassette_rest_l2book_dydx_20230717.json", "DYDX", 20),
])
def test_rest_l2book_bodies_parse(name, coin, levels):
    raw = json.loads((HL / name).read_text())
    body = raw.get("response_body", raw)
    a = adapter(coin)
    req = a.snapshot_request(coin)
    assert (req.url, req.method, req.weight) == ("https://api.hyperliquid.xyz/info", "POST", 2)
    assert json.loads(req.body) == {"type": "l2Book", "coin": coin}
    if "request" in raw:  # the SDK's recorded request is what we send
        assert json.loads(req.body) == raw["request"]["body"]
    s = a.parse_snapshot(coin, json.dumps(body).encode(), 1)
    assert s.last_id == body["time"] and len(s.bids) == len(s.asks) == levels
    assert s.bids == [(float(lv["px"]), float(lv["sz"])) for lv in body["levels"][0]]
    assert s.asks == [(float(lv["px"]), float(lv["sz"])) for lv in body["levels"][1]]
    assert s.bids[0][0] < s.asks[0][0]


def test_rest_snapshot_for_another_coin_is_malformed():
    with pytest.raises(MalformedFrame):
        adapter("ETH").parse_snapshot("ETH", repr(json.loads(book_frame())["data"]).encode(), 1)  # not JSON
    body = json.dumps(json.loads(book_frame())["data"]).encode()
    with pytest.raises(MalformedFrame, match="asked for"):
        adapter("ETH").parse_snapshot("ETH", body, 1)


def test_stream_groups_subscriptions_and_resubscribe():
    a = adapter("BTC", "PURR/USDC", "@107", "xyz:NVDA")
    groups = a.stream_groups()
    assert [g.kind for g in groups] == ["depth", "trades"]
    assert all(g.url == "wss://api.hyperliquid.xyz/ws" and g.symbols == a.symbols for g in groups)
    assert [json.loads(f)["subscription"] for f in groups[1].subscribe] == [
        {"type": t, "coin": c} for c in a.symbols for t in ("trades", "bbo", "activeAssetCtx")
        if t != "activeAssetCtx" or c in ("BTC", "xyz:NVDA")]  # perps only have an asset context
    only = adapter("BTC", "PURR/USDC", channels=("trades", "book")).stream_groups()[1]
    assert [json.loads(f)["subscription"] for f in only.subscribe] == [
        {"type": "trades", "coin": c} for c in ("BTC", "PURR/USDC")]
    assert [json.loads(f) for f in a.resubscribe("@107")] == [
        {"method": "unsubscribe", "subscription": {"type": "l2Book", "coin": "@107"}},
        {"method": "subscribe", "subscription": {"type": "l2Book", "coin": "@107"}}]
    assert (a.traits.snapshot_source.value, a.traits.book_cap, a.traits.verify_bbo) == ("ws", 0, False)


def test_more_coins_than_the_per_ip_limits_is_a_config_error():
    with pytest.raises(ConfigError, match="1000"):
        adapter(*[f"C{i}" for i in range(501)])
    with pytest.raises(ConfigError, match="10"):
        adapter(*[f"C{i}" for i in range(60)], streams_per_connection=10)


def test_instruments():
    a = adapter("BTC", "PURR/USDC", "@107", "xyz:NVDA")
    assert a.instrument("BTC") == Instrument("BTC", "USD", "perp")
    assert a.instrument("PURR/USDC") == Instrument("PURR", "USDC", "spot")
    assert a.instrument("@107") == Instrument("@107", "", "spot")
    assert a.instrument("xyz:NVDA") == Instrument("xyz:NVDA", "USD", "perp")


def test_check_is_total_without_diffs():
    a = adapter()
    ev = DepthDiff("BTC", 5, 5, -1, [], [], 0, 0)
    assert a.check(ev, 6, False) == SKIP and a.check(ev, 5, True) == APPLY and a.check(ev, -1, True) == APPLY
    assert a.snapshot_usable(1, ev) and a.snapshot_usable(1, None)


def test_coins_are_case_sensitive_and_unknown_ones_are_unknown():
    a = adapter("kPEPE")
    assert a.parse_frame(book_frame("kPEPE"), 1).symbol == "kPEPE"
    with pytest.raises(UnknownFrame):
        a.parse_frame(book_frame("KPEPE"), 1)
    with pytest.raises(UnknownFrame):
        a.parse_frame(trades_frame(trade(coin="BTC")), 1)


@pytest.mark.parametrize("frame", [
    book_frame(bids=(("100.0", "-1"),)),
    book_frame(bids=(("0", "1"),)),
    book_frame(asks=(("nan", "1"),)),
    book_frame(asks=(("101.0", "inf"),)),
    book_frame(asks=(("101.0", "0"),)),
    book_frame(bids=(("101.0", "1"),), asks=(("101.0", "1"),)),      # crossed
    book_frame(time=-5),
    book_frame().replace('"levels":[[', '"levels":[[],['),            # three sides
    book_frame().replace('"1.5"', '"1.5x"'),
    book_frame()[:-10],
    trades_frame(trade(px="-1")),
    trades_frame(trade(sz="0")),
    trades_frame(trade(side="buy")),
    '{"channel":"trades","data":{"coin":"BTC"}}',
    '{"channel":"l2Book","data":[1,2]}',
])
def test_bad_frames_are_malformed_with_the_coin(frame):
    with pytest.raises(MalformedFrame) as info:
        adapter().parse_frame(frame, 1)
    if '"coin":"BTC"' in frame:
        assert info.value.symbol == "BTC"


@pytest.mark.parametrize("frame", ["", "null", "[]", "42", '{"data":1}', '{"channel":5}', b"\xff\xfe"])
def test_non_envelopes_are_malformed(frame):
    with pytest.raises(MalformedFrame):
        adapter().parse_frame(frame, 1)


def test_fast_subscribes_the_fast_book_and_the_staleness_limit_follows_the_cadence(caplog):
    plain, fast = adapter("BTC"), adapter("BTC", depth=20, options={"fast": True})
    subs = lambda a: [json.loads(f)["subscription"] for g in a.stream_groups() for f in g.subscribe]  # noqa: E731
    assert {"type": "l2Book", "coin": "BTC"} in subs(plain)
    assert {"type": "l2Book", "coin": "BTC", "fast": True} in subs(fast)
    assert {"type": "trades", "coin": "BTC"} in subs(fast)  # fast is a book option only
    assert json.loads(fast.resubscribe("BTC")[1])["subscription"]["fast"] is True
    # plain: 20 levels every 5 s; fast: 5 every 0.5 s.  A limit of a few missed pushes each
    assert (plain.cadence_s, plain.levels, plain.traits.stale_after_s) == (5.0, 20, 20.0)
    assert (fast.cadence_s, fast.levels, fast.traits.stale_after_s) == (0.5, 5, 2.0)
    assert "depth 20" in caplog.text and "5 levels" in caplog.text  # said at start
    assert plain.traits.stale_watch == fast.traits.stale_watch == "push"  # pushed even without a change
    # (the config's stale_after_s overriding it: tests/unit/test_stale_after.py)


@pytest.mark.parametrize("options,key,reason", [
    ({"fast": "yes"}, "exchanges.hl.fast", "expected true or false"),
    ({"nSigFigs": 5}, "exchanges.hl.nSigFigs", "unknown key"),
])
def test_bad_options_name_the_key(options, key, reason):
    from ingest.adapters import create

    with pytest.raises(ConfigError) as info:
        create(ExchangeConfig(name="hl", adapter="hyperliquid", symbols=("BTC",), options=options))
    assert info.value.key == key and reason in info.value.reason


def test_options_in_the_config_file_are_checked_at_load(tmp_path):
    from pipeline.app.config import parse_config

    base = '[exchanges.hl]\nadapter = "hyperliquid"\nsymbols = ["BTC"]\n'
    assert parse_config(base + "fast = true\n", tmp_path).exchanges["hl"].options == {"fast": True}
    with pytest.raises(ConfigError) as info:
        parse_config(base + "fast = 1\n", tmp_path)
    assert info.value.key == "exchanges.hl.fast"
    with pytest.raises(ConfigError) as info:  # a Binance table has no `fast`
        parse_config(base.replace('"hyperliquid"', '"binance"') + "fast = true\n", tmp_path)
    assert info.value.key == "exchanges.hl.fast" and "unknown key" in info.value.reason
