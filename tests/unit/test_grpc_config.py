"""[grpc]: defaults, keys, the refusals at start (exposure without token or TLS, half a TLS pair), its place in `run`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.app.config import parse_config
from pipeline.app.supervise import programs
from pipeline.config import ConfigError

BASE = """
[pipeline]
run_dir = "r"
[exchanges.sim]
adapter = "binance"
symbols = ["BTCUSDT"]
"""


def test_grpc_is_off_unless_configured(tmp_path):
    c = parse_config(BASE, tmp_path)
    assert "grpc" not in c.servers
    assert "grpc" not in dict(programs(c, None))


def test_grpc_defaults_bind_loopback_50051_and_run_under_supervision(tmp_path):
    c = parse_config(BASE + "[grpc]\n", tmp_path)
    g = c.servers["grpc"]
    assert (g.host, g.port, g.token, g.tls_cert, g.tls_key) == ("127.0.0.1", 50051, None, None, None)
    assert g.client_queue > 0 and g.client_l2_queue == 1000 and g.max_streams > 0
    assert dict(programs(c, None))["grpc"][-1] == "grpc"  # `pipeline run` starts `pipeline grpc`


def test_grpc_keys_parse(tmp_path):
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    c = parse_config(BASE + '[grpc]\nhost = "0.0.0.0"\nport = 6000\ntoken = "t0k"\ntls_cert = "c.pem"\n'
                            'tls_key = "k.pem"\nclient_queue = 7\nclient_l2_queue = 9\nmin_interval_ms = 50\n',
                     tmp_path)
    g = c.servers["grpc"]
    assert (g.host, g.port, g.token) == ("0.0.0.0", 6000, "t0k")
    assert g.tls_cert == tmp_path / "c.pem" and g.tls_key == tmp_path / "k.pem"
    assert (g.client_queue, g.client_l2_queue, g.min_interval_ms) == (7, 9, 50)


@pytest.mark.parametrize("table,key,reason", [
    ('host = "0.0.0.0"', "grpc.host", "without a token or TLS"),
    ('host = "10.1.2.3"', "grpc.host", "not loopback"),
    ('host = "example.org"', "grpc.host", "not loopback"),
    ('port = 70000', "grpc.port", "port"),
    ('token = ""', "grpc.token", "non-empty"),
    ('tls_cert = "missing.pem"', "grpc.tls_cert", "no such file"),
    ('client_queue = 0', "grpc.client_queue", "positive integer"),
    ('colour = "red"', "grpc.colour", "unknown key"),
])
def test_bad_grpc_keys_fail_at_start_naming_the_key(tmp_path, table, key, reason):
    with pytest.raises(ConfigError) as e:
        parse_config(BASE + f"[grpc]\n{table}\n", tmp_path)
    assert e.value.key == key and reason in str(e.value)


def test_tls_needs_both_files(tmp_path):
    (tmp_path / "c.pem").write_text("cert")
    with pytest.raises(ConfigError) as e:
        parse_config(BASE + '[grpc]\ntls_cert = "c.pem"\n', tmp_path)
    assert e.value.key == "grpc.tls_key" and "both" in str(e.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_needs_nothing(tmp_path, host):
    assert parse_config(BASE + f'[grpc]\nhost = "{host}"\n', tmp_path).servers["grpc"].host == host


def test_a_token_alone_is_enough_to_expose(tmp_path):
    assert parse_config(BASE + '[grpc]\nhost = "0.0.0.0"\ntoken = "x"\n', tmp_path).servers["grpc"].token == "x"


def test_cli_host_beyond_loopback_without_token_is_refused_at_start(tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text(BASE + "[grpc]\nport = 0\n")
    out = subprocess.run([sys.executable, "-m", "pipeline", "--config", str(cfg), "grpc", "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "--host" in out.stderr and "without a token or TLS" in out.stderr
