"""The OKX v5 adapter on the venue's documented frames, the connection plan, the checksum
text bookkeeping, and bad input."""

import json

import pytest

from captures import SAMPLES
from ingest.adapters.okx import APPLY, GAP, OkxAdapter, checksum_string, crc32_signed
from ingest.events import DepthDiff, DepthSnapshot, Instrument, StreamGroup, TradeEvent, VenueNotice
from pipeline.book import ViewBook
from pipeline.config import ExchangeConfig
from pipeline.errors import ConfigError, MalformedFrame, UnknownFrame


def okx(*symbols, **kw):
    return OkxAdapter(ExchangeConfig(name="okx", adapter="okx", symbols=symbols, **kw))


def docs():
    return json.loads((SAMPLES / "okx" / "docs_examples.json").read_text())["examples"]


def books(action="update", bids=(), asks=(), seq=2, prev=1, checksum=0, inst="BTC-USDT", channel="books", **extra):
    d = {"asks": [list(x) for x in asks], "bids": [list(x) for x in bids], "ts": "1700000000000",
         "checksum": checksum, "prevSeqId": prev, "seqId": seq, **extra}
    return json.dumps({"arg": {"channel": channel, "instId": inst}, "action": action, "data": [d]})


def test_defaults_and_declared_contract():
    a = okx("BTC-USDT", "BTC-USDT-SWAP", "BTC-USD-220527")
    assert a.ws_url == "wss://ws.okx.com:8443/ws/v5/public" and a.traits.snapshot_source.value == "ws"
    assert a.traits.app_ping == "ping"
    assert a.depth_stream == "books" and a.traits.book_cap == 400 and a.traits.checksum
    assert okx("X-Y", depth_stream="books-l2-tbt").traits.book_cap == 400
    assert okx("X-Y", depth_stream="books50-l2-tbt").traits.book_cap == 50
    assert a.instrument("BTC-USDT") == Instrument("BTC", "USDT", "spot")
    assert a.instrument("BTC-USDT-SWAP") == Instrument("BTC", "USDT", "perp")
    assert a.instrument("BTC-USD-220527") == Instrument("BTC", "USD", "future")
    with pytest.raises(ConfigError, match="exchanges.okx.depth_stream"):
        okx("X-Y", depth_stream="books5")


@pytest.mark.shared
def test_documented_frames_parse():
    ex = docs()
    a = okx("BTC-USDT")
    s = a.parse_frame(json.dumps(ex["ws_books_snapshot"]), 7)
    assert isinstance(s, DepthSnapshot) and s.last_id == ex["ws_books_snapshot"]["data"][0]["seqId"]
    assert s.bids[0] == (8476.97, 256.0) and s.asks[1] == (8477.0, 7.0) and s.checksum == 0
    assert s.ts_exchange_us == 1597026383085000 and s.recv_ns == 7
    u = a.parse_frame(json.dumps(ex["ws_books_update"]), 8)
    d0 = ex["ws_books_update"]["data"][0]
    assert isinstance(u, DepthDiff)
    assert (u.first_id, u.last_id, u.prev_id) == (d0["seqId"], d0["seqId"], d0["prevSeqId"])
    (t,) = a.parse_frame(json.dumps(ex["ws_trades"]), 9)
    assert isinstance(t, TradeEvent)
    assert (t.side, t.trade_id, t.price, t.amount) == ("buy", "130639474", 42219.9, 0.12060306)
    assert t.ts_exchange_us == 1630048897897000
    assert a.parse_frame(json.dumps(ex["ws_books_subscribe_ack"]), 1) is None
    err = a.parse_frame(json.dumps(ex["ws_subscribe_error"]), 1)
    assert isinstance(err, VenueNotice) and err.kind == "error" and err.detail["code"] == "60012"
    n = a.parse_frame(json.dumps(ex["ws_notice_service_upgrade"]), 1)
    assert isinstance(n, VenueNotice) and n.kind == "server_shutdown"
    for other in ("ws_books5", "ws_trades_all_business_endpoint"):  # bbo-tbt is a quote (test_adapter_kinds)
        with pytest.raises(UnknownFrame):
            okx("BTC-USDT", "BCH-USDT-SWAP").parse_frame(json.dumps(ex[other]), 1)
    r = a.parse_snapshot("BTC-USDT", json.dumps(ex["rest_books_response"]).encode(), 1)
    assert r.last_id == 3235851742 and r.bids == [(41006.3, 0.30178218)] and r.asks == [(41006.8, 0.60038921)]


def test_pong_is_text_and_checked_before_json():
    a = okx("BTC-USDT")
    assert a.parse_frame(b"pong", 1) is None and a.parse_frame("pong", 1) is None
    with pytest.raises(MalformedFrame):
        a.parse_frame(b"ping pong", 1)


def test_check_rule_prevseqid_chain():
    def ev(seq, prev):
        return DepthDiff("BTC-USDT", seq, seq, prev, [], [], 0, 0)
    check = OkxAdapter.check
    assert check(ev(11, 10), 10, True) == APPLY
    assert check(ev(10, 10), 10, False) == APPLY      # heartbeat
    assert check(ev(3, 10), 10, False) == APPLY       # seq reset after maintenance
    assert check(ev(12, 11), 10, False) == GAP        # missed one
    assert check(ev(11, 10), 11, False) == GAP        # duplicate / reordered
    assert check(ev(5, -1), 4, False) == APPLY        # pre-seqId frames: order + checksum


def test_frames_without_seqid_get_local_ids_and_prev_minus_one():
    a = okx("BTC-USDT")
    s = a.parse_frame(books("snapshot", bids=[("1", "1", "0", "1")], seq=None, prev=None).replace(
        ',"prevSeqId": null, "seqId": null', ""), 1)
    d1 = a.parse_frame(books(bids=[("1", "2", "0", "1")]).replace(', "prevSeqId": 1, "seqId": 2', ""), 1)
    d2 = a.parse_frame(books(bids=[("1", "3", "0", "1")]).replace(', "prevSeqId": 1, "seqId": 2', ""), 1)
    assert s.last_id == 0 and (d1.last_id, d1.prev_id) == (1, -1) and (d2.last_id, d2.prev_id) == (2, -1)


def test_checksum_uses_the_original_text_and_follows_updates():
    a = okx("BTC-USDT")
    # "8477.0" and "0.10": trailing zeros the floats lose, the checksum keeps
    snap = a.parse_frame(books("snapshot", bids=[("8476.90", "0.10", "0", "1"), ("8476", "2", "0", "1")],
                               asks=[("8477.0", "7", "0", "2")], seq=10, prev=-1, checksum=1), 1)
    book = ViewBook(25)
    book.load_snapshot(snap.bids, snap.asks)
    assert a.checksum("BTC-USDT", book) == crc32_signed("8476.90:0.10:8477.0:7:8476:2")
    d = a.parse_frame(books(bids=[("8476", "0", "0", "0")], asks=[("8478.50", "1.50", "0", "1")],
                            seq=11, prev=10, checksum=1), 2)
    book.apply(d.bids, d.asks)
    assert a.checksum("BTC-USDT", book) == crc32_signed("8476.90:0.10:8477.0:7:8478.50:1.50")
    # a level the book has but no frame ever gave: a mismatch, not an exception
    book.apply([(8470.0, 1.0)], [])
    assert a.checksum("BTC-USDT", book) != crc32_signed("8476.90:0.10:8477.0:7:8478.50:1.50:8470:1")
    # a new connection forgets the texts until the next snapshot
    a.connection_opened(StreamGroup(a.ws_url, "depth", ("BTC-USDT",)))
    assert a._texts["BTC-USDT"] is None


def test_checksum_string_interleaves_and_leaves_out_missing_entries():
    assert checksum_string(["b1"], ["a1", "a2", "a3"]) == "b1:a1:a2:a3"
    assert checksum_string(["b1", "b2"], ["a1"]) == "b1:a1:b2"
    assert crc32_signed("3366.1:7:3366.8:9:3366:6:3368:8") == -1881014294


def test_no_text_bookkeeping_while_the_venue_sends_checksum_zero():
    a = okx("BTC-USDT")
    a.parse_frame(books("snapshot", bids=[("1", "1", "0", "1")], seq=1, prev=-1), 1)
    a.parse_frame(books(bids=[("2", "1", "0", "1")], seq=2, prev=1), 1)
    assert a._texts["BTC-USDT"] is None


def test_number_levels_parse_without_checksum_and_are_malformed_with_one():
    """Numbers instead of strings carry no original text: fine while OKX sends checksum 0
    (the float fast path), malformed while a checksum must be computed on the text."""
    a = okx("BTC-USDT")
    a.parse_frame(books("snapshot", bids=[("1", "1", "0", "1")], seq=1, prev=-1), 1)
    assert a.parse_frame(books(asks=[(11.5, "1", "0", "1")], seq=2, prev=1), 1).asks == [(11.5, 1.0)]
    a.parse_frame(books("snapshot", bids=[("1", "1", "0", "1")], seq=1, prev=-1, checksum=5), 1)
    with pytest.raises(MalformedFrame):
        a.parse_frame(books(asks=[(11.5, "1", "0", "1")], seq=2, prev=1, checksum=5), 1)


def test_stream_groups_bound_channels_per_connection_and_request_size():
    syms = tuple(f"C{i}-USDT-SWAP" for i in range(60))
    a = okx(*syms, channels=("trades", "book"))
    groups = a.stream_groups()
    depth = [g for g in groups if g.kind == "depth"]
    trades = [g for g in groups if g.kind == "trades"]
    assert [len(g.symbols) for g in depth] == [25, 25, 10] and [len(g.symbols) for g in trades] == [60]
    for g in groups:
        channel = "books" if g.kind == "depth" else "trades"
        reqs = [json.loads(f) for f in g.subscribe]
        assert all(r["op"] == "subscribe" and len(json.dumps(r["args"])) < 64 * 1024 for r in reqs)
        assert [x for r in reqs for x in r["args"]] == [{"channel": channel, "instId": s} for s in g.symbols]
    big = okx(*syms, streams_per_connection=2000)
    assert all(len(f) < 64 * 1024 for g in big.stream_groups() for f in g.subscribe)
    unsub, sub = a.resubscribe("C7-USDT-SWAP")
    assert json.loads(unsub)["op"] == "unsubscribe" and json.loads(sub)["op"] == "subscribe"
    assert json.loads(sub)["args"] == [{"channel": "books", "instId": "C7-USDT-SWAP"}]


def test_rest_snapshot_request_and_errors():
    a = okx("BTC-USDT", rest_url="http://127.0.0.1:9")
    req = a.snapshot_request("BTC-USDT")
    assert req.url == "http://127.0.0.1:9/api/v5/market/books?instId=BTC-USDT&sz=400" and req.weight == 1
    with pytest.raises(MalformedFrame) as ei:
        a.parse_snapshot("BTC-USDT", b'{"code":"51001","msg":"Instrument ID does not exist","data":[]}', 1)
    assert ei.value.symbol == "BTC-USDT"
    with pytest.raises(MalformedFrame):
        a.parse_snapshot("BTC-USDT", b'{"code":"0","data":[{"asks":[["1","x","0","1"]],"bids":[],"ts":"1"}]}', 1)


@pytest.mark.parametrize("frame", [
    books(bids=[("10", "-1", "0", "1")]),
    books(bids=[("0", "1", "0", "1")]),
    books(asks=[("nan", "1", "0", "1")]),
    books(asks=[("11", "inf", "0", "1")]),
    books(asks=[("11", "1e999", "0", "1")]),
    books(asks=[("11",)]),
    books(asks=[("11", "abc", "0", "1")]),
    books(action="partial"),
    books(seq="x"),
    books().replace('"data": [{', '"data": [[{').replace("}]}", "}]]}"),
    books().replace('"data": [{', '"data": {').replace("}]}", "}}"),
    books().replace('"ts": "1700000000000"', '"ts": null'),
    '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[]}',
    '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"tradeId":"1","px":"1","sz":"1","side":"x","ts":"1"}]}',
    '{"arg":{"channel":"trades","instId":"BTC-USDT"},'
    '"data":[{"tradeId":"1","px":"-1","sz":"1","side":"buy","ts":"1"}]}',
    '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"px":"1","sz":"1","side":"buy","ts":"1"}]}',
])
def test_malformed_frames_raise_malformed_with_the_symbol(frame):
    with pytest.raises(MalformedFrame) as ei:
        okx("BTC-USDT").parse_frame(frame, 1)
    assert ei.value.symbol == "BTC-USDT"


@pytest.mark.parametrize("frame", ["not json", "[1]", "", "null", '{"arg":5,"data":[]}'])
def test_garbage_is_malformed(frame):
    with pytest.raises(MalformedFrame):
        okx("BTC-USDT").parse_frame(frame, 1)


@pytest.mark.parametrize("frame", [
    books(inst="ETH-USDT"),
    books(channel="tickers"),
    '{"op":"subscribe","args":[]}',
])
def test_unknown_frames_raise_unknown(frame):
    with pytest.raises(UnknownFrame):
        okx("BTC-USDT").parse_frame(frame, 1)
