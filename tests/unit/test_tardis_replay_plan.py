"""Replay server logic without sockets (pipeline/sim/replay.py): which frames, to whom, when; REST bodies."""

import json
import subprocess
import sys

import pytest

from captures import CAPTURES
from pipeline.sim.replay import CaptureError, Cursor, ReplayPlan, requested_streams, stream_of, subscribe_request

SPOT = CAPTURES / "binance_spot_2021-10-12.jsonl"


def _lines(*events, header=None):
    head = header or {"format": "pipeline-capture/1", "exchange": "x", "adapter": "binance"}
    return [json.dumps(head)] + [json.dumps(e) for e in events]


def _ws(ts, stream, n, url="wss://venue/stream?streams=a"):
    return {"ts": ts, "src": "ws", "url": url, "data": json.dumps({"stream": stream, "data": {"n": n}})}


def test_stream_names_come_from_the_url_and_from_frames():
    assert requested_streams("/stream", "streams=btcusdt@depth@100ms/btcusdt@bookTicker") == \
        {"btcusdt@depth@100ms", "btcusdt@bookTicker".lower()}
    assert requested_streams("/ws/ethusdt@trade/ethusdt@aggTrade", "") == {"ethusdt@trade", "ethusdt@aggtrade"}
    assert stream_of('{"stream":"BTCUSDT@aggTrade","data":{}}') == "btcusdt@aggtrade"
    assert stream_of('{"e":"trade"}') is None


def test_subscribe_requests_are_understood():
    assert subscribe_request('{"method":"SUBSCRIBE","params":["a@trade"],"id":3}') == ("SUBSCRIBE", ["a@trade"], 3)
    assert subscribe_request('{"method":"LIST_SUBSCRIPTIONS","id":1}') is None
    assert subscribe_request("not json") is None


def test_client_gets_only_its_streams_in_recorded_order():
    plan = ReplayPlan.from_lines(_lines(_ws(1.0, "a@depth", 1), _ws(1.1, "b@depth", 2), _ws(1.2, "a@trade", 3),
                                        _ws(1.3, "a@depth", 4)))
    cur = Cursor(plan, {"a@depth", "a@trade"}, "/stream?streams=x", rate=0)
    frames, wait = cur.due(0.0, 100)
    assert [json.loads(f)["data"]["n"] for f in frames] == [1, 3, 4] and wait is None


def test_frames_are_paced_by_recorded_time_over_rate():
    plan = ReplayPlan.from_lines(_lines(_ws(10.0, "a", 1), _ws(11.0, "a", 2), _ws(13.0, "a", 3)))
    cur = Cursor(plan, {"a"}, "", rate=2.0)  # twice as fast: due at 0, 0.5, 1.5 s
    frames, wait = cur.due(0.0, 100)
    assert len(frames) == 1 and wait == pytest.approx(0.5)
    frames, wait = cur.due(0.6, 100)
    assert len(frames) == 1 and wait == pytest.approx(0.9)
    frames, wait = cur.due(2.0, 100)
    assert len(frames) == 1 and wait is None


def test_frames_without_a_stream_name_go_to_clients_of_the_recorded_url():
    raw = {"ts": 1.0, "src": "ws", "url": "wss://venue:9443/ws/a@trade", "data": '{"e":"trade"}'}
    plan = ReplayPlan.from_lines(_lines(raw))
    assert Cursor(plan, set(), "/ws/a@trade", 0).due(0, 10)[0] == ['{"e":"trade"}']
    assert Cursor(plan, set(), "/ws/b@trade", 0).due(0, 10)[0] == []


def test_rest_answers_the_latest_body_recorded_for_path_and_query():
    plan = ReplayPlan.from_lines(_lines(
        {"ts": 1, "src": "rest", "url": "https://api/api/v3/depth?symbol=A&limit=1000", "data": "old"},
        {"ts": 2, "src": "rest", "url": "https://api/api/v3/depth?symbol=A&limit=1000", "data": "new"},
    ))
    assert plan.rest_body("/api/v3/depth", "limit=1000&symbol=A") == "new"  # any parameter order
    assert plan.rest_body("/api/v3/depth", [("symbol", "A"), ("limit", "1000")]) == "new"
    assert plan.rest_body("/api/v3/depth", "symbol=B&limit=1000") is None


def test_a_file_that_is_not_a_capture_is_refused():
    with pytest.raises(CaptureError):
        ReplayPlan.from_lines(['{"format": "something-else"}'])
    with pytest.raises(CaptureError):
        ReplayPlan.from_lines(_lines({"ts": 1}))


@pytest.mark.shared
def test_real_capture_serves_each_symbol_its_depth_and_the_snapshot_the_ingest_asks_for():
    plan = ReplayPlan.load(SPOT)
    assert plan.header["adapter"] == "binance"
    cur = Cursor(plan, requested_streams("/stream", "streams=nknusdt@depth@100ms/nknusdt@bookTicker"), "", 0)
    frames, _ = cur.due(0, 10_000)
    assert frames and all(stream_of(f) in ("nknusdt@depth@100ms", "nknusdt@bookticker") for f in frames)
    body = json.loads(plan.rest_body("/api/v3/depth", "symbol=NKNUSDT&limit=1000"))
    assert body["lastUpdateId"] == 499869752


def test_replay_command_refuses_a_file_that_is_not_a_capture(tmp_path):
    bad = tmp_path / "notes.jsonl"
    bad.write_text('{"hello": "world"}\n')
    out = subprocess.run([sys.executable, "-m", "pipeline", "replay", str(bad)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 2 and "not a pipeline-capture/1 capture" in out.stderr
