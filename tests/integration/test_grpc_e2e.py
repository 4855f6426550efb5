"""sim -> ingest -> `pipeline grpc` -> real gRPC clients, as real processes on loopback (docs/grpc.md).

One sim, one ingest and one gRPC server serve the module; a second server with a token and TLS
checks access.  Clients are this test process (grpcio's own client) and, for reflection, a
separate Python process that never imports the generated stubs.  Timing is never asserted
tightly: the SNAPSHOTS interval is checked by counting, and a fast client's latency beside a
stalled one is compared with a baseline from the same test with a generous margin.
"""

from __future__ import annotations

import json
import queue
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers import PIPELINE, Procs, eventually, feeds, free_port, short_tmpdir, sim_fault, start_sim, status, write_config
from l2pipeline.v1 import marketdata_pb2 as pb
from l2pipeline.v1 import marketdata_pb2_grpc as rpc

pytestmark = pytest.mark.integration
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
TOKEN = "grpc-s3cret"
DELTAS, SNAPSHOTS = pb.SubscribeBooksRequest.DELTAS, pb.SubscribeBooksRequest.SNAPSHOTS
CLIENT_QUEUE = 100
SERVICE = "l2pipeline.v1.MarketData"


def start_grpc(procs: Procs, config, name: str = "grpc") -> int:
    ready = procs.workdir / f"{name}.port"
    procs.start(name, PIPELINE + ["--config", str(config), "grpc", "--ready-file", str(ready)])
    return int(eventually(lambda: ready.exists() and ready.read_text().strip(), 30, what=f"{name} ready file"))


class StreamReader:
    """A server stream read by a thread into a queue, so the test can wait with a timeout."""

    def __init__(self, call):
        self.call = call
        self.items: queue.Queue = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for m in self.call:
                self.items.put((time.time(), m))
        except grpc.RpcError as exc:
            self.error = exc
        self.items.put(None)

    def get(self, timeout: float = 10.0):
        item = self.items.get(timeout=timeout)
        if item is None:
            raise AssertionError(f"stream ended: {self.error}")
        return item[1]

    def cancel(self) -> None:
        self.call.cancel()
        self.thread.join(5)


def book_json(config, symbol: str) -> dict:
    out = subprocess.run(PIPELINE + ["--config", str(config), "book", "sim", symbol, "--json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def apply(book: dict, levels) -> None:
    for lv in levels:
        if lv.size > 0:
            book[lv.price] = lv.size
        else:
            book.pop(lv.price, None)


@pytest.fixture(scope="module")
def stack():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        sim_port = start_sim(procs, ",".join(SYMBOLS), rate=1500)
        port = free_port()
        config = write_config(workdir, sim_port, SYMBOLS,
                              extra=f'depth_stream = "depth@0ms"\nl2_throttle_ms = 100\n'
                                    f'[grpc]\nport = {port}\nclient_queue = {CLIENT_QUEUE}\n')
        ingest = procs.start("ingest", PIPELINE + ["--config", str(config), "ingest", "sim"])
        eventually(lambda: all(f["state"] == "live" for f in feeds(config).values()), 30, 0.2, "books live")
        assert start_grpc(procs, config) == port
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=20)
        yield {"config": config, "port": port, "procs": procs, "workdir": workdir, "sim_port": sim_port,
               "channel": channel, "stub": rpc.MarketDataStub(channel), "ingest": ingest}
        channel.close()
    finally:
        procs.stop_all()


# ------------------------------------------------------------------------------ unary calls

def test_get_book_equals_pipeline_book(stack):
    stub = stack["stub"]
    sim_fault(stack["sim_port"], name="pause")
    try:
        def quiet():
            before = [book_json(stack["config"], s)["seq"] for s in SYMBOLS]
            time.sleep(0.5)
            return [book_json(stack["config"], s)["seq"] for s in SYMBOLS] == before
        eventually(quiet, 30, 0.0, "books quiet after the pause")
        for sym in SYMBOLS:
            ref = book_json(stack["config"], sym)
            b = stub.GetBook(pb.GetBookRequest(exchange="sim", symbol=sym), timeout=10)
            assert (b.exchange, b.symbol, b.epoch, b.seq) == ("sim", sym, ref["epoch"], ref["seq"])
            assert b.state == pb.BOOK_STATE_LIVE and ref["state"] == "live"
            assert [[lv.price, lv.size] for lv in b.bids] == ref["bids"]
            assert [[lv.price, lv.size] for lv in b.asks] == ref["asks"]
            assert b.time_received.seconds > 1_600_000_000
            top3 = stub.GetBook(pb.GetBookRequest(exchange="sim", symbol=sym, depth=3), timeout=10)
            assert [[lv.price, lv.size] for lv in top3.bids] == ref["bids"][:3] and len(top3.asks) == 3
    finally:
        sim_fault(stack["sim_port"], name="resume")


def test_list_feeds_matches_pipeline_status(stack):
    resp = stack["stub"].ListFeeds(pb.ListFeedsRequest(), timeout=10)
    rows = {f["symbol"]: f for f in status(stack["config"])["feeds"]}
    assert sorted((f.exchange, f.symbol) for f in resp.feeds) == [("sim", s) for s in sorted(SYMBOLS)]
    for f in resp.feeds:
        assert f.state == pb.BOOK_STATE_LIVE and f.depth == 20 and f.epoch == rows[f.symbol]["epoch"]
        assert f.updates > 0 and f.best_bid.price < f.best_ask.price


@pytest.mark.parametrize("request_,code,text", [
    (pb.GetBookRequest(exchange="nasdaq", symbol="BTCUSDT"), grpc.StatusCode.NOT_FOUND, "unknown exchange"),
    (pb.GetBookRequest(exchange="sim", symbol="NOPEUSDT"), grpc.StatusCode.NOT_FOUND, "unknown symbol"),
    (pb.GetBookRequest(exchange="sim", symbol="BTCUSDT", depth=500), grpc.StatusCode.INVALID_ARGUMENT, "depth 500"),
])
def test_get_book_errors_are_status_codes(stack, request_, code, text):
    with pytest.raises(grpc.RpcError) as e:
        stack["stub"].GetBook(request_, timeout=10)
    assert e.value.code() == code and text in e.value.details()


@pytest.mark.parametrize("request_,code,text", [
    (pb.SubscribeBooksRequest(exchange="sim", mode=0), grpc.StatusCode.INVALID_ARGUMENT, "mode"),
    (pb.SubscribeBooksRequest(exchange="sim", mode=9), grpc.StatusCode.INVALID_ARGUMENT, "mode"),
    (pb.SubscribeBooksRequest(exchange="sim", mode=DELTAS, depth=21), grpc.StatusCode.INVALID_ARGUMENT, "depth 21"),
    (pb.SubscribeBooksRequest(exchange="sim", mode=SNAPSHOTS, interval_ms=1), grpc.StatusCode.INVALID_ARGUMENT,
     "interval_ms"),
    (pb.SubscribeBooksRequest(exchange="x", mode=DELTAS), grpc.StatusCode.NOT_FOUND, "unknown exchange"),
    (pb.SubscribeBooksRequest(exchange="sim", symbols=["BTCUSDT", "X"], mode=DELTAS), grpc.StatusCode.NOT_FOUND,
     "unknown symbol 'X'"),
])
def test_subscribe_books_errors_are_status_codes(stack, request_, code, text):
    with pytest.raises(grpc.RpcError) as e:
        next(stack["stub"].SubscribeBooks(request_, timeout=10))
    assert e.value.code() == code and text in e.value.details()


def test_subscribe_trades_unknown_symbol_is_not_found(stack):
    with pytest.raises(grpc.RpcError) as e:
        next(stack["stub"].SubscribeTrades(pb.SubscribeTradesRequest(exchange="sim", symbols=["NOPE"]), timeout=10))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_and_reflection_answer(stack):
    health = health_pb2_grpc.HealthStub(stack["channel"])
    for service in ("", SERVICE):
        r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert r.status == health_pb2.HealthCheckResponse.SERVING, service
    # a client with no generated code: the schema from reflection, then GetBook through it
    script = textwrap.dedent(f"""
        import json, sys
        import grpc
        from google.protobuf import message_factory
        from google.protobuf.descriptor_pool import DescriptorPool
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

        channel = grpc.insecure_channel("127.0.0.1:{stack['port']}")
        db = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(db.get_services())
        method = DescriptorPool(db).FindServiceByName("{SERVICE}").FindMethodByName("GetBook")
        Request = message_factory.GetMessageClass(method.input_type)
        Reply = message_factory.GetMessageClass(method.output_type)
        get_book = channel.unary_unary("/{SERVICE}/GetBook", request_serializer=Request.SerializeToString,
                                       response_deserializer=Reply.FromString)
        book = get_book(Request(exchange="sim", symbol="BTCUSDT", depth=3), timeout=10)
        assert "l2pipeline" not in sys.modules
        print(json.dumps({{"services": services, "type": type(book).DESCRIPTOR.full_name, "seq": book.seq,
                          "bids": [[lv.price, lv.size] for lv in book.bids]}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert SERVICE in got["services"] and "grpc.health.v1.Health" in got["services"]
    assert got["type"] == "l2pipeline.v1.Book" and got["seq"] > 0 and len(got["bids"]) == 3


# ------------------------------------------------------------------------------ streams

def test_deltas_rebuild_books_equal_to_shared_memory_with_contiguous_seq(stack):
    depths = {"BTCUSDT": 20, "ETHUSDT": 5}
    readers = {s: StreamReader(stack["stub"].SubscribeBooks(
        pb.SubscribeBooksRequest(exchange="sim", symbols=[s], depth=d, mode=DELTAS))) for s, d in depths.items()}
    books = {s: ({}, {}) for s in SYMBOLS}
    last = {s: (None, None) for s in SYMBOLS}
    counts = {s: {"snapshots": 0, "deltas": 0} for s in SYMBOLS}

    def take(sym: str) -> pb.BookMessage:
        m = readers[sym].get()
        bids, asks = books[sym]
        assert m.symbol == sym and m.exchange == "sim"
        if m.is_snapshot:
            bids.clear(), asks.clear()
            counts[sym]["snapshots"] += 1
        else:
            assert (m.epoch, m.seq) == (last[sym][0], last[sym][1] + 1), (sym, last[sym], m.epoch, m.seq)
            counts[sym]["deltas"] += 1
        apply(bids, m.bids), apply(asks, m.asks)
        assert len(bids) <= depths[sym] and len(asks) <= depths[sym]
        last[sym] = (m.epoch, m.seq)
        return m

    try:
        first = {s: take(s) for s in SYMBOLS}
        assert all(m.is_snapshot and m.state == pb.BOOK_STATE_LIVE for m in first.values())
        while sum(c["deltas"] for c in counts.values()) < 2000:  # thousands of updates, both books
            for sym in SYMBOLS:
                while not readers[sym].items.empty():
                    take(sym)
            time.sleep(0.01)
        for sym, depth in depths.items():
            for _attempt in range(5):
                ref = book_json(stack["config"], sym)  # the shared-memory view, read by `pipeline book`
                while last[sym][1] < ref["seq"]:
                    take(sym)
                if last[sym][1] == ref["seq"]:
                    break  # else a conflation snapshot jumped past it: try again
            assert last[sym] == (ref["epoch"], ref["seq"])
            bids, asks = books[sym]
            assert [list(x) for x in sorted(bids.items(), reverse=True)] == ref["bids"][:depth]
            assert [list(x) for x in sorted(asks.items())] == ref["asks"][:depth]
    finally:
        for r in readers.values():
            r.cancel()
    assert all(c["deltas"] >= 300 for c in counts.values()), counts


def test_snapshots_mode_respects_its_interval(stack):
    interval_ms = 200
    r = StreamReader(stack["stub"].SubscribeBooks(pb.SubscribeBooksRequest(
        exchange="sim", depth=5, mode=SNAPSHOTS, interval_ms=interval_ms)))
    got: dict[str, list[float]] = {s: [] for s in SYMBOLS}
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            m = r.get()
            assert m.is_snapshot and len(m.bids) == 5 and len(m.asks) == 5 and m.bids[0].price < m.asks[0].price
            got[m.symbol].append(time.monotonic())
    finally:
        r.cancel()
    for sym, stamps in got.items():
        span = stamps[-1] - stamps[0]
        # the book changes all the time: about one snapshot per interval, never more (+1 for jitter)
        assert 5 <= len(stamps) <= span / (interval_ms / 1000) + 2, (sym, len(stamps), span)


def test_stalled_trade_client_is_ended_with_resource_exhausted_while_another_keeps_its_latency(stack):
    stub = stack["stub"]
    fast = StreamReader(stub.SubscribeTrades(pb.SubscribeTradesRequest(exchange="sim")))
    records: list[tuple[float, pb.Trade]] = []

    def collect(until: float) -> None:
        while time.time() < until:
            try:
                item = fast.items.get(timeout=0.1)
            except queue.Empty:
                continue
            assert item is not None, fast.error
            records.append(item)

    def latencies(t0: float, t1: float) -> list[float]:
        return [now - (m.time_received.seconds + m.time_received.nanos / 1e9) for now, m in records if t0 <= now < t1]

    t_base = time.time()
    collect(t_base + 2.0)
    baseline = latencies(t_base + 0.3, time.time())
    assert len(baseline) >= 20
    # the stalled client: small HTTP/2 windows (no BDP growth), and it never reads
    stalled_channel = grpc.insecure_channel(f"127.0.0.1:{stack['port']}", options=[
        ("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)])
    try:
        stalled = stalled_channel.unary_stream("/l2pipeline.v1.MarketData/SubscribeTrades",
                                               request_serializer=pb.SubscribeTradesRequest.SerializeToString,
                                               response_deserializer=pb.Trade.FromString)(
            pb.SubscribeTradesRequest(exchange="sim"))
        t_stall = time.time()
        stats_file = stack["config"].parent / "run" / "grpc.stats.json"

        def ended_as_slow():
            collect(time.time() + 0.2)
            st = json.loads(stats_file.read_text())
            return st if st["disconnected"].get("slow") else None
        st = eventually(ended_as_slow, 60, 0.0, "the stalled client ended as too slow")
        t_ended = time.time()
        collect(t_ended + 0.5)
        during = latencies(t_stall, t_ended)
        # bounded: what the server queued for it was at most client_queue, then dropped with the stream
        assert st["undelivered_trades"] == CLIENT_QUEUE
        assert all(s["queued"] <= CLIENT_QUEUE for s in st["stream_list"])
        # the other client: every trade, in order, same order of latency
        for sym in SYMBOLS:
            seqs = [m.seq for _, m in records if m.symbol == sym]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), sym
        p50_base, p50_during = statistics.median(baseline), statistics.median(during)
        assert len(during) >= 5 and p50_during <= 10 * p50_base + 0.05, (p50_base, p50_during)
        # the stalled client reads at last: what grpc had buffered, then the status with the reason
        with pytest.raises(grpc.RpcError) as e:
            for _ in stalled:
                pass
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "too slow" in e.value.details()
    finally:
        stalled_channel.close()
        fast.cancel()
    print(f"\ntrade latency to a gRPC client, p50 {p50_base * 1e3:.2f} ms alone, {p50_during * 1e3:.2f} ms beside "
          f"a stalled client (ended after {t_ended - t_stall:.1f} s)")


def test_status_shows_the_grpc_server_and_its_streams(stack):
    r = StreamReader(stack["stub"].SubscribeBooks(pb.SubscribeBooksRequest(exchange="sim", mode=DELTAS, depth=3)))
    try:
        r.get()

        def listed():
            g = status(stack["config"]).get("grpc", {})
            return g if g.get("state") == "up" and any(s["rpc"] == "books" and s["depth"] == 3
                                                        for s in g["stream_list"]) else None
        g = eventually(listed, 20, 0.3, "the stream in pipeline status")
        assert g["address"].endswith(f":{stack['port']}") and g["subscriptions"] >= 2 and g["trades_in"] > 0
        procs = {p["name"]: p for p in status(stack["config"])["processes"]}
        assert procs["grpc"]["state"] == "running"
    finally:
        r.cancel()


def test_killed_ingest_gives_a_new_epoch_and_a_fresh_snapshot(stack):
    procs, config = stack["procs"], stack["config"]
    health = health_pb2_grpc.HealthStub(stack["channel"])
    r = StreamReader(stack["stub"].SubscribeBooks(
        pb.SubscribeBooksRequest(exchange="sim", symbols=["BTCUSDT"], depth=10, mode=DELTAS)))
    try:
        m = r.get()
        assert m.is_snapshot
        epoch, seq = m.epoch, m.seq
        procs.stop(stack["ingest"], signal.SIGKILL)

        def not_serving():
            return health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5).status == \
                health_pb2.HealthCheckResponse.NOT_SERVING
        eventually(not_serving, 30, 0.2, "health NOT_SERVING without the ingest")
        procs.start("ingest2", PIPELINE + ["--config", str(config), "ingest", "sim"])
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "no snapshot of the new epoch"
            m = r.get(30)
            if m.epoch != epoch:
                break
            assert not m.is_snapshot and m.seq == seq + 1
            seq = m.seq
        assert m.is_snapshot and m.epoch > epoch  # the first message of the new epoch is a snapshot
        bids, asks = {}, {}
        apply(bids, m.bids), apply(asks, m.asks)
        seq = m.seq
        for _ in range(50):
            m = r.get(30)
            if m.is_snapshot:  # (the restarted book goes live: a resync snapshot is fine)
                bids, asks = {}, {}
            else:
                assert m.seq == seq + 1
            apply(bids, m.bids), apply(asks, m.asks)
            seq = m.seq
        eventually(lambda: health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5).status ==
                   health_pb2.HealthCheckResponse.SERVING, 30, 0.2, "SERVING again")
    finally:
        r.cancel()


# ------------------------------------------------------------------------------ access

def make_cert(workdir):
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    out = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                          "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                          "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return cert, key


def test_token_and_tls_are_required_when_configured(stack):
    workdir = stack["workdir"]
    cert, key = make_cert(workdir)
    port = free_port()
    text = stack["config"].read_text().replace(
        f"[grpc]\nport = {stack['port']}",
        f'[grpc]\nhost = "0.0.0.0"\nport = {port}\ntoken = "{TOKEN}"\ntls_cert = "{cert}"\ntls_key = "{key}"')
    config = workdir / "secure.toml"
    config.write_text(text)
    procs = stack["procs"]
    assert start_grpc(procs, config, "grpc-secure") == port
    creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with grpc.secure_channel(f"localhost:{port}", creds) as channel:
        stub = rpc.MarketDataStub(channel)
        req = pb.GetBookRequest(exchange="sim", symbol="BTCUSDT", depth=1)
        with pytest.raises(grpc.RpcError) as e:
            stub.GetBook(req, timeout=20)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "missing" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.GetBook(req, timeout=10, metadata=[("authorization", "Bearer wrong")])
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "wrong" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            next(stub.SubscribeTrades(pb.SubscribeTradesRequest(exchange="sim"), timeout=10))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        auth = [("authorization", f"Bearer {TOKEN}")]
        b = stub.GetBook(req, timeout=10, metadata=auth)
        assert b.seq > 0 and len(b.bids) == 1
        t = next(stub.SubscribeTrades(pb.SubscribeTradesRequest(exchange="sim"), timeout=20, metadata=auth))
        assert t.price > 0
    with grpc.insecure_channel(f"127.0.0.1:{port}") as plain:  # no TLS: no answer
        with pytest.raises(grpc.RpcError) as e:
            rpc.MarketDataStub(plain).GetBook(req, timeout=5, metadata=auth)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
