"""Failures an unreachable venue causes: counted and explained in the segment's health records
(ingest/health.py writes them, pipeline/shm.py lays them out, `pipeline status` reads them)."""

from __future__ import annotations

import asyncio
import socket
import ssl

import aiohttp
import pytest

from ingest.events import StreamGroup
from ingest.health import Health, describe_failure
from ingest.wsclient import HandshakeFailed
from pipeline.shm import ERROR_BYTES, MAX_CONNECTIONS, BookReader, BookWriter, ConnState


class Clock:
    def __init__(self, ns: int = 1_700_000_000_000_000_000):
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def _connector_error(os_error: OSError) -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey("nonexistent.invalid", 443, True, True, None, None, None)
    return aiohttp.ClientConnectorError(key, os_error)


@pytest.mark.parametrize("exc, text", [
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "DNS lookup failed: Name or service not known"),
    (ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)"), "connection refused: "),
    (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
    (ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]"), "TLS certificate rejected: "),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"),
     "TLS error: [SSL: WRONG_VERSION_NUMBER] wrong version number"),
    (asyncio.TimeoutError(), "timed out"),
    (HandshakeFailed("ws://h/: status 404"), "handshake failed: ws://h/: status 404"),
    # aiohttp wraps the socket error: the same words as on a WebSocket
    (_connector_error(socket.gaierror(socket.EAI_NONAME, "Name or service not known")),
     "DNS lookup failed: Name or service not known"),
    (_connector_error(ConnectionRefusedError(111, "Connect call failed")), "connection refused: "),
])
def test_describe_failure_names_the_kind_of_failure(exc, text):
    got = describe_failure(exc)
    assert got.startswith(text) and "_ssl.c" not in got


@pytest.fixture
def board(shm_prefix):
    writer = BookWriter(shm_prefix, "ex", ["A", "B", "C"], depth=3, epoch=1)
    clock = Clock()
    reader = BookReader.open(shm_prefix, "ex")
    yield Health(writer, clock=clock), reader, clock
    reader.close()
    writer.close()


DEPTH = StreamGroup("wss://venue.example:9443/stream?streams=a@depth/b@depth", "depth", ("A", "B"))
TRADES = StreamGroup("wss://venue.example:9443/stream?streams=c@trade", "trades", ("C",))


def test_failed_connects_count_for_the_process_the_connection_and_its_feeds_only(board):
    health, reader, clock = board
    health.add_connection(DEPTH)
    health.add_connection(TRADES)
    for _ in range(3):
        health.connecting(DEPTH)
        clock.ns += 10**9
        health.connect_failed(DEPTH, ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 9443)"))
    assert reader.process_stats()["connect_failures"] == 3
    for sym in ("A", "B"):
        rec = reader.feed_health(sym)
        assert rec.connect_failures == 3 and rec.error_ns == clock.ns
        assert rec.error.startswith("depth connect: connection refused")
    assert reader.feed_health("C").connect_failures == 0 and reader.feed_health("C").error == ""
    conns, total = reader.connections_health()
    assert total == 2
    depth, trades = conns
    assert depth.label == "depth wss://venue.example:9443/stream"  # no stream list
    assert (depth.state, depth.connect_failures, depth.opened, depth.symbols) == (ConnState.DOWN, 3, 0, 2)
    assert (trades.state, trades.connect_failures, trades.error) == (ConnState.CONNECTING, 0, "")
    assert reader.exchange_health().error == depth.error


def test_a_lost_connection_is_explained_but_not_counted_as_a_failed_connect(board):
    health, reader, clock = board
    health.add_connection(DEPTH)
    health.connection_opened(DEPTH)
    assert reader.connections_health()[0][0].state is ConnState.OPEN
    health.connection_lost(DEPTH, "no reply to ping within 10s")
    rec = reader.connections_health()[0][0]
    assert (rec.state, rec.opened, rec.connect_failures) == (ConnState.DOWN, 1, 0)
    assert rec.error == "depth connection lost: no reply to ping within 10s"
    assert reader.feed_health("A").error == rec.error and reader.process_stats()["connect_failures"] == 0


def test_rest_errors_go_to_their_symbol_and_discovery_errors_to_every_feed(board):
    health, reader, clock = board
    health.rest_failed("B", "HTTP 503: busy")
    assert [reader.feed_health(s).rest_errors for s in "ABC"] == [0, 1, 0]
    assert reader.feed_health("B").error == "REST B: HTTP 503: busy"
    clock.ns += 1
    health.rest_failed("discovery", "DNS lookup failed: Name or service not known")
    assert [reader.feed_health(s).rest_errors for s in "ABC"] == [1, 2, 1]
    assert all(reader.feed_health(s).error.startswith("REST discovery: DNS") for s in "ABC")
    assert reader.process_stats()["rest_errors"] == 2
    assert reader.exchange_health().error_ns == clock.ns


def test_long_errors_are_cut_at_a_character_boundary(board):
    health, reader, clock = board
    health.rest_failed("A", "é" * 200)
    text = reader.feed_health("A").error
    assert text == "REST A: " + "é" * ((ERROR_BYTES - 1 - len("REST A: ")) // 2)


def test_connections_beyond_the_records_are_still_counted(board):
    health, reader, clock = board
    groups = [StreamGroup(f"ws://h:1/{i}", "depth", ("A",)) for i in range(MAX_CONNECTIONS + 2)]
    for g in groups:
        health.add_connection(g)
    for g in groups:
        health.connect_failed(g, TimeoutError())
    conns, total = reader.connections_health()
    assert (len(conns), total) == (MAX_CONNECTIONS, MAX_CONNECTIONS + 2)
    assert reader.process_stats()["connect_failures"] == MAX_CONNECTIONS + 2
    assert reader.feed_health("A").connect_failures == MAX_CONNECTIONS + 2


RECORD_WRITER = """
import sys, time
from pipeline.shm import BookWriter, ShmSpace
w = BookWriter(ShmSpace(sys.argv[1], sys.argv[3]), "ex", ["S"], depth=3, epoch=1)
print("ready", flush=True)
end = time.time() + float(sys.argv[2])
n = 0
while time.time() < end:
    n += 1
    letter = "AB"[n % 2]
    w.update_record(1, n, error=letter * 127, label=letter * 63, rest_errors=1)
w.close()
"""


def test_a_reader_in_another_process_never_sees_a_torn_record(shm_prefix, tmp_path):
    """Each write sets the text, the label and the time together (time n: n REST errors, letter AB[n%2])."""
    import subprocess
    import sys

    script = tmp_path / "writer.py"
    script.write_text(RECORD_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), shm_prefix, "1.5", str(shm_prefix.names_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        reader = BookReader.open(shm_prefix, "ex")
        reads, seen = 0, set()
        while proc.poll() is None and reads < 20000:
            rec = reader.feed_health("S")
            reads += 1
            if rec.error_ns == 0:
                continue
            letter = "AB"[rec.error_ns % 2]
            assert rec.error == letter * 127 and rec.label == letter * 63
            assert rec.rest_errors == rec.error_ns
            seen.add(letter)
        reader.close()
        assert reads > 1000 and seen == {"A", "B"}
    finally:
        proc.kill()
        proc.wait()
