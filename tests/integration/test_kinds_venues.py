"""Issue 13 on the other venues: sim (Bybit linear, OKX, Hyperliquid, Lighter protocol) -> ingest with
every channel the venue offers -> the bus, the WebSocket publisher, the CSV sink and the Parquet sink,
as real processes on loopback.  Every kind the venue offers arrives on the bus with contiguous seqs
and on the WebSocket; quotes equal the book's top where the quote's update id is the book's (OKX
``seqId``, Lighter ``nonce``: the sims share the market's update ids); the CVD moves by exactly the
bus trades; the CSV files and the Parquet datasets of quotes, derivative_ticker and liquidations
hold the bus messages (Parquet: the CSV rows, typed).  The Binance USD-M path, with the
WebSocket and quotes compared with the book at the same update id, is tests/integration/test_kinds_e2e.py.
"""

from __future__ import annotations

import json
import signal
from collections import Counter

import pandas as pd
import pytest

from websockets.sync.client import connect

from helpers import PIPELINE, Procs, eventually, free_port, short_tmpdir, start_publisher
from parquet_reader import csv_frame, frame
from pipeline.config import load_config
from pipeline.consumer import Book, Consumer, Cvd, DerivativeTicker, Liquidation, Quote, Trade

pytestmark = pytest.mark.integration

KINDS = ["quote", "derivative_ticker", "liquidation", "cvd"]
TYPES = {"quote": Quote, "derivative_ticker": DerivativeTicker, "liquidation": Liquidation}
DATATYPES = {"quote": "quotes", "derivative_ticker": "derivative_ticker", "liquidation": "liquidations"}

SAME_IDS = {"okx", "lighter"}  # quotes and books carry ids of one space: compared at equal ids
VENUES = {
    # name: (sim protocol, adapter, symbols, ws path, the kinds the venue offers, the tardis exchange id);
    "bybit": ("bybit", "bybit_linear", ["BTCUSDT", "ETHUSDT"], "/v5/public/linear",
              ("quote", "derivative_ticker", "liquidation"), "bybit"),
    # a spot instrument that is also the swap's index id (index-tickers BTC-USDT go to the swap)
    "okx": ("okx", "okx", ["BTC-USDT", "ETH-USDT-SWAP", "BTC-USDT-SWAP"], "/ws/v5/public",
            ("quote", "derivative_ticker", "liquidation"), "okex"),
    "hyperliquid": ("hyperliquid", "hyperliquid", ["BTC", "ETH"], "/ws", ("quote", "derivative_ticker"), "hyperliquid"),
    "lighter": ("lighter", "lighter", ["ETH", "BTC"], "/stream", ("quote", "derivative_ticker", "liquidation"), "lighter"),
}


def _cvds_of_seen_trades(events: list, symbol: str) -> int:
    """CVD events of ``symbol`` whose last trade is one the consumer received: what the CVD check
    needs two of.  (A CVD can name a trade the consumer missed while its hot socket was still
    joining, the first trades of a quiet symbol: counting every CVD let the wait end too early.)"""
    seqs = {e.seq for e in events if isinstance(e, Trade) and e.symbol == symbol}
    return sum(1 for e in events if isinstance(e, Cvd) and e.symbol == symbol and e.trade_seq in seqs)


def _derivative(symbol: str) -> bool:
    return "-" not in symbol or symbol.endswith("-SWAP")  # OKX spot "BTC-USDT" has no derivative ticker


def _start(workdir, procs: Procs, venue: str):
    protocol, adapter, symbols, ws_path, _, _ = VENUES[venue]
    (workdir / "sim.toml").write_text('[pipeline]\nrun_dir = "simrun"\n[exchanges.x]\nadapter = "binance"\n'
                                      'symbols = ["X"]\n')
    ready = workdir / "sim.port"
    procs.start("sim", PIPELINE + ["--config", str(workdir / "sim.toml"), "sim", "--protocol", protocol,
                                   "--port", "0", "--symbols", ",".join(symbols), "--rate", "600", "--seed", "5",
                                   "--ready-file", str(ready)])
    port = int(eventually(lambda: ready.exists() and ready.read_text().strip(), 20, what="sim ready file"))
    cfg = workdir / "p.toml"
    cfg.write_text(f"""
[pipeline]
run_dir = "run"
[publisher]
port = {free_port()}
[exchanges.{venue}]
adapter = "{adapter}"
symbols = {json.dumps(symbols)}
depth = 20
ws_url = "ws://127.0.0.1:{port}{ws_path}"
rest_url = "http://127.0.0.1:{port}"
bar_intervals = []
[sinks.csv]
dir = "csv"
flush_interval_s = 0.2
[sinks.parquet]
dir = "pq"
flush_interval_s = 0.5
""")
    return cfg


@pytest.mark.parametrize("venue", list(VENUES))
def test_every_kind_of_the_venue_on_the_bus_websocket_csv_and_parquet(venue):
    _, _, symbols, _, offered, exchange_id = VENUES[venue]
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        cfg = _start(workdir, procs, venue)
        config = load_config(cfg)
        # the consumer and the sinks subscribe before the ingest starts: they see every message from seq 1
        with Consumer(config, use_shm=False, kinds=KINDS) as consumer:
            sinks = [procs.start(f"sink-{s}", PIPELINE + ["--config", str(cfg), "sink", s]) for s in ("csv", "parquet")]
            eventually(lambda: all((workdir / "run" / f"sink-{s}.stats.json").exists() for s in ("csv", "parquet")),
                       30, what="sinks started")
            ingest = procs.start("ingest", PIPELINE + ["--config", str(cfg), "ingest", venue])
            ws_port = start_publisher(procs, cfg)
            events: list = []
            tops: dict[tuple[str, int], tuple] = {}  # (symbol, update id) -> the live book's top then
            ws_kinds: set[str] = set()

            def poll(timeout: float) -> None:
                for e in consumer.poll(timeout):
                    events.append(e)
                    if isinstance(e, Book) and e.state == "live":  # a Book is updated in place: read it now
                        tops[(e.symbol, e.update_id)] = (e.best_bid(), e.best_ask())

            with connect(f"ws://127.0.0.1:{ws_port}/", open_timeout=20) as ws:
                ws.send(json.dumps({"op": "subscribe", "exchange": venue, "channels": [
                    "trades", "quotes", "derivative_ticker", "liquidations", "cvd"], "mode": "deltas"}))

                def arrived():
                    poll(0.1)
                    try:
                        while True:
                            ws_kinds.add(json.loads(ws.recv(0))["kind"])
                    except TimeoutError:
                        pass
                    # twice each: the first message of a kind can miss a sink still connecting (ZeroMQ's
                    # slow joiner; tickers come on subscribe, then once a second), the second reaches it
                    have = Counter((type(e), e.symbol) for e in events)
                    matched = venue not in SAME_IDS or any(
                        (e.symbol, e.update_id) in tops for e in events if isinstance(e, Quote))
                    return all(have[(TYPES[k], s)] >= 2 for k in offered for s in symbols
                               if k != "liquidation" and (k == "quote" or _derivative(s))) and (
                        "liquidation" not in offered or any(isinstance(e, Liquidation) for e in events)) \
                        and {*offered, "cvd", "trade"} <= ws_kinds and matched \
                        and all(sum(isinstance(e, Cvd) and e.symbol == s for e in events) >= 3
                                and _cvds_of_seen_trades(events, s) >= 2 for s in symbols)
                try:
                    eventually(arrived, 60, 0, f"every kind of {venue} on the bus and the WebSocket")
                except AssertionError:
                    got = sorted({f"{type(e).__name__}:{e.symbol}" for e in events})
                    raise AssertionError(f"bus got {got}, ws {sorted(ws_kinds)}; ingest log:\n"
                                         f"{procs.log('ingest')[-3000:]}") from None
            poll(0.3)
            assert consumer.trade_gaps == 0 and consumer.gaps == {}, (consumer.trade_gaps, consumer.gaps)
            assert not [e for e in events if isinstance(e, DerivativeTicker) and not _derivative(e.symbol)]  # spot
        procs.stop(ingest)
        for s in sinks:  # a stopping sink writes what it holds (both have every message of the ingest)
            assert procs.stop(s, signal.SIGTERM) == 0
        trades = [e for e in events if isinstance(e, Trade)]
        if venue in SAME_IDS:  # quotes equal the book's top where the ids match
            matched = 0
            for q in (e for e in events if isinstance(e, Quote)):
                top = tops.get((q.symbol, q.update_id))
                if top is not None:
                    assert ((q.bid_price, q.bid_amount), (q.ask_price, q.ask_amount)) == top, q
                    matched += 1
            assert matched > 0
        for sym in symbols:  # the CVD moves by exactly the bus trades between two CVDs
            seqs = {t.seq for t in trades if t.symbol == sym}
            cvds = [e for e in events if isinstance(e, Cvd) and e.symbol == sym and e.trade_seq in seqs]
            assert len(cvds) >= 2, sym
            first, last = cvds[0], cvds[-1]
            mine = [t for t in trades if t.symbol == sym and first.trade_seq < t.seq <= last.trade_seq]
            assert abs((last.cvd - first.cvd) - sum(t.amount if t.side == "buy" else -t.amount for t in mine)) < 1e-6
        for kind in offered:
            got = [e for e in events if isinstance(e, TYPES[kind])]
            for e in got:  # values the venue states are positive; unstated ones None, never 0
                if kind == "quote":
                    assert (e.bid_price is None or e.bid_price > 0) and (e.ask_price is None or e.ask_price > 0)
                    assert e.bid_price is None or e.ask_price is None or e.bid_price < e.ask_price
                elif kind == "derivative_ticker":
                    assert all(getattr(e, f) is None or getattr(e, f) > 0 for f in (
                        "mark_price", "index_price", "last_price", "open_interest", "funding_timestamp"))
                else:
                    assert e.side in ("buy", "sell") and e.price > 0 and e.amount > 0
            tickers = [e for e in got if kind == "derivative_ticker"]
            assert not tickers or any(t.mark_price and t.index_price and t.open_interest and t.funding_timestamp
                                      for t in tickers)
            # CSV and Parquet: the same rows, every bus message of the kind in them
            datatype = DATATYPES[kind]
            for sym in {e.symbol for e in got}:
                paths = sorted((workdir / "csv").glob(f"{exchange_id}_{datatype}_*_{sym}.csv"))
                assert paths, (datatype, sym)
                want = csv_frame(paths)
                table = frame(workdir / "pq", exchange_id, datatype, sym).drop(columns=["file"])
                # the first messages can miss a sink whose subscription was still connecting (ZeroMQ's
                # slow joiner; these kinds have no ring to refill from): compare from when both had one
                since = max(want["local_timestamp"].min(), table["local_timestamp"].min())
                want = want[want["local_timestamp"] >= since].reset_index(drop=True)
                table = table[table["local_timestamp"] >= since].reset_index(drop=True)
                assert len(want) and len(table)
                pd.testing.assert_frame_equal(table, want, check_dtype=False, check_categorical=False)
                stamps = set(want["local_timestamp"])
                for e in got:
                    at = pd.Timestamp(e.ts_received, unit="us", tz="UTC")
                    if e.symbol == sym and at >= since:
                        assert at in stamps, (kind, e)
    finally:
        procs.stop_all()
