"""Issue 19 item 5 end to end: trades the venue made while we were not listening.

sim (Binance protocol) -> `pipeline ingest` -> a ZeroMQ consumer and `pipeline sink csv`, real
processes on loopback.  The sim keeps trading while it drops every connection and withholds a few
trade frames on a live connection: the consumer gets a `trade_gap` "missing" marker with exactly
the ids it never saw, then a "backfilled" marker naming the seqs of those trades fetched from the
sim's REST `historicalTrades`, then the trades themselves.  Then the ingest is stopped (SIGTERM)
and killed (-9) while the sim trades on, and started again: the trades made while it was down are
a gap too, backfilled.  The CSV ends with every trade id of the run in order, and the counters of
the ingest and the sink add up."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from helpers import PIPELINE, Procs, eventually, short_tmpdir, sim_fault, start_sim, write_config
from pipeline import status
from pipeline.config import load_config
from pipeline.consumer import Consumer, Trade, TradeGap
from tardis_reader import read_rows

pytestmark = pytest.mark.integration
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def test_gaps_of_a_disconnect_a_live_loss_and_ingest_restarts_are_marked_backfilled_and_in_the_csv():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        sim_port = start_sim(procs, ",".join(SYMBOLS), rate=600)
        cfg = write_config(workdir, sim_port, SYMBOLS, extra='[sinks.csv]\ndir = "csv"\nflush_interval_s = 0.2\n')
        config = load_config(cfg)
        ingest_cmd = PIPELINE + ["--config", str(cfg), "ingest", "sim"]
        trades: dict[str, list[Trade]] = {s: [] for s in SYMBOLS}
        gaps: dict[str, list[TradeGap]] = {s: [] for s in SYMBOLS}
        # subscribed before the ingest starts
        with Consumer(config, books=False, kinds=["trade_gap"]) as consumer:
            procs.start("sink", PIPELINE + ["--config", str(cfg), "sink", "csv"])
            eventually(lambda: (workdir / "run" / "sink-csv.stats.json").exists(), 20, what="sink started")
            ingest = procs.start("ingest", ingest_cmd)

            def poll(until, timeout: float, what: str):
                def step():
                    for ev in consumer.poll(0.1):
                        (trades if isinstance(ev, Trade) else gaps)[ev.symbol].append(ev)
                    return until()
                try:
                    return eventually(step, timeout, 0.01, what)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\ngaps {gaps}\nlast trades { {s: t[-1] for s, t in trades.items() if t} }"
                                         f"\ningest log:\n{procs.log('ingest')[-4000:]}") from None

            def filled(s: str) -> int:
                return sum(g.state == "backfilled" for g in gaps[s])

            def settled(before: dict[str, int], every: bool):
                """More gaps backfilled than ``before`` (on every symbol, or on one), none awaited, and
                trades of the current epoch past the last backfill."""
                def check():
                    grew = [filled(s) > before[s] for s in SYMBOLS]
                    return (all(grew) if every else any(grew)) and all(
                        sum(g.state == "missing" for g in gaps[s]) == filled(s)
                        and (not gaps[s] or (trades[s][-1].epoch, trades[s][-1].seq) >= (gaps[s][-1].epoch,
                                                                                         gaps[s][-1].last_seq + 5))
                        for s in SYMBOLS)
                return check

            poll(lambda: all(len(t) >= 15 for t in trades.values()), 30, "trades flowing")
            assert not any(gaps.values())  # a steady stream: no false alarm
            # 1. the sim trades on while the ingest reconnects (a symbol without a trade in those ~0.3 s
            # has no gap: at least one has)
            assert sim_fault(sim_port, name="disconnect")["ok"]
            poll(settled({s: 0 for s in SYMBOLS}, every=False), 30, "a disconnect's gap marked and backfilled")
            # 2. trades lost on a live connection: the next 3 taker orders' frames of each symbol
            before = {s: filled(s) for s in SYMBOLS}
            assert sim_fault(sim_port, name="drop_trades", count=3)["ok"]
            poll(settled(before, every=True), 30, "the live gaps backfilled")

            def counted():  # the ingest's status (its stats loop copies them every 0.25 s)
                fs = {f["symbol"]: f for f in status.feeds(config)[0]}
                return all((f["trade_id_gaps"], f["trades_missed"], f["trades_backfilled"]) == (
                    sum(g.state == "missing" for g in gaps[s]), sum(g.count for g in gaps[s] if g.state == "missing"),
                    sum(g.backfilled for g in gaps[s])) for s, f in fs.items()) and fs
            first_run = eventually(counted, 10, 0.1, "status counts equal to the markers")
            runs = [first_run]

            # 3. the ingest stopped (it saves its last trade ids), then killed (its trade ring tells):
            # the sim trades on while it is down
            for how in ("stop", "kill"):
                epoch = trades[SYMBOLS[0]][-1].epoch
                # (paused meanwhile, so no trade is in flight on the bus when the process goes)
                assert sim_fault(sim_port, name="pause")["ok"]
                time.sleep(0.3)
                if how == "stop":
                    assert procs.stop(ingest) == 0
                else:
                    ingest.kill()
                    ingest.wait(10)
                assert sim_fault(sim_port, name="resume")["ok"]
                time.sleep(0.5)
                ingest = procs.start("ingest", ingest_cmd)

                def restarted():  # (its status: a consumer may join a restarted ingest after its first messages)
                    fs = {f["symbol"]: f for f in status.feeds(config)[0]}
                    return len(fs) == 2 and all(f["epoch"] is not None and f["epoch"] > epoch for f in fs.values()) \
                        and sum(f["trade_id_gaps"] for f in fs.values()) >= 1 and all(
                            f["trades_backfilled"] == f["trades_missed"] and f["trades"] - f["trades_backfilled"] >= 10
                            for f in fs.values()) and fs
                runs.append(poll(restarted, 40, f"the gap across the ingest's {how} backfilled"))
            assert procs.stop(ingest) == 0  # the ingest first: nothing more comes
            while events := consumer.poll(0.3):  # what is still on its way
                for ev in events:
                    (trades if isinstance(ev, Trade) else gaps)[ev.symbol].append(ev)
        sink = next(p for name, p in procs.procs if name == "sink")
        assert procs.stop(sink) == 0

        for sym in SYMBOLS:
            # the first run, whole: every marker and trade the consumer got
            first_epoch = trades[sym][0].epoch
            ts = [t for t in trades[sym] if t.epoch == first_epoch]
            gs = [g for g in gaps[sym] if g.epoch == first_epoch]
            # (from its first trade: ZeroMQ may have connected it a few trades late)
            assert [t.seq for t in ts] == list(range(ts[0].seq, ts[0].seq + len(ts))), f"{sym}: seq gap"
            missing = [g for g in gs if g.state == "missing"]
            filled_ = [g for g in gs if g.state == "backfilled"]
            assert len(missing) == len(filled_) >= 1
            by_seq = {(t.epoch, t.seq): t for t in ts}
            rest_seqs = {(f.epoch, s) for f in filled_ for s in range(f.first_seq, f.last_seq + 1)}
            live_ids = {int(t.trade_id) for t in ts if (t.epoch, t.seq) not in rest_seqs}
            for m, f in zip(missing, filled_):
                # the marker names exactly the ids the live stream skipped, between two it had
                assert m.backfill and m.count == m.last_id - m.first_id + 1 >= 1
                assert {m.first_id - 1, m.last_id + 1} <= live_ids
                assert not live_ids & set(range(m.first_id, m.last_id + 1))
                assert (f.first_id, f.last_id, f.count, f.backfilled, f.epoch) == (
                    m.first_id, m.last_id, m.count, m.count, m.epoch)
                rest = [by_seq[(f.epoch, s)] for s in range(f.first_seq, f.last_seq + 1)]
                assert [int(t.trade_id) for t in rest] == list(range(m.first_id, m.last_id + 1)), "in id order"
            # every id of the first run reached the consumer exactly once
            ids = sorted(int(t.trade_id) for t in ts)
            assert ids == list(range(ids[0], ids[0] + len(ids)))

            # the CSV: every id of the three runs once, the gaps across the restarts included
            (path,) = (workdir / "csv").glob(f"sim_trades_*_{sym}.csv")
            _, rows = read_rows(path)
            csv_ids = [int(r["id"]) for r in rows]
            assert sorted(csv_ids) == list(range(csv_ids[0], csv_ids[0] + len(csv_ids))), f"{sym}: every id once"
            start = csv_ids.index(ids[0])
            assert csv_ids[start:start + len(ids)] == ids
            local = [int(r["local_timestamp"]) for r in rows]
            assert local == sorted(local), "local_timestamp never decreases"

        stats = json.loads((workdir / "run" / "sink-csv.stats.json").read_text())
        # the sink counted what the ingest counted, run by run (its status is per run)
        total = {k: sum(f[k] for run in runs for f in run.values())
                 for k in ("trade_id_gaps", "trades_missed", "trades_backfilled")}
        assert {k: stats[k] for k in total} == total, (stats, total)
        assert total["trades_missed"] == total["trades_backfilled"] and len(runs) == 3
        assert (stats["trades_lost"], stats["duplicates"]) == (0, 0)
        if stats["backfill_late"]:  # the sink joined a restarted ingest after its marker (a loaded box)
            print("\nbackfilled trades written after the live ones:", stats["backfill_late"])
        else:
            for sym in SYMBOLS:
                (path,) = (workdir / "csv").glob(f"sim_trades_*_{sym}.csv")
                csv_ids = [int(r["id"]) for r in read_rows(path)[1]]
                assert csv_ids == sorted(csv_ids), f"{sym}: in id order"
        assert "trade ids" in procs.log("ingest")
        with urllib.request.urlopen(f"http://127.0.0.1:{sim_port}/sim/state", timeout=10) as r:
            sim = json.loads(r.read())
        assert sim["requests"]["trades"] >= total["trade_id_gaps"] and sim["counters"]["trades_dropped"] == 6
    finally:
        procs.stop_all()
