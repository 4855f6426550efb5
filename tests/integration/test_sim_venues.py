"""``pipeline sim --protocol bybit|okx|hyperliquid|lighter`` over real sockets.

Each protocol runs as a real ``pipeline sim --protocol X --port 0`` process (stopped by PID).
Plain ``websockets`` / ``aiohttp`` clients subscribe the way an adapter written from
shared/docs/exchange-protocols.md §4-§7 would, and check: frames have the key sets and
types of the real samples in shared/data/samples/<venue>/, a book rebuilt by an independent
reference from snapshot + deltas (by the venue's rules) equals the REST book once the
market is paused, sequence numbers chain, ``drop_diff`` makes a detectable gap, a
resubscribe brings a fresh snapshot, and application pings get pongs.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from captures import DATA
from helpers import Procs, eventually, start_sim, write_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
RECV_TIMEOUT = 5.0
SAMPLES = DATA / "samples"


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def procs(tmp_path_factory):
    p = Procs(tmp_path_factory.mktemp("venues"))
    try:
        yield p
    finally:
        p.stop_all()


class Sim:
    def __init__(self, port: int):
        self.port = port
        self.http = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}"


def start(procs: Procs, protocol: str, symbols: str, rate: float = 400, levels: int = 60,
          extra: tuple[str, ...] = ()) -> Sim:
    workdir = procs.workdir / protocol
    workdir.mkdir()
    write_config(workdir, 9, ["BTCUSDT"], name="sim.toml")  # the CLI needs a config; only run_dir is used
    sub = Procs(workdir)
    port = start_sim(sub, symbols=symbols, rate=rate,
                     extra=["--protocol", protocol, "--levels", str(levels), *extra])
    procs.procs.extend(sub.procs)
    return Sim(port)


async def recv(ws, timeout: float = RECV_TIMEOUT) -> Any:
    """The next message: parsed JSON, or the text itself when it is not JSON (OKX ``pong``)."""
    text = await asyncio.wait_for(ws.recv(), timeout)
    try:
        return json.loads(text)
    except ValueError:
        return text


async def fault(sim: Sim, **params: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(sim.http + "/sim/fault", json=params) as response:
            assert response.status == 200, await response.text()
            return await response.json()


async def get_json(sim: Sim, path: str, **params: Any) -> Any:
    async with aiohttp.ClientSession() as session:
        async with session.get(sim.http + path, params=params) as response:
            assert response.status == 200, await response.text()
            return await response.json()


async def post_json(sim: Sim, path: str, body: Any) -> Any:
    async with aiohttp.ClientSession() as session:
        async with session.post(sim.http + path, json=body) as response:
            assert response.status == 200, await response.text()
            return await response.json()


def sample_lines(path: Path) -> list[Any]:
    return [json.loads(line)["frame"] for line in path.read_text().splitlines() if line.strip()]


def check_shape(ours: Any, real: Any, where: str = "frame") -> None:
    """Same keys (``real``'s are all present) and the same JSON types, recursively."""
    if isinstance(real, dict):
        assert isinstance(ours, dict), (where, ours)
        missing = set(real) - set(ours)
        assert not missing, f"{where}: missing keys {missing}"
        for key in real:
            check_shape(ours[key], real[key], f"{where}.{key}")
    elif isinstance(real, list):
        assert isinstance(ours, list), (where, ours)
        if real and ours:
            check_shape(ours[0], real[0], where + "[0]")
    elif isinstance(real, bool) or real is None:
        assert ours is real or isinstance(ours, type(real)), (where, ours, real)
    elif isinstance(real, (int, float)):
        assert isinstance(ours, (int, float)) and not isinstance(ours, bool), (where, ours, real)
        assert isinstance(ours, int) == isinstance(real, int), (where, ours, real)
    else:
        assert isinstance(ours, str), (where, ours, real)


class RefBook:
    """An independent reference book: price text -> size text, absolute sizes, zero deletes."""

    def __init__(self, bids: list[list[str]] = (), asks: list[list[str]] = ()):
        self.sides = {"b": {}, "a": {}}
        self.apply(bids, asks)

    def apply(self, bids, asks) -> None:
        for side, levels in (("b", bids), ("a", asks)):
            for level in levels:
                price, size = level[0], level[1]
                if Decimal(size) == 0:
                    self.sides[side].pop(price, None)
                else:
                    self.sides[side][price] = size

    def levels(self, side: str, n: int | None = None) -> list[list[str]]:
        ordered = sorted(self.sides[side].items(), key=lambda kv: Decimal(kv[0]), reverse=side == "b")
        return [[p, q] for p, q in ordered[:n]]

    def trim(self, n: int) -> None:
        for side in ("b", "a"):
            self.sides[side] = dict(self.levels(side, n))


async def drain(ws, quiet: float = 0.3):
    """Yield the messages that arrive until none has come for ``quiet`` seconds."""
    while True:
        try:
            yield await recv(ws, quiet)
        except TimeoutError:
            return


async def at_rest(sim: Sim, synced) -> None:
    """Pause the market and wait until ``synced()`` (client book == REST) holds, then resume."""
    await fault(sim, name="pause")
    try:
        await until(synced, what="book == REST at rest")
    finally:
        await fault(sim, name="resume")


async def until(predicate, timeout: float = 10.0, what: str = "condition"):
    """Await ``predicate()`` (a coroutine function) until it returns truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
    raise AssertionError(f"timed out waiting for {what}")


# == Bybit v5 (§4) ======================================================================


@pytest.fixture(scope="module")
def bybit(procs):
    return start(procs, "bybit", "BTCUSDT,ETHUSDT")


@pytest.fixture(scope="module")
def bybit_samples():
    frames = sample_lines(SAMPLES / "bybit" / "gocryptotrader_spot_frames.jsonl")
    docs = json.loads((SAMPLES / "bybit" / "docs_examples.json").read_text())["examples"]
    return {"snapshot": frames[0], "delta": frames[1], "trade": frames[2], **docs}


class BybitClient:
    """Bybit depth-N sync (§4 steps 1-6): snapshot replaces, ``u == last + 1``, trim to N."""

    def __init__(self, depth: int):
        self.depth = depth
        self.book: RefBook | None = None
        self.u = 0
        self.gaps = 0
        self.frames = 0

    def on_book(self, msg: dict[str, Any]) -> None:
        data = msg["data"]
        if msg["type"] == "snapshot":
            self.book = RefBook(data["b"], data["a"])
        else:
            assert self.book is not None, "delta before snapshot"
            if data["u"] != self.u + 1:
                self.gaps += 1
            self.book.apply(data["b"], data["a"])
            self.book.trim(self.depth)
        self.u = data["u"]
        self.frames += 1


@pytest.mark.shared
def test_bybit_spot_book_syncs_by_u_trims_to_n_and_equals_rest(bybit, bybit_samples):
    async def scenario():
        async with websockets.connect(bybit.ws + "/v5/public/spot") as ws:
            await ws.send(json.dumps({"op": "subscribe", "req_id": "s1",
                                      "args": ["orderbook.50.BTCUSDT", "publicTrade.BTCUSDT"]}))
            ack = await recv(ws)
            assert ack["success"] is True and ack["op"] == "subscribe" and ack["req_id"] == "s1"
            client = BybitClient(50)
            kinds = set()
            trades = 0
            pulled_in = 0
            deadline = time.monotonic() + 1.2
            while time.monotonic() < deadline:
                msg = await recv(ws)
                if msg["topic"].startswith("publicTrade"):
                    check_shape(msg, bybit_samples["trade"])
                    for t in msg["data"]:
                        assert t["S"] in ("Buy", "Sell") and isinstance(t["i"], str) and isinstance(t["seq"], int)
                    trades += len(msg["data"])
                    continue
                kinds.add(msg["type"])
                check_shape(msg, bybit_samples[msg["type"]])
                assert list(msg)[:3] == ["topic", "ts", "type"]  # spot: ts before type
                if msg["type"] == "delta" and client.book is not None:
                    worst = client.book.levels("b")[-1][0]
                    pulled_in += any(Decimal(p) < Decimal(worst) for p, _ in msg["data"]["b"])
                client.on_book(msg)
                assert len(client.book.levels("b")) <= 50
            assert kinds == {"snapshot", "delta"} and client.gaps == 0 and trades > 0
            assert pulled_in > 0  # levels from beyond the top 50 came in as inserts

            async def synced():  # at rest, the synced book is the REST book
                async for msg in drain(ws):
                    if msg["topic"].startswith("orderbook"):
                        client.on_book(msg)
                rest = await get_json(bybit, "/v5/market/orderbook", category="spot", symbol="BTCUSDT",
                                      limit=50)
                check_shape(rest, bybit_samples["rest_orderbook_response"])
                result = rest["result"]
                return client.book.levels("b") == result["b"] and client.book.levels("a") == result["a"]

            await at_rest(bybit, synced)
            assert client.gaps == 0

    asyncio.run(scenario())


@pytest.mark.shared
def test_bybit_linear_frames_use_tick_precision_and_linear_pong(bybit, bybit_samples):
    async def scenario():
        async with websockets.connect(bybit.ws + "/v5/public/linear") as ws:
            await ws.send(json.dumps({"op": "subscribe", "args": ["orderbook.200.ETHUSDT", "publicTrade.ETHUSDT"]}))
            assert (await recv(ws))["success"] is True
            snapshot = await recv(ws)
            assert snapshot["type"] == "snapshot" and list(snapshot)[:3] == ["topic", "type", "ts"]
            assert all(50 < len(snapshot["data"][side]) <= 200 for side in "ba")  # the whole ~60-level book
            while True:
                msg = await recv(ws)
                if msg["topic"].startswith("orderbook") and msg["type"] == "delta":
                    check_shape(msg, bybit_samples["linear_orderbook50_delta"])
                    assert all(len(p.split(".")[1]) == 2 for p, _ in msg["data"]["b"] + msg["data"]["a"])
                    break
            while True:
                msg = await recv(ws)
                if msg["topic"] == "publicTrade.ETHUSDT":
                    check_shape(msg, bybit_samples["linear_public_trade"])
                    break
            await ws.send(json.dumps({"op": "ping"}))
            while isinstance(msg := await recv(ws), dict) and "topic" in msg:
                pass
            assert set(msg) == set(bybit_samples["ws_pong_linear_inverse"]) and msg["ret_msg"] == "pong"

    asyncio.run(scenario())


@pytest.mark.shared
def test_bybit_acks_errors_and_spot_pong(bybit, bybit_samples):
    async def scenario():
        async with websockets.connect(bybit.ws + "/v5/public/spot") as ws:
            await ws.send(json.dumps({"op": "ping", "req_id": "100001"}))
            pong = await recv(ws)
            assert set(pong) - {"req_id"} == set(bybit_samples["ws_pong_spot"]) and pong["op"] == "ping"
            args = [f"orderbook.1.BTCUSDT{'x' * i}" for i in range(11)]
            await ws.send(json.dumps({"op": "subscribe", "req_id": "many", "args": args}))
            reply = await recv(ws)
            assert reply["success"] is False and reply["req_id"] == "many" and "10" in reply["ret_msg"]
            await ws.send(json.dumps({"op": "subscribe", "args": ["orderbook.7.BTCUSDT"]}))
            reply = await recv(ws)
            assert reply["success"] is False and "orderbook.7.BTCUSDT" in reply["ret_msg"]
            await ws.send("not json")
            assert (await recv(ws))["success"] is False
            assert (await fault(bybit, name="malformed"))["connections"] >= 1
            text = await recv(ws)  # no subscriptions: the truncated frame is the next message
            assert isinstance(text, str) and text.startswith('{"topic":"orderbook.50.')

    asyncio.run(scenario())


def test_bybit_drop_diff_gap_reorder_and_resubscribe_snapshot(bybit):
    async def scenario():
        async with websockets.connect(bybit.ws + "/v5/public/spot") as ws:
            topic = "orderbook.50.ETHUSDT"
            await ws.send(json.dumps({"op": "subscribe", "args": [topic]}))
            assert (await recv(ws))["success"] is True
            client = BybitClient(50)
            client.on_book(await recv(ws))
            for name in ("drop_diff", "reorder"):
                assert (await fault(bybit, name=name, symbol="ETHUSDT"))["feeds"] == 1
                while not client.gaps:
                    client.on_book(await recv(ws))
                client.gaps = 0
            # Resync by resubscribing: a fresh snapshot, then u + 1 again.
            await ws.send(json.dumps({"op": "unsubscribe", "args": [topic]}))
            while (msg := await recv(ws)).get("op") != "unsubscribe":
                pass
            assert msg["success"] is True
            await ws.send(json.dumps({"op": "subscribe", "args": [topic]}))
            while (msg := await recv(ws)).get("op") != "subscribe":
                pass
            msg = await recv(ws)
            assert msg["type"] == "snapshot"
            client.on_book(msg)
            for _ in range(5):
                client.on_book(await recv(ws))
            assert client.gaps == 0
            state = await get_json(bybit, "/sim/state")
            assert state["counters"]["diffs_dropped"] >= 1 and state["counters"]["frames_reordered"] >= 1

    asyncio.run(scenario())


# == OKX v5 (§5) ========================================================================


def start_with_options(procs: Procs, protocol: str, name: str, **options: Any) -> Sim:
    """A sim started through ``pipeline.sim.venues.run`` with options the CLI does not expose."""
    workdir = procs.workdir / name
    workdir.mkdir()
    ready = workdir / "sim.port"
    args = "".join(f", {k}={v!r}" for k, v in options.items())
    code = ("from pipeline.sim.base import SimOptions; from pipeline.sim.venues import run; "
            f"run({protocol!r}, SimOptions(port=0, ready_file={str(ready)!r}{args}))")
    sub = Procs(workdir)
    sub.start("sim", [sys.executable, "-c", code], env={"PYTHONPATH": str(ROOT)})
    procs.procs.extend(sub.procs)
    return Sim(int(eventually(lambda: ready.exists() and ready.read_text().strip(), 20, what="sim ready")))


@pytest.fixture(scope="module")
def okx(procs):
    return start(procs, "okx", "BTC-USDT,ETH-USDT-SWAP")


@pytest.fixture(scope="module")
def okx_samples():
    return json.loads((SAMPLES / "okx" / "docs_examples.json").read_text())["examples"]


def okx_checksum(book: RefBook) -> int:
    """Independent §5 checksum: interleave the top 25 bids and asks, CRC32, signed."""
    bids, asks = book.levels("b", 25), book.levels("a", 25)
    parts = []
    for i in range(25):
        for side in (bids, asks):
            if i < len(side):
                parts.append(f"{side[i][0]}:{side[i][1]}")
    value = zlib.crc32(":".join(parts).encode())
    return value - 2**32 if value >= 2**31 else value


class OkxClient:
    """OKX books sync (§5 steps 1-5): prevSeqId chain, checksum after each update."""

    def __init__(self):
        self.book: RefBook | None = None
        self.seq = None
        self.gaps = 0
        self.bad_checksums = 0
        self.updates = 0
        self.heartbeats = 0

    def on_book(self, msg: dict[str, Any]) -> None:
        data = msg["data"][0]
        if msg["action"] == "snapshot":
            assert data["prevSeqId"] == -1
            self.book = RefBook(data["bids"], data["asks"])
        else:
            if data["prevSeqId"] != self.seq:
                self.gaps += 1
            if not data["asks"] and not data["bids"]:
                assert data["seqId"] == data["prevSeqId"]
                self.heartbeats += 1
            self.book.apply(data["bids"], data["asks"])
            self.updates += 1
        if data["checksum"] != 0 and data["checksum"] != okx_checksum(self.book):
            self.bad_checksums += 1
        self.seq = data["seqId"]


async def okx_subscribe(ws, channel: str, inst: str, op: str = "subscribe", rid: str = "1") -> None:
    await ws.send(json.dumps({"id": rid, "op": op, "args": [{"channel": channel, "instId": inst}]}))
    while (msg := await recv(ws)).get("event") != op:
        pass
    assert msg["arg"] == {"channel": channel, "instId": inst} and msg["id"] == rid


@pytest.mark.shared
def test_okx_books_chain_checksums_trades_and_rest(okx, okx_samples):
    async def scenario():
        async with websockets.connect(okx.ws + "/ws/v5/public") as ws:
            await ws.send(json.dumps({"id": "1512", "op": "subscribe", "args": [
                {"channel": "books", "instId": "BTC-USDT"}, {"channel": "trades", "instId": "BTC-USDT"}]}))
            ack = await recv(ws)
            check_shape(ack, okx_samples["ws_books_subscribe_ack"])
            client = OkxClient()
            trades = 0
            deadline = time.monotonic() + 1.2
            while time.monotonic() < deadline:
                msg = await recv(ws)
                if msg.get("event") == "subscribe":
                    continue
                if msg["arg"]["channel"] == "trades":
                    check_shape(msg, okx_samples["ws_trades"])
                    assert msg["data"][0]["side"] in ("buy", "sell")
                    trades += 1
                    continue
                check_shape(msg, okx_samples["ws_books_" + msg["action"]])
                client.on_book(msg)
            assert client.updates > 5 and trades > 0
            assert client.gaps == 0 and client.bad_checksums == 0

            async def synced():
                async for msg in drain(ws):
                    if msg["arg"]["channel"] == "books":
                        client.on_book(msg)
                rest = await get_json(okx, "/api/v5/market/books", instId="BTC-USDT", sz=400)
                check_shape(rest, okx_samples["rest_books_response"])
                data = rest["data"][0]
                return ([lv[:2] for lv in data["bids"]] == client.book.levels("b")
                        and [lv[:2] for lv in data["asks"]] == client.book.levels("a"))

            await at_rest(okx, synced)
            assert client.gaps == 0 and client.bad_checksums == 0

    asyncio.run(scenario())


@pytest.mark.shared
def test_okx_ping_errors_faults_and_resubscribe(okx, okx_samples):
    async def scenario():
        async with websockets.connect(okx.ws + "/ws/v5/public") as ws:
            await ws.send("ping")
            assert await recv(ws) == "pong"
            await ws.send(json.dumps({"id": "7", "op": "subscribe", "args": [{"channel": "books", "instId": "NOPE"}]}))
            error = await recv(ws)
            check_shape(error, okx_samples["ws_subscribe_error"])
            assert error["event"] == "error" and error["id"] == "7"
            await okx_subscribe(ws, "books-l2-tbt", "ETH-USDT-SWAP")
            client = OkxClient()
            client.on_book(await recv(ws))
            assert all(Decimal(lv[1]) == int(lv[1]) for lv in client.book.levels("a"))  # contracts
            for name in ("bad_checksum", "drop_diff", "reorder"):
                await fault(okx, name=name, symbol="ETH-USDT-SWAP")
                while not (client.bad_checksums or client.gaps):
                    client.on_book(await recv(ws))
                if name == "bad_checksum":
                    assert (client.bad_checksums, client.gaps) == (1, 0)
                else:  # the gap is seen (the checksum of a book with a hole may fail as well)
                    assert client.gaps == 1, name
                await okx_subscribe(ws, "books-l2-tbt", "ETH-USDT-SWAP", "unsubscribe")
                await okx_subscribe(ws, "books-l2-tbt", "ETH-USDT-SWAP")
                while (msg := await recv(ws))["action"] != "snapshot":
                    pass
                client = OkxClient()
                client.on_book(msg)
            await fault(okx, name="checksum", mode="zero")
            for _ in range(5):
                msg = await recv(ws)
                client.on_book(msg)
            assert msg["data"][0]["checksum"] == 0 and client.gaps == 0
            await fault(okx, name="checksum", mode="crc")

    asyncio.run(scenario())


def test_okx_heartbeat_updates_when_quiet_and_idle_connections_close(procs):
    sim = start_with_options(procs, "okx", "okx_idle", symbols=("BTC-USDT",), rate=200.0, levels=50,
                             idle_timeout=1.0, quiet_heartbeat=0.3)

    async def scenario():
        async with websockets.connect(sim.ws + "/ws/v5/public") as ws:
            await okx_subscribe(ws, "books", "BTC-USDT")
            client = OkxClient()
            client.on_book(await recv(ws))
            await fault(sim, name="pause")
            while not client.heartbeats:
                client.on_book(await recv(ws))
                await ws.send("ping")  # keep the connection alive meanwhile
                while (msg := await recv(ws)) != "pong":
                    client.on_book(msg)
            assert client.gaps == 0 and client.bad_checksums == 0
            # Now say nothing: the server closes the connection.
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await recv(ws, 5.0)
            assert (await get_json(sim, "/sim/state"))["counters"]["idle_closed"] == 1

    asyncio.run(scenario())


# == Hyperliquid (§6) ===================================================================


@pytest.fixture(scope="module")
def hyperliquid(procs):
    # the venue's cadences (5 s plain, 0.5 s fast) ten times faster: 0.5 s / 0.05 s
    return start(procs, "hyperliquid", "BTC,ETH", extra=("--book-speedup", "10"))


@pytest.fixture(scope="module")
def hl_samples():
    frames = sample_lines(SAMPLES / "hyperliquid" / "hftbacktest_btc_20250126.jsonl")
    docs = json.loads((SAMPLES / "hyperliquid" / "docs_examples.json").read_text())["examples"]
    book = next(f for f in frames if f["channel"] == "l2Book")
    trades = next(f for f in frames if f["channel"] == "trades")
    rest = json.loads((SAMPLES / "hyperliquid" / "sdk_cassette_rest_l2book_dydx_20230717.json").read_text())
    return {"l2Book": book, "trades": trades, "rest": rest["response_body"], **docs}


def hl_levels(data: dict[str, Any]) -> list[list[list[str]]]:
    return [[[lv["px"], lv["sz"]] for lv in side] for side in data["levels"]]


async def hl_send(ws, method: str, kind: str, coin: str) -> None:
    await ws.send(json.dumps({"method": method, "subscription": {"type": kind, "coin": coin}}))


@pytest.mark.shared
def test_hyperliquid_snapshots_trade_backlog_dedupe_and_rest(hyperliquid, hl_samples):
    async def scenario():
        seen: set[tuple[str, int, int]] = set()
        async with websockets.connect(hyperliquid.ws + "/ws") as ws:
            await hl_send(ws, "subscribe", "l2Book", "BTC")
            ack = await recv(ws)
            check_shape(ack, hl_samples["ws_subscription_response"])
            assert ack["data"]["subscription"] == {"type": "l2Book", "coin": "BTC"}
            first = await recv(ws)  # the book comes at once
            assert first["channel"] == "l2Book"
            await hl_send(ws, "subscribe", "trades", "BTC")
            books = [first]
            while (msg := await recv(ws))["channel"] != "subscriptionResponse":
                books.append(msg)  # a push already on its way
            backlog = await recv(ws)
            assert backlog["channel"] == "trades" and backlog["data"]  # trades from before the subscription
            check_shape(backlog, hl_samples["trades"])
            for t in backlog["data"]:
                assert t["side"] in ("B", "A") and t["coin"] == "BTC" and len(t["users"]) == 2
                seen.add((t["coin"], t["time"], t["tid"]))
            deadline = time.monotonic() + 1.2
            while time.monotonic() < deadline:
                msg = await recv(ws)
                if msg["channel"] == "l2Book":
                    check_shape(msg, hl_samples["l2Book"])
                    books.append(msg)
                else:
                    for t in msg["data"]:
                        seen.add((t["coin"], t["time"], t["tid"]))
            assert len(books) >= 2
            for book in books:
                bids, asks = hl_levels(book["data"])
                assert len(bids) == len(asks) == 20 and Decimal(bids[0][0]) < Decimal(asks[0][0])
                assert all("." in p for p, _ in bids + asks)  # "60000.0", never "60000"
            assert [b["data"]["time"] for b in books] == sorted(b["data"]["time"] for b in books)

            async def synced():
                rest = await post_json(hyperliquid, "/info", {"type": "l2Book", "coin": "BTC"})
                check_shape(rest, hl_samples["rest"])
                async for msg in drain(ws):
                    if msg["channel"] == "l2Book":
                        books.append(msg)
                return hl_levels(books[-1]["data"]) == hl_levels(rest)

            await at_rest(hyperliquid, synced)
        # A new connection's backlog repeats trades the last one saw: dedupe on (coin, time, tid).
        async with websockets.connect(hyperliquid.ws + "/ws") as ws:
            await hl_send(ws, "subscribe", "trades", "BTC")
            await recv(ws)
            again = {(t["coin"], t["time"], t["tid"]) for t in (await recv(ws))["data"]}
            assert again & seen

    asyncio.run(scenario())


@pytest.mark.shared
def test_hyperliquid_ping_errors_drop_and_resubscribe(hyperliquid, hl_samples):
    async def scenario():
        async with websockets.connect(hyperliquid.ws + "/ws") as ws:
            await ws.send(json.dumps({"method": "ping"}))
            assert await recv(ws) == hl_samples["ws_pong"]
            await hl_send(ws, "subscribe", "l2Book", "NOPE")
            error = await recv(ws)
            assert error["channel"] == "error" and isinstance(error["data"], str)
            await hl_send(ws, "subscribe", "l2Book", "ETH")
            assert (await recv(ws))["channel"] == "subscriptionResponse"
            assert (await recv(ws))["channel"] == "l2Book"
            assert (await fault(hyperliquid, name="drop_diff", symbol="ETH"))["feeds"] == 1
            assert (await recv(ws))["channel"] == "l2Book"  # the next push still is a whole book
            await hl_send(ws, "unsubscribe", "l2Book", "ETH")
            while (msg := await recv(ws))["channel"] != "subscriptionResponse":
                pass
            assert msg["data"]["method"] == "unsubscribe"
            await hl_send(ws, "subscribe", "l2Book", "ETH")
            while (msg := await recv(ws))["channel"] != "subscriptionResponse":
                pass
            assert (await recv(ws, 0.4))["channel"] == "l2Book"  # fresh snapshot at once, not after 0.5 s

    asyncio.run(scenario())


@pytest.mark.shared
def test_hyperliquid_fast_l2book_is_five_levels_at_its_own_cadence(hyperliquid):
    """``"fast": true``: 5 levels per push, ten pushes per plain push (0.05 s vs 0.5 s at the
    fixture's speed-up of 10); a fast and a plain subscription of one coin live side by side."""
    async def scenario():
        async with websockets.connect(hyperliquid.ws + "/ws") as ws:
            await ws.send(json.dumps({"method": "subscribe", "subscription": {"type": "l2Book", "coin": "ETH",
                                                                               "fast": "yes"}}))
            assert (await recv(ws))["channel"] == "error"
            await ws.send(json.dumps({"method": "subscribe", "subscription": {"type": "l2Book", "coin": "ETH",
                                                                               "fast": True}}))
            ack = await recv(ws)
            assert ack["data"]["subscription"] == {"type": "l2Book", "coin": "ETH", "fast": True}
            await hl_send(ws, "subscribe", "l2Book", "ETH")
            sizes = {5: 0, 20: 0}
            deadline = time.monotonic() + 1.6
            while time.monotonic() < deadline:
                msg = await recv(ws)
                if msg["channel"] == "l2Book":
                    bids, asks = hl_levels(msg["data"])
                    assert len(bids) == len(asks) and len(bids) in sizes
                    sizes[len(bids)] += 1
            assert sizes[20] >= 2 and sizes[5] >= 5 * sizes[20], sizes

    asyncio.run(scenario())


def test_hyperliquid_fast_pushes_and_silent_connections_are_closed(procs):
    sim = start_with_options(procs, "hyperliquid", "hl_idle", symbols=("BTC",), rate=300.0, levels=40,
                             idle_timeout=1.0, book_interval=0.05)

    async def scenario():
        async with websockets.connect(sim.ws + "/ws") as ws:
            await hl_send(ws, "subscribe", "l2Book", "BTC")
            for _ in range(10):  # 0.05 s pushes: ten books well within the receive timeout
                await recv(ws, 1.0)
        async with websockets.connect(sim.ws + "/ws") as ws:  # no subscription: nothing is ever sent
            with pytest.raises(websockets.ConnectionClosed):
                await recv(ws, 10.0)
        assert (await get_json(sim, "/sim/state"))["counters"]["idle_closed"] == 1

    asyncio.run(scenario())


# == Lighter (§7) =======================================================================


@pytest.fixture(scope="module")
def lighter(procs):
    return start(procs, "lighter", "ETH,BTC")


@pytest.fixture(scope="module")
def lighter_samples():
    d = SAMPLES / "lighter"
    names = ("ws_order_book_subscribed", "ws_order_book_update", "ws_trade_subscribed", "ws_trade_update",
             "http_order_book_details", "http_order_book_orders")
    docs = json.loads((d / "docs_examples.json").read_text())["examples"]
    return {**{n: json.loads((d / f"nautilus_{n}.json").read_text()) for n in names}, **docs}


class LighterClient:
    """Lighter sync (§7 steps 1-4): snapshot, then ``begin_nonce == last nonce``; offset only increases."""

    def __init__(self):
        self.book: RefBook | None = None
        self.nonce = None
        self.offset = 0
        self.gaps = 0
        self.updates = 0

    def on_book(self, msg: dict[str, Any]) -> None:
        ob = msg["order_book"]
        bids = [[lv["price"], lv["size"]] for lv in ob["bids"]]
        asks = [[lv["price"], lv["size"]] for lv in ob["asks"]]
        if msg["type"] == "subscribed/order_book":
            assert ob["begin_nonce"] == 0
            self.book = RefBook(bids, asks)
        else:
            assert msg["type"] == "update/order_book" and self.book is not None
            if ob["begin_nonce"] != self.nonce:
                self.gaps += 1
            assert msg["offset"] > self.offset
            self.book.apply(bids, asks)
            self.updates += 1
        self.nonce, self.offset = ob["nonce"], msg["offset"]


@pytest.mark.shared
def test_lighter_markets_book_nonce_chain_trades_and_rest(lighter, lighter_samples):
    async def scenario():
        details = await get_json(lighter, "/api/v1/orderBookDetails")
        check_shape(details["order_book_details"][0], {
            k: v for k, v in lighter_samples["http_order_book_details"]["order_book_details"][0].items()
            if k in ("symbol", "market_id", "market_type", "status", "size_decimals", "price_decimals",
                     "min_base_amount", "taker_fee", "maker_fee")})
        ids = {d["symbol"]: d["market_id"] for d in details["order_book_details"]}
        assert ids == {"ETH": 0, "BTC": 1}
        eth = details["order_book_details"][0]
        async with websockets.connect(lighter.ws + "/stream") as ws:
            await ws.send(json.dumps({"type": "subscribe", "channel": "order_book/0"}))
            await ws.send(json.dumps({"type": "subscribe", "channel": "trade/0"}))
            client = LighterClient()
            trades: set[int] = set()
            backlog = False
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                msg = await recv(ws)
                if msg["channel"] == "trade:0":
                    check_shape(msg, lighter_samples["ws_" + msg["type"].replace("/", "_").replace(
                        "subscribed_trade", "trade_subscribed").replace("update_trade", "trade_update")])
                    backlog |= msg["type"] == "subscribed/trade" and not trades
                    trades |= {t["trade_id"] for t in msg["trades"]}
                    continue
                assert msg["channel"] == "order_book:0"
                sample = ("ws_order_book_subscribed" if msg["type"] == "subscribed/order_book"
                          else "ws_order_book_update")
                check_shape(msg, lighter_samples[sample])
                for lv in msg["order_book"]["asks"] + msg["order_book"]["bids"]:
                    assert len(lv["price"].split(".")[1]) == eth["price_decimals"]
                    assert len(lv["size"].split(".")[1]) == eth["size_decimals"]
                client.on_book(msg)
            assert backlog and client.updates > 5 and client.gaps == 0

            async def synced():
                async for msg in drain(ws):
                    if msg["channel"] == "order_book:0":
                        client.on_book(msg)
                rest = await get_json(lighter, "/api/v1/orderBookOrders", market_id=0, limit=50)
                check_shape(rest, lighter_samples["http_order_book_orders"])
                return ([[o["price"], o["remaining_base_amount"]] for o in rest["bids"]] == client.book.levels("b", 50)
                        and [[o["price"], o["remaining_base_amount"]] for o in rest["asks"]]
                        == client.book.levels("a", 50))

            await at_rest(lighter, synced)
            assert client.gaps == 0

    asyncio.run(scenario())


@pytest.mark.shared
def test_lighter_ping_drop_gap_resubscribe_and_errors(lighter, lighter_samples):
    async def scenario():
        async with websockets.connect(lighter.ws + "/stream") as ws:
            await ws.send(json.dumps(lighter_samples["ws_ping"]))
            assert await recv(ws) == lighter_samples["ws_pong"]
            await ws.send(json.dumps({"type": "subscribe", "channel": "order_book/9"}))
            assert "error" in await recv(ws)
            await ws.send(json.dumps({"type": "subscribe", "channel": "order_book/1"}))
            client = LighterClient()
            client.on_book(await recv(ws))
            for name in ("drop_diff", "reorder"):
                await fault(lighter, name=name, symbol="BTC")
                while not client.gaps:
                    client.on_book(await recv(ws))
                client.gaps = 0
            await ws.send(json.dumps({"type": "unsubscribe", "channel": "order_book/1"}))
            await ws.send(json.dumps({"type": "subscribe", "channel": "order_book/1"}))
            while (msg := await recv(ws))["type"] != "subscribed/order_book":
                pass
            client = LighterClient()
            client.on_book(msg)
            for _ in range(5):
                client.on_book(await recv(ws))
            assert client.gaps == 0

    asyncio.run(scenario())
