"""`pipeline run` under real supervisord, as a user lives with it: a closed terminal (SIGHUP), a
second start, `pipeline stop` / `restart` / `status` from another directory, a taken port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from helpers import PIPELINE, STATUS_REPORTED, Procs, eventually, free_port, short_tmpdir
from pipeline.app.config import load_config
from pipeline.pidfile import read_pid

pytestmark = pytest.mark.integration


def small_config(workdir: Path, sim_port: int, pub_port: int, run_dir: bool = True, sink: bool = False) -> Path:
    f = workdir / "p.toml"
    f.write_text(("[pipeline]\nrun_dir = \"run\"\n" if run_dir else "") + f"""
[sim]
port = {sim_port}
symbols = ["BTCUSDT", "ETHUSDT"]
rate = 200
[exchanges.sim]
adapter = "binance"
symbols = ["BTCUSDT", "ETHUSDT"]
depth = 20
ws_url = "ws://127.0.0.1:{sim_port}"
rest_url = "http://127.0.0.1:{sim_port}"
[publisher]
port = {pub_port}
""" + ('[sinks.csv]\ndir = "csv"\n' if sink else ""))
    return f


def cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(PIPELINE + args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def status(config: Path, cwd: Path) -> tuple[int, dict]:
    r = cli(["status", "--json", "--config", str(config)], cwd)
    assert r.returncode in STATUS_REPORTED, r.stderr
    return r.returncode, json.loads(r.stdout)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def all_live(config: Path, cwd: Path) -> bool:
    code, st = status(config, cwd)
    return code == 0 and all(f["state"] == "live" for f in st["feeds"])


def test_sighup_stops_every_program_frees_ports_and_shared_memory():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    sim_port, pub_port = free_port(), free_port()
    cfg = small_config(workdir, sim_port, pub_port, sink=True)
    config = load_config(cfg)
    run = procs.start("run", PIPELINE + ["run", "--config", str(cfg)])  # --config after the command
    try:
        eventually(lambda: all_live(cfg, workdir), 60, 0.3, "every program up, books live (status exit 0)")
        _, st = status(cfg, workdir)
        pids = {p["name"]: p["pid"] for p in st["processes"]}
        assert {"sim", "ingest-sim", "publisher", "sink-csv", "supervisord"} <= set(pids)
        assert all(pids.values())
        segments = list(Path("/dev/shm").glob(f"{config.shm_prefix}_*"))
        assert segments
        out = procs.log("run")
        assert f"http://127.0.0.1:{pub_port}/" in out and "`pipeline stop`" in out  # what `make run` shows

        run.send_signal(signal.SIGHUP)  # the terminal was closed
        assert run.wait(60) == 0
        for name, pid in pids.items():
            eventually(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                       20, 0.1, f"{name} ({pid}) gone")
        assert port_free(sim_port) and port_free(pub_port)
        assert not list(Path("/dev/shm").glob(f"{config.shm_prefix}_*"))
        assert not list(config.run_dir.glob("*.pid")) and not list(config.run_dir.glob("*.sock"))
    finally:
        procs.stop_all()


def test_second_run_stop_restart_and_status_from_another_directory():
    workdir = short_tmpdir()
    elsewhere = short_tmpdir()
    procs = Procs(workdir)
    sim_port, pub_port = free_port(), free_port()
    cfg = small_config(workdir, sim_port, pub_port, run_dir=False)  # run_dir: the per-user default
    config = load_config(cfg)
    assert not config.run_dir.is_relative_to(workdir)
    run = procs.start("run", PIPELINE + ["--config", "p.toml", "run"])  # relative to its own cwd
    try:
        eventually(lambda: all_live(cfg, elsewhere), 60, 0.3, "books live, seen from another directory")
        env = {"PIPELINE_CONFIG": str(cfg)}

        # status (env PIPELINE_CONFIG) and book from another directory find it
        r = cli(["status"], elsewhere, env)
        assert r.returncode == 0 and "ingest-sim" in r.stdout and " running " in r.stdout, r.stdout + r.stderr
        r = cli(["book", "sim", "BTCUSDT", "--depth", "3"], elsewhere, env)
        assert r.returncode == 0 and "state live" in r.stdout, r.stdout + r.stderr

        # a second pipeline of the same run_dir is refused, with the pid and the way out
        second = cli(["run"], elsewhere, env, timeout=60)
        assert second.returncode != 0
        assert f"already running (pid {run.pid}): `pipeline stop`" in second.stderr
        assert run.poll() is None

        # restart one program from there
        old = read_pid(config.run_dir / "publisher.pid")
        r = cli(["restart", "publisher", "--config", str(cfg)], elsewhere)
        assert r.returncode == 0, r.stdout + r.stderr
        eventually(lambda: read_pid(config.run_dir / "publisher.pid") not in (None, old), 30, 0.2, "new publisher")
        r = cli(["restart", "nope"], elsewhere, env)
        assert r.returncode == 2 and "no program 'nope'" in r.stderr and "publisher" in r.stderr

        # stop from there: everything ends and is cleaned up
        children = psutil.Process(run.pid).children(recursive=True)
        r = cli(["stop"], elsewhere, env)
        assert r.returncode == 0 and f"stopped (pid {run.pid})" in r.stdout, r.stdout + r.stderr
        assert run.wait(10) == 0
        for child in children:
            eventually(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 20, 0.1,
                       f"{child.pid} stopped")
        assert not list(Path("/dev/shm").glob(f"{config.shm_prefix}_*"))
        assert port_free(pub_port) and port_free(sim_port)
        code, _ = status(cfg, elsewhere)
        assert code == 4  # down: no program runs
        r = cli(["stop"], elsewhere, env)
        assert r.returncode == 0 and "not running" in r.stdout
    finally:
        procs.stop_all()


def test_taken_publisher_port_is_one_line_and_not_retried():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    sim_port, pub_port = free_port(), free_port()
    cfg = small_config(workdir, sim_port, pub_port)
    config = load_config(cfg)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", pub_port))
    squatter.listen()
    run = procs.start("run", PIPELINE + ["run", "--config", str(cfg)])
    line = f"publisher: cannot listen on 127.0.0.1:{pub_port}: address already in use"
    try:
        eventually(lambda: line in procs.log("run"), 60, 0.2, "the publisher's line in the `pipeline run` output")
        supervisord_log = config.run_dir / "supervisord.log"
        eventually(lambda: "exited: publisher (exit status 3; expected)" in supervisord_log.read_text(), 30, 0.2,
                   "supervisord saw the port-in-use status")
        eventually(lambda: all_feeds_live(cfg, workdir), 60, 0.3, "the rest of the pipeline runs")
        # supervisord's backoff would have started it again within a few seconds if it retried
        time.sleep(4)
        assert procs.log("run").count(line) == 1
        assert (config.run_dir / "logs" / "publisher.log").read_text().count("cannot listen") == 1
        assert supervisord_log.read_text().count("spawned: 'publisher'") == 1
        code, st = status(cfg, workdir)
        assert code == 4  # something is down
        pub = next(p for p in st["processes"] if p["name"] == "publisher")
        assert pub["state"] != "running" and line in pub["error"]
        assert st["publisher"]["state"] == "down"

        squatter.close()  # the port is free again: restart it by name
        r = cli(["restart", "publisher", "--config", str(cfg)], workdir)
        assert r.returncode == 0, r.stdout + r.stderr
        eventually(lambda: all_live(cfg, workdir), 60, 0.3, "everything up after the restart (status exit 0)")
        run.send_signal(signal.SIGINT)
        assert run.wait(60) == 0
    finally:
        squatter.close()
        procs.stop_all()


def all_feeds_live(config: Path, cwd: Path) -> bool:
    _, st = status(config, cwd)
    return all(f["state"] == "live" for f in st["feeds"])


@pytest.mark.parametrize("command,name", [(["sim"], "sim"), (["publish"], "publisher")])
def test_a_taken_port_is_exit_3_and_one_line_by_hand_too(command, name):
    workdir = short_tmpdir()
    port = free_port()
    cfg = workdir / "p.toml"
    cfg.write_text('[pipeline]\nrun_dir = "run"\n[exchanges.sim]\nadapter = "binance"\nsymbols = ["BTCUSDT"]\n')
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        r = cli([*command, "--port", str(port), "--config", str(cfg)], workdir, timeout=60)
    assert r.returncode == 3, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "cannot listen" in ln]
    assert lines == [f"{name}: cannot listen on 127.0.0.1:{port}: address already in use (another program or "
                     f"pipeline holds it); not retrying: free the port, then `pipeline restart {name}`"]
    assert (workdir / "run" / f"{name}.error").read_text().strip() == lines[0]


def test_run_starts_nothing_when_the_sim_port_is_taken():
    """Another pipeline's sim on our port: our ingest would record its market as ours."""
    workdir = short_tmpdir()
    sim_port, pub_port = free_port(), free_port()
    cfg = small_config(workdir, sim_port, pub_port)
    config = load_config(cfg)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", sim_port))
        squatter.listen()
        r = cli(["run", "--config", str(cfg)], workdir, timeout=60)
    assert r.returncode == 3, r.stdout + r.stderr
    assert r.stderr.strip() == (f"sim: cannot listen on 127.0.0.1:{sim_port}: address already in use (another "
                                "program or pipeline holds it); nothing started, since the ingests would follow "
                                "that program's market")
    assert not (config.run_dir / "supervisord.conf").exists() and not list(config.run_dir.glob("*.pid"))
