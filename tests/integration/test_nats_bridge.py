"""The NATS JetStream bridge and the consumer's nats transport, through a real nats-server.

Processes on loopback: `nats-server -js` (Debian package nats-server; .ci/run installs it, the
module skips and says why without it), a sim, one ingest and `pipeline bridge nats`; consumers in
this process with a config of their own (another run_dir: no shared memory of the ingest's).
Books are compared with the ingest's shared memory on a paused market.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import subprocess
import time

import pytest

from helpers import PIPELINE, Procs, eventually, feeds, free_port, short_tmpdir, sim_fault, start_sim, write_config
from pipeline import natsbus, schema
from pipeline.config import load_config
from pipeline.consumer import AsyncConsumer, Book, Consumer, Cvd, Trade
from pipeline.shm import BookReader

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("nats-server") is None,
                                 reason="nats-server not installed (Debian package nats-server; .ci/run installs it)")]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_nats(procs: Procs, port: int):
    p = procs.start("nats", ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port),
                             "-sd", str(procs.workdir / "jetstream")])
    eventually(lambda: _listening(port), 20, 0.05, "nats-server listening")
    return p


@pytest.fixture(scope="module")
def stack():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        nats_port = free_port()
        start_nats(procs, nats_port)
        port = start_sim(procs, ",".join(SYMBOLS), rate=600)
        bridge_table = f'\n[bridges.nats]\nurl = "nats://127.0.0.1:{nats_port}"\nkv_interval_s = 0.2\nmax_age_s = 600\n'
        config = write_config(workdir, port, SYMBOLS, extra=bridge_table)
        ingest = procs.start("ingest", PIPELINE + ["--config", str(config), "ingest", "sim"])
        eventually(lambda: all(f["state"] == "live" for f in feeds(config).values()), 30, 0.2, "all books live")
        procs.start("bridge", PIPELINE + ["--config", str(config), "bridge", "nats"])
        remote = workdir / "remote.toml"
        remote.write_text(f'[pipeline]\nrun_dir = "remote-run"\n[exchanges.sim]\nadapter = "binance"\nsymbols = {SYMBOLS!r}\n'
                          .replace("'", '"') + bridge_table)
        yield {"workdir": workdir, "procs": procs, "port": port, "config": config, "ingest": ingest,
               "remote": load_config(remote), "nats_port": nats_port}
    finally:
        procs.stop_all()


def _kv_written(stack) -> bool:
    """Every book of the current epoch has its state in the KV bucket (the bridge's kv_writes
    count CVD states too, which can come before the books')."""
    import nats
    from nats.js.errors import BucketNotFoundError, KeyNotFoundError

    config = load_config(stack["config"])
    with BookReader.open(config.shm_prefix, "sim") as reader:
        epoch = reader.epoch

    async def check() -> bool:
        nc = await nats.connect(f"nats://127.0.0.1:{stack['nats_port']}")
        try:
            kv = await nc.jetstream().key_value(natsbus.DEFAULT_BUCKET)
            for s in SYMBOLS:
                value = natsbus.decode_kv((await kv.get(natsbus.kv_key(schema.L2.topic("sim", s)))).value)
                if schema.decode_l2(value.payload).epoch != epoch:
                    return False
            return True
        except (BucketNotFoundError, KeyNotFoundError):
            return False
        finally:
            await nc.close()
    return asyncio.run(check())


def _app_config(path):
    from pipeline.app.config import load_config as app_load

    return app_load(path)


def _equal_to_shm(consumer: Consumer, config_path, port: int) -> None:
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


def test_a_late_consumer_gets_the_kv_snapshot_then_contiguous_updates(stack):
    eventually(lambda: _kv_written(stack), 30, 0.2, "the bridge wrote its KV snapshots")
    time.sleep(1.0)  # a late joiner: the stream is well ahead of its start
    with Consumer(stack["remote"], transport="nats", kinds=["cvd"]) as consumer:
        first = eventually(lambda: consumer.poll(0.5), 20, 0.0, "first events")
        # the KV snapshots come first (each kept kind's latest state: books, CVD): every book is
        # there before any trade of the stream
        leading = list(itertools.takewhile(lambda e: not isinstance(e, Trade), first))
        assert {e.symbol for e in leading if isinstance(e, Book)} == set(SYMBOLS), [type(e).__name__ for e in first[:8]]
        seen: dict[type, int] = {}
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            for e in consumer.poll(0.2):
                seen[type(e)] = seen.get(type(e), 0) + 1
        assert seen.get(Book, 0) > 50 and seen.get(Trade, 0) > 5 and seen.get(Cvd, 0) > 5, seen
        for s in SYMBOLS:
            tr = consumer.trackers[("sim", s)]
            assert tr.gaps == 0 and tr.resyncs == 1, (s, tr.gaps, tr.resyncs)  # one snapshot, deltas ever after
        assert consumer.trade_gaps == 0
        _equal_to_shm(consumer, stack["config"], stack["port"])


def test_a_gap_of_the_consumer_is_caught_up_from_the_kv_state_and_the_stream(stack):
    """Messages lost on the consumer's side (dropped here before the consumer sees them): at the
    gap the book comes back at once from its KV state plus the stream after it, not at the
    ingest's next periodic snapshot (30 s away); equal to shared memory afterwards."""
    eventually(lambda: _kv_written(stack), 30, 0.2, "the bridge wrote its KV snapshots")
    with Consumer(stack["remote"], transport="nats", trades=False) as consumer:
        eventually(lambda: consumer.poll(0.2) is not None and all(
            (tr := consumer.trackers.get(("sim", s))) is not None and tr.synced for s in SYMBOLS), 20, 0.0, "books")
        feed, topic, dropped = consumer.reader.feed, b"l2.sim.BTCUSDT", []
        wanted = feed.wanted

        def lossy(t: bytes) -> bool:
            if t == topic and len(dropped) < 30:
                dropped.append(t)
                return False
            return wanted(t)
        feed.wanted = lossy
        tr = consumer.trackers[("sim", "BTCUSDT")]
        asked, catch_up = [], feed.catch_up

        def spy(t: bytes) -> list[bytes]:
            got = catch_up(t)
            asked.append((t, [schema.decode_l2(p) for p in got]))
            return got
        feed.catch_up = spy
        eventually(lambda: consumer.poll(0.1) is not None and tr.gaps == 1, 20, 0.0, "the gap seen")
        assert tr.synced and tr.resyncs == 2, (tr.synced, tr.resyncs)  # caught up when the gap showed
        (t, got), = asked
        assert t == topic and got[0].snapshot and got[0].symbol == "BTCUSDT"  # the KV state first
        seqs = [m.seq for m in got[1:] if m.epoch == got[0].epoch]
        assert seqs == sorted(set(seqs))  # then the book's messages in the stream after it, in order
        _equal_to_shm(consumer, stack["config"], stack["port"])


def test_an_async_consumer_reads_the_same_over_nats(stack):
    """AsyncConsumer with transport="nats": books whole and trades in order, as the blocking one."""
    eventually(lambda: _kv_written(stack), 30, 0.2, "the bridge wrote its KV snapshots")
    async def main():
        seen: list = []
        async with AsyncConsumer(stack["remote"], transport="nats") as consumer:
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


def test_every_kind_on_the_bus_comes_through_nats(stack):
    """What a local consumer of the bus sees, kind by kind, a NATS consumer sees too (the bridge
    carries every kind of the registry, issue 13's included)."""
    from pipeline.consumer import OTHER_KINDS

    expected = {"Trade", "Book", "Quote", "Cvd", "TradeBar"}  # what the Binance sim's market gives (no futures)
    eventually(lambda: _kv_written(stack), 30, 0.2, "the bridge wrote its KV snapshots")
    local_seen: set[str] = set()
    nats_seen: set[str] = set()
    with Consumer(load_config(stack["config"]), kinds=OTHER_KINDS) as local, \
            Consumer(stack["remote"], transport="nats", kinds=OTHER_KINDS) as remote:
        def both_saw_the_same() -> bool:
            local_seen.update(type(e).__name__ for e in local.poll(0.1))
            nats_seen.update(type(e).__name__ for e in remote.poll(0.1))
            return expected <= local_seen and local_seen <= nats_seen
        eventually(both_saw_the_same, 30, 0.0, "every kind of the bus through NATS")
    assert expected <= nats_seen, nats_seen


def test_status_of_the_bridges_host_through_nats(stack):
    """`pipeline status --remote nats://...`: the bridge answers with its host's feeds and clock."""
    import json

    eventually(lambda: _kv_written(stack), 30, 0.2, "the bridge wrote its KV snapshots")
    remote_toml, url = stack["workdir"] / "remote.toml", f"nats://127.0.0.1:{stack['nats_port']}"
    done = subprocess.run(PIPELINE + ["--config", str(remote_toml), "status", "--remote", url, "--json"],
                          capture_output=True, text=True, timeout=60, cwd=stack["workdir"])
    assert done.returncode == 0, done.stdout + done.stderr
    st = json.loads(done.stdout)
    (r,) = st["remote"]
    assert r["state"] == "up" and r["endpoint"].startswith(url) and r["bridge"]["published"] > 0
    assert abs(r["clock_offset_ms"]) <= r["clock_error_ms"] + 0.001  # one clock: zero within the bound
    local = feeds(stack["config"])
    assert {f["symbol"]: (f["state"], f["epoch"]) for f in st["feeds"]} == \
        {s: ("live", local[s]["epoch"]) for s in SYMBOLS}
    # a prefix no bridge serves: nobody answers, down (4)
    other = stack["workdir"] / "other-prefix.toml"
    other.write_text(remote_toml.read_text().replace("[bridges.nats]", '[bridges.nats]\nprefix = "nobody"'))
    done = subprocess.run(PIPELINE + ["--config", str(other), "status", "--remote", url, "--timeout", "0.5",
                                      "--json"], capture_output=True, text=True, timeout=60, cwd=stack["workdir"])
    assert done.returncode == 4 and "no bridge answered" in json.loads(done.stdout)["remote"][0]["error"]


def test_a_restarted_ingest_is_followed_through_nats(stack):
    procs, config = stack["procs"], stack["config"]
    with Consumer(stack["remote"], transport="nats") as consumer:
        eventually(lambda: consumer.poll(0.2) is not None and all(consumer.book("sim", s) for s in SYMBOLS), 20, 0.0,
                   "books")
        epoch = consumer.book("sim", "BTCUSDT").epoch
        assert procs.stop(stack["ingest"]) == 0
        stack["ingest"] = procs.start("ingest2", PIPELINE + ["--config", str(config), "ingest", "sim"])
        eventually(lambda: all(f["state"] == "live" for f in feeds(config).values()), 30, 0.2, "live again")
        eventually(lambda: consumer.poll(0.2) is not None and all(
            (b := consumer.book("sim", s)) is not None and b.epoch != epoch for s in SYMBOLS), 30, 0.0, "new epoch")
        _equal_to_shm(consumer, config, stack["port"])


def test_subjects_headers_and_dedup_in_the_stream(stack):
    """Each bus message is one stream message on PREFIX.KIND.EXCHANGE.SYMBOL with its seq and epoch in
    headers; the same message published again (a restarted or second bridge) is stored once."""
    import nats

    async def check():
        nc = await nats.connect(f"nats://127.0.0.1:{stack['nats_port']}")
        try:
            js = nc.jetstream()
            last = await js.get_last_msg(natsbus.DEFAULT_STREAM, "l2p.trade.sim.BTCUSDT")
            trade = schema.decode_trade(last.data)
            assert last.headers[natsbus.SEQ_HEADER] == str(trade.seq)
            assert last.headers[natsbus.EPOCH_HEADER] == str(trade.epoch)
            before = (await js.stream_info(natsbus.DEFAULT_STREAM)).state.messages
            again = await js.publish(last.subject, last.data, headers=dict(last.headers))
            assert again.duplicate
            return before
        finally:
            await nc.close()

    asyncio.run(check())


def test_bridge_status_and_pipeline_run_programs(stack):
    from pipeline.app.supervise import programs

    config = _app_config(stack["config"])
    assert ("bridge-nats", [*PIPELINE, "--config", str(stack["config"].resolve()), "bridge", "nats"]) in \
        [(n, a) for n, a in programs(config, str(stack["config"]))]
    out = subprocess.run(PIPELINE + ["--config", str(stack["config"]), "status"], capture_output=True, text=True,
                         timeout=60)
    assert "bridge nats (running)" in out.stdout, out.stdout
