"""Issue 16, "Failures you can see": a venue that cannot be reached used to show only
"syncing" with every counter at 0 in `pipeline status`, the reason only in the log.

Real ingest processes against venues that cannot be reached: a closed loopback port
(connection refused), a WebSocket host that fails DNS, a server that does not speak TLS
behind a wss:// URL, and a venue whose REST discovery
(Lighter market ids) fails DNS.  `pipeline status --json` must count the failed attempts,
keep counting, and say why, per feed, per exchange and per connection; `pipeline book` and
`pipeline status` must exit non-zero.  A publisher runs too, so that only the books are wrong.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import urllib.error
import urllib.request

import pytest

from helpers import PIPELINE, Procs, eventually, free_port, short_tmpdir, status

pytestmark = pytest.mark.integration


class NotTls:
    """A loopback TCP server that answers every connection in plain HTTP: a TLS client fails."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def unreachable():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    closed = free_port()  # bound and released: nothing listens there
    not_tls = NotTls()
    publisher_port = free_port()
    config = workdir / "p.toml"
    config.write_text(f"""
[pipeline]
run_dir = "run"

[publisher]
port = {publisher_port}

[exchanges.refused]
adapter = "binance"
symbols = ["BTCUSDT", "ETHUSDT"]
ws_url = "ws://127.0.0.1:{closed}"
rest_url = "http://127.0.0.1:{closed}"

[exchanges.nodns]
adapter = "binance"
symbols = ["BTCUSDT"]
ws_url = "ws://nonexistent.invalid:1/"
rest_url = "http://nonexistent.invalid:1"

[exchanges.restdns]
adapter = "lighter"
symbols = ["ETH"]
ws_url = "ws://127.0.0.1:{closed}/stream"
rest_url = "http://nonexistent.invalid:1"

[exchanges.notls]
adapter = "binance"
symbols = ["BTCUSDT"]
ws_url = "wss://127.0.0.1:{not_tls.port}"
rest_url = "https://127.0.0.1:{not_tls.port}"
""")
    try:
        for name in ("refused", "nodns", "restdns", "notls"):
            procs.start(name, PIPELINE + ["--config", str(config), "ingest", name])
        publisher = procs.start("publisher", PIPELINE + ["--config", str(config), "publish"])
        yield {"config": config, "procs": procs, "port": closed, "publisher": publisher,
               "publisher_port": publisher_port}
    finally:
        procs.stop_all()
        not_tls.close()


def _by_exchange(st: dict) -> tuple[dict, dict]:
    ex = {e["exchange"]: e for e in st["exchanges"]}
    feeds = {(f["exchange"], f["symbol"]): f for f in st["feeds"]}
    return ex, feeds


def test_refused_connections_are_counted_and_explained(unreachable):
    config, port = unreachable["config"], unreachable["port"]
    first = eventually(lambda: (s := status(config)) and _by_exchange(s)[0]["refused"].get("connect_failures", 0) >= 2
                       and s, 30, 0.2, "failed connects counted")
    ex, feeds = _by_exchange(first)
    e = ex["refused"]
    assert e["frames"] == 0 and e["connections"] and all(c["opened"] == 0 for c in e["connections"])
    assert "connection refused" in e["last_error"] and e["last_error_age_s"] >= 0
    assert e["last_error_time"].endswith("Z")
    for c in e["connections"]:  # depth and trades: each one down, with its own reason
        assert c["url"] == f"ws://127.0.0.1:{port}/stream" and c["state"] in ("down", "connecting")
    assert {c["kind"] for c in e["connections"]} == {"depth", "trades"}
    assert sum(c["connect_failures"] for c in e["connections"]) == e["connect_failures"]
    for sym in ("BTCUSDT", "ETHUSDT"):
        f = feeds[("refused", sym)]
        assert f["state"] == "syncing" and f["connect_failures"] >= 1
        assert "connect: connection refused" in f["last_error"]

    # the attempts go on (backoff), and the counts grow with them
    n = e["connect_failures"]
    eventually(lambda: _by_exchange(status(config))[0]["refused"]["connect_failures"] > n, 30, 0.2,
               "more failed connects")


def test_a_websocket_host_that_fails_dns_says_so(unreachable):
    config = unreachable["config"]
    st = eventually(lambda: (s := status(config)) and _by_exchange(s)[0]["nodns"].get("connect_failures", 0) >= 1
                    and s, 30, 0.2, "failed DNS lookups counted")
    ex, feeds = _by_exchange(st)
    assert "DNS lookup failed" in ex["nodns"]["last_error"]
    f = feeds[("nodns", "BTCUSDT")]
    assert f["state"] == "syncing" and f["connect_failures"] >= 1 and "DNS lookup failed" in f["last_error"]


def test_a_server_that_does_not_speak_tls_is_a_tls_error(unreachable):
    config = unreachable["config"]
    st = eventually(lambda: (s := status(config)) and _by_exchange(s)[0]["notls"].get("connect_failures", 0) >= 1
                    and s, 30, 0.2, "failed TLS handshakes counted")
    ex, feeds = _by_exchange(st)
    assert ex["notls"]["last_error"].startswith(("depth connect: TLS error: ", "trades connect: TLS error: "))
    assert "TLS error" in feeds[("notls", "BTCUSDT")]["last_error"]


def test_rest_discovery_that_fails_dns_counts_rest_errors_for_every_feed(unreachable):
    config = unreachable["config"]
    st = eventually(lambda: (s := status(config)) and _by_exchange(s)[0]["restdns"].get("rest_errors", 0) >= 2
                    and s, 30, 0.2, "REST errors counted")
    ex, feeds = _by_exchange(st)
    e = ex["restdns"]
    assert e["rest_requests"] >= e["rest_errors"] and e["last_error"].startswith("REST discovery: DNS lookup failed")
    f = feeds[("restdns", "ETH")]
    assert f["rest_errors"] >= 2 and f["last_error"].startswith("REST discovery: DNS lookup failed")


def test_the_status_table_shows_the_reason(unreachable):
    config = unreachable["config"]
    eventually(lambda: _by_exchange(status(config))[0]["refused"].get("connect_failures", 0) >= 1, 30, 0.2,
               "failed connects counted")
    out = subprocess.run(PIPELINE + ["--config", str(config), "status"], capture_output=True, text=True, timeout=30)
    lines = out.stdout.splitlines()
    feed_line = next(line for line in lines if line.startswith("refused BTCUSDT syncing: "))
    assert "failed connects" in feed_line and "connection refused" in feed_line
    assert any(line.startswith("refused: ") and "failed connects" in line for line in lines)
    assert any(line.strip().startswith("depth ") and "connection refused" in line for line in lines)


def test_book_of_an_unreachable_venue_says_why_and_exits_3(unreachable):
    """`pipeline book` used to print an empty ladder with `age nan` and exit 0."""
    config = unreachable["config"]
    eventually(lambda: _by_exchange(status(config))[1][("refused", "BTCUSDT")].get("last_error"), 30, 0.2,
               "an error recorded")
    out = subprocess.run(PIPELINE + ["--config", str(config), "book", "refused", "BTCUSDT"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 3, out.stderr
    assert "nan" not in out.stdout and "never updated" in out.stdout
    why = next(line for line in out.stdout.splitlines() if line.startswith("NOT LIVE: "))
    assert why.startswith("NOT LIVE: syncing: not connected; ") and "failed connects" in why
    assert "connection refused" in why

    out = subprocess.run(PIPELINE + ["--config", str(config), "book", "nodns", "BTCUSDT", "--json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 3, out.stderr
    book = json.loads(out.stdout)
    assert book["state"] == "syncing" and book["bids"] == [] and book["asks"] == []
    assert book["age_s"] is None and book["time_received"] is None and book["update_id"] == 0
    assert book["reason"].startswith("syncing: not connected") and "DNS lookup failed" in book["last_error"]

    # the best-available book: neither source works, and the shared-memory half says why
    out = subprocess.run(PIPELINE + ["--config", str(config), "book", "refused", "BTCUSDT", "--rest-fallback"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "shm: book is syncing in shared memory (syncing: not connected; " in out.stderr
    assert "connection refused" in out.stderr.split("; rest: ")[0]


def test_publisher_health_gives_the_reason(unreachable):
    """`GET /health` answers 503 with a reason per feed: its state and its last error."""
    def health():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{unreachable['publisher_port']}/health", timeout=5)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
            return exc.code == 503 and any("connection refused" in r for r in body["reasons"]) and body
        return None
    body = eventually(health, 30, 0.3, "a 503 with the reasons")
    why = next(r for r in body["reasons"] if r.startswith("refused BTCUSDT: "))
    assert why.startswith("refused BTCUSDT: syncing (last error ") and "connect: connection refused" in why
    assert any(r.startswith("nodns BTCUSDT: syncing (last error ") and "DNS lookup failed" in r
               for r in body["reasons"])


def _status_run(config, *args):
    return subprocess.run(PIPELINE + ["--config", str(config), "status", *args], capture_output=True, text=True,
                          timeout=30)


def test_status_exits_3_while_books_are_not_live_and_4_when_a_process_is_down(unreachable):
    """Runs last in this module: it stops the publisher."""
    config, procs = unreachable["config"], unreachable["procs"]
    st = eventually(lambda: (s := status(config)) and all(p["state"] == "running" for p in s["processes"]) and s,
                    30, 0.2, "every process running")
    out = _status_run(config, "--json")
    assert out.returncode == 3, out.stderr
    st = json.loads(out.stdout)
    assert st["down"] == [] and set(st["not_live"]) == {
        "refused BTCUSDT syncing", "refused ETHUSDT syncing", "nodns BTCUSDT syncing", "restdns ETH syncing",
        "notls BTCUSDT syncing"}
    out = _status_run(config)
    assert out.returncode == 3 and "NOT LIVE: refused BTCUSDT syncing" in out.stdout

    assert procs.stop(unreachable["publisher"]) is not None
    out = _status_run(config, "--json")
    assert out.returncode == 4, out.stderr
    assert json.loads(out.stdout)["down"] == ["process publisher stopped"]
    out = _status_run(config)
    assert out.returncode == 4 and "DOWN: process publisher stopped" in out.stdout
