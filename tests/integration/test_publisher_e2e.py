"""sim -> ingest -> publisher -> real WebSocket clients, as real processes on loopback.

One sim, one ingest and one publisher serve the module; a second publisher with a token
checks access.  Timings are never asserted tightly: throttle spacing is read from the
server's own ``time_published`` stamps, and the latency of a client beside a stalled one
is compared with a baseline measured in the same test with a generous margin.  The page in
a real browser is tests/integration/test_page.py.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import re
import socket
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from helpers import (PIPELINE, Procs, eventually, feeds, free_port, short_tmpdir, start_publisher, start_sim, status,
                     write_config)

pytestmark = pytest.mark.integration
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
THROTTLE_MS = 120  # from L2_THROTTLE_SIM_MS, over the config's 100
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
TOKEN = "s3cret-token"

PUBLISHER_TABLE = """
[publisher]
port = {port}
client_queue = 200
client_l2_queue = 300
close_timeout_s = 10
max_request_bytes = 1024
max_requests_per_s = 20
"""


def iso_us(text: str) -> int:
    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) * 1_000_000 + int(text[20:26])


def http_get(port: int, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def stats(port: int) -> dict:
    return json.loads(http_get(port, "/stats")[1])


def ws_connect(port: int, **kw):
    return connect(f"ws://127.0.0.1:{port}/", open_timeout=10, close_timeout=5, **kw)


def recv_json(ws, timeout: float = 10.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def recv_until(ws, kind: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        m = recv_json(ws, max(0.01, deadline - time.monotonic()))
        if m["kind"] == kind:
            return m


def apply_levels(book: dict, levels) -> None:
    for p, s in levels:
        if s > 0:
            book[p] = s
        else:
            book.pop(p, None)


@pytest.fixture(scope="module")
def stack():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        sim_port = start_sim(procs, ",".join(SYMBOLS), rate=1000)
        ws_port = free_port()
        config = write_config(workdir, sim_port, SYMBOLS,
                              extra='depth_stream = "depth@0ms"\nl2_throttle_ms = 100\n'
                                    + PUBLISHER_TABLE.format(port=ws_port))
        procs.start("ingest", PIPELINE + ["--config", str(config), "ingest", "sim"])
        eventually(lambda: all(f["state"] == "live" for f in feeds(config).values()), 30, 0.2, "books live")
        assert start_publisher(procs, config, env={"L2_THROTTLE_SIM_MS": str(THROTTLE_MS)}) == ws_port
        yield {"config": config, "port": ws_port, "procs": procs, "workdir": workdir}
    finally:
        procs.stop_all()


# ---------------------------------------------------------------------------- protocol

def test_first_frame_is_a_welcome_with_exchanges_symbols_and_limits(stack):
    with ws_connect(stack["port"]) as ws:
        w = recv_json(ws)
    assert w["kind"] == "welcome" and w["protocol"] == 1 and w["version"]
    assert w["exchanges"] == {"sim": {"symbols": SYMBOLS, "depth": 20, "throttle_ms": THROTTLE_MS}}
    assert w["limits"]["max_request_bytes"] == 1024 and w["limits"]["client_queue"] == 200
    assert w["default"]["mode"] == "snapshots" and ISO.match(w["time_published"])


def test_silent_client_gets_every_trade_and_throttled_snapshots_of_every_symbol(stack):
    snaps: dict[str, list[dict]] = {s: [] for s in SYMBOLS}
    trades: dict[str, list[dict]] = {s: [] for s in SYMBOLS}
    with ws_connect(stack["port"]) as ws:
        assert recv_json(ws)["kind"] == "welcome"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = recv_json(ws)
            if m["kind"] == "order_book_l2":
                snaps[m["symbol"]].append(m)
            elif m["kind"] == "trade":
                trades[m["symbol"]].append(m)
            if all(len(snaps[s]) >= 12 and len(trades[s]) >= 5 for s in SYMBOLS):
                break
    for sym in SYMBOLS:
        assert len(snaps[sym]) >= 12 and len(trades[sym]) >= 5, sym
        t = trades[sym][-1]
        assert {"exchange", "symbol", "time_exchange", "time_received", "time_published", "price", "amount",
                "side", "trade_id"} <= t.keys()
        assert t["side"] in ("buy", "sell") and t["price"] > 0 and t["amount"] > 0
        for key in ("time_exchange", "time_received", "time_published"):
            assert ISO.match(t[key]), (key, t[key])
        assert iso_us(t["time_published"]) >= iso_us(t["time_received"])
        seqs = [x["seq"] for x in trades[sym]]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # every trade, none dropped
        for s in snaps[sym]:
            assert s["depth"] == 10 and len(s["bids"]) == 10 and len(s["asks"]) == 10
            assert s["bids"][0][0] < s["asks"][0][0] and ISO.match(s["time_received"])
        # throttle: at most one snapshot per symbol per interval (server stamps, 1 ms slack for rounding)
        stamps = [iso_us(s["time_published"]) for s in snaps[sym]]
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        assert min(gaps) >= THROTTLE_MS * 1000 - 1000, gaps
        assert [s["seq"] for s in snaps[sym]] == sorted(s["seq"] for s in snaps[sym])


def test_a_subscription_may_choose_its_own_throttle(stack):
    with ws_connect(stack["port"]) as ws:
        recv_json(ws)
        ws.send(json.dumps({"op": "subscribe", "exchange": "sim", "symbols": ["ETHUSDT"], "channels": ["book"],
                            "depth": 3, "throttle_ms": 300, "id": "slow-book"}))
        reply = recv_until(ws, "subscribed")
        assert reply["id"] == "slow-book" and reply["throttle_ms"] == 300 and reply["channels"] == ["book"]
        got = []
        while len(got) < 5:
            m = recv_json(ws)
            assert m["kind"] == "order_book_l2" and m["symbol"] == "ETHUSDT"  # the default is gone
            got.append(iso_us(m["time_published"]))
            assert len(m["bids"]) == 3
    assert min(b - a for a, b in zip(got, got[1:])) >= 299_000


def test_delta_clients_rebuild_each_book_equal_to_pipeline_book(stack):
    config = stack["config"]
    depths = {"BTCUSDT": 20, "ETHUSDT": 5}
    books = {s: ({}, {}) for s in SYMBOLS}
    seq = {s: None for s in SYMBOLS}
    epoch = {s: None for s in SYMBOLS}
    counts = {s: {"order_book_l2": 0, "order_book_l2_update": 0} for s in SYMBOLS}

    def apply(m):
        sym = m["symbol"]
        bids, asks = books[sym]
        if m["kind"] == "order_book_l2":
            bids.clear(), asks.clear()
            apply_levels(bids, m["bids"]), apply_levels(asks, m["asks"])
        else:
            assert epoch[sym] == m["epoch"] and m["seq"] == seq[sym] + 1, (sym, seq[sym], m["seq"])
            apply_levels(bids, m["bids"]), apply_levels(asks, m["asks"])
        assert len(bids) <= depths[sym] and len(asks) <= depths[sym]
        seq[sym], epoch[sym] = m["seq"], m["epoch"]
        counts[sym][m["kind"]] += 1

    with ws_connect(stack["port"]) as ws:
        recv_json(ws)
        for sym, depth in depths.items():
            ws.send(json.dumps({"op": "subscribe", "exchange": "sim", "symbols": [sym], "channels": ["book"],
                                "mode": "deltas", "depth": depth, "id": sym}))
        subscribed = set()  # what the default subscription sent before a symbol's reply is not ours
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            m = recv_json(ws)
            if m["kind"] == "subscribed":
                subscribed.add(m["id"])
            elif m["kind"].startswith("order_book") and m["symbol"] in subscribed:
                apply(m)
        assert subscribed == set(depths)
        for sym, depth in depths.items():
            for _attempt in range(5):
                # the client stops reading (frames wait in its socket) while `pipeline book` reads shm
                out = subprocess.run(PIPELINE + ["--config", str(config), "book", "sim", sym, "--json"],
                                     capture_output=True, text=True, timeout=30)
                assert out.returncode == 0, out.stderr
                ref = json.loads(out.stdout)
                while seq[sym] is None or seq[sym] < ref["seq"]:
                    m = recv_json(ws)
                    if m["kind"].startswith("order_book"):
                        apply(m)
                if seq[sym] == ref["seq"]:
                    break  # else a conflation snapshot jumped past it: try again
            assert seq[sym] == ref["seq"] and epoch[sym] == ref["epoch"]
            bids, asks = books[sym]
            assert sorted(bids.items(), reverse=True) == [tuple(x) for x in ref["bids"][:depth]]
            assert sorted(asks.items()) == [tuple(x) for x in ref["asks"][:depth]]
    for sym in SYMBOLS:
        assert counts[sym]["order_book_l2_update"] >= 100, counts
        assert counts[sym]["order_book_l2"] >= 1


def test_stalled_client_is_conflated_and_closed_while_another_keeps_its_trade_latency(stack):
    port = stack["port"]
    before = stats(port)
    records: list[tuple[float, dict]] = []
    stop = threading.Event()
    with contextlib.ExitStack() as clients:
        fast = clients.enter_context(ws_connect(port))
        recv_json(fast)
        fast.send(json.dumps({"op": "subscribe", "exchange": "sim", "channels": ["trades"]}))

        def read_fast():
            while not stop.is_set():
                try:
                    raw = fast.recv(timeout=0.2)
                except TimeoutError:
                    continue
                records.append((time.time(), json.loads(raw)))

        reader = threading.Thread(target=read_fast, daemon=True)
        reader.start()

        def latencies(t0, t1):
            return [now - iso_us(m["time_received"]) / 1e6 for now, m in list(records)
                    if m["kind"] == "trade" and t0 <= now < t1]

        t_base = time.time()
        eventually(lambda: len(latencies(t_base + 0.3, time.time())) >= 100, 20, 0.1, "baseline trades")
        baseline = latencies(t_base + 0.3, time.time())

        # the stalled client: a tiny receive buffer, websockets stops reading after one frame, we never recv
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window from the start
        sock.connect(("127.0.0.1", port))
        stalled = clients.enter_context(connect(f"ws://127.0.0.1:{port}/", sock=sock, max_queue=1, open_timeout=10,
                                                close_timeout=5))
        t_stall = time.time()
        stalled.send(json.dumps({"op": "subscribe", "exchange": "sim", "mode": "deltas", "depth": 20}))

        def closed_as_slow():
            st = stats(port)
            return st if st["disconnected"].get("slow", 0) > before["disconnected"].get("slow", 0) else None
        st = eventually(closed_as_slow, 40, 0.2, "the stalled client closed as too slow")
        t_closed = time.time()
        during = latencies(t_stall, t_closed)
        stop.set()
        reader.join(5)

        assert st["conflated"] > before["conflated"]  # its L2 backlog became snapshots first
        assert st["dropped"] > before["dropped"]
        assert st["undelivered_trades"] >= 200  # what it could not take (client_queue = 200)
        # the other client was not held up: same order of latency, every trade, still connected
        p50_base, p50_during = statistics.median(baseline), statistics.median(during)
        assert len(during) >= 20
        assert p50_during <= 10 * p50_base + 0.05, (p50_base, p50_during)
        for sym in SYMBOLS:
            seqs = [m["seq"] for _, m in records if m["kind"] == "trade" and m["symbol"] == sym]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), sym
        fast.send(json.dumps({"op": "ping", "id": "still-here"}))
        assert recv_until(fast, "pong")["id"] == "still-here"

        # the stalled client reads at last: its backlog, then the close frame with the reason
        with pytest.raises(ConnectionClosed) as info:
            while True:
                stalled.recv(timeout=10)
        rcvd = info.value.rcvd
        assert rcvd is not None and rcvd.code == 1013 and "too slow" in rcvd.reason
    print(f"\ntrade latency to a WebSocket client, p50 {p50_base * 1e3:.2f} ms alone, "
          f"{p50_during * 1e3:.2f} ms beside a stalled client (closed after {t_closed - t_stall:.1f} s)")


BAD_INPUTS = [
    ("{not json", "invalid JSON"),
    ('{"op": "dance"}', "unknown op"),
    ('["ping"]', "expected a JSON object"),
    ('{"op": "subscribe", "exchange": "sim", "symbols": ["NOPEUSDT"]}', "unknown symbol"),
    ('{"op": "subscribe", "exchange": "nasdaq"}', "unknown exchange"),
    ('{"op": "subscribe", "exchange": "sim", "depth": 500}', "depth"),
    ('{"op": "subscribe", "exchange": "sim", "mode": "fast"}', "mode"),
    ('{"op": "subscribe", "exchange": "sim", "channels": ["news"]}', "unknown channel"),
    ('{"op": "ping", "extra": 1}', "unknown field"),
    ('{"op": "ping", "id": "' + "x" * 2000 + '"}', "too large"),
    (b'\x00\x01binary', "binary frame"),
]


def test_every_kind_of_bad_input_gets_an_error_and_the_connection_survives(stack):
    with ws_connect(stack["port"]) as ws:
        recv_json(ws)
        ws.send('{"op": "unsubscribe", "id": "quiet"}')  # no market data: only replies from here on
        assert recv_until(ws, "unsubscribed")["id"] == "quiet"
        for i, (frame, message) in enumerate(BAD_INPUTS):
            ws.send(frame)
            err = recv_until(ws, "error")
            assert message in err["message"], (frame, err)
            ws.send(json.dumps({"op": "ping", "id": i}))
            assert recv_until(ws, "pong")["id"] == i  # still open, still answering
            time.sleep(0.06)  # stay under 20 requests/s: the rate limit has its own check below
        for i in range(30):  # a burst over max_requests_per_s
            ws.send(json.dumps({"op": "ping", "id": f"b{i}"}))
        answers = [recv_json(ws) for _ in range(30)]
        assert any(a["kind"] == "error" and "rate limit" in a["message"] for a in answers)
        assert any(a["kind"] == "pong" for a in answers)

        def answered():
            ws.send(json.dumps({"op": "ping", "id": "after"}))
            return recv_json(ws, 2)["kind"] == "pong"
        eventually(answered, 10, 0.2, "a pong once the bucket refilled")
    assert stats(stack["port"])["bad_requests"] >= len(BAD_INPUTS)


# ------------------------------------------------------------------------------- HTTP

def test_health_metrics_stats_and_pipeline_status(stack):
    port = stack["port"]
    code, body, headers = http_get(port, "/health")
    health = json.loads(body)
    assert code == 200 and health["status"] == "ok" and headers["Content-Type"] == "application/json"
    assert {(f["exchange"], f["symbol"]) for f in health["feeds"]} == {("sim", s) for s in SYMBOLS}
    with ws_connect(port) as ws:
        recv_until(ws, "trade")
        code, body, headers = http_get(port, "/metrics")
        assert code == 200 and headers["Content-Type"].startswith("text/plain")
        text = body.decode()
        for name in ("l2p_feed_updates_total{", "l2p_feed_gaps_total{", "l2p_feed_resyncs_total{",
                     "l2p_feed_age_seconds{", "l2p_feed_live{", "l2p_publisher_clients ",
                     "l2p_publisher_client_queue_depth{", "l2p_publisher_client_conflations_total{",
                     "l2p_publisher_disconnects_total", "l2p_publisher_send_latency_seconds_bucket{",
                     "l2p_publisher_bus_latency_seconds_bucket{"):
            assert name in text, name
        st = eventually(lambda: (lambda s: s if s["publisher"].get("clients", 0) >= 1 else None)(
            status(stack["config"])), 10, 0.2, "the client in `pipeline status` (refreshed every second)")
        assert {"feeds", "processes", "exchanges", "publisher"} <= st.keys()
        pub = st["publisher"]
        assert pub["state"] == "up" and pub["url"] == f"ws://127.0.0.1:{port}/" and pub["clients"] >= 1
        assert {"queue_depth", "queue_depth_max", "conflated", "dropped", "disconnected", "client_list"} <= pub.keys()
        assert any(p["name"] == "publisher" and p["state"] == "running" for p in st["processes"])
    assert http_get(port, "/no-such-page")[0] == 404
    code, body, _ = http_get(port, "/")
    assert code == 200 and b"<title>" in body and b"/app.js" in body
    assert http_get(port, "/app.js")[0] == 200


def test_token_and_origin_are_checked_on_the_upgrade(stack):
    """A second publisher with a token and an Origin allow-list (its own run_dir: no feeds needed)."""
    workdir = stack["workdir"]
    port = free_port()
    cfg = workdir / "token.toml"
    cfg.write_text(f'[pipeline]\nrun_dir = "run-token"\n[exchanges.sim]\nadapter = "binance"\nsymbols = ["BTCUSDT"]\n'
                   f'[publisher]\nport = {port}\ntoken = "{TOKEN}"\norigins = ["http://127.0.0.1:{port}"]\n')
    start_publisher(stack["procs"], cfg, "publisher-token")
    url = f"ws://127.0.0.1:{port}/"
    for kw in ({}, {"additional_headers": {"Authorization": "Bearer wrong"}}):
        with pytest.raises(InvalidStatus) as info:
            connect(url, open_timeout=10, **kw)
        assert info.value.response.status_code == 401
    with connect(url, open_timeout=10, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        assert recv_json(ws)["kind"] == "welcome"
    with connect(url + f"?token={TOKEN}", open_timeout=10, origin=f"http://127.0.0.1:{port}") as ws:
        assert recv_json(ws)["kind"] == "welcome"  # browsers pass the token in the query
    with pytest.raises(InvalidStatus) as info:
        connect(url + f"?token={TOKEN}", open_timeout=10, origin="http://evil.example")
    assert info.value.response.status_code == 403
    assert http_get(port, "/metrics")[0] == 401
    assert http_get(port, "/metrics", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    code, body, _ = http_get(port, "/health")
    assert code == 503 and json.loads(body)["reasons"]  # no ingest behind this one
    st = json.loads(http_get(port, "/stats", {"Authorization": f"Bearer {TOKEN}"})[1])
    assert st["rejected"] == {"token": 3, "origin": 1}  # two upgrades and one /metrics


# The page in a real browser: tests/integration/test_page.py


# ------------------------------------------------------------------ feed down and back

def test_ingest_stop_is_a_status_event_and_503_then_clients_resync_on_the_new_epoch(stack):
    """Last in the module: it stops and restarts the ingest."""
    config, port, procs = stack["config"], stack["port"], stack["procs"]
    with ws_connect(port) as ws:
        recv_json(ws)
        ws.send(json.dumps({"op": "subscribe", "exchange": "sim", "symbols": ["BTCUSDT"], "channels": ["book"],
                            "mode": "deltas", "depth": 5}))
        first = recv_until(ws, "order_book_l2")
        ingest = next(p for name, p in procs.procs if name == "ingest")
        assert procs.stop(ingest) == 0
        down = recv_until(ws, "status", 15)
        assert down["state"] in ("down", "stale") and down["symbol"] == "BTCUSDT"
        code, body, _ = http_get(port, "/health")
        assert code == 503 and any("BTCUSDT" in r for r in json.loads(body)["reasons"])
        procs.start("ingest-2", PIPELINE + ["--config", str(config), "ingest", "sim"])
        snap = None
        deadline = time.monotonic() + 30
        while snap is None and time.monotonic() < deadline:
            m = recv_json(ws, 30)
            if m["kind"] == "order_book_l2" and m["epoch"] != first["epoch"] and m["state"] == "live":
                snap = m
        assert snap is not None  # a fresh snapshot on the new epoch ...
        m = recv_until(ws, "order_book_l2_update", 15)
        assert m["epoch"] == snap["epoch"] and m["seq"] > snap["seq"]  # ... then deltas again
    eventually(lambda: http_get(port, "/health")[0] == 200, 30, 0.2, "healthy again")
