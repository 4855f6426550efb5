import subprocess
import sys

import pytest

from pipeline.app.config import load_config, parse_config
from pipeline.config import ConfigError, default_run_dir

GOOD = """
[pipeline]
run_dir = "r"
[exchanges.sim]
adapter = "binance"
symbols = ["BTCUSDT"]
"""


def cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_demo_config_is_used_without_a_file(tmp_path, monkeypatch, own_default_run_dir):
    monkeypatch.chdir(tmp_path)
    c = load_config(None)
    assert c.exchanges["sim"].adapter == "binance" and c.exchanges["sim"].depth == 50
    assert c.run_dir == own_default_run_dir  # $PIPELINE_RUN_DIR, not the current directory
    assert c.sim is not None and c.servers["publisher"].port == 9001


def test_default_run_dir_does_not_depend_on_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("PIPELINE_RUN_DIR")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    a = load_config(None)
    monkeypatch.chdir(tmp_path / "b")
    b = load_config(None)
    assert a.run_dir == b.run_dir and a.shm_prefix == b.shm_prefix
    assert not a.run_dir.is_relative_to(tmp_path)
    f = tmp_path / "p.toml"
    f.write_text(GOOD.replace('run_dir = "r"\n', ""))
    assert load_config(f).run_dir == a.run_dir  # a file without run_dir: the same per-user default


def test_default_run_dir_order(tmp_path):
    runtime = tmp_path / "xdg"
    runtime.mkdir()
    assert default_run_dir({"PIPELINE_RUN_DIR": str(tmp_path / "r"), "XDG_RUNTIME_DIR": str(runtime)}) == tmp_path / "r"
    assert default_run_dir({"XDG_RUNTIME_DIR": str(runtime)}) == runtime / "l2pipeline"
    assert default_run_dir({"XDG_STATE_HOME": str(tmp_path / "st")}) == tmp_path / "st" / "l2pipeline"
    with pytest.raises(ConfigError) as info:
        default_run_dir({"PIPELINE_RUN_DIR": "relative/run"})
    assert info.value.key == "PIPELINE_RUN_DIR" and "absolute" in info.value.reason


def test_config_run_dir_wins_over_the_environment(tmp_path):
    assert parse_config(GOOD, tmp_path).run_dir == tmp_path / "r"  # PIPELINE_RUN_DIR is set by conftest


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text(GOOD)
    assert load_config(f).run_dir == tmp_path / "r"


def test_shm_names_differ_between_run_dirs(tmp_path):
    a = parse_config(GOOD, tmp_path / "a")
    b = parse_config(GOOD, tmp_path / "b")
    assert a.shm_prefix != b.shm_prefix


@pytest.mark.parametrize("text,key,reason", [
    (GOOD + 'depth = "ten"\n', "exchanges.sim.depth", 'expected a positive integer, got "ten"'),
    (GOOD + "depth = 0\n", "exchanges.sim.depth", "expected a positive integer, got 0"),
    (GOOD + "colour = 1\n", "exchanges.sim.colour", "unknown key"),
    (GOOD.replace('"binance"', '"nasdaq"'), "exchanges.sim.adapter", 'unknown adapter "nasdaq"'),
    (GOOD.replace('["BTCUSDT"]', "[]"), "exchanges.sim.symbols", "expected at least one symbol"),
    (GOOD.replace('["BTCUSDT"]', '"BTCUSDT"'), "exchanges.sim.symbols", "expected a list of symbols"),
    (GOOD + 'ws_url = "http://x"\n', "exchanges.sim.ws_url", "expected a URL starting with ws://"),
    (GOOD + "[publisher]\nport = 70000\n", "publisher.port", "expected a port number"),
    (GOOD + "[mystery]\n", "mystery", "unknown key"),
    (GOOD + '[sim]\nprotocol = "nyse"\n', "sim.protocol", 'unknown protocol "nyse"'),
    ("[exchanges]\n", "exchanges", "expected at least one"),
    ("[exchanges.sim\n", "<string>", "not valid TOML"),
    # issue 19 item 8: each of these ended in a traceback or a hang
    (GOOD + 'ws_url = "ws://127.0.0.1:99999"\n', "exchanges.sim.ws_url", "port number from 1 to 65535"),
    (GOOD + 'rest_url = "http://:80"\n', "exchanges.sim.rest_url", "expected a host"),
    (GOOD.replace('"BTCUSDT"', '"BTC\u00dcSDT"'), "exchanges.sim.symbols[0]", "printable ASCII"),
    (GOOD.replace('"BTCUSDT"', '"' + "A" * 10_000 + '"'), "exchanges.sim.symbols[0]", "longer than 31"),
    (GOOD + 'l2_endpoint = "tcp://127.0.0.1"\n', "exchanges.sim.l2_endpoint", "expected tcp://HOST:PORT"),
    (GOOD + 'l2_endpoint = "tcp://h:x"\n', "exchanges.sim.l2_endpoint", "port number"),
    (GOOD + 'l2_endpoint = "ipc://"\n', "exchanges.sim.l2_endpoint", "expected ipc://PATH"),
    (GOOD + 'l2_endpoint = "tcp://127.0.0.1:5999"\ntrades_endpoint = "tcp://127.0.0.1:5999"\n',
     "exchanges.sim.l2_endpoint", "already exchanges.sim.trades_endpoint"),
    (GOOD.replace('run_dir = "r"', 'run_dir = "/proc/self/x"'), "pipeline.run_dir", "under /proc"),
])
def test_bad_config_names_key_and_reason(tmp_path, text, key, reason):
    with pytest.raises(ConfigError) as info:
        parse_config(text, tmp_path)  # pipeline.app.config: the registries, as every command loads it
    assert info.value.key == key
    assert reason in info.value.reason


@pytest.mark.parametrize("extra,line", [
    ('depth = "ten"\n', 'config error: exchanges.sim.depth: expected a positive integer, got "ten"'),
    ("bogus = true\n", "config error: exchanges.sim.bogus: unknown key"),
    # the adapter names come from the registry in the ingest layer (ingest/adapters), which
    # the core config module cannot import: the CLI passes them in
    ("", 'config error: exchanges.sim.adapter: unknown adapter "nasdaq"'),
])
@pytest.mark.parametrize("command", [["status"], ["ingest", "sim"], ["book", "sim", "BTCUSDT"], ["run"]])
def test_bad_config_stops_every_command_with_exit_2_and_one_line(tmp_path, extra, line, command):
    f = tmp_path / "bad.toml"
    f.write_text((GOOD if extra else GOOD.replace('"binance"', '"nasdaq"')) + extra)
    r = cli(["--config", str(f), *command], tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), r.stderr


def test_run_dir_that_is_a_file_and_a_non_utf8_config_are_one_line_errors(tmp_path):
    (tmp_path / "afile").write_text("")
    f = tmp_path / "c.toml"
    f.write_text(GOOD.replace('run_dir = "r"', 'run_dir = "afile/run"'))
    r = cli(["--config", str(f), "status"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"config error: pipeline.run_dir: {tmp_path / 'afile'} exists and is not a directory"], r.stderr
    f.write_bytes(b'[pipeline]\nrun_dir = "\xff"\n')
    r = cli(["--config", str(f), "status"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"config error: {f}: not UTF-8 text (byte 0xff at offset 22)"], r.stderr


def test_missing_config_file_is_a_config_error(tmp_path):
    r = cli(["--config", str(tmp_path / "nope.toml"), "status"], tmp_path)
    assert r.returncode == 2 and "cannot read config file" in r.stderr


def test_unknown_exchange_for_ingest_is_refused(tmp_path):
    f = tmp_path / "ok.toml"
    f.write_text(GOOD)
    r = cli(["--config", str(f), "ingest", "kraken"], tmp_path)
    assert r.returncode == 2 and "exchanges.kraken" in r.stderr


def test_sim_protocol_from_config(tmp_path):
    c = parse_config(GOOD.replace('"binance"', '"okx"').replace('"BTCUSDT"', '"BTC-USDT"')
                     + '[sim]\nprotocol = "okx"\nsymbols = ["BTC-USDT"]\n', tmp_path)
    assert c.sim.protocol == "okx" and c.exchanges["sim"].adapter == "okx"
    assert parse_config(GOOD + "[sim]\n", tmp_path).sim.protocol == "binance"


def test_the_core_config_alone_accepts_any_adapter_name(tmp_path):
    """pipeline/config.py cannot know the adapters (ingest is above it): readers of a config
    that make no adapter get the name as written; the registry decides where one is made."""
    from ingest.adapters import create
    from pipeline.config import parse_config as core_parse_config

    c = core_parse_config(GOOD.replace('"binance"', '"nasdaq"'), tmp_path)
    assert c.exchanges["sim"].adapter == "nasdaq"
    with pytest.raises(ConfigError) as info:
        create(c.exchanges["sim"])
    assert info.value.key == "exchanges.sim.adapter" and 'unknown adapter "nasdaq"' in info.value.reason
