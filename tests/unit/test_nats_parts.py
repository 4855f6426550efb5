"""What the NATS bridge and the consumer's nats transport agree on (pipeline/natsbus.py), and the
bridge's config table; the real nats-server runs in tests/integration/test_nats_bridge.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import natsbus, schema
from pipeline.app.config import parse_config
from pipeline.errors import ConfigError

BASE = """
[pipeline]
run_dir = "run"
[exchanges.sim]
adapter = "binance"
symbols = ["BTCUSDT"]
"""


def test_subject_is_the_prefixed_topic_and_back():
    topic = schema.TRADE.topic("sim", "BTCUSDT")
    assert natsbus.subject("l2p", topic) == "l2p.trade.sim.BTCUSDT"
    assert natsbus.topic_of("l2p", "l2p.trade.sim.BTCUSDT") == topic


def test_headers_carry_seq_epoch_and_a_dedup_id():
    h = natsbus.headers(b"l2.sim.BTCUSDT", 7, 123)
    assert h == {"L2p-Seq": "7", "L2p-Epoch": "123", "Nats-Msg-Id": "l2.sim.BTCUSDT:123:7"}
    assert natsbus.headers(b"l2.sim.BTCUSDT", 7, 123, made_here=True)["Nats-Msg-Id"].endswith(":s")


@pytest.mark.parametrize("symbol", ["BTCUSDT", "BTC-USDT-SWAP", "PURR/USDC", "@107", "ETH.PERP", "a b"])
def test_kv_keys_escape_what_nats_keys_do_not_allow_and_round_trip(symbol):
    topic = schema.L2.topic("hyperliquid", symbol)
    key = natsbus.kv_key(topic)
    assert all(c.isalnum() or c in "-/_.=" for c in key)
    assert natsbus.kv_topic(key) == topic


def test_kv_value_round_trip():
    snap = natsbus.KvSnapshot(stream_seq=42, payload=b"\x81\xa4kind\xa2l2")
    assert natsbus.decode_kv(natsbus.encode_kv(snap)) == snap


def test_kv_keeps_every_conflatable_kind_of_the_registry():
    kept = natsbus.kept_kinds()
    assert schema.L2 in kept and schema.TRADE not in kept
    assert kept == [k for k in schema.KINDS.values() if k.conflatable]


def test_consumer_filter_takes_whole_symbols_or_exchange_prefixes():
    exact = natsbus.wanted_topics(["sim"], ["BTCUSD"], [schema.TRADE])
    assert exact(b"trade.sim.BTCUSD") and not exact(b"trade.sim.BTCUSDT") and not exact(b"l2.sim.BTCUSD")
    every = natsbus.wanted_topics(["sim"], None, [schema.TRADE, schema.L2])
    assert every(b"l2.sim.X") and every(b"trade.sim.Y") and not every(b"trade.other.Y")


def test_bridge_config(tmp_path: Path):
    c = parse_config(BASE + '[bridges.nats]\nurl = "nats://127.0.0.1:4222"\nmax_age_s = 60\n', tmp_path)
    s = c.bridges["nats"]
    assert (s.url, s.prefix, s.stream, s.bucket, s.max_age_s) == ("nats://127.0.0.1:4222", "l2p", "L2P",
                                                                  "l2p_snapshots", 60.0)
    assert natsbus.settings(c) == ("nats://127.0.0.1:4222", "l2p", "L2P", "l2p_snapshots", None)


@pytest.mark.parametrize("table, key", [
    ("", "bridges.nats.url"),
    ('url = "http://x:4222"\n', "bridges.nats.url"),
    ('url = "nats://x:4222"\nprefix = "a.b"\n', "bridges.nats.prefix"),
    ('url = "nats://x:4222"\nmax_age_s = 0\n', "bridges.nats.max_age_s"),
    ('url = "nats://x:4222"\nexchanges = ["nope"]\n', "bridges.nats.exchanges"),
    ('url = "nats://x:4222"\nretention = "forever"\n', "bridges.nats.retention"),
])
def test_bridge_config_errors_name_the_key(tmp_path: Path, table, key):
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + "[bridges.nats]\n" + table, tmp_path)
    assert err.value.key == key


def test_an_unknown_bridge_names_the_known(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + '[bridges.kafka]\nurl = "x"\n', tmp_path)
    assert err.value.key == "bridges.kafka" and "nats" in err.value.reason


def test_a_nats_consumer_needs_the_bridge_table(tmp_path: Path):
    from pipeline.config import parse_config as core_parse
    from pipeline.consumer import Consumer

    with pytest.raises(ConfigError) as err:
        Consumer(core_parse(BASE, tmp_path), transport="nats")
    assert err.value.key == "bridges.nats"
