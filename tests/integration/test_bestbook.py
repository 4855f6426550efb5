"""Best-available book (pipeline/app/bestbook.py) against a real sim and a real ingest:
shared memory when live and fresh, REST otherwise, always saying which and why."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

from helpers import PIPELINE, Procs, eventually, feeds, short_tmpdir, start_sim, write_config
from pipeline.app.bestbook import BookUnavailable, best_book
from pipeline.config import load_config
from pipeline.errors import ConfigError

pytestmark = pytest.mark.integration


def _rest_reference(port: int, symbol: str, depth: int):
    """The sim's REST book parsed here with Decimal, independently of the adapter."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v3/depth?symbol={symbol}&limit=1000", timeout=10) as r:
        body = json.loads(r.read())
    bids = sorted(((Decimal(p), Decimal(q)) for p, q in body["bids"]), reverse=True)[:depth]
    asks = sorted((Decimal(p), Decimal(q)) for p, q in body["asks"])[:depth]
    return body["lastUpdateId"], [(float(p), float(q)) for p, q in bids], [(float(p), float(q)) for p, q in asks]


@pytest.fixture
def env():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        port = start_sim(procs, "BTCUSDT,ETHUSDT", rate=5)
        path = write_config(workdir, port, ["BTCUSDT", "ETHUSDT"])
        yield {"procs": procs, "port": port, "path": path, "config": load_config(path)}
    finally:
        procs.stop_all()
        # the test SIGKILLs the ingest, which leaves its segments behind on purpose: remove them
        for seg in Path("/dev/shm").glob(load_config(workdir / "p.toml").shm_prefix + "_*"):
            seg.unlink(missing_ok=True)


def test_rest_when_no_ingest_then_shm_when_live_then_rest_when_ingest_died(env):
    config, port = env["config"], env["port"]

    # 1. no ingest: REST, and the reason says shared memory has no book
    def rest_matches():
        got = best_book("sim", "BTCUSDT", config, depth=10)
        uid, bids, asks = _rest_reference(port, "BTCUSDT", 10)
        return got if (got.update_id == uid and got.bids == bids and got.asks == asks) else None

    got = eventually(rest_matches, 20, 0.1, "REST book equal to the sim's book at the same update id")
    assert got.source == "rest" and "no shared-memory book" in got.reason
    assert got.bids[0][0] < got.asks[0][0]

    # 2. a live ingest: shared memory
    ingest = env["procs"].start("ingest", PIPELINE + ["--config", str(env["path"]), "ingest", "sim"])
    eventually(lambda: all(f["state"] == "live" for f in feeds(env["path"]).values()), 30, 0.2, "books live")
    got = best_book("sim", "ETHUSDT", config, depth=5)
    assert got.source == "shm" and got.state == "live" and got.seq > 0
    assert len(got.bids) == 5 and got.bids[0][0] < got.asks[0][0]

    # 3. the ingest is killed (its segment stays behind): REST again, naming the dead writer
    env["procs"].stop(ingest, signal.SIGKILL)
    got = best_book("sim", "ETHUSDT", config, depth=5)
    assert got.source == "rest" and "gone" in got.reason

    # 4. and the CLI says the same
    out = subprocess.run(PIPELINE + ["--config", str(env["path"]), "book", "sim", "ETHUSDT", "--rest-fallback",
                                     "--json", "--depth", "3"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["source"] == "rest" and len(doc["bids"]) == 3 and doc["reason"]


def test_neither_source_is_a_clear_error(env):
    config = env["config"]
    env["procs"].stop_all()  # the sim is gone too
    with pytest.raises(BookUnavailable, match=r"shm: .*; rest: "):
        best_book("sim", "BTCUSDT", config, timeout_s=2)
    with pytest.raises(ConfigError, match="not configured"):
        best_book("sim", "NOPE", config)
