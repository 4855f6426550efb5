"""Sinks and servers as plugins: each table checked by its own plugin, `pipeline sink NAME` through the
registry, and a new sink or server is one module plus one registry line (a toy of each here)."""

from __future__ import annotations

import subprocess
import sys
import types
from dataclasses import dataclass

import click
import pytest
from click.testing import CliRunner

from pipeline.app import cli as cli_mod
from pipeline.app.config import PLUGINS, parse_config
from pipeline.app.supervise import programs
from pipeline.config import ConfigError, Plugins, check_keys, expect_port, parse_config as core_parse_config
from pipeline.plugins import Plugin, Registry
from sinks.csv_settings import CsvSinkConfig

BASE = '[pipeline]\nrun_dir = "r"\n[exchanges.sim]\nadapter = "binance"\nsymbols = ["BTCUSDT"]\n'


@dataclass(frozen=True)
class ToySettings:
    port: int = 7000


class ToyPlugin:
    """A sink and a server at once: all the shape either needs."""

    def parse_config(self, table: dict, key: str, ctx) -> ToySettings:
        check_keys(table, {"port"}, key)
        return ToySettings(expect_port(table["port"], f"{key}.port")) if "port" in table else ToySettings()

    def address(self, config):
        return "127.0.0.1", config.servers["toy"].port

    def banner(self, config):
        return "toy"

    def run(self, config, *args):
        pass

    def status(self, config):
        return {"name": "toy", "state": "running"}


@pytest.fixture
def toy_plugins(monkeypatch) -> Plugins:
    module = types.ModuleType("toy_plugin_module")
    module.PLUGIN = ToyPlugin()
    monkeypatch.setitem(sys.modules, "toy_plugin_module", module)
    line = Plugin("toy", "toy_plugin_module:PLUGIN", summary="A toy.")  # the one registry line
    return Plugins(sinks=PLUGINS.sinks.with_plugin(line), servers=PLUGINS.servers.with_plugin(line))


def test_each_sink_table_is_checked_by_its_sink(tmp_path):
    c = parse_config(BASE + '[sinks.csv]\ndir = "out"\ngzip = true\n', tmp_path)
    assert c.sinks["csv"] == CsvSinkConfig(dir=tmp_path / "out", gzip=True)
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + '[sinks.kafka]\ndir = "p"\n', tmp_path)
    assert info.value.key == "sinks.kafka" and info.value.reason == 'unknown sink "kafka" (known: csv, parquet, raw)'
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + '[sinks]\ncsv = 1\n', tmp_path)
    assert info.value.key == "sinks.csv" and "expected a table" in info.value.reason


def test_the_core_alone_keeps_plugin_tables_raw(tmp_path):
    """Library use (a consumer loading the pipeline's file) needs no sink or server code."""
    c = core_parse_config(BASE + '[sinks.csv]\ndir = "out"\n[publisher]\nport = 9100\n', tmp_path)
    assert c.sinks == {"csv": {"dir": "out"}} and c.servers == {"publisher": {"port": 9100}}


def test_a_new_sink_and_server_are_one_registry_line(tmp_path, toy_plugins):
    c = parse_config(BASE + "[toy]\nport = 7100\n[sinks.toy]\n", tmp_path, plugins=toy_plugins)
    assert c.servers["toy"] == ToySettings(7100) and c.sinks["toy"] == ToySettings()
    progs = dict((name, argv[3:]) for name, argv in programs(c, None, toy_plugins))
    assert progs["toy"] == ["toy"] and progs["sink-toy"] == ["sink", "toy"]
    assert list(progs).index("toy") > list(progs).index("publisher")
    without = parse_config(BASE, tmp_path, plugins=toy_plugins)
    assert "toy" not in dict(programs(without, None, toy_plugins))  # a server that is not default_on
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "[toy]\nport = 99999\n", tmp_path, plugins=toy_plugins)
    assert info.value.key == "toy.port"
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "[toy]\n", tmp_path)  # not registered: an unknown table
    assert info.value.key == "toy" and "unknown key" in info.value.reason


def test_registry_rejects_duplicates_and_bad_targets():
    with pytest.raises(ValueError):
        Registry("sink", [Plugin("a", "m:X"), Plugin("a", "m:Y")])
    with pytest.raises(ValueError):
        Registry("sink", [Plugin("a", "m.X")])
    with pytest.raises(ConfigError) as info:
        Registry("adapter", [Plugin("binance", "m:X")]).get("kraken", "exchanges.k.adapter")
    assert str(info.value) == 'exchanges.k.adapter: unknown adapter "kraken" (known: binance)'


def test_pipeline_sink_unknown_name_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline", "sink", "kafka"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and 'unknown sink "kafka" (known: csv, parquet, raw)' in r.stderr
    r = CliRunner().invoke(cli_mod.cli, ["sink", "--help"])
    assert r.exit_code == 0 and "csv" in r.output


def _every_command(group: click.Group, path: list[str]):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        if path == ["bench"]:
            continue  # a benchmark takes its own arguments, untouched
        cmd = group.get_command(ctx, name)
        yield path + [name]
        if isinstance(cmd, click.Group):
            yield from _every_command(cmd, path + [name])


COMMANDS = list(_every_command(cli_mod.cli, []))


def test_every_command_is_listed():
    names = {" ".join(c) for c in COMMANDS}
    assert {"run", "stop", "restart", "status", "book", "ingest", "publish", "sink", "sink csv", "sim", "replay",
            "bench"} <= names


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_config_option_after_every_subcommand(command, tmp_path):
    r = CliRunner().invoke(cli_mod.cli, [*command, "--config", str(tmp_path / "p.toml"), "--help"])
    assert r.exit_code == 0, r.output
    assert "--config FILE" in r.output


def test_status_with_config_after_the_command_and_from_the_environment(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text(BASE)
    run = lambda args, env=None: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "pipeline", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**__import__("os").environ, **(env or {})})
    for r in (run(["status", "--json", "--config", str(f)]), run(["status", "--json"], {"PIPELINE_CONFIG": str(f)})):
        assert r.returncode == 4, r.stderr  # documented: down (nothing runs)
        assert '"ingest-sim"' in r.stdout and str(tmp_path / "r") not in r.stderr
    both = run(["--config", str(f), "status", "--config", str(tmp_path / "other.toml")])
    assert both.returncode == 2 and "--config given twice" in both.stderr
    bad = run(["status", "--config", str(tmp_path / "nope.toml")], {"PIPELINE_CONFIG": str(f)})
    assert bad.returncode == 2 and "nope.toml" in bad.stderr  # the command line beats the environment
