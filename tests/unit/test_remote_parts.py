"""The parts of the bus for other hosts, without processes: the exposure rule, [bus] config,
key files, and the snapshot service's answers (real shared memory, a real ROUTER/DEALER pair)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import zmq

from pipeline import curve, schema, snapshots
from pipeline.config import parse_config
from pipeline.errors import ConfigError
from pipeline.shm import BookState, BookWriter
from pipeline.trade_ring import TradeRingWriter

BASE = """
[pipeline]
run_dir = "run"
[exchanges.sim]
adapter = "binance"
symbols = ["BTCUSDT"]
"""


def _config(tmp_path: Path, extra_exchange: str = "", extra: str = ""):
    return parse_config(BASE + extra_exchange + extra, tmp_path)


@pytest.mark.parametrize("endpoint, local", [
    ("tcp://127.0.0.1:5555", True), ("tcp://localhost:5555", True), ("tcp://[::1]:5555", True),
    ("tcp://127.0.0.2:5555", True), ("ipc:///tmp/x.sock", True),
    ("tcp://0.0.0.0:5555", False), ("tcp://*:5555", False), ("tcp://10.1.2.3:5555", False),
    ("tcp://eth0:5555", False), ("tcp://[::]:5555", False),
])
def test_loopback(endpoint, local):
    assert curve.loopback(endpoint) is local


def test_a_tcp_endpoint_beyond_loopback_needs_curve_or_insecure(tmp_path):
    exposed = 'l2_endpoint = "tcp://0.0.0.0:5556"\n'
    config = _config(tmp_path, exposed)
    with pytest.raises(ConfigError) as err:
        curve.check_exposure(config, config.exchange("sim"))
    assert err.value.key == "exchanges.sim.l2_endpoint" and "insecure = true" in err.value.reason
    insecure = _config(tmp_path, exposed, "[bus]\ninsecure = true\n")
    curve.check_exposure(insecure, insecure.exchange("sim"))
    loop = _config(tmp_path, 'l2_endpoint = "tcp://127.0.0.1:5556"\nsnapshot_endpoint = "tcp://127.0.0.1:5557"\n')
    curve.check_exposure(loop, loop.exchange("sim"))
    curve.generate(tmp_path / "keys")
    secured = _config(tmp_path, exposed, '[bus]\ncurve_secret_key = "keys/server.key_secret"\n'
                                         'curve_clients_dir = "keys/clients"\n')
    curve.check_exposure(secured, secured.exchange("sim"))
    assert secured.bus.curve and secured.bus.curve_clients_dir == (tmp_path / "keys" / "clients").resolve()


@pytest.mark.parametrize("table, key", [
    ('curve_secret_key = "keys/server.key_secret"\n', "bus.curve_clients_dir"),
    ('curve_clients_dir = "keys/clients"\n', "bus.curve_secret_key"),
    ('curve_client_secret_key = "keys/client.key_secret"\n', "bus.curve_server_public_key"),
    ('curve_secret_key = "keys/nope"\ncurve_clients_dir = "keys/clients"\n', "bus.curve_secret_key"),
    ('insecure = "yes"\n', "bus.insecure"),
    ('curve = true\n', "bus.curve"),
])
def test_bus_config_errors_name_the_key(tmp_path, table, key):
    curve.generate(tmp_path / "keys")
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, extra="[bus]\n" + table)
    assert err.value.key == key


def test_snapshot_endpoint_must_be_tcp(tmp_path):
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, 'snapshot_endpoint = "ipc:///tmp/s.sock"\n')
    assert err.value.key == "exchanges.sim.snapshot_endpoint"


def test_keys_generate_writes_pairs_and_never_overwrites(tmp_path):
    written = curve.generate(tmp_path, ("a", "b"))
    names = sorted(p.relative_to(tmp_path).as_posix() for p in written)
    assert names == ["a.key", "a.key_secret", "b.key", "b.key_secret", "clients/a.key", "clients/b.key",
                     "server.key", "server.key_secret"]
    assert (tmp_path / "server.key_secret").stat().st_mode & 0o077 == 0
    keys = curve.ClientKeys.load(tmp_path / "a.key_secret", tmp_path / "server.key")
    assert len(keys.public) == len(keys.secret) == len(keys.server_public) == 40
    with pytest.raises(FileExistsError):
        curve.generate(tmp_path, ("c",))


@pytest.fixture
def service(shm_prefix, tmp_path):
    """A snapshot service over real shared memory (one book, a trade ring of 8), and a client."""
    books = BookWriter(shm_prefix, "ex", ["A", "B"], depth=3, epoch=11)
    ring = TradeRingWriter(shm_prefix, "ex", ["A", "B"], 8, epoch=11)
    books.write_view(0, 5, BookState.LIVE, 100, 200, 77, [3.0, 2.0], [1.0, 1.5], [4.0], [2.0])
    for seq in range(1, 21):
        ring.append(0, seq, seq, seq + 1, 100.0 + seq, 0.5, "buy", f"t{seq}")
    ctx = zmq.Context()
    svc = snapshots.SnapshotService(ctx, shm_prefix, "ex", 3, f"ipc://{tmp_path}/snap.sock")
    client = snapshots.SnapshotClient(ctx, f"ipc://{tmp_path}/snap.sock", timeout=5.0)
    yield svc, client
    client.close()
    svc.close()
    ctx.term()
    ring.close()
    books.close()


def _served(svc, call):
    """Run a client call while the service answers from an event loop (as in the ingest)."""
    async def main():
        svc.start(asyncio.get_running_loop())
        return await asyncio.to_thread(call)
    return asyncio.run(main())


def test_books_answer_is_the_shared_memory_view_then_the_end_marker(service):
    svc, client = service
    books, end = _served(svc, lambda: client.books(None))
    assert [(b.symbol, b.snapshot, b.epoch) for b in books] == [("A", True, 11), ("B", True, 11)]
    a = books[0]
    assert (a.seq, a.state, a.update_id, a.depth) == (5, "live", 77, 3)
    assert a.bids == [(3.0, 1.0), (2.0, 1.5)] and a.asks == [(4.0, 2.0)]
    assert (end.epoch, end.count, end.error) == (11, 2, "")
    books, end = _served(svc, lambda: client.books(["nope"]))
    assert books == [] and "nope" in end.error


def test_trades_answer_tells_what_the_ring_no_longer_has(service, monkeypatch):
    svc, client = service
    trades, end = _served(svc, lambda: client.trades("A", 10, 15))
    assert [t.seq for t in trades] == [13, 14, 15] and end.lost == [(10, 12)]  # the ring keeps 13..20
    assert [(t.trade_id, t.price, t.side) for t in trades[:1]] == [("t13", 113.0, "buy")]
    trades, end = _served(svc, lambda: client.trades("A", 19, 22))
    assert [t.seq for t in trades] == [19, 20] and end.lost == [(21, 22)]  # not written yet
    monkeypatch.setattr(snapshots, "MAX_TRADES", 3)
    trades, end = _served(svc, lambda: client.trades("A", 13, 20))
    assert [t.seq for t in trades] == [18, 19, 20] and end.lost == [(13, 17)]  # bounded: the oldest part


def test_a_bad_request_gets_an_error_and_a_silent_service_a_timeout(service, tmp_path):
    svc, client = service
    assert "bad request" in svc.answer(b"\x01")[-1][1].decode(errors="replace")
    assert svc.answer(schema.encode(schema.L2Update(exchange="e", symbol="s", epoch=1, seq=1, ts_exchange=0,
                                                    ts_received=0, snapshot=True, state="live", depth=1,
                                                    bids=[], asks=[])))[-1][0] == snapshots.END_TOPIC
    silent = snapshots.SnapshotClient(client.ctx, f"ipc://{tmp_path}/nobody.sock", timeout=0.2)
    with pytest.raises(snapshots.SnapshotUnavailable):
        silent.books()
    assert silent.sock is None  # dropped: a late answer cannot be taken for the next one's


def test_clock_offset_from_four_times():
    # the other clock is 5 ms ahead; 1 ms there, 3 ms back, 0.5 ms to answer
    ms = 1_000_000
    c = snapshots.ClockOffset.from_times(0, 1 * ms + 5 * ms, 1 * ms + 5 * ms + ms // 2, 4 * ms + ms // 2)
    assert c.rtt_ns == 4 * ms
    assert c.offset_ns == 4 * ms  # the way there and back split evenly: off by (3 - 1) / 2 ms at most
    assert abs(c.offset_ns - 5 * ms) <= c.error_ns


def test_clock_and_status_answers(service):
    svc, client = service
    clock = _served(svc, lambda: client.clock(probes=3))
    assert abs(clock.offset_ns) <= clock.error_ns  # one clock on both sides: zero within the bound
    with pytest.raises(snapshots.SnapshotUnavailable, match="no status"):
        _served(svc, client.status)  # a service without a status callable says so
    svc.status = lambda: {"feeds": [{"symbol": "A"}], "exchanges": []}
    st = _served(svc, client.status)
    assert st["feeds"] == [{"symbol": "A"}] and st["time"] > 0
    svc.status = lambda: 1 / 0
    with pytest.raises(snapshots.SnapshotUnavailable, match="status failed: division by zero"):
        _served(svc, client.status)


@pytest.mark.parametrize("text, endpoint", [("10.0.0.5:7000", "tcp://10.0.0.5:7000"),
                                            ("tokyo-1:7000", "tcp://tokyo-1:7000"),
                                            ("[::1]:7000", "tcp://[::1]:7000"),
                                            ("tcp://h:1", "tcp://h:1"), ("ipc:///tmp/x.sock", "ipc:///tmp/x.sock"),
                                            ("nats://hub:4222", "nats://hub:4222")])
def test_remote_endpoint(text, endpoint):
    from pipeline.app.status import remote_endpoint

    assert remote_endpoint(text) == endpoint


@pytest.mark.parametrize("text", ["host", "host:", ":7000", "host:port", "host:70000"])
def test_remote_endpoint_refuses(text):
    from pipeline.app.status import remote_endpoint

    with pytest.raises(ValueError, match="HOST:PORT"):
        remote_endpoint(text)
