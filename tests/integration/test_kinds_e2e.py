"""Issue 13 end to end: the Binance sim (its USD-M routes) -> ingest (binance_futures) -> the bus, the
WebSocket publisher and the CSV sink, as real processes on loopback.  Every kind arrives on every path;
quotes equal the book's top where the update id matches; the CVD equals the sum of the trades on the
bus; the bars equal an independent aggregation of the same trades; the CSV files pass their datatype's
checks."""

from __future__ import annotations

import json
import time

import pytest
from websockets.sync.client import connect

from helpers import PIPELINE, Procs, eventually, feeds, free_port, short_tmpdir, start_publisher, start_sim, status
from pipeline.config import load_config
from pipeline.consumer import Book, Consumer, Cvd, DerivativeTicker, Liquidation, Quote, Trade, TradeBar
from tardis_reader import read_rows

pytestmark = pytest.mark.integration
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
KINDS = ["quote", "derivative_ticker", "liquidation", "cvd", "trade_bar"]


def _config(workdir, sim_port: int, ws_port: int):
    path = workdir / "p.toml"
    path.write_text(f"""
[pipeline]
run_dir = "run"
[exchanges.sim]
adapter = "binance_futures"
symbols = {json.dumps(SYMBOLS)}
depth = 20
ws_url = "ws://127.0.0.1:{sim_port}/{{route}}"
rest_url = "http://127.0.0.1:{sim_port}"
trade_stream = "trade"
open_interest_interval_s = 0.5
bar_intervals = ["1s"]
[publisher]
port = {ws_port}
[sinks.csv]
dir = "csv"
flush_interval_s = 0.2
""")
    return path


def _bars(trades: list[Trade], interval_us: int) -> dict[tuple[str, int], dict]:
    out: dict[tuple[str, int], dict] = {}
    for t in trades:
        start = t.ts_exchange - t.ts_exchange % interval_us
        b = out.get((t.symbol, start))
        if b is None:
            b = out[(t.symbol, start)] = {"open": t.price, "high": t.price, "low": t.price, "volume": 0.0, "n": 0,
                                          "first": t.seq}
        b["high"], b["low"], b["close"] = max(b["high"], t.price), min(b["low"], t.price), t.price
        b["volume"] += t.amount
        b["n"] += 1
        b["last"] = t.seq
    return out


def test_every_kind_on_the_bus_the_websocket_and_in_csv():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        sim_port = start_sim(procs, ",".join(SYMBOLS), rate=800)
        ws_port = free_port()
        cfg = _config(workdir, sim_port, ws_port)
        config = load_config(cfg)
        # the consumer subscribes before the ingest starts: it sees every trade from seq 1
        with Consumer(config, use_shm=False, kinds=KINDS) as consumer:
            procs.start("sink", PIPELINE + ["--config", str(cfg), "sink", "csv"])
            eventually(lambda: (workdir / "run" / "sink-csv.stats.json").exists(), 20, what="sink started")
            procs.start("ingest", PIPELINE + ["--config", str(cfg), "ingest", "sim"])
            assert start_publisher(procs, cfg) == ws_port
            events: list = []
            tops: dict[tuple[str, int], tuple] = {}  # (symbol, update id) -> the live book's top then

            def poll(timeout: float) -> None:
                for e in consumer.poll(timeout):
                    events.append(e)
                    if isinstance(e, Book) and e.state == "live":  # a Book is updated in place: read it now
                        tops[(e.symbol, e.update_id)] = (e.best_bid(), e.best_ask())
            deadline = time.monotonic() + 90
            with connect(f"ws://127.0.0.1:{ws_port}/", open_timeout=20) as ws:
                assert json.loads(ws.recv(20))["kind"] == "welcome"
                ws.send(json.dumps({"op": "subscribe", "exchange": "sim", "channels": [
                    "trades", "quotes", "derivative_ticker", "liquidations", "cvd", "trade_bars"]}))
                ws_kinds: dict[str, dict] = {}
                while time.monotonic() < deadline:
                    poll(0.05)
                    try:
                        while True:
                            m = json.loads(ws.recv(0))
                            ws_kinds.setdefault(m["kind"], m)
                    except TimeoutError:
                        pass
                    got = {type(e) for e in events}
                    have_liq = {e.symbol for e in events if isinstance(e, Liquidation)}
                    if ({Trade, Book, Quote, DerivativeTicker, Liquidation, Cvd, TradeBar} <= got
                            and len([e for e in events if isinstance(e, TradeBar)]) >= 6 and have_liq
                            and any((e.symbol, e.update_id) in tops for e in events if isinstance(e, Quote))
                            and {"quote", "derivative_ticker", "liquidation", "cvd", "trade_bar"} <= set(ws_kinds)
                            and any(e.open_interest is not None for e in events if isinstance(e, DerivativeTicker))):
                        break
                else:
                    pytest.fail(f"not every kind arrived: bus {sorted(t.__name__ for t in {type(e) for e in events})}"
                                f", ws {sorted(ws_kinds)}")
            poll(0.5)
            assert consumer.trade_gaps == 0 and consumer.gaps == {}
        trades = [e for e in events if isinstance(e, Trade)]
        # quotes equal the book's top where the venue's update id matches
        matched = 0
        for q in (e for e in events if isinstance(e, Quote)):
            top = tops.get((q.symbol, q.update_id))
            if top is not None:
                assert ((q.bid_price, q.bid_amount), (q.ask_price, q.ask_amount)) == top
                matched += 1
        assert matched > 0
        # the CVD moves by exactly the trades between two CVDs (robust to a first message lost to
        # ZeroMQ's slow-joiner race; no trade gap after it, as asserted above)
        for sym in SYMBOLS:
            seqs = {t.seq for t in trades if t.symbol == sym}
            cvds = [e for e in events if isinstance(e, Cvd) and e.symbol == sym and e.trade_seq in seqs]
            first, last = cvds[0], cvds[-1]
            assert last.trade_seq > first.trade_seq and first.since == last.since, sym
            mine = [t for t in trades if t.symbol == sym and first.trade_seq < t.seq <= last.trade_seq]
            expect = sum(t.amount if t.side == "buy" else -t.amount for t in mine)
            assert abs((last.cvd - first.cvd) - expect) < 1e-6, sym
        # bars: each equals the aggregation of the bus trades in its interval
        ref = _bars(trades, 1_000_000)
        first_seq = {sym: min(t.seq for t in trades if t.symbol == sym) for sym in SYMBOLS}
        bars = [e for e in events if isinstance(e, TradeBar) and e.first_trade_seq > first_seq[e.symbol]]
        assert bars
        for b in bars:
            r = ref[(b.symbol, b.open_time)]
            assert (b.open, b.high, b.low, b.close, b.trades, b.first_trade_seq, b.last_trade_seq) == (
                r["open"], r["high"], r["low"], r["close"], r["n"], r["first"], r["last"])
            assert abs(b.volume - r["volume"]) < 1e-9
        ticker = [e for e in events if isinstance(e, DerivativeTicker)][-1]
        assert ticker.mark_price and ticker.index_price and ticker.funding_rate == 0.0001 and ticker.funding_timestamp
        # CSV: each datatype's files with their columns
        csv_dir = workdir / "csv"

        def csv_ready():
            return all(list(csv_dir.glob(f"sim_{dt}_*_BTCUSDT.csv"))
                       and read_rows(next(csv_dir.glob(f"sim_{dt}_*_BTCUSDT.csv")))[1]
                       for dt in ("quotes", "derivative_ticker", "liquidations"))
        eventually(csv_ready, 20, 0.2, "CSV rows of every datatype")
        header, rows = read_rows(next(csv_dir.glob("sim_derivative_ticker_*_BTCUSDT.csv")))
        assert header[4:] == ["funding_timestamp", "funding_rate", "predicted_funding_rate", "open_interest",
                              "last_price", "index_price", "mark_price"]
        # unstated values are empty, never 0 (open interest may come before the first mark price)
        assert all(r["predicted_funding_rate"] == "" and (r["mark_price"] == "" or float(r["mark_price"]) > 0)
                   for r in rows)
        assert any(r["mark_price"] and r["open_interest"] for r in rows)
        header, rows = read_rows(next(csv_dir.glob("sim_liquidations_*_BTCUSDT.csv")))
        assert all(r["side"] in ("buy", "sell") and float(r["amount"]) > 0 for r in rows)
        # pipeline status: the age of the last event of each kind
        feed = next(f for f in status(cfg)["feeds"] if f["symbol"] == "BTCUSDT")
        assert feed["quotes"] > 0 and feed["liquidations"] > 0 and feed["tickers"] > 0
        assert feed["age"]["quote"] is not None and feed["age"]["derivative_ticker"] is not None
    finally:
        procs.stop_all()
