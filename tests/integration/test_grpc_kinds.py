"""The later kinds over gRPC (docs/grpc.md): OKX sim -> ingest with every channel -> `pipeline grpc`
-> SubscribeQuotes, SubscribeDerivativeTickers and SubscribeLiquidations read by a real grpcio client,
as real processes on loopback.  Each message equals the bus message of the same kind, symbol and
seq (read at the same time by a bus consumer); liquidations come every one, in seq order; a value
the venue did not state is unset, never 0; unknown symbols are NOT_FOUND.
"""

from __future__ import annotations

import json

import grpc
import pytest

from helpers import PIPELINE, Procs, eventually, free_port, short_tmpdir, start_sim
from l2pipeline.v1 import marketdata_pb2 as pb
from l2pipeline.v1 import marketdata_pb2_grpc as rpc
from pipeline.config import load_config
from pipeline.consumer import Consumer, DerivativeTicker, Liquidation, Quote
from test_grpc_e2e import StreamReader, start_grpc

pytestmark = pytest.mark.integration
SYMBOLS = ["BTC-USDT-SWAP", "ETH-USDT-SWAP"]


def us(ts) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def opt(m, field: str):
    return getattr(m, field) if m.HasField(field) else None


def same_quote(g: pb.Quote, b: Quote) -> bool:
    return ((opt(g, "bid_price"), opt(g, "bid_size"), opt(g, "ask_price"), opt(g, "ask_size"), g.update_id,
             us(g.time_exchange), us(g.time_received))
            == (b.bid_price, b.bid_amount, b.ask_price, b.ask_amount, b.update_id or 0, b.ts_exchange, b.ts_received))


def same_ticker(g: pb.DerivativeTicker, b: DerivativeTicker) -> bool:
    fields = ("mark_price", "index_price", "last_price", "funding_rate", "predicted_funding_rate", "open_interest")
    return ([opt(g, f) for f in fields] == [getattr(b, f) for f in fields]
            and (us(g.funding_time) or None) == (b.funding_timestamp or None)
            and us(g.time_received) == b.ts_received)


def same_liquidation(g: pb.Liquidation, b: Liquidation) -> bool:
    side = {pb.Liquidation.BUY: "buy", pb.Liquidation.SELL: "sell"}.get(g.side, "unknown")
    return ((g.liquidation_id, g.price, g.size, side, us(g.time_received))
            == (b.liquidation_id, b.price, b.amount, b.side, b.ts_received))


def test_quotes_tickers_and_liquidations_over_grpc_equal_the_bus():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    channel = None
    readers: list[StreamReader] = []
    try:
        port = start_sim(procs, ",".join(SYMBOLS), rate=600, seed=7, extra=["--protocol", "okx"])
        cfg = workdir / "p.toml"
        cfg.write_text(f"""
[pipeline]
run_dir = "run"
[grpc]
port = {free_port()}
[exchanges.okx]
adapter = "okx"
symbols = {json.dumps(SYMBOLS)}
depth = 20
ws_url = "ws://127.0.0.1:{port}/ws/v5/public"
rest_url = "http://127.0.0.1:{port}"
bar_intervals = []
""")
        config = load_config(cfg)
        grpc_port = start_grpc(procs, cfg)
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = rpc.MarketDataStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            next(iter(stub.SubscribeQuotes(pb.SubscribeQuotesRequest(exchange="okx", symbols=["NOPE"]))))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and "NOPE" in e.value.details()

        with Consumer(config, use_shm=False, kinds=["quote", "derivative_ticker", "liquidation"]) as consumer:
            quotes = StreamReader(stub.SubscribeQuotes(pb.SubscribeQuotesRequest(exchange="okx")))
            tickers = StreamReader(stub.SubscribeDerivativeTickers(
                pb.SubscribeDerivativeTickersRequest(exchange="okx", symbols=SYMBOLS)))
            liqs = StreamReader(stub.SubscribeLiquidations(pb.SubscribeLiquidationsRequest(exchange="okx")))
            readers = [quotes, tickers, liqs]
            # the streams are open on the server before the ingest publishes anything
            eventually(lambda: (workdir / "run" / "grpc.stats.json").exists() and json.loads(
                (workdir / "run" / "grpc.stats.json").read_text()).get("clients") == 3, 20, 0.1, "3 streams open")
            procs.start("ingest", PIPELINE + ["--config", str(cfg), "ingest", "okx"])
            bus: dict[tuple[type, str, int], object] = {}
            got: dict[str, list] = {"quote": [], "ticker": [], "liq": []}

            first: dict[tuple[type, str], int] = {}  # the first seq the bus consumer got of each stream

            def record(timeout: float) -> None:
                for e in consumer.poll(timeout):
                    if isinstance(e, (Quote, DerivativeTicker, Liquidation)):
                        bus[(type(e), e.symbol, e.seq)] = e
                        first.setdefault((type(e), e.symbol), e.seq)

            def enough() -> bool:
                record(0.05)
                for name, r in zip(got, readers):
                    while not r.items.empty():
                        got[name].append(r.get(1))
                return (len(got["quote"]) >= 50 and {m.symbol for m in got["ticker"]} == set(SYMBOLS)
                        and len(got["liq"]) >= 2)
            eventually(enough, 60, 0.05, "quotes, tickers of both swaps and liquidations over gRPC")
            kind_of = {"quote": Quote, "ticker": DerivativeTicker, "liq": Liquidation}

            def compared() -> list:
                """The gRPC messages the bus consumer can have too: both subscribed before the ingest
                started, but each SUB socket joins the ingest's fresh PUB on its own (ZeroMQ
                reconnects), so either may miss the first few messages of a stream."""
                return [(n, m) for n, ms in got.items() for m in ms if m.seq >= first.get((kind_of[n], m.symbol), 1 << 62)]

            def bus_has_all() -> bool:  # the bus consumer may be a few messages behind the gRPC client
                record(0.1)
                return all((kind_of[n], m.symbol, m.seq) in bus for n, m in compared())
            eventually(bus_has_all, 15, 0.05, "every gRPC message also on the bus")
            pairs = compared()
            assert sum(n == "quote" for n, _ in pairs) >= 40 and any(n == "liq" for n, _ in pairs)

        assert all(m.exchange == "okx" and m.symbol in SYMBOLS and m.epoch > 0 for v in got.values() for m in v)
        same = {"quote": same_quote, "ticker": same_ticker, "liq": same_liquidation}
        for n, m in pairs:
            assert same[n](m, bus[(kind_of[n], m.symbol, m.seq)]), m
        for sym in SYMBOLS:  # quotes: in order per symbol; liquidations: every one, contiguous
            qs = [m.seq for m in got["quote"] if m.symbol == sym]
            assert qs == sorted(set(qs))
            ls = [m.seq for m in got["liq"] if m.symbol == sym]
            assert ls == list(range(ls[0], ls[0] + len(ls))) if ls else True, (sym, ls)

        def counted() -> bool:  # the stats file (pipeline status) is rewritten once a second
            st = json.loads((workdir / "run" / "grpc.stats.json").read_text())
            return st["sent"]["liquidations"] >= len(got["liq"]) and st["sent"]["quotes"] >= len(got["quote"])
        eventually(counted, 10, 0.2, "the server's counts in its stats")
    finally:
        for r in readers:
            r.cancel()
        if channel is not None:
            channel.close()
        procs.stop_all()
