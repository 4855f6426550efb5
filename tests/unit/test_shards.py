"""Sharded ingest, the pure parts (issue 15; pipeline/shards.py): ``processes`` in the config, the
symbol -> shard assignment, each shard's names and endpoints, supervisord's programs, the routing
and merging of runtime-stream requests, and what readers see while nothing runs.  The processes
themselves: tests/integration/test_sharded_ingest.py."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import pytest

from pipeline import bus, schema, shards
from pipeline.app.config import parse_config  # with the registries: unknown keys are errors
from pipeline.errors import ConfigError
from pipeline.streams import (Changes, _exchange_entry, _merge, _parts, _process_entry, followed_symbols,
                              save_changes, streams_overview)


def config(tmp_path: Path, extra: str = "processes = 2", symbols=("A", "B", "C")):
    return parse_config(f"""
[pipeline]
run_dir = "{tmp_path}/run"
[exchanges.sim]
adapter = "binance"
symbols = {list(symbols)!r}
{extra}
""".replace("'", '"'), tmp_path)


def test_processes_default_to_one_and_change_nothing(tmp_path):
    c = config(tmp_path, extra="")
    ex = c.exchanges["sim"]
    assert ex.processes == 1 and ex.unit == "sim" and shards.shard_configs(ex) == [ex]
    assert shards.unit_of(c, "sim", "ANY") == "sim" and shards.shard_of(ex, "ANY") == 0
    assert bus.exchange_endpoints(c, "sim", schema.Socket.L2) == [bus.endpoints(c, "sim")[1]]


@pytest.mark.parametrize("extra,reason", [
    ("processes = 0", "exchanges.sim.processes: expected a positive integer"),
    ("processes = 4", "exchanges.sim.processes: expected at most one process per configured symbol (3)"),
    ("processes = 33", "exchanges.sim.processes: expected at most 32"),
    ("processes = 2\nl2_endpoint = \"tcp://127.0.0.1:65535\"", "exchanges.sim.l2_endpoint: shard 1 of 2 would bind port 65536"),
    ("shard = 1", "exchanges.sim.shard: unknown key"),
    ("processes = 2\nl2_endpoint = \"tcp://127.0.0.1:5556\"\ntrades_endpoint = \"tcp://127.0.0.1:5557\"",
     "exchanges.sim.l2_endpoint (process 1: port + 1): tcp://127.0.0.1:5557 is already exchanges.sim.trades_endpoint "
     "(process 0: port + 0)"),
])
def test_bad_processes_fail_at_start_naming_the_key(tmp_path, extra, reason):
    with pytest.raises(ConfigError, match=re.escape(reason)):
        config(tmp_path, extra=extra)


def test_a_source_every_process_would_read_whole_is_not_split(tmp_path):
    # the node's files: each shard would tail all of them (and publish every coin twice)
    with pytest.raises(ConfigError, match=re.escape(
            "exchanges.node.processes: adapter 'hyperliquid_node' reads one source that every process would read "
            "whole (it cannot be split over processes): expected 1, got 2")):
        parse_config(f"""
[pipeline]
run_dir = "{tmp_path}/run"
[exchanges.node]
adapter = "hyperliquid_node"
symbols = ["BTC", "ETH"]
snapshot_file = "{tmp_path}/snap.json"
processes = 2
""", tmp_path)


def test_configured_symbols_go_round_robin_in_config_order_others_by_crc32(tmp_path):
    c = config(tmp_path, symbols=("A", "B", "C", "D", "E"), extra="processes = 2")
    ex = c.exchanges["sim"]
    assert [shards.shard_of(ex, s) for s in "ABCDE"] == [0, 1, 0, 1, 0]
    for runtime in ("ADAUSDT", "XRPUSDT", "DOGEUSDT"):
        assert shards.shard_of(ex, runtime) == zlib.crc32(runtime.encode()) % 2
        assert shards.unit_of(c, "sim", runtime) == f"sim.{shards.shard_of(ex, runtime)}"
    assert shards.split(ex, ["E", "B", "ADAUSDT"]) == {0: ["E"], 1: ["B", "ADAUSDT"]}
    with pytest.raises(ValueError):
        shards.shard_of(shards.shard_config(ex, 0), "A")  # a shard's own config cannot assign


def test_each_shard_has_its_symbols_names_and_endpoints(tmp_path):
    c = config(tmp_path, extra='processes = 2\nl2_endpoint = "tcp://0.0.0.0:5556"\n'
                              'snapshot_endpoint = "tcp://127.0.0.1:5600"\ntrades_endpoint = "ipc:///tmp/t.sock"')
    ex = c.exchanges["sim"]
    s0, s1 = shards.shard_configs(ex)
    assert (s0.unit, s0.symbols, s0.name) == ("sim.0", ("A", "C"), "sim")
    assert (s1.unit, s1.symbols, s1.name) == ("sim.1", ("B",), "sim")
    assert s0.slots == s1.slots == ex.slots  # each process has the exchange's room for runtime symbols
    assert (s0.l2_endpoint, s1.l2_endpoint) == ("tcp://0.0.0.0:5556", "tcp://0.0.0.0:5557")
    assert (s0.snapshot_endpoint, s1.snapshot_endpoint) == ("tcp://127.0.0.1:5600", "tcp://127.0.0.1:5601")
    assert (s0.trades_endpoint, s1.trades_endpoint) == ("ipc:///tmp/t.sock.0", "ipc:///tmp/t.sock.1")
    run = c.run_dir
    assert bus.exchange_endpoints(c, "sim", schema.Socket.L2) == [f"ipc://{run}/sim.0.l2.sock", f"ipc://{run}/sim.1.l2.sock"]
    assert bus.exchange_endpoints(c, "sim", schema.Socket.HOT) == ["ipc:///tmp/t.sock.0", "ipc:///tmp/t.sock.1"]
    assert bus.snapshot_endpoints(c, s1) == (f"ipc://{run}/sim.1.snapshot.sock", "tcp://127.0.0.1:5601")
    with pytest.raises(ConfigError, match="exchanges.sim.processes: 2 ingest processes"):
        bus.endpoints(c, "sim")  # which one? a caller must say
    reader = bus.Reader.for_config(__import__("zmq").Context.instance(), c, ["sim"])
    try:
        assert reader.endpoints == ["ipc:///tmp/t.sock.0", "ipc:///tmp/t.sock.1",
                                    f"ipc://{run}/sim.0.l2.sock", f"ipc://{run}/sim.1.l2.sock"]
    finally:
        reader.close()


def test_supervisord_runs_one_program_per_shard(tmp_path):
    from pipeline.app.supervise import programs

    progs = dict(programs(config(tmp_path), None))
    assert progs["ingest-sim.0"][-4:] == ["ingest", "sim", "--shard", "0"]
    assert progs["ingest-sim.1"][-4:] == ["ingest", "sim", "--shard", "1"]
    assert "ingest-sim" not in progs


def test_an_ingest_of_a_sharded_exchange_needs_its_shard(tmp_path):
    from ingest.main import run_ingest

    c = config(tmp_path)
    with pytest.raises(ConfigError, match="--shard K`, K in 0..1"):
        run_ingest(c, "sim")
    with pytest.raises(ConfigError, match="no shard 2"):
        run_ingest(c, "sim", 2)
    with pytest.raises(ConfigError, match="one ingest process: no shard 1"):
        run_ingest(config(tmp_path, extra=""), "sim", 1)


def test_requests_are_split_by_shard_and_the_replies_merged(tmp_path):
    ex = config(tmp_path).exchanges["sim"]
    assert zlib.crc32(b"ADA") % 2 == 0
    parts = _parts(ex, {"op": "subscribe", "symbols": ["B", "ADA", "A"]})
    assert parts == [("sim.0", {"op": "subscribe", "symbols": ["ADA", "A"]}),  # each part in the request's order
                     ("sim.1", {"op": "subscribe", "symbols": ["B"]})]
    assert [u for u, _ in _parts(ex, {"op": "streams"})] == ["sim.0", "sim.1"]
    assert [u for u, _ in _parts(ex, {"op": "bogus"})] == ["sim.0"]
    merged = _merge(ex, {}, [{"ok": True, "added": ["A"], "already": []}, {"ok": True, "added": [], "already": ["B"]}])
    assert merged == {"ok": True, "exchange": "sim", "added": ["A"], "already": ["B"]}
    one = config(tmp_path, extra="").exchanges["sim"]
    assert _parts(one, {"op": "subscribe", "symbols": ["X"]}) == [("sim", {"op": "subscribe", "symbols": ["X"]})]


def test_readers_of_a_stopped_sharded_exchange_see_one_exchange_from_the_files(tmp_path):
    from pipeline.errors import StreamError
    from pipeline.status import feeds

    c = config(tmp_path)
    c.run_dir.mkdir(parents=True)
    runtime = "ADA"
    k = zlib.crc32(runtime.encode()) % 2
    save_changes(c.run_dir, f"sim.{k}", Changes(added=(runtime,), removed=("C",) if k == 0 else ()))
    # a symbol saved by a shard that no longer owns it (the config changed) is not followed twice
    save_changes(c.run_dir, f"sim.{1 - k}", Changes(added=("A",) if k == 0 else ("B",)))
    expect = ("A", "B") + (() if k == 0 else ("C",)) + (runtime,)
    assert followed_symbols(c, "sim") == expect
    entry = streams_overview(c, timeout=0.5)["exchanges"][0]
    assert not entry["running"] and entry["configured"] == ["A", "B", "C"]
    assert entry["runtime_added"] == [runtime] and [p["unit"] for p in entry["processes"]] == ["sim.0", "sim.1"]
    assert {r["symbol"]: r["shard"] for r in entry["streams"] if r["symbol"] != runtime} == \
        {s: shards.shard_of(c.exchanges["sim"], s) for s in expect if s != runtime}
    rows, exchanges = feeds(c)
    assert {e["shard"]: e["state"] for e in exchanges} == {0: "down", 1: "down"}
    assert all(r["exchange"] == "sim" and r["shard"] == shards.shard_of(c.exchanges["sim"], r["symbol"]) for r in rows)
    # one process's entry is what it was before sharding
    single = config(tmp_path / "one", extra="")
    e = _process_entry(single, "sim", single.exchanges["sim"], StreamError("down", "not_running"))
    assert _exchange_entry(single, "sim", [e]) is e and "processes" not in e


def test_the_live_ingest_summary_compares_processes_with_one_and_the_current_code_with_before():
    from pipeline.benchmarks.live_ingest import summary

    def row(variant, n, rate, kept, cpu_us):
        return {"variant": variant, "processes": n, "sim_rate": rate, "kept_up": kept, "ingest_msgs_per_s": rate,
                "ingest_cpu_us_per_msg": cpu_us}
    rows = [row("before abc", 1, 20000, True, 40.0), row("current, 1 process", 1, 20000, True, 20.0),
            row("current, 2 processes", 2, 20000, True, 22.0),
            row("before abc", 1, 40000, False, 40.0), row("current, 1 process", 1, 40000, True, 20.0),
            row("current, 2 processes", 2, 40000, True, 22.0),
            row("before abc", 1, 80000, False, 41.0), row("current, 1 process", 1, 80000, False, 21.0),
            row("current, 2 processes", 2, 80000, True, 22.0)]
    s = summary(rows)["summary"]
    assert s["before abc"]["ceiling"] == 20000 and "against" not in s["before abc"]
    assert (s["current, 1 process"]["against"], s["current, 1 process"]["ceiling_ratio"]) == ("before abc", 2.0)
    assert s["current, 1 process"]["capacity_ratio"] == round(41.0 / 21.0, 2)
    assert (s["current, 2 processes"]["against"], s["current, 2 processes"]["ceiling_ratio"]) == ("current, 1 process", 2.0)


def test_each_shard_allows_itself_its_share_of_the_venues_rest_budget(tmp_path):
    from ingest.main import create_adapter

    c = config(tmp_path, extra="processes = 2")
    whole = c.exchanges["sim"]
    ex, adapter = create_adapter(whole, shards.shard_config(whole, 1))
    assert adapter.traits.rest_weight_limit == 1500 == ex.rest_weight_limit  # binance's default 3000 / 2
    c = config(tmp_path, extra="processes = 3\nrest_weight_limit = 900")
    whole = c.exchanges["sim"]
    assert create_adapter(whole, shards.shard_config(whole, 0))[1].traits.rest_weight_limit == 300
    one = config(tmp_path, extra="").exchanges["sim"]
    assert create_adapter(one, one)[1].traits.rest_weight_limit == 3000


def test_a_sink_counts_restarts_per_process_of_a_sharded_exchange(tmp_path):
    from sinks.recorder import SinkCounters

    c = config(tmp_path, symbols=("A", "B", "C"), extra="processes = 2")  # A, C -> sim.0; B -> sim.1
    counters = SinkCounters(unit_of=lambda ex, sym: shards.unit_of(c, ex, sym))
    counters.note_epoch("sim", 100, "A")
    counters.note_epoch("sim", 200, "B")  # the other process's epoch: not a restart
    counters.note_epoch("sim", 100, "C")
    assert counters.epochs == 0
    counters.note_epoch("sim", 300, "B")  # process 1 restarted
    counters.note_epoch("sim", 300, "B")
    assert counters.epochs == 1
    plain = SinkCounters()  # one process per exchange: as before
    plain.note_epoch("sim", 100, "A")
    plain.note_epoch("sim", 200, "B")
    assert plain.epochs == 1
