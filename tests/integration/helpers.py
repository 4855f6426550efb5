"""Real processes on loopback for integration tests: start, wait for, stop by PID."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PIPELINE = [sys.executable, "-m", "pipeline"]


def eventually(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - the condition may not be checkable yet
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_tmpdir() -> Path:
    """ipc socket paths are capped near 107 bytes: keep run dirs short."""
    return Path(tempfile.mkdtemp(prefix="l2p", dir="/tmp"))


class Procs:
    """Processes started by a test; all are stopped (SIGTERM, then SIGKILL) by PID."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        p = subprocess.Popen(args, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, **(env or {})})
        self.procs.append((name, p))
        return p

    def log(self, name: str) -> str:
        try:
            return (self.workdir / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, p: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return p.returncode

    def stop_all(self) -> None:
        for _, p in reversed(self.procs):
            self.stop(p)


def start_sim(procs: Procs, symbols: str = "BTCUSDT,ETHUSDT", rate: float = 500, seed: int = 7,
              extra: list[str] | None = None) -> int:
    ready = procs.workdir / "sim.port"
    sim_config = procs.workdir / "sim.toml"  # the CLI needs a config; the sim uses only its run_dir
    if not sim_config.exists():
        sim_config.write_text('[pipeline]\nrun_dir = "run"\n[exchanges.x]\nadapter = "binance"\nsymbols = ["X"]\n')
    procs.start("sim", PIPELINE + ["--config", str(sim_config), "sim", "--port", "0",
                                   "--symbols", symbols, "--rate", str(rate), "--seed", str(seed),
                                   "--ready-file", str(ready), *(extra or [])])
    return int(eventually(lambda: ready.exists() and ready.read_text().strip(), 20, what="sim ready file"))


def start_publisher(procs: Procs, config: Path, name: str = "publisher", env: dict | None = None) -> int:
    """`pipeline publish` with a ready file; returns the port it bound."""
    ready = procs.workdir / f"{name}.port"
    procs.start(name, PIPELINE + ["--config", str(config), "publish", "--ready-file", str(ready)], env=env)
    return int(eventually(lambda: ready.exists() and ready.read_text().strip(), 20, what=f"{name} ready file"))


def write_config(workdir: Path, port: int, symbols: list[str], extra: str = "", name: str = "p.toml",
                 sim_table: str = "") -> Path:
    f = workdir / name
    f.write_text(f"""
[pipeline]
run_dir = "run"
{sim_table}
[exchanges.sim]
adapter = "binance"
symbols = {json.dumps(symbols)}
depth = 20
ws_url = "ws://127.0.0.1:{port}"
rest_url = "http://127.0.0.1:{port}"
{extra}
""")
    return f


def sim_fault(port: int, **params) -> dict:
    q = "&".join(f"{k}={v}" for k, v in params.items())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/fault?{q}", timeout=10) as r:
        return json.loads(r.read())


STATUS_REPORTED = (0, 3, 4)  # `pipeline status`: all well, a book not live, something down (docs/operations.md)


def status(config: Path) -> dict:
    out = subprocess.run(PIPELINE + ["--config", str(config), "status", "--json"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode in STATUS_REPORTED, out.stderr  # (1, 2: the command failed)
    return json.loads(out.stdout)


def feeds(config: Path) -> dict[str, dict]:
    return {f["symbol"]: f for f in status(config)["feeds"]}


def exchange_stats(config: Path, name: str = "sim") -> dict:
    return next(e for e in status(config)["exchanges"] if e["exchange"] == name)


def rest_book_equals_shm(config_path: Path, exchange: str, port: int, symbols: list[str], depth: int = 10) -> dict:
    """Best-available book on a paused market: shared memory says "shm", and the venue's
    REST book (adapter request + parser) equals it level for level.  Returns the sources."""
    from pipeline.app.bestbook import best_book
    from pipeline.config import load_config
    from pipeline.shm import BookReader

    from pipeline import shards

    config = load_config(config_path)
    assert sim_fault(port, name="pause")["ok"]
    try:
        # each symbol's segment: the exchange's, or its ingest process's when it has several
        readers = {s: BookReader.open(config.shm_prefix, shards.unit_of(config, exchange, s)) for s in symbols}
        try:
            def quiet():
                before = [readers[s].read(s).seq for s in symbols]
                time.sleep(0.6)
                return [readers[s].read(s).seq for s in symbols] == before
            eventually(quiet, 20, 0.0, "books quiet after the pause")
        finally:
            for r in readers.values():
                r.close()
        sources = {}
        for sym in symbols:
            live = best_book(exchange, sym, config, depth=depth)
            rest = best_book(exchange, sym, config, depth=depth, source="rest")
            assert live.source == "shm" and rest.source == "rest", (live.reason, rest.reason)
            assert rest.bids and rest.asks and rest.bids[0][0] < rest.asks[0][0]
            assert (rest.bids, rest.asks) == (live.bids, live.asks), sym
            sources[sym] = (live.source, rest.source)
        return sources
    finally:
        sim_fault(port, name="resume")


def venue_pipeline(venue: str, protocol: str, adapter: str, symbols: list[str], ws_path: str, seed: int = 7,
                   rate: float = 400, sim_args: list[str] | None = None, exchange_extra: str = "",
                   configured: list[str] | None = None):
    """A module fixture's worth of `pipeline sim --protocol` + `pipeline ingest` for one venue:
    yields {procs, port, config, ingest} once every book is live; stops both by PID after.
    ``sim_args``: more `pipeline sim` options; ``exchange_extra``: more lines of the exchange table;
    ``configured``: the ingest's symbols when fewer than the sim's (runtime streams tests).
    The ingest pings every 5 s: with a 1 s watchdog a sim left unscheduled for a second on a
    loaded box looked dead, and the reconnect's resync broke tests that assert none."""
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        (workdir / "sim.toml").write_text(f'[pipeline]\nrun_dir = "simrun"\n[exchanges.x]\nadapter = "{adapter}"\n'
                                          f'symbols = ["{symbols[0]}"]\n')
        ready = workdir / "sim.port"
        procs.start("sim", PIPELINE + ["--config", str(workdir / "sim.toml"), "sim", "--protocol", protocol,
                                       "--port", "0", "--symbols", ",".join(symbols), "--rate", str(rate),
                                       "--seed", str(seed), "--ready-file", str(ready), *(sim_args or [])])
        port = int(eventually(lambda: ready.exists() and ready.read_text().strip(), 20, what="sim ready file"))
        config = workdir / "p.toml"
        config.write_text(f"""
[pipeline]
run_dir = "run"

[exchanges.{venue}]
adapter = "{adapter}"
symbols = {json.dumps(configured or symbols)}
depth = 20
ws_url = "ws://127.0.0.1:{port}{ws_path}"
rest_url = "http://127.0.0.1:{port}"
ping_interval_s = 5.0
snapshot_interval_s = 1.0
channels = ["trades", "book"]  # the books and trades are what these tests check (the other kinds: test_kinds_venues.py)
{exchange_extra}
""")
        ingest = procs.start("ingest", PIPELINE + ["--config", str(config), "ingest", venue])
        try:
            eventually(lambda: all(f["state"] == "live" for f in feeds(config).values()), 30, 0.2,
                       f"{venue} books live")
        except AssertionError:
            raise AssertionError(f"{venue} books not live; ingest log:\n{procs.log('ingest')[-3000:]}") from None
        yield {"procs": procs, "port": port, "config": config, "ingest": ingest}
    finally:
        procs.stop_all()


# ---------------------------------------------------------------------------- a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                  "--remote-debugging-port=0", "--window-size=1280,900"]


class DevTools:
    """Just enough of the Chrome DevTools protocol: open a page, evaluate, resize, screenshot."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(ws_url, max_size=None, open_timeout=10))
        self.next_id = 0
        self.session = None
        self.target = None

    def call(self, method: str, params: dict | None = None, timeout: float = 20, browser: bool = False) -> dict:
        """One command to the attached page (``browser=True``: to the browser itself); its result."""
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session and not browser:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply
                return reply["result"]

    def open(self, url: str) -> None:
        """A new tab showing ``url``; later calls go to it (the previous tab is closed)."""
        self.close_page()
        self.target = self.call("Target.createTarget", {"url": url}, browser=True)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": self.target, "flatten": True},
                                 browser=True)["sessionId"]

    def close_page(self) -> None:
        if self.target is not None:
            self.call("Target.closeTarget", {"targetId": self.target}, browser=True)
            self.target = self.session = None

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"].get("value")

    def set_viewport(self, width: int, height: int) -> None:
        """Emulate a window of that size in CSS pixels (media queries follow it)."""
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def screenshot(self, path: Path) -> Path:
        """The viewport as a PNG file at ``path``."""
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"]))
        return path

    def close(self) -> None:
        self._stack.close()


@contextlib.contextmanager
def chromium(workdir: Path):
    """Headless Chromium with its own profile under ``workdir``; yields a DevTools client.
    The browser's process group is ended by its PID afterwards."""
    profile = workdir / "chromium-profile"
    log = open(workdir / "chromium.log", "ab")
    browser = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               stdout=log, stderr=log, start_new_session=True)
    devtools = None
    try:
        active = profile / "DevToolsActivePort"
        lines = eventually(lambda: active.exists() and active.read_text().split(), 30, 0.1, "chromium devtools")
        devtools = DevTools(f"ws://127.0.0.1:{lines[0]}{lines[1]}")
        yield devtools
    finally:
        if devtools is not None:
            devtools.close()
        try:
            os.killpg(browser.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait(5)
        log.close()
