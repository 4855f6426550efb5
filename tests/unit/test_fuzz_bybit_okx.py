"""Hypothesis fuzz of the pure Bybit and OKX adapters (docs/adapters.md "Tests every
adapter has"): truncated, reordered, duplicated, dropped and type-mangled frames
(numbers as strings and back, missing keys, nulls, negative/NaN/inf values, wrong
nesting) never raise anything but MalformedFrame/UnknownFrame; every event that does
come out has finite positive prices and finite non-negative sizes; and fed through the
real feed (tests/feeds.py FeedRun: FeedBooks.receive into shared memory) a live book
never holds a bad level and is never crossed unless the checksum or the crossed-book
check flagged it (and then it is not live, in the feed nor in shared memory)."""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captures import CAPTURES, SAMPLES, SHARED, read_capture
from ingest.adapters.bybit import BybitSpotAdapter
from ingest.adapters.okx import OkxAdapter
from ingest.events import DepthDiff, DepthSnapshot, TradeEvent
from pipeline.config import ExchangeConfig
from pipeline.errors import MalformedFrame, UnknownFrame
from feeds import FeedRun
from pipeline.shm import BookState

if not SHARED.is_dir():  # the base frames are real traffic from ../shared (marker "shared" elsewhere)
    pytest.skip(f"shared data folder {SHARED} not present", allow_module_level=True)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------ base frames


def _bybit_frames() -> list[str]:
    rows = read_capture(SAMPLES / "bybit" / "gocryptotrader_spot_frames.capture.jsonl")[1]
    out = [e["data"] for e in rows if e["src"] == "ws"]
    for k in range(2, 8):  # chained deltas after the real ones
        out.append(json.dumps({"topic": "orderbook.50.BTCUSDT", "ts": 1731035685345 + k, "type": "delta",
                               "data": {"s": "BTCUSDT", "b": [[f"75848.{k}", "0.5"], ["75848.74", "0"]],
                                        "a": [[f"75849.{k}", "0.25"]], "u": 2876699 + k, "seq": k},
                               "cts": 1731035685342 + k}))
    out.append('{"success":false,"ret_msg":"bad","conn_id":"c","req_id":"1","op":"subscribe"}')
    return out


def _okx_frames() -> list[str]:
    rows = read_capture(CAPTURES / "okx_2022-05-13.jsonl")[1]
    ws = [e["data"] for e in rows if e["src"] == "ws"]
    uni = [d for d in ws if '"UNI-USD-SWAP"' in d and '"books"' in d and '"action"' in d][:12]
    trades = [d for d in ws if '"channel":"trades"' in d and '"data"' in d][:3]
    modern = []
    for k, (seq, prev) in enumerate([(100, -1), (101, 100), (101, 101), (5, 101), (6, 5)]):
        modern.append(json.dumps({"arg": {"channel": "books", "instId": "BTC-USDT"},
                                  "action": "snapshot" if k == 0 else "update",
                                  "data": [{"asks": [[f"10.{k + 1}", "3", "0", "1"]],
                                            "bids": [[f"9.{k}", "2", "0", "1"]],
                                            "ts": "1700000000000", "checksum": 0, "prevSeqId": prev, "seqId": seq}]}))
    return uni + trades + modern + ["pong", '{"event":"notice","code":"64008","msg":"x"}',
                                    '{"event":"error","code":"60012","msg":"x"}']


BYBIT = _bybit_frames()
OKX = _okx_frames()
BYBIT_SYMS = ("BTCUSDT",)
OKX_SYMS = ("UNI-USD-SWAP", "BTC-USDT", "BTC-USD-220527")


def bybit():
    return BybitSpotAdapter(ExchangeConfig(name="bybit", adapter="bybit", symbols=BYBIT_SYMS,
                                           depth_stream="orderbook.50"))


def okx():
    return OkxAdapter(ExchangeConfig(name="okx", adapter="okx", symbols=OKX_SYMS))


# -------------------------------------------------------------------- mutation

REPLACEMENTS = [None, "", "0", "-1", "-0.5", "NaN", "nan", "inf", "-inf", "1e999", "abc", 0, -1, -1.5, 1e308,
                2**70, -(2**70), True, False, [], {}, [[]], [["1"]], "1", 1, 1.5, "9" * 40]


def _draw_path(obj, data) -> tuple:
    """A random path into the JSON tree: descend one random child at a time (O(depth) draws)."""
    path = ()
    while isinstance(obj, (dict, list)) and obj and data.draw(st.integers(0, 3), label="descend"):
        keys = list(obj) if isinstance(obj, dict) else range(len(obj))
        key = keys[data.draw(st.integers(0, len(keys) - 1), label="child")]
        path += (key,)
        obj = obj[key]
    return path


def _swap_type(v):
    """Numbers as strings and strings as numbers."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return 0
    return v


def mutate_json(text: str, data) -> str:
    obj = json.loads(text)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = _draw_path(obj, data)
        op = data.draw(st.sampled_from(["replace", "swap_type", "delete", "wrap", "unwrap", "negate"]), label="op")
        if not path:
            if op == "wrap":
                obj = [obj]
            continue
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        v = parent[key]
        if op == "replace":
            # a copy: a later mutation inside a list/dict must not change REPLACEMENTS itself
            parent[key] = copy.deepcopy(data.draw(st.sampled_from(REPLACEMENTS), label="value"))
        elif op == "swap_type":
            parent[key] = _swap_type(v)
        elif op == "delete":
            del parent[key]
        elif op == "wrap":
            parent[key] = [v]
        elif op == "unwrap" and isinstance(v, list) and v:
            parent[key] = v[0]
        elif op == "negate" and isinstance(v, str) and v[:1].isdigit():
            parent[key] = "-" + v
    return json.dumps(obj, allow_nan=True)


def mangle(frame: str, data) -> str | bytes:
    kind = data.draw(st.sampled_from(["json", "json", "json", "truncate", "bytes", "same"]), label="kind")
    if kind == "same":
        return frame
    if kind == "truncate":
        return frame[:data.draw(st.integers(0, max(0, len(frame) - 1)), label="cut")]
    if kind == "bytes":
        raw = bytearray(frame.encode())
        i = data.draw(st.integers(0, len(raw)), label="at")
        raw[i:i] = data.draw(st.binary(min_size=1, max_size=4), label="junk")
        return bytes(raw)
    try:
        return mutate_json(frame, data)
    except ValueError:  # "pong" is not JSON
        return frame


def stream(frames: list[str], data) -> list:
    """Reorder, duplicate, drop and mangle a frame list."""
    out = list(frames)
    for _ in range(data.draw(st.integers(0, 4), label="edits")):
        if not out:
            break
        i = data.draw(st.integers(0, len(out) - 1), label="i")
        j = data.draw(st.integers(0, len(out) - 1), label="j")
        op = data.draw(st.sampled_from(["swap", "dup", "drop", "mangle", "mangle"]), label="edit")
        if op == "swap":
            out[i], out[j] = out[j], out[i]
        elif op == "dup":
            out.insert(j, out[i])
        elif op == "drop":
            del out[i]
        else:
            out[i] = mangle(out[i] if isinstance(out[i], str) else out[i].decode("utf-8", "replace"), data)
    return out


# ------------------------------------------------------------------- invariants


def _good_levels(levels) -> bool:
    return all(isinstance(p, float) and isinstance(q, float) and 0.0 < p < math.inf and 0.0 <= q < math.inf
               for p, q in levels)


def parse_safely(adapter, frame):
    try:
        ev = adapter.parse_frame(frame, 1)
    except (MalformedFrame, UnknownFrame):
        return
    for e in ev if isinstance(ev, list) else [ev]:
        if isinstance(e, (DepthDiff, DepthSnapshot)):
            assert _good_levels(e.bids) and _good_levels(e.asks), e
        elif isinstance(e, TradeEvent):
            assert 0.0 < e.price < math.inf and 0.0 < e.amount < math.inf and e.side in ("buy", "sell"), e


def check_books(feed: FeedRun) -> None:
    for sym in feed.symbols:
        view, _ = feed.shm(sym)
        if view.state is BookState.LIVE and len(view.bids) and len(view.asks):
            assert view.bids[0][0] < view.asks[0][0], sym   # never published live and crossed
        if not feed.live(sym):
            continue
        book = feed.book(sym)
        for side in (book.bids, book.asks):
            assert all(0.0 < p < math.inf for p in side.prices), (sym, side.prices)
            assert all(0.0 < s < math.inf for s in side.sizes), (sym, side.sizes)
        assert not book.is_crossed(), sym   # a crossed book is flagged and not live


def run_stream(adapter, symbols, frames):
    """The frames through the real feed; the checks after each.  The caller closes it."""
    feed = FeedRun(adapter, symbols, exchange="fz")
    try:
        for f in frames:
            parse_safely(adapter, f)       # the pure adapter on its own (state updates twice: harmless)
            feed.frame(f)
            check_books(feed)
    except BaseException:
        feed.close()
        raise
    return feed


# ------------------------------------------------------------------------ tests


@FUZZ
@given(st.data())
def test_bybit_mangled_frames_raise_only_venue_errors(data):
    a = bybit()
    parse_safely(a, mangle(data.draw(st.sampled_from(BYBIT), label="frame"), data))


@FUZZ
@given(st.data())
def test_okx_mangled_frames_raise_only_venue_errors(data):
    a = okx()
    parse_safely(a, mangle(data.draw(st.sampled_from(OKX), label="frame"), data))


@FUZZ
@given(st.data())
def test_bybit_mangled_streams_never_publish_a_bad_or_crossed_book(data):
    run_stream(bybit(), BYBIT_SYMS, stream(BYBIT, data)).close()


@FUZZ
@given(st.data())
def test_okx_mangled_streams_never_publish_a_bad_or_crossed_book(data):
    with run_stream(okx(), OKX_SYMS, stream(OKX, data)) as feed:
        # every malformed frame that named its symbol was counted, never raised
        assert all(feed.counts(s).malformed >= 0 for s in OKX_SYMS)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(raw):
    parse_safely(bybit(), raw)
    parse_safely(okx(), raw)
    parse_safely(bybit(), b'{"topic":"orderbook.50.BTCUSDT",' + raw)
    parse_safely(okx(), b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":' + raw)


def test_unmangled_streams_stay_live_and_clean():
    """The fuzz bases themselves are good streams: no gap, no checksum failure."""
    with run_stream(bybit(), BYBIT_SYMS, BYBIT) as fb:
        assert fb.live("BTCUSDT") and fb.counts("BTCUSDT").gaps == 0
    with run_stream(okx(), OKX_SYMS, OKX) as fo:
        assert fo.live("UNI-USD-SWAP") and fo.counts("UNI-USD-SWAP").checksum_ok == 12
        assert fo.live("BTC-USDT") and fo.counts("BTC-USDT").gaps == 0
        assert fo.counts("UNI-USD-SWAP").checksum_failed == 0


def test_a_mangled_okx_level_with_checksums_is_a_mismatch_not_a_bad_book():
    frames = list(OKX)
    msg = json.loads(frames[3])
    lv = (msg["data"][0]["bids"] or msg["data"][0]["asks"])[0]
    lv[1] = lv[1] + "1"   # still a valid number: only the checksum can tell
    frames[3] = json.dumps(msg)
    with run_stream(okx(), OKX_SYMS, frames) as feed:
        assert feed.counts("UNI-USD-SWAP").checksum_failed == 1 and "UNI-USD-SWAP" in feed.resubscribes
