"""Hardening of :9001 against one hostile client (issue 19), as real processes on loopback.

sim -> ingest -> publisher, real sockets.  Nothing here asserts a duration: the ping flood
is judged by the publisher's memory (RSS from /proc, bounded) and its counters, the other
client by every trade arriving in order, bad input by the answers and close codes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import threading

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from helpers import PIPELINE, Procs, eventually, feeds, free_port, short_tmpdir, start_publisher, start_sim, write_config
from test_publisher_e2e import http_get, recv_json, recv_until, stats

pytestmark = pytest.mark.integration
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
PUBLISHER_TABLE = """
[publisher]
port = {port}
close_timeout_s = 2
max_requests_per_s = 20
max_request_bytes = 8192
max_clients_per_ip = 4
"""


@pytest.fixture(scope="module")
def stack():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        sim_port = start_sim(procs, ",".join(SYMBOLS), rate=500)
        ws_port = free_port()
        config = write_config(workdir, sim_port, SYMBOLS, extra=PUBLISHER_TABLE.format(port=ws_port))
        procs.start("ingest", PIPELINE + ["--config", str(config), "ingest", "sim"])
        eventually(lambda: all(f["state"] == "live" for f in feeds(config).values()), 30, 0.2, "books live")
        assert start_publisher(procs, config) == ws_port
        publisher = next(p for name, p in procs.procs if name == "publisher")
        yield {"config": config, "port": ws_port, "pid": publisher.pid}
    finally:
        procs.stop_all()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def raw_upgrade(port: int, rcvbuf: int = 4096) -> socket.socket:
    """A WebSocket connection by hand: a client that sends what it likes and reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: leave every frame after the handshake unread
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def masked_ping(payload: bytes) -> bytes:
    mask = os.urandom(4)
    return bytes([0x89, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def raw_http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


# ------------------------------------------------------------------------------ ping flood

def test_a_ping_flood_from_a_client_that_never_reads_is_closed_and_memory_stays_bounded(stack):
    port, pid = stack["port"], stack["pid"]
    before = stats(port)
    trades: list[dict] = []
    stop = threading.Event()
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=10, close_timeout=5) as other:
        recv_json(other)
        other.send(json.dumps({"op": "subscribe", "exchange": "sim", "channels": ["trades"]}))
        recv_until(other, "subscribed")

        def read_other():
            while not stop.is_set():
                try:
                    trades.append(json.loads(other.recv(timeout=0.2)))
                except TimeoutError:
                    continue

        reader = threading.Thread(target=read_other, daemon=True)
        reader.start()
        eventually(lambda: len(trades) >= 50, 20, 0.1, "trades before the flood")
        rss_before = rss_bytes(pid)

        # 64 MB of pings, each answered by a 127-byte pong: the publisher buffered every pong for
        # a client that never reads (62 MB -> 1 GB in 30 s in the run).  Now the pings
        # count against the request rate; the client is closed 1008 and no longer read, so our
        # sends stop going through (or the connection is cut) long before 64 MB.
        flooder = raw_upgrade(port)
        flooder.settimeout(3)
        burst = b"".join(masked_ping(os.urandom(125)) for _ in range(1000))  # 131 KB
        sent = 0
        try:
            while sent < 64 * 2**20:
                flooder.sendall(burst)
                sent += len(burst)
        except (TimeoutError, ConnectionError):
            pass
        st = eventually(lambda: (s := stats(port))["disconnected"].get("flood", 0)
                        > before["disconnected"].get("flood", 0) and s, 20, 0.2, "the flooder closed as a flood")
        rss_after = rss_bytes(pid)
        n_before = len(trades)
        eventually(lambda: len(trades) >= n_before + 50, 20, 0.1, "trades after the flood")
        stop.set()
        reader.join(5)
        flooder.close()

    assert sent < 64 * 2**20, "the publisher kept reading pings from a closed flooder"
    assert st["pings"] > before.get("pings", 0)
    assert rss_after - rss_before < 24 * 2**20, (rss_before, rss_after, sent)
    # the other client: still connected throughout, every trade of each symbol in order
    for sym in SYMBOLS:
        seqs = [m["seq"] for m in trades if m.get("kind") == "trade" and m["symbol"] == sym]
        assert seqs and seqs == list(range(seqs[0], seqs[0] + len(seqs))), sym
    print(f"\nping flood: {sent / 2**20:.1f} MB of pings accepted before the close; "
          f"publisher RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MB")


def test_pings_over_the_request_rate_close_a_reading_client_with_1008(stack):
    with connect(f"ws://127.0.0.1:{stack['port']}/", open_timeout=10, close_timeout=5) as ws:
        recv_json(ws)
        ws.send('{"op": "unsubscribe"}')
        with pytest.raises(ConnectionClosed) as info:
            for i in range(2000):
                ws.ping(str(i))
            while True:
                ws.recv(timeout=10)
    rcvd = info.value.rcvd
    assert rcvd is not None and rcvd.code == 1008 and "ping" in rcvd.reason


# ------------------------------------------------------------------------------ bad input

def test_deeply_nested_json_is_an_error_reply_and_the_connection_stays(stack):
    port = stack["port"]
    before = stats(port)["bad_requests"]
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=10, close_timeout=5) as ws:
        recv_json(ws)
        ws.send('{"op": "unsubscribe", "id": "quiet"}')
        recv_until(ws, "unsubscribed")
        ws.send("[" * 1000 + "]" * 1000)  # 2 KB: it closed the client with 1011 and a traceback
        assert "nested too deeply" in recv_until(ws, "error")["message"]
        ws.send('{"op": "ping", "id": "alive"}')
        assert recv_until(ws, "pong")["id"] == "alive"
    assert stats(port)["bad_requests"] == before + 1


@pytest.mark.parametrize("header", ["Origin: http://a.example", "Upgrade: websocket"])
def test_a_duplicated_upgrade_header_is_400_naming_it(stack, header):
    port = stack["port"]
    key = base64.b64encode(os.urandom(16)).decode()
    answer = raw_http(port, (f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             f"Origin: http://127.0.0.1:{port}\r\n"
                             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{header}\r\n\r\n").encode())
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 400"), answer[:200]
    name = header.split(":")[0]
    assert f"duplicate header '{name}'".encode() in rest
    code, _, _ = http_get(port, "/health")  # the server answers on
    assert code in (200, 503)


# ------------------------------------------------------------------------------ defaults

def test_bound_to_loopback_only_the_pages_own_origin_may_open_the_feed(stack):
    # issue 19 item 12: with no origins configured any web page in a local browser could read it
    port = stack["port"]
    before = stats(port)["rejected"].get("origin", 0)
    with pytest.raises(InvalidStatus) as info:
        with connect(f"ws://127.0.0.1:{port}/", open_timeout=10, origin="http://evil.example"):
            pass
    assert info.value.response.status_code == 403
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        with connect(f"ws://127.0.0.1:{port}/", open_timeout=10, origin=origin) as ws:
            assert recv_json(ws)["kind"] == "welcome"
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:  # programs send no Origin: they pass
        assert recv_json(ws)["kind"] == "welcome"
    assert stats(port)["rejected"]["origin"] == before + 1


def test_one_address_cannot_take_every_client_slot(stack):
    port = stack["port"]
    eventually(lambda: stats(port)["clients"] == 0, 20, 0.1, "earlier clients gone")
    with contextlib.ExitStack() as held:
        clients = [held.enter_context(connect(f"ws://127.0.0.1:{port}/", open_timeout=10))
                   for _ in range(4)]  # max_clients_per_ip = 4 (of max_clients 100)
        for ws in clients:
            recv_json(ws)
        with pytest.raises(InvalidStatus) as info:
            with connect(f"ws://127.0.0.1:{port}/", open_timeout=10):
                pass
        assert info.value.response.status_code == 503 and b"too many connections from 127.0.0.1" in \
            info.value.response.body
        clients[0].close()
        eventually(lambda: stats(port)["clients"] == 3, 20, 0.1, "a slot freed")
        with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
            assert recv_json(ws)["kind"] == "welcome"
    assert stats(port)["rejected"]["per_ip"] >= 1
