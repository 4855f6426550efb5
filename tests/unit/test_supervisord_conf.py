"""The top-level supervisord.conf runs the demo: sim, the ingest of `sim`, the publisher, gRPC, the CSV sink."""

import configparser
import shlex
from pathlib import Path

from pipeline.app.config import load_config
from pipeline.app.supervise import EXIT_PORT_IN_USE, programs, supervisord_conf

ROOT = Path(__file__).resolve().parents[2]


def test_top_level_supervisord_conf_runs_the_demo_programs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cp = configparser.RawConfigParser()
    cp.read(ROOT / "supervisord.conf")
    top = {s.split(":", 1)[1]: shlex.split(cp[s]["command"])[1:] for s in cp.sections() if s.startswith("program:")}
    demo = {name: argv[3:] for name, argv in programs(load_config(None), None)}  # argv after "python -m pipeline"
    assert top == demo == {"sim": ["sim"], "ingest-sim": ["ingest", "sim"], "publisher": ["publish"],
                           "grpc": ["grpc"], "sink-csv": ["sink", "csv"]}


def test_generated_conf_has_every_program_with_restart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    cp = configparser.RawConfigParser()
    cp.read_string(supervisord_conf(config, None, tmp_path))
    progs = [s for s in cp.sections() if s.startswith("program:")]
    assert progs == ["program:sim", "program:ingest-sim", "program:publisher", "program:grpc", "program:sink-csv"]
    # restarted on every exit but the one status that says its port is taken (not retried)
    assert all(cp[p]["autorestart"] == "unexpected" and cp[p]["exitcodes"] == str(EXIT_PORT_IN_USE) for p in progs)
    assert all(cp[p]["startretries"] == "1000" for p in progs)
    assert cp["supervisord"]["nodaemon"] == "true"
