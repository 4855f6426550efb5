"""[publisher] keys, per-exchange l2_throttle_ms, L2_THROTTLE_<NAME>_MS, and the publisher's place in `run`."""

from __future__ import annotations

import pytest

from pipeline.app.config import parse_config
from pipeline.config import ConfigError
from pipeline.app.supervise import programs
from publisher.settings import load_settings, resolve_throttle_ms, throttle_env_var

BASE = """
[pipeline]
run_dir = "r"
[exchanges.sim]
adapter = "binance"
symbols = ["BTCUSDT"]
"""


def test_publisher_defaults_bind_loopback_9001_without_token(tmp_path):
    p = parse_config(BASE, tmp_path).servers["publisher"]
    assert (p.host, p.port, p.token, p.origins) == ("127.0.0.1", 9001, None, ())
    assert p.max_clients > 0 and p.client_queue > 0 and p.client_l2_queue > 0


def test_publisher_keys_parse(tmp_path):
    c = parse_config(BASE + '[publisher]\nhost = "0.0.0.0"\nport = 9100\ntoken = "s3cret"\n'
                            'origins = ["http://localhost:9001/"]\nmax_clients = 5\nmax_requests_per_s = 2.5\n',
                     tmp_path)
    p = c.servers["publisher"]
    assert p.host == "0.0.0.0" and p.token == "s3cret" and p.origins == ("http://localhost:9001",)
    assert p.max_clients == 5 and p.max_requests_per_s == 2.5


@pytest.mark.parametrize("extra,key,reason", [
    ("[publisher]\nmax_clients = 0\n", "publisher.max_clients", "expected a positive integer"),
    ("[publisher]\ntoken = \"\"\n", "publisher.token", "expected a non-empty string"),
    ("[publisher]\norigins = \"x\"\n", "publisher.origins", "expected a list of origins"),
    ("[publisher]\norigins = [\"ftp://x\"]\n", "publisher.origins[0]", "expected a URL starting with http://"),
    ("[publisher]\nclient_max_lag_s = -1\n", "publisher.client_max_lag_s", "expected a positive number"),
    ("[publisher]\nmax_request_bytes = 100000\n", "publisher.max_request_bytes", "at most 65536"),
    ("[publisher]\nspeed = 1\n", "publisher.speed", "unknown key"),
    ("l2_throttle_ms = 0\n", "exchanges.sim.l2_throttle_ms", "expected a positive integer"),
])
def test_bad_publisher_config_names_key_and_reason(tmp_path, extra, key, reason):
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + extra, tmp_path)
    assert info.value.key == key and reason in info.value.reason


def test_throttle_environment_then_config_then_venue_default(tmp_path):
    assert throttle_env_var("okx") == "L2_THROTTLE_OKX_MS"
    assert throttle_env_var("my-okx") == "L2_THROTTLE_MY_OKX_MS"
    assert resolve_throttle_ms("sim", "binance", None, {}) == 100
    assert resolve_throttle_ms("okx", "okx", None, {}) == 150
    assert resolve_throttle_ms("okx", "okx", 300, {}) == 300
    assert resolve_throttle_ms("okx", "okx", 300, {"L2_THROTTLE_OKX_MS": "200"}) == 200
    c = parse_config(BASE + "l2_throttle_ms = 250\n", tmp_path)
    assert load_settings(c, {}).feeds["sim"].throttle_ms == 250
    assert load_settings(c, {"L2_THROTTLE_SIM_MS": " 120 "}).feeds["sim"].throttle_ms == 120


@pytest.mark.parametrize("value", ["abc", "0", "-5", ""])
def test_bad_throttle_environment_is_a_config_error(tmp_path, value):
    c = parse_config(BASE, tmp_path)
    with pytest.raises(ConfigError) as info:
        load_settings(c, {"L2_THROTTLE_SIM_MS": value})
    assert info.value.key == "L2_THROTTLE_SIM_MS" and "positive integer" in info.value.reason


def test_run_starts_the_publisher_after_the_ingests(tmp_path):
    c = parse_config(BASE + '[exchanges.b]\nadapter = "binance"\nsymbols = ["X"]\n', tmp_path)
    names = [name for name, _ in programs(c, None)]
    assert names.index("publisher") > max(names.index("ingest-sim"), names.index("ingest-b"))
    argv = dict(programs(c, "p.toml"))["publisher"]
    assert argv[-1] == "publish" and "--config" in argv
