"""``pipeline sim`` over real sockets: Binance spot streams, REST and the fault switches.

The sim runs in a subprocess on loopback (port 0, the port read from its ready file) and is
killed by PID in teardown. Clients are the real ``websockets`` and ``aiohttp`` libraries; the
book is synced by the Binance spot rules of shared/docs/exchange-protocols.md §1.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
RECV_TIMEOUT = 5.0


class SimProcess:
    """``run(SimOptions(...))`` in a child process; ``stop()`` sends SIGTERM to its PID."""

    def __init__(self, directory: Path, **options: Any):
        ready = directory / "sim.port"
        args = "".join(f", {k}={v!r}" for k, v in options.items())
        code = ("from pipeline.sim.server import SimOptions, run; "
                f"run(SimOptions(port=0, ready_file={str(ready)!r}{args}))")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self.stderr = open(directory / "sim.stderr", "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr)
        deadline = time.monotonic() + 20
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"sim did not start: {(directory / 'sim.stderr').read_text()}")
            time.sleep(0.02)
        self.port = int(ready.read_text())
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"

    def stop(self) -> int:
        """SIGTERM, then wait for the exit code (kill if it hangs)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            self.stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.http + path, timeout=5) as response:
            return json.load(response)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    process = SimProcess(tmp_path_factory.mktemp("sim"), rate=300.0, levels=200, ping_interval=1.0)
    try:
        yield process
    finally:
        assert process.stop() == 0  # SIGTERM is a clean shutdown


@pytest.fixture(autouse=True)
def clear_faults(request):
    yield
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").get_json("/sim/fault?name=clear")


# -- helpers ---------------------------------------------------------------------------


async def recv_json(ws, timeout: float = RECV_TIMEOUT) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def fault(sim: SimProcess, **params: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(sim.http + "/sim/fault", json=params) as response:
            assert response.status == 200, await response.text()
            return await response.json()


async def rest_depth(session: aiohttp.ClientSession, sim: SimProcess, limit: int = 5000,
                     symbol: str = "BTCUSDT") -> dict[str, Any]:
    async with session.get(f"{sim.http}/api/v3/depth", params={"symbol": symbol, "limit": limit}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def check_chain(events: list[dict[str, Any]]) -> None:
    """Each diff's U is the previous u + 1 (§1: normal flow)."""
    for prev, event in zip(events, events[1:]):
        assert event["U"] == prev["u"] + 1, (prev, event)
        assert event["U"] <= event["u"]


class SyncedBook:
    """A dict book synced by the Binance spot rules (§1 sync algorithm, steps 4-6)."""

    def __init__(self, snapshot: dict[str, Any]):
        self.last_id = snapshot["lastUpdateId"]
        self.sides = {"b": dict(snapshot["bids"]), "a": dict(snapshot["asks"])}
        self.live = False

    def apply(self, event: dict[str, Any]) -> bool:
        """Apply one diff; False when it is already covered by the book."""
        if event["u"] <= self.last_id:
            return False
        if not self.live:
            assert event["U"] <= self.last_id + 1 <= event["u"], "first event must straddle the snapshot"
            self.live = True
        else:
            assert event["U"] == self.last_id + 1, "gap in the diff stream"
        for side in ("b", "a"):
            for price, size in event[side]:
                if Decimal(size) == 0:
                    self.sides[side].pop(price, None)
                else:
                    self.sides[side][price] = size
        self.last_id = event["u"]
        return True

    def levels(self, side: str) -> list[list[str]]:
        ordered = sorted(self.sides[side].items(), key=lambda kv: Decimal(kv[0]), reverse=side == "b")
        return [[p, q] for p, q in ordered]

    def top(self) -> tuple[str, str, str, str]:
        (bid, bid_qty), (ask, ask_qty) = self.levels("b")[0], self.levels("a")[0]
        return bid, bid_qty, ask, ask_qty


# -- streams ---------------------------------------------------------------------------


def test_combined_stream_delivers_contiguous_diffs_trades_and_book_tickers(sim):
    async def scenario():
        names = ["btcusdt@depth@100ms", "btcusdt@trade", "btcusdt@aggTrade", "btcusdt@bookTicker"]
        got: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        async with websockets.connect(f"{sim.ws}/stream?streams={'/'.join(names)}") as ws:
            while min(len(v) for v in got.values()) < 4:
                frame = await recv_json(ws)
                assert set(frame) == {"stream", "data"}
                got[frame["stream"]].append(frame["data"])
        diffs = got["btcusdt@depth@100ms"]
        assert all(d["e"] == "depthUpdate" and d["s"] == "BTCUSDT" for d in diffs)
        check_chain(diffs)
        for d in diffs:
            for price, size in d["b"] + d["a"]:
                assert len(price.split(".")[1]) == 8 and len(size.split(".")[1]) == 8
        trades = got["btcusdt@trade"]
        assert [t["t"] for t in trades] == list(range(trades[0]["t"], trades[0]["t"] + len(trades)))
        assert all(t["e"] == "trade" and isinstance(t["m"], bool) and t["M"] is True for t in trades)
        aggs = got["btcusdt@aggTrade"]
        assert [a["a"] for a in aggs] == list(range(aggs[0]["a"], aggs[0]["a"] + len(aggs)))
        assert all(a["f"] <= a["l"] for a in aggs)
        tickers = got["btcusdt@bookTicker"]
        assert all(Decimal(t["b"]) < Decimal(t["a"]) for t in tickers)
        assert [t["u"] for t in tickers] == sorted({t["u"] for t in tickers})

    asyncio.run(scenario())


def test_subscribe_on_raw_ws_is_acknowledged_then_raw_frames_follow(sim):
    async def scenario():
        async with websockets.connect(f"{sim.ws}/ws") as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@depth@0ms"], "id": 1}))
            assert await recv_json(ws) == {"result": None, "id": 1}
            events = [await recv_json(ws) for _ in range(5)]
            assert all(e["e"] == "depthUpdate" and e["s"] == "ETHUSDT" and e["U"] == e["u"] for e in events)
            check_chain(events)
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
            await ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 3}))
            await ws.send("{not json")
            await ws.send(json.dumps({"method": "FROB", "id": 4}))
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["nosuch@trade"], "id": 5}))
            await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["ethusdt@depth@0ms"], "id": 6}))
            replies = []
            while len(replies) < 6:
                frame = await recv_json(ws)
                if "id" in frame:
                    replies.append(frame)
            assert replies[0] == {"result": ["ethusdt@depth@0ms"], "id": 2}
            assert replies[1] == {"result": False, "id": 3}
            assert replies[2]["error"]["code"] == 3 and replies[2]["id"] is None
            assert replies[3]["error"]["code"] == 2 and replies[3]["id"] == 4
            assert replies[4]["error"]["code"] == 2 and replies[4]["id"] == 5
            assert replies[5] == {"result": None, "id": 6}

    asyncio.run(scenario())


def test_raw_stream_path_carries_unwrapped_frames(sim):
    async def scenario():
        async with websockets.connect(f"{sim.ws}/ws/btcusdt@bookTicker") as ws:
            frames = [await recv_json(ws) for _ in range(3)]
        assert all(set(f) == {"u", "s", "b", "B", "a", "A"} and f["s"] == "BTCUSDT" for f in frames)

    asyncio.run(scenario())


def test_unknown_stream_in_the_url_is_rejected(sim):
    async def scenario():
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(f"{sim.ws}/stream?streams=dogeusdt@trade"):
                pass
        assert info.value.response.status_code == 400

    asyncio.run(scenario())


def test_server_pings_and_drops_a_client_that_never_pongs(sim):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{sim.ws}/ws", autoping=False) as ws:
                msg = await ws.receive(timeout=RECV_TIMEOUT)
                assert msg.type == aiohttp.WSMsgType.PING
                while msg.type == aiohttp.WSMsgType.PING:  # never answered
                    msg = await ws.receive(timeout=RECV_TIMEOUT)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                assert ws.close_code == 1008

    asyncio.run(scenario())


# -- REST ------------------------------------------------------------------------------


def test_rest_snapshot_syncs_with_the_unthrottled_stream_and_matches_a_later_snapshot(sim):
    async def scenario():
        url = f"{sim.ws}/stream?streams=btcusdt@depth@0ms/btcusdt@bookTicker"
        async with websockets.connect(url) as ws, aiohttp.ClientSession() as session:
            buffered = []
            while len(buffered) < 3:  # step 1: buffer before the snapshot
                frame = await recv_json(ws)
                if frame["stream"] == "btcusdt@depth@0ms":
                    buffered.append(frame["data"])
            snapshot = await rest_depth(session, sim)
            assert snapshot["lastUpdateId"] >= buffered[0]["U"]  # step 3: not older than the stream
            book = SyncedBook(snapshot)
            for event in buffered:
                book.apply(event)
            tickers_checked = 0
            later = None
            while later is None or book.last_id < later["lastUpdateId"] or tickers_checked < 3:
                if later is None and tickers_checked >= 1:
                    later = await rest_depth(session, sim)
                frame = await recv_json(ws)
                data = frame["data"]
                if frame["stream"] == "btcusdt@depth@0ms":
                    book.apply(data)
                    if later is not None and book.last_id == later["lastUpdateId"]:
                        assert book.levels("b") == later["bids"]
                        assert book.levels("a") == later["asks"]
                elif book.live and data["u"] > snapshot["lastUpdateId"]:
                    # bookTicker shares the depth id space: same u, same top of book.
                    assert data["u"] == book.last_id
                    assert book.top() == (data["b"], data["B"], data["a"], data["A"])
                    tickers_checked += 1
            assert later is not None and book.last_id >= later["lastUpdateId"]

    asyncio.run(scenario())


def test_100ms_diffs_sync_and_agree_with_book_ticker_at_the_same_id(sim):
    async def scenario():
        url = f"{sim.ws}/stream?streams=ethusdt@depth@100ms/ethusdt@bookTicker"
        async with websockets.connect(url) as ws, aiohttp.ClientSession() as session:
            buffered: list[dict[str, Any]] = []
            while not buffered:
                frame = await recv_json(ws)
                if frame["stream"].endswith("@depth@100ms"):
                    buffered.append(frame["data"])
            snapshot = await rest_depth(session, sim, symbol="ETHUSDT")
            book = SyncedBook(snapshot)
            last_ticker = None
            compared = 0
            while compared < 5:
                for event in buffered:
                    if book.apply(event) and last_ticker is not None:
                        # The BBO after update u is the last bookTicker with an id <= u:
                        # one goes out for every BBO change, before the diff that holds it.
                        assert last_ticker["u"] <= book.last_id
                        assert book.top() == (last_ticker["b"], last_ticker["B"],
                                              last_ticker["a"], last_ticker["A"])
                        compared += 1
                buffered = []
                frame = await recv_json(ws)
                if frame["stream"].endswith("@bookTicker"):
                    last_ticker = frame["data"]
                else:
                    buffered.append(frame["data"])

    asyncio.run(scenario())


def test_rest_endpoints_answer_like_binance_with_weight_headers(sim):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{sim.http}/api/v3/depth?symbol=BTCUSDT") as r:
                assert r.status == 200
                used = int(r.headers["X-MBX-USED-WEIGHT-1M"])
                assert used >= 5
                body = await r.json()
                assert len(body["bids"]) == 100 and len(body["asks"]) == 100
                assert Decimal(body["bids"][0][0]) < Decimal(body["asks"][0][0])
            for query, code in [("symbol=NOPE", -1121), ("symbol=BTCUSDT&limit=0", -1130),
                                ("symbol=BTCUSDT&limit=5001", -1130), ("symbol=BTCUSDT&limit=abc", -1100),
                                ("", -1102)]:
                async with session.get(f"{sim.http}/api/v3/depth?{query}") as r:
                    assert r.status == 400
                    assert (await r.json())["code"] == code
                    assert "X-MBX-USED-WEIGHT-1M" in r.headers
            async with session.get(f"{sim.http}/api/v3/exchangeInfo") as r:
                info = await r.json()
                assert "X-MBX-USED-WEIGHT-1M" in r.headers
            assert info["timezone"] == "UTC" and isinstance(info["serverTime"], int)
            assert {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                    "limit": 6000} in info["rateLimits"]
            btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
            assert (btc["status"], btc["baseAsset"], btc["quoteAsset"]) == ("TRADING", "BTC", "USDT")
            filters = {f["filterType"]: f for f in btc["filters"]}
            assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
            assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
            async with session.get(f"{sim.http}/api/v3/ping") as r:
                assert await r.json() == {}
            async with session.get(f"{sim.http}/api/v3/time") as r:
                assert isinstance((await r.json())["serverTime"], int)

    asyncio.run(scenario())


def test_sim_state_reports_ids_counts_and_connections(sim):
    async def scenario():
        async with websockets.connect(f"{sim.ws}/ws/btcusdt@trade") as ws:
            await recv_json(ws)
            state = sim.get_json("/sim/state")
        assert state["connections"] >= 1
        assert set(state["symbols"]) == {"BTCUSDT", "ETHUSDT"}
        btc = state["symbols"]["BTCUSDT"]
        assert btc["updates"] > 0 and btc["trades"] > 0
        assert Decimal(btc["best_bid"]) < Decimal(btc["best_ask"])
        assert state["rate"] == 300.0
        later = sim.get_json("/sim/state")["symbols"]["BTCUSDT"]
        assert later["last_update_id"] >= btc["last_update_id"]

    asyncio.run(scenario())


def test_weight_budget_exhausted_gives_429_with_retry_after(tmp_path):
    process = SimProcess(tmp_path, weight_limit=12)
    try:
        async def scenario():
            async with aiohttp.ClientSession() as session:
                for _ in range(10):  # 5 weight each: the 3rd request in a minute is over 12
                    async with session.get(f"{process.http}/api/v3/depth?symbol=ETHUSDT") as r:
                        if r.status == 429:
                            assert int(r.headers["Retry-After"]) >= 1
                            assert (await r.json())["code"] == -1003
                            return
                        assert r.status == 200
                        assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) <= 12
                pytest.fail("no 429 although the weight budget was exceeded")

        asyncio.run(scenario())
    finally:
        assert process.stop() == 0


# -- fault switches --------------------------------------------------------------------


def test_drop_diff_makes_a_gap_on_every_depth_speed_of_that_symbol_only(sim):
    async def scenario():
        names = ["btcusdt@depth@0ms", "btcusdt@depth@100ms", "ethusdt@depth@0ms"]
        seen: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        async with websockets.connect(f"{sim.ws}/stream?streams={'/'.join(names)}") as ws:
            while min(len(v) for v in seen.values()) < 2:
                frame = await recv_json(ws)
                seen[frame["stream"]].append(frame["data"])
            await fault(sim, name="drop_diff", symbol="BTCUSDT")
            gaps: dict[str, int] = {}
            after: dict[str, int] = {n: 0 for n in names}
            while min(after[n] for n in names[:2]) < 3:
                frame = await recv_json(ws)
                stream, event = frame["stream"], frame["data"]
                prev = seen[stream][-1]
                if event["U"] != prev["u"] + 1:
                    assert stream not in gaps, "only one event is dropped"
                    gaps[stream] = event["U"] - prev["u"] - 1
                elif stream in gaps:
                    after[stream] += 1
                seen[stream].append(event)
        assert gaps["btcusdt@depth@0ms"] == 1  # exactly the one dropped update id
        assert gaps["btcusdt@depth@100ms"] >= 1
        assert "ethusdt@depth@0ms" not in gaps

    asyncio.run(scenario())


def test_disconnect_closes_every_connection_with_going_away(sim):
    async def scenario():
        async with websockets.connect(f"{sim.ws}/ws/btcusdt@depth@0ms") as a, \
                websockets.connect(f"{sim.ws}/stream?streams=ethusdt@trade") as b:
            await recv_json(a)
            await recv_json(b)
            await fault(sim, name="disconnect")
            for ws in (a, b):
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await recv_json(ws)
                assert info.value.rcvd is not None and info.value.rcvd.code == 1001

    asyncio.run(scenario())


def test_disconnect_every_closes_connections_periodically(sim):
    async def scenario():
        await fault(sim, name="disconnect_every", seconds=0.3)
        for _ in range(2):  # each new connection is closed too
            async with websockets.connect(f"{sim.ws}/ws/btcusdt@depth@0ms") as ws:
                with pytest.raises(ConnectionClosed):
                    while True:
                        await recv_json(ws)

    asyncio.run(scenario())


def test_stall_delays_frames_and_pongs_without_losing_any(sim):
    async def scenario():
        # max_queue=None: the burst after the stall must not pause reading, or closing waits.
        async with websockets.connect(f"{sim.ws}/ws/btcusdt@depth@0ms", ping_interval=None,
                                      max_queue=None) as ws:
            events = [await recv_json(ws) for _ in range(3)]
            await fault(sim, name="stall", seconds=2.0)
            pong = await ws.ping()
            silent = False
            while not silent:  # frames written before the stall may still be in flight
                try:
                    events.append(await recv_json(ws, timeout=0.5))
                except TimeoutError:
                    silent = True
            assert not pong.done()  # a stuck server answers no ping
            for _ in range(5):
                events.append(await recv_json(ws))
            await asyncio.wait_for(pong, RECV_TIMEOUT)
        check_chain(events)  # delayed, not lost

    asyncio.run(scenario())


def test_malformed_frame_is_not_valid_json_and_only_reaches_that_kind(sim):
    async def scenario():
        async with websockets.connect(f"{sim.ws}/stream?streams=btcusdt@depth@0ms") as depth, \
                websockets.connect(f"{sim.ws}/ws/ethusdt@trade") as trades:
            await recv_json(depth)
            await recv_json(trades)
            await fault(sim, name="malformed", kind="depth")
            for _ in range(200):
                text = await asyncio.wait_for(depth.recv(), RECV_TIMEOUT)
                try:
                    json.loads(text)
                except ValueError:
                    assert text.startswith('{"stream":"btcusdt@depth@0ms","data":{')
                    break
            else:
                pytest.fail("no malformed frame arrived")
            await recv_json(depth)  # the stream goes on
            for _ in range(2):
                await recv_json(trades)  # the trade-only connection saw only valid JSON

    asyncio.run(scenario())


def test_malformed_any_reaches_a_connection_without_streams(sim):
    async def scenario():
        async with websockets.connect(f"{sim.ws}/ws") as ws:
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
            assert await recv_json(ws) == {"result": [], "id": 1}
            await fault(sim, name="malformed", kind="any")
            text = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
            with pytest.raises(ValueError):
                json.loads(text)

    asyncio.run(scenario())


def test_set_property_combined_wraps_frames_on_a_raw_connection(sim):
    async def scenario():
        async with websockets.connect(f"{sim.ws}/ws/btcusdt@depth@0ms") as ws:
            assert "stream" not in await recv_json(ws)
            await ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["combined", True], "id": 9}))
            frame = await recv_json(ws)
            while "id" not in frame:
                frame = await recv_json(ws)
            assert frame == {"result": None, "id": 9}
            frame = await recv_json(ws)
            assert frame["stream"] == "btcusdt@depth@0ms" and frame["data"]["e"] == "depthUpdate"

    asyncio.run(scenario())


def test_rest_status_fault_answers_the_next_requests_with_that_status(sim):
    async def scenario():
        await fault(sim, name="rest_status", status=429, count=2)
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.get(f"{sim.http}/api/v3/depth?symbol=BTCUSDT") as r:
                    assert r.status == 429
                    assert r.headers["Retry-After"] == "1"
                    assert (await r.json())["code"] == -1003
            await rest_depth(session, sim)
            await fault(sim, name="rest_status", status=503)
            async with session.get(f"{sim.http}/api/v3/depth?symbol=BTCUSDT") as r:
                assert r.status == 503
                assert isinstance((await r.json())["code"], int)
            await rest_depth(session, sim)

    asyncio.run(scenario())


def test_rest_delay_holds_the_reply_while_streams_keep_flowing(sim):
    async def scenario():
        await fault(sim, name="rest_delay", seconds=1.5, count=1)
        async with websockets.connect(f"{sim.ws}/ws/btcusdt@depth@0ms") as ws, \
                aiohttp.ClientSession() as session:
            request = asyncio.create_task(rest_depth(session, sim))
            events = []
            while not request.done():
                events.append(await recv_json(ws))
                assert sim.get_json("/api/v3/ping") == {}
            assert len(events) >= 2  # frames arrived while the reply was held
            check_chain(events)
            assert (await request)["lastUpdateId"] > 0

    asyncio.run(scenario())


def test_unknown_fault_is_rejected_with_400(sim):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{sim.http}/sim/fault?name=meteor") as r:
                assert r.status == 400
                assert (await r.json())["ok"] is False
            async with session.post(f"{sim.http}/sim/fault", json={"name": "stall"}) as r:
                assert r.status == 400  # seconds missing
            async with session.get(f"{sim.http}/sim/fault?name=rest_status&status=200") as r:
                assert r.status == 400

    asyncio.run(scenario())
