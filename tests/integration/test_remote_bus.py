"""The bus for other hosts: tcp endpoints with CURVE, the snapshot service, trade refill.

Real processes on loopback, as two hosts would be: a sim and one ingest (config p.toml, its
run_dir "run"), and consumers in this process with their own config (remote.toml: another
run_dir, so no shared memory of the ingest's; the tcp endpoints and a client key pair).
Books are compared with the ingest's shared memory on a paused market.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest
import zmq

from helpers import PIPELINE, Procs, eventually, feeds, free_port, short_tmpdir, sim_fault, start_sim, write_config
from pipeline.config import load_config
from pipeline.consumer import AsyncConsumer, Book, ClientKeys, Consumer, Trade
from pipeline.shm import BookReader
from pipeline.trade_ring import TradeRingReader

pytestmark = pytest.mark.integration
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def _remote_config(workdir, ports, keys: bool = True, name: str = "remote.toml"):
    trades, l2, snap = ports
    bus = (f'[bus]\ncurve_client_secret_key = "keys/client.key_secret"\n'
           f'curve_server_public_key = "keys/server.key"\n') if keys else ""
    f = workdir / name
    f.write_text(f"""
[pipeline]
run_dir = "remote-run"
{bus}
[exchanges.sim]
adapter = "binance"
symbols = {SYMBOLS!r}
trades_endpoint = "tcp://127.0.0.1:{trades}"
l2_endpoint = "tcp://127.0.0.1:{l2}"
snapshot_endpoint = "tcp://127.0.0.1:{snap}"
""".replace("'", '"'))
    return f


@pytest.fixture(scope="module")
def remote():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        done = subprocess.run(PIPELINE + ["keys", "generate", str(workdir / "keys"), "--client", "client",
                                          "--client", "stranger"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        (workdir / "keys" / "clients" / "stranger.key").unlink()  # a key pair the ingest does not allow
        port = start_sim(procs, ",".join(SYMBOLS), rate=800)
        ports = (free_port(), free_port(), free_port())
        config = write_config(workdir, port, SYMBOLS, extra=f"""
trades_endpoint = "tcp://127.0.0.1:{ports[0]}"
l2_endpoint = "tcp://127.0.0.1:{ports[1]}"
snapshot_endpoint = "tcp://127.0.0.1:{ports[2]}"
trade_ring_size = 4096

[bus]
curve_secret_key = "keys/server.key_secret"
curve_clients_dir = "keys/clients"
""")
        ingest = procs.start("ingest", PIPELINE + ["--config", str(config), "ingest", "sim"])
        eventually(lambda: all(f["state"] == "live" for f in feeds(config).values()), 30, 0.2, "all books live")
        yield {"workdir": workdir, "procs": procs, "port": port, "config": config, "ports": ports,
               "remote": load_config(_remote_config(workdir, ports)), "ingest": ingest}
    finally:
        procs.stop_all()


def _equal_to_shm(consumer: Consumer, config_path, port: int) -> None:
    """On a paused market: every book of the consumer equals the ingest's shared memory."""
    config = load_config(config_path)
    assert sim_fault(port, name="pause")["ok"]
    try:
        with BookReader.open(config.shm_prefix, "sim") as reader:
            def caught_up():
                consumer.poll(0.1)
                snaps = {s: reader.read(s) for s in SYMBOLS}
                books = {s: consumer.book("sim", s) for s in SYMBOLS}
                return all(b is not None and b.seq == snaps[s].seq and b.epoch == snaps[s].epoch
                           for s, b in books.items()) and (snaps, books)
            snaps, books = eventually(caught_up, 20, 0.0, "consumer caught up with shared memory")
            for s in SYMBOLS:
                bids, asks = books[s].top()
                assert [tuple(x) for x in snaps[s].bids.tolist()] == bids, s
                assert [tuple(x) for x in snaps[s].asks.tolist()] == asks, s
    finally:
        sim_fault(port, name="resume")


def test_a_consumer_without_the_client_key_receives_nothing(remote):
    workdir, ports = remote["workdir"], remote["ports"]
    keyless = load_config(_remote_config(workdir, ports, keys=False, name="keyless.toml"))
    stranger = ClientKeys.load(workdir / "keys" / "stranger.key_secret", workdir / "keys" / "server.key")
    with Consumer(remote["remote"], transport="tcp") as allowed, \
            Consumer(keyless, transport="tcp", snapshot_timeout=0.3) as plain, \
            Consumer(keyless, transport="tcp", keys=stranger, snapshot_timeout=0.3) as unknown:
        got = eventually(lambda: [e for e in allowed.poll(0.2) if isinstance(e, Trade)], 20, 0.0, "keyed trades")
        assert got
        deadline = time.monotonic() + 1.5  # trades flow meanwhile (800 updates/s), none reaches these two
        while time.monotonic() < deadline:
            assert allowed.poll(0.05) or True
            assert plain.poll(0.05) == [] and unknown.poll(0.05) == []
        assert not plain.trackers and not unknown.trackers  # no snapshot either


def test_a_remote_consumer_has_every_book_at_once_and_follows_it_equal_to_shm(remote):
    with Consumer(remote["remote"], transport="tcp", trades=False) as consumer:
        # the snapshot service answered before the constructor returned: books without waiting
        # for a periodic bus snapshot (snapshot_interval_s is 30 s here)
        assert all(consumer.book("sim", s) is not None for s in SYMBOLS)
        first = consumer.poll(0.5)
        assert {b.symbol for b in first if isinstance(b, Book)} == set(SYMBOLS)
        _equal_to_shm(consumer, remote["config"], remote["port"])
        assert all(consumer.trackers[("sim", s)].resyncs >= 1 for s in SYMBOLS)


def test_a_trade_gap_is_refilled_from_the_trade_ring(remote):
    config = load_config(remote["config"])
    with Consumer(remote["remote"], transport="tcp", books=False, symbols=SYMBOLS) as consumer, \
            TradeRingReader.open(config.shm_prefix, "sim") as ring:
        handed: list[Trade] = []
        # a BTCUSDT trade first: the gap is counted from the consumer's last one
        eventually(lambda: handed.extend(e for e in consumer.poll(0.2) if isinstance(e, Trade)) or any(
            t.symbol == "BTCUSDT" for t in handed), 20, 0.0, "first BTCUSDT trade")
        hot = consumer.reader.hot_sock
        topic = b"trade.sim.BTCUSDT"
        hot.setsockopt(zmq.UNSUBSCRIBE, topic)  # the gap: trades of BTCUSDT published meanwhile never arrive

        def missed(n: int) -> bool:
            # counted from the last BTCUSDT trade received, not from the unsubscribe call: the
            # publisher applies an unsubscription when its I/O thread gets to it (late on a
            # loaded box), and trades sent before that still arrive
            handed.extend(consumer.poll(0.05))
            last = max((t.seq for t in handed if isinstance(t, Trade) and t.symbol == "BTCUSDT"), default=0)
            return ring.head("BTCUSDT") >= last + n

        eventually(lambda: missed(20), 20, 0.0, "twenty trades missed")
        hot.setsockopt(zmq.SUBSCRIBE, topic)
        missed_to = ring.head("BTCUSDT")
        eventually(lambda: handed.extend(consumer.poll(0.1)) or any(
            t.symbol == "BTCUSDT" and t.seq > missed_to for t in handed if isinstance(t, Trade)), 20, 0.0,
            "trades after the gap")
        assert consumer.trade_gaps >= 1 and consumer.trades_refilled >= 10 and consumer.trades_lost == 0
        btc = [t for t in handed if isinstance(t, Trade) and t.symbol == "BTCUSDT"]
        seqs = [t.seq for t in btc]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # contiguous: nothing lost, nothing twice
        for t in btc:
            kept = ring.read("BTCUSDT", t.seq)
            assert kept is not None and (kept.trade_id, kept.price, kept.amount) == (t.trade_id, t.price, t.amount)


def test_status_of_the_other_host_through_its_snapshot_endpoint(remote):
    workdir, snap = remote["workdir"], remote["ports"][2]
    remote_toml = workdir / "remote.toml"
    done = subprocess.run(PIPELINE + ["--config", str(remote_toml), "status", "--remote", f"127.0.0.1:{snap}",
                                      "--json"], capture_output=True, text=True, timeout=60, cwd=workdir)
    assert done.returncode == 0, done.stdout + done.stderr  # every book live there
    st = json.loads(done.stdout)
    (r,) = st["remote"]
    assert r["endpoint"] == f"tcp://127.0.0.1:{snap}" and r["state"] == "up"
    assert abs(r["clock_offset_ms"]) <= r["clock_error_ms"] + 0.001  # one clock: zero within the bound
    local = feeds(remote["config"])  # the ingest host's own `pipeline status`
    assert {f["symbol"]: (f["state"], f["epoch"]) for f in st["feeds"]} == \
        {s: ("live", local[s]["epoch"]) for s in SYMBOLS}
    assert [e["exchange"] for e in st["exchanges"]] == ["sim"] and st["down"] == []
    table = subprocess.run(PIPELINE + ["--config", str(remote_toml), "status", "--remote", f"127.0.0.1:{snap}"],
                           capture_output=True, text=True, timeout=60, cwd=workdir)
    assert table.returncode == 0 and f"REMOTE tcp://127.0.0.1:{snap}  up" in table.stdout
    assert "offset" in table.stdout and "BTCUSDT" in table.stdout
    # without the client key a CURVE endpoint answers nothing: down (4), and why
    keyless = _remote_config(workdir, remote["ports"], keys=False, name="keyless-status.toml")
    done = subprocess.run(PIPELINE + ["--config", str(keyless), "status", "--remote", f"127.0.0.1:{snap}",
                                      "--timeout", "0.5", "--json"], capture_output=True, text=True, timeout=60,
                          cwd=workdir)
    assert done.returncode == 4
    (r,) = json.loads(done.stdout)["remote"]
    assert r["state"] == "unreachable" and "curve_client_secret_key" in r["error"]
    bad = subprocess.run(PIPELINE + ["status", "--remote", "nowhere"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr


def test_an_async_consumer_reads_the_same_over_tcp(remote):
    """AsyncConsumer with transport="tcp": books whole and trades in order, as the blocking one."""
    async def main():
        seen: list = []
        async with AsyncConsumer(remote["remote"], transport="tcp") as consumer:
            async def until_enough():
                async for e in consumer:
                    seen.append(e)
                    trades = [t for t in seen if isinstance(t, Trade)]
                    if len(trades) >= 10 and {b.symbol for b in seen if isinstance(b, Book)} == set(SYMBOLS):
                        return
            await asyncio.wait_for(until_enough(), 30)
            for s in SYMBOLS:
                tr = consumer.trackers[("sim", s)]
                assert tr.synced and tr.gaps == 0, (s, tr.gaps)
                seqs = [t.seq for t in seen if isinstance(t, Trade) and t.symbol == s]
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True, seqs
    asyncio.run(main())


def test_a_restarted_ingest_is_followed_in_its_new_epoch(remote):
    procs, config = remote["procs"], remote["config"]
    with Consumer(remote["remote"], transport="tcp") as consumer:
        eventually(lambda: consumer.poll(0.2) and all(consumer.book("sim", s) for s in SYMBOLS), 20, 0.0, "books")
        epoch = consumer.book("sim", "BTCUSDT").epoch
        assert procs.stop(remote["ingest"]) == 0
        remote["ingest"] = procs.start("ingest2", PIPELINE + ["--config", str(config), "ingest", "sim"])
        eventually(lambda: all(f["state"] == "live" for f in feeds(config).values()), 30, 0.2, "live again")
        eventually(lambda: consumer.poll(0.2) is not None and all(
            (b := consumer.book("sim", s)) is not None and b.epoch != epoch for s in SYMBOLS), 20, 0.0, "new epoch")
        _equal_to_shm(consumer, config, remote["port"])


def test_an_ingest_bound_beyond_loopback_without_curve_refuses_to_start(tmp_path):
    config = write_config(short_tmpdir(), 1, ["BTCUSDT"], extra=f'l2_endpoint = "tcp://0.0.0.0:{free_port()}"\n')
    done = subprocess.run(PIPELINE + ["--config", str(config), "ingest", "sim"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("config error: exchanges.sim.l2_endpoint: tcp://0.0.0.0:") and "insecure = true" in lines[0]
