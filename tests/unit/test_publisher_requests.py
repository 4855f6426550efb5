"""Client requests on :9001: every bad input is a RequestError with a message, good ones get defaults."""

from __future__ import annotations

import json

import pytest

from pipeline.config import parse_config
from publisher.requests import Mode, Ping, RequestError, Subscribe, Unsubscribe, parse_request
from publisher.settings import load_settings

CONFIG = """
[pipeline]
run_dir = "r"
[exchanges.sim]
symbols = ["BTCUSDT", "ETHUSDT"]
adapter = "binance"
depth = 20
[exchanges.okx]
adapter = "binance"
symbols = ["BTC-USDT"]
[publisher]
max_request_bytes = 300
default_depth = 10
"""


@pytest.fixture
def settings(tmp_path):
    return load_settings(parse_config(CONFIG, tmp_path), environ={})


def req(settings, **obj):
    return parse_request(json.dumps(obj), settings)


def test_subscribe_defaults_to_all_symbols_both_channels_snapshots_at_default_depth(settings):
    r = req(settings, op="subscribe", exchange="sim", id=7)
    assert isinstance(r, Subscribe)
    assert r.symbols == ("BTCUSDT", "ETHUSDT") and r.trades and r.book
    assert r.mode is Mode.SNAPSHOTS and r.depth == 10 and r.throttle_ms == 100 and r.id == 7


def test_subscribe_names_symbols_channels_depth_mode(settings):
    r = req(settings, op="subscribe", exchange="sim", symbols=["ETHUSDT", "ETHUSDT"], channels=["book"],
            depth=20, mode="deltas")
    assert r.symbols == ("ETHUSDT",) and not r.trades and r.book and r.depth == 20 and r.mode is Mode.DELTAS
    assert req(settings, op="subscribe", exchange="okx").throttle_ms == 150  # venue default for OKX
    assert req(settings, op="subscribe", exchange="sim", throttle_ms=250).throttle_ms == 250


def test_unsubscribe_and_ping(settings):
    from publisher.requests import OTHER_CHANNELS
    assert req(settings, op="unsubscribe") == Unsubscribe(None, None, None, True, True, frozenset(OTHER_CHANNELS))
    u = req(settings, op="unsubscribe", exchange="sim", symbols=["BTCUSDT"], channels=["trades"])
    assert u.exchange == "sim" and u.symbols == ("BTCUSDT",) and u.trades and not u.book
    assert req(settings, op="ping", id="a") == Ping("a")


@pytest.mark.parametrize("frame,message", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"op": "fly"}', "unknown op 'fly'"),
    ('{"id": 1}', "unknown op None"),
    ('{"op": "ping", "colour": 1}', "unknown field 'colour'"),
    ('{"op": "ping", "id": [1]}', "id: expected a string or an integer"),
    ('{"op": "subscribe"}', "exchange: required"),
    ('{"op": "subscribe", "exchange": "nyse"}', "unknown exchange 'nyse'"),
    ('{"op": "subscribe", "exchange": "sim", "symbols": ["DOGEUSDT"]}', "unknown symbol 'DOGEUSDT' on sim"),
    ('{"op": "subscribe", "exchange": "sim", "symbols": []}', "symbols: expected a non-empty list"),
    ('{"op": "subscribe", "exchange": "sim", "symbols": "BTCUSDT"}', "symbols: expected a non-empty list"),
    ('{"op": "subscribe", "exchange": "sim", "channels": ["quote"]}', "unknown channel 'quote'"),
    ('{"op": "subscribe", "exchange": "sim", "depth": 21}', "depth: expected an integer from 1 to 20"),
    ('{"op": "subscribe", "exchange": "sim", "depth": true}', "depth: expected an integer"),
    ('{"op": "subscribe", "exchange": "sim", "mode": "fast"}', 'mode: expected "snapshots" or "deltas"'),
    ('{"op": "subscribe", "exchange": "sim", "throttle_ms": 1}', "throttle_ms: expected an integer from 10"),
    ('{"op": "subscribe", "exchange": "sim", "mode": "deltas", "throttle_ms": 100}', "applies to mode"),
    ('{"op": "unsubscribe", "symbols": ["BTCUSDT"]}', "symbols: name the exchange too"),
    ('{"op": "ping", "id": "' + "x" * 400 + '"}', "request too large"),
])
def test_bad_requests_name_the_problem(settings, frame, message):
    with pytest.raises(RequestError) as info:
        parse_request(frame, settings)
    assert message in str(info.value)


def test_binary_frames_are_refused(settings):
    with pytest.raises(RequestError, match="binary frame"):
        parse_request(b'{"op": "ping"}', settings)


def test_error_keeps_the_request_id_when_it_was_readable(settings):
    with pytest.raises(RequestError) as info:
        parse_request('{"op": "subscribe", "exchange": "nyse", "id": "s1"}', settings)
    assert info.value.request_id == "s1"


def test_size_limit_counts_utf8_bytes(settings):
    frame = '{"op": "ping", "id": "' + "é" * 140 + '"}'  # 162 characters, 302 bytes
    assert len(frame) < 300 < len(frame.encode())
    with pytest.raises(RequestError, match="request too large: 304 bytes"):
        parse_request(frame, settings)


def test_deeply_nested_json_is_a_request_error(tmp_path):
    # issue 19 item 7: a 2 KB nested request raised RecursionError (the client closed with 1011)
    settings = load_settings(parse_config(CONFIG.replace("max_request_bytes = 300", "max_request_bytes = 8192"),
                                          tmp_path), environ={})
    for frame in ("[" * 1000 + "]" * 1000, '{"op": "ping", "id": ' + "[" * 3000 + "]" * 3000 + "}"):
        with pytest.raises(RequestError, match="nested too deeply"):
            parse_request(frame, settings)
