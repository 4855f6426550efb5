"""How the publisher reads L2 (issue 15 item 3), as real processes: sim -> ingest -> publisher -> clients.

The publisher takes L2 from the bus only for books a delta client follows; snapshot clients get
views polled from shared memory.  What is checked here is behaviour, read from the publisher's
own counters (``/stats``: ``l2_in``, ``l2_subscriptions``) and from what clients receive:

- with only snapshot clients no L2 message reaches the publisher while the feed runs, and the
  snapshots still follow the book (rising seq, equal to shared memory's view at some point);
- a delta client that joins mid-stream gets one snapshot, then deltas with contiguous seq that
  rebuild the book equal to `pipeline book` (shared memory);
- when the last delta client leaves, the publisher unsubscribes: ``l2_in`` stops growing;
- a killed and restarted ingest (a new epoch) still gives snapshot clients a fresh snapshot;
- a symbol added at runtime (`pipeline subscribe`, issue 14) is served in both modes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from helpers import PIPELINE, Procs, eventually, feeds, short_tmpdir, start_publisher, start_sim, write_config
from test_publisher_e2e import apply_levels, recv_json, stats, ws_connect

pytestmark = pytest.mark.integration
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


@pytest.fixture(scope="module")
def stack():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        sim_port = start_sim(procs, "BTCUSDT,ETHUSDT,SOLUSDT", rate=800)
        from helpers import free_port
        ws_port = free_port()
        config = write_config(workdir, sim_port, SYMBOLS,
                              extra=f'depth_stream = "depth@0ms"\nl2_throttle_ms = 100\nmax_symbols = 4\n'
                                    f'[publisher]\nport = {ws_port}\n')
        procs.start("ingest", PIPELINE + ["--config", str(config), "ingest", "sim"])
        eventually(lambda: all(f["state"] == "live" for f in feeds(config).values()), 30, 0.2, "books live")
        assert start_publisher(procs, config) == ws_port
        # the publisher moves to shared memory once it can read it, and learns each book's instrument
        eventually(lambda: (lambda s: s["whole"] == [] and s["learning"] == 0)(stats(ws_port)["l2_subscriptions"]),
                   20, 0.1, "publisher reading L2 from shared memory")
        yield {"config": config, "port": ws_port, "procs": procs}
    finally:
        procs.stop_all()


def book_json(config, symbol: str) -> dict:
    out = subprocess.run(PIPELINE + ["--config", str(config), "book", "sim", symbol, "--json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def l2_in_quiet(port: int, seconds: float = 1.0) -> int:
    """``l2_in`` once it has not moved for ``seconds`` (messages already on their way may still come)."""
    def settled():
        a = stats(port)["l2_in"]
        time.sleep(seconds)
        b = stats(port)["l2_in"]
        return b if a == b else None
    return eventually(settled, 20, 0.0, "l2_in settled")


def snapshots(ws, seconds: float) -> list[dict]:
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            m = recv_json(ws, left)
        except TimeoutError:
            break
        if m["kind"] == "order_book_l2":
            out.append(m)
    return out


def test_snapshot_clients_only_take_no_l2_from_the_bus(stack):
    port, config = stack["port"], stack["config"]
    with ws_connect(port) as ws:
        assert recv_json(ws)["kind"] == "welcome"
        l2_before = l2_in_quiet(port)
        got = snapshots(ws, 2.0)
        assert stats(port)["l2_in"] == l2_before  # the feed ran (below), yet no L2 message came to the publisher
        for sym in SYMBOLS:
            seqs = [m["seq"] for m in got if m["symbol"] == sym]
            assert len(seqs) >= 5 and seqs == sorted(seqs) and seqs[-1] > seqs[0], (sym, seqs)
            assert all(len(m["bids"]) == 10 and m["state"] == "live" for m in got if m["symbol"] == sym)
        # snapshots are shared memory's views: they go on past the one `pipeline book` read, same epoch
        ref = book_json(config, "BTCUSDT")
        later = [m for m in snapshots(ws, 3.0) if m["symbol"] == "BTCUSDT"]
        assert later[-1]["epoch"] == ref["epoch"] and later[-1]["seq"] > ref["seq"]
        assert stats(port)["l2_subscriptions"]["exact"] == 0


def rebuild(ws, config, symbols, depth: int, counts: dict) -> None:
    """Apply a delta subscription's frames (asserting contiguous seq) until each book equals
    `pipeline book` at the same seq."""
    books = {s: ({}, {}) for s in symbols}
    seq = {s: None for s in symbols}
    epoch = {s: None for s in symbols}

    def apply(m):
        sym = m["symbol"]
        bids, asks = books[sym]
        if m["kind"] == "order_book_l2":
            bids.clear(), asks.clear()
            counts[sym]["snapshots"] += 1
        else:
            assert epoch[sym] == m["epoch"] and m["seq"] == seq[sym] + 1, (sym, seq[sym], m["seq"])
            counts[sym]["deltas"] += 1
        apply_levels(bids, m["bids"]), apply_levels(asks, m["asks"])
        seq[sym], epoch[sym] = m["seq"], m["epoch"]

    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        m = recv_json(ws)
        if m["kind"].startswith("order_book"):
            apply(m)
    early = {s: dict(c) for s, c in counts.items()}  # (later, a client behind may be conflated: snapshots)
    for sym in symbols:
        for _attempt in range(5):
            ref = book_json(config, sym)
            while seq[sym] is None or seq[sym] < ref["seq"]:
                m = recv_json(ws)
                if m["kind"].startswith("order_book"):
                    apply(m)
            if seq[sym] == ref["seq"]:
                break
        assert seq[sym] == ref["seq"] and epoch[sym] == ref["epoch"]
        bids, asks = books[sym]
        assert sorted(bids.items(), reverse=True) == [tuple(x) for x in ref["bids"][:depth]]
        assert sorted(asks.items()) == [tuple(x) for x in ref["asks"][:depth]]
    return early


def test_delta_client_joining_mid_stream_then_leaving(stack):
    port, config = stack["port"], stack["config"]
    counts = {s: {"snapshots": 0, "deltas": 0} for s in SYMBOLS}
    with ws_connect(port) as ws:
        recv_json(ws)
        ws.send(json.dumps({"op": "subscribe", "exchange": "sim", "symbols": SYMBOLS, "channels": ["book"],
                            "mode": "deltas", "depth": 20}))
        while recv_json(ws)["kind"] != "subscribed":
            pass  # (the default subscription's snapshots until then)
        l2_joined = stats(port)["l2_in"]
        early = rebuild(ws, config, SYMBOLS, 20, counts)
        st = stats(port)
        assert st["l2_subscriptions"]["exact"] == 2 and st["l2_in"] > l2_joined
    for sym in SYMBOLS:
        # one snapshot, then deltas: the join waited for the subscription to take effect
        assert counts[sym]["deltas"] >= 20 and early[sym]["snapshots"] == 1 and early[sym]["deltas"] > 0, early
    # the last delta client left: the publisher unsubscribed and takes no L2 any more
    eventually(lambda: stats(port)["l2_subscriptions"]["exact"] == 0, 10, 0.1, "unsubscribed")
    quiet = l2_in_quiet(port)
    time.sleep(1.0)
    assert stats(port)["l2_in"] == quiet


def test_runtime_symbol_is_served_to_snapshot_and_delta_clients(stack):
    port, config = stack["port"], stack["config"]
    with ws_connect(port) as silent:
        recv_json(silent)
        out = subprocess.run(PIPELINE + ["--config", str(config), "subscribe", "sim", "SOLUSDT"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        eventually(lambda: feeds(config)["SOLUSDT"]["state"] == "live", 30, 0.2, "SOLUSDT live")
        deadline = time.monotonic() + 20
        sol = []
        while len(sol) < 3 and time.monotonic() < deadline:
            sol += [m for m in snapshots(silent, 1.0) if m["symbol"] == "SOLUSDT" and m["state"] == "live"]
        assert len(sol) >= 3 and sol[-1]["seq"] > sol[0]["seq"]
    eventually(lambda: stats(port)["l2_subscriptions"]["learning"] == 0, 10, 0.1, "SOLUSDT instrument learned")
    counts = {"SOLUSDT": {"snapshots": 0, "deltas": 0}}
    with ws_connect(port) as ws:
        recv_json(ws)
        ws.send(json.dumps({"op": "subscribe", "exchange": "sim", "symbols": ["SOLUSDT"], "channels": ["book"],
                            "mode": "deltas", "depth": 10}))
        while recv_json(ws)["kind"] != "subscribed":
            pass
        rebuild(ws, config, ["SOLUSDT"], 10, counts)
    assert counts["SOLUSDT"]["deltas"] >= 5
    subprocess.run(PIPELINE + ["--config", str(config), "unsubscribe", "sim", "SOLUSDT"], capture_output=True,
                   timeout=60)


def test_killed_ingest_new_epoch_gives_snapshot_clients_a_fresh_snapshot(stack):
    """Last in the module: it kills and restarts the ingest."""
    port, config, procs = stack["port"], stack["config"], stack["procs"]
    with ws_connect(port) as ws:
        recv_json(ws)
        first = next(m for m in snapshots(ws, 3.0) if m["symbol"] == "BTCUSDT")
        l2_before = l2_in_quiet(port)
        ingest = next(p for name, p in procs.procs if name == "ingest")
        ingest.send_signal(signal.SIGKILL)
        ingest.wait(10)
        procs.start("ingest-2", PIPELINE + ["--config", str(config), "ingest", "sim"])
        fresh = status = None
        deadline = time.monotonic() + 40
        while fresh is None and time.monotonic() < deadline:
            m = recv_json(ws, 40)
            if m["kind"] == "status" and m["symbol"] == "BTCUSDT" and m["epoch"] != first["epoch"]:
                status = m
            if (m["kind"] == "order_book_l2" and m["symbol"] == "BTCUSDT" and m["epoch"] != first["epoch"]
                    and m["state"] == "live"):
                fresh = m
        assert fresh is not None and status is not None
        later = [m for m in snapshots(ws, 1.5) if m["symbol"] == "BTCUSDT"]
        assert later and all(m["epoch"] == fresh["epoch"] and m["seq"] >= fresh["seq"] for m in later)
        assert stats(port)["l2_in"] == l2_before  # all of it from shared memory
