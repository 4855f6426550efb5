"""Issue 19 item 5 end to end: trades the venue made while we were not listening.

sim (Binance protocol) -> `pipeline ingest` -> a ZeroMQ consumer and `pipeline sink csv`, real
processes on loopback.  The sim keeps trading while it drops every connection (and, on a live
connection, withholds a few trade frames); the consumer gets a `trade_gap` "missing" marker with
exactly the ids it never saw, then a "backfilled" marker naming the seqs of those trades fetched
from the sim's REST `historicalTrades`, then the trades themselves; the CSV ends with every trade
id of the run in order, and the counters of the ingest and the sink add up to the markers."""

from __future__ import annotations

import json
import urllib.request

import pytest

from helpers import PIPELINE, Procs, eventually, short_tmpdir, sim_fault, start_sim, write_config
from pipeline import status
from pipeline.config import load_config
from pipeline.consumer import Consumer, Trade, TradeGap
from tardis_reader import read_rows

pytestmark = pytest.mark.integration
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def test_a_disconnect_gap_is_marked_backfilled_from_rest_and_the_csv_has_every_trade_id():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        sim_port = start_sim(procs, ",".join(SYMBOLS), rate=600)
        cfg = write_config(workdir, sim_port, SYMBOLS, extra='[sinks.csv]\ndir = "csv"\nflush_interval_s = 0.2\n')
        config = load_config(cfg)
        trades: dict[str, list[Trade]] = {s: [] for s in SYMBOLS}
        gaps: dict[str, list[TradeGap]] = {s: [] for s in SYMBOLS}
        # subscribed before the ingest starts: every trade from seq 1
        with Consumer(config, books=False, kinds=["trade_gap"]) as consumer:
            procs.start("sink", PIPELINE + ["--config", str(cfg), "sink", "csv"])
            eventually(lambda: (workdir / "run" / "sink-csv.stats.json").exists(), 20, what="sink started")
            procs.start("ingest", PIPELINE + ["--config", str(cfg), "ingest", "sim"])

            def poll(until, timeout: float, what: str):
                def step():
                    for ev in consumer.poll(0.1):
                        (trades if isinstance(ev, Trade) else gaps)[ev.symbol].append(ev)
                    return until()
                return eventually(step, timeout, 0.01, what)

            poll(lambda: all(len(t) >= 15 for t in trades.values()), 30, "trades flowing")
            assert not any(gaps.values())  # a steady stream: no false alarm
            assert sim_fault(sim_port, name="disconnect")["ok"]  # the sim trades on while the ingest reconnects

            def filled(s: str) -> int:
                return sum(g.state == "backfilled" for g in gaps[s])

            # (a symbol without a trade while the ingest was away, ~0.3 s, has no gap: at least one has)
            poll(lambda: sum(map(filled, SYMBOLS)) >= 1, 30, "a gap marked and backfilled")
            # trades lost on a live connection: the next 3 taker orders' frames of each symbol are not sent
            before = {s: filled(s) for s in SYMBOLS}
            assert sim_fault(sim_port, name="drop_trades", count=3)["ok"]
            poll(lambda: all(filled(s) > before[s] and trades[s][-1].seq >= gaps[s][-1].last_seq + 10 for s in SYMBOLS),
                 30, "the live gaps backfilled, and trades after them")

            def counted():  # the ingest's status (its stats loop copies them every 0.25 s)
                fs = {f["symbol"]: f for f in status.feeds(config)[0]}
                return all((f["trade_id_gaps"], f["trades_missed"], f["trades_backfilled"]) == (
                    sum(g.state == "missing" for g in gaps[s]), sum(g.count for g in gaps[s] if g.state == "missing"),
                    sum(g.backfilled for g in gaps[s])) for s, f in fs.items()) and fs
            eventually(counted, 10, 0.1, "status counts equal to the markers")
        procs.stop(procs.procs[-1][1])  # the ingest first: nothing more comes
        sink = next(p for name, p in procs.procs if name == "sink")
        assert procs.stop(sink) == 0

        for sym in SYMBOLS:
            ts, gs = trades[sym], gaps[sym]
            assert [t.seq for t in ts] == list(range(1, len(ts) + 1)), f"{sym}: the trade stream has no seq gap"
            missing = [g for g in gs if g.state == "missing"]
            filled = [g for g in gs if g.state == "backfilled"]
            assert len(missing) == len(filled) >= 1 and [g.seq for g in gs] == list(range(1, len(gs) + 1))
            by_seq = {t.seq: t for t in ts}
            rest_seqs = {s for f in filled for s in range(f.first_seq, f.last_seq + 1)}
            live_ids = {int(t.trade_id) for t in ts if t.seq not in rest_seqs}
            for m, f in zip(missing, filled):
                # the marker names exactly the ids the live stream skipped, between two it had
                assert m.backfill and m.count == m.last_id - m.first_id + 1 >= 1
                assert {m.first_id - 1, m.last_id + 1} <= live_ids
                assert not live_ids & set(range(m.first_id, m.last_id + 1))
                assert (f.first_id, f.last_id, f.count, f.backfilled) == (m.first_id, m.last_id, m.count, m.count)
                rest = [by_seq[s] for s in range(f.first_seq, f.last_seq + 1)]
                assert [int(t.trade_id) for t in rest] == list(range(m.first_id, m.last_id + 1)), "in id order"
            # every id of the run reached the consumer exactly once
            ids = sorted(int(t.trade_id) for t in ts)
            assert ids == list(range(ids[0], ids[0] + len(ids)))

            (path,) = (workdir / "csv").glob(f"sim_trades_*_{sym}.csv")
            _, rows = read_rows(path)
            csv_ids = [int(r["id"]) for r in rows]
            assert csv_ids == ids, f"{sym}: the CSV has every trade id, in order"
            local = [int(r["local_timestamp"]) for r in rows]
            assert local == sorted(local), "local_timestamp never decreases"

        stats = json.loads((workdir / "run" / "sink-csv.stats.json").read_text())
        all_missing = [g for gs in gaps.values() for g in gs if g.state == "missing"]
        assert stats["trade_id_gaps"] == len(all_missing)
        assert stats["trades_missed"] == stats["trades_backfilled"] == sum(g.count for g in all_missing)
        assert (stats["backfill_late"], stats["trades_lost"], stats["duplicates"]) == (0, 0, 0)
        assert "trade ids" in procs.log("ingest")
        with urllib.request.urlopen(f"http://127.0.0.1:{sim_port}/sim/state", timeout=10) as r:
            sim = json.loads(r.read())
        assert sim["requests"]["trades"] >= len(all_missing) and sim["counters"]["trades_dropped"] == 6
    finally:
        procs.stop_all()
