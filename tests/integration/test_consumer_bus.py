"""The consumer library against real ZeroMQ sockets: whole-symbol filters, typed events, run(),
``async with AsyncConsumer``, and examples/print_books.py stopped with Ctrl-C.

The test binds the exchange's bus endpoints itself (as the ingest does) and publishes until the
consumer has what it waits for: the slow joiner is waited out by an observable condition.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from helpers import short_tmpdir
from pipeline import bus, schema
from pipeline.config import load_config
from pipeline.consumer import AsyncConsumer, Book, Consumer, Trade

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ["BTCUSD", "BTCUSDT", "BTC-USDT", "BTC-USDT-SWAP"]


class Feeder:
    """The bus side of an ingest: PUB sockets on the config's endpoints, contiguous seq per stream."""

    def __init__(self, config):
        self.ctx = zmq.Context()
        trades_ep, l2_ep = bus.bind_endpoints(config, config.exchange("sim"))
        self.trades, self.l2 = bus.make_pub(self.ctx, trades_ep), bus.make_pub(self.ctx, l2_ep)
        self.seq: dict[tuple[str, str], int] = {}

    def _next(self, kind: str, symbol: str) -> int:
        self.seq[(kind, symbol)] = self.seq.get((kind, symbol), 0) + 1
        return self.seq[(kind, symbol)]

    def trade(self, symbol: str, price: float = 100.0) -> None:
        seq = self._next("trade", symbol)
        bus.send(self.trades, schema.TRADE.topic("sim", symbol), schema.encode(schema.Trade(
            exchange="sim", symbol=symbol, epoch=1, seq=seq, ts_exchange=1, ts_received=1, price=price,
            amount=1.0, side="buy", trade_id=str(seq))))

    def book(self, symbol: str) -> None:
        """A snapshot: bid 99 x 2, ask 101 x 1 (a consumer without shared memory syncs on it)."""
        seq = self._next("l2", symbol)
        bus.send(self.l2, schema.L2.topic("sim", symbol), schema.encode(schema.L2Update(
            exchange="sim", symbol=symbol, epoch=1, seq=seq, ts_exchange=1, ts_received=1, snapshot=True,
            state="live", depth=5, bids=[(99.0, 2.0)], asks=[(101.0, 1.0)])))

    def every_symbol(self) -> None:
        for s in SYMBOLS:
            self.trade(s)
            self.book(s)

    def close(self) -> None:
        self.trades.close(0)
        self.l2.close(0)
        self.ctx.term()


@pytest.fixture
def config_path():
    run_dir = short_tmpdir()
    path = run_dir / "pipeline.toml"
    path.write_text(f'[pipeline]\nrun_dir = "{run_dir}"\n[exchanges.sim]\nadapter = "binance"\n'
                    f'symbols = {SYMBOLS!r}\nws_url = "ws://127.0.0.1:9/"\nrest_url = "http://127.0.0.1:9/"\n'
                    .replace("'", '"'))
    yield path
    for p in run_dir.iterdir():
        p.unlink()
    run_dir.rmdir()


@pytest.fixture
def feeder(config_path):
    f = Feeder(load_config(config_path))
    yield f
    f.close()


def test_symbols_filter_matches_whole_symbols_not_prefixes(config_path, feeder):
    """Issue 16: symbols=['BTCUSD'] received BTCUSDT; OKX BTC-USDT would receive BTC-USDT-SWAP."""
    seen: list[tuple[type, str]] = []
    with Consumer(load_config(config_path), symbols=["BTCUSD", "BTC-USDT"], use_shm=False) as consumer:
        deadline = time.monotonic() + 20
        while {(Trade, "BTCUSD"), (Book, "BTCUSD"), (Trade, "BTC-USDT"), (Book, "BTC-USDT")} - set(seen):
            assert time.monotonic() < deadline, seen
            feeder.every_symbol()  # the longer symbols go first on each socket
            seen += [(type(e), e.symbol) for e in consumer.poll(0.05)]
        # one more round, read to the end: a prefix match would have handed these out too
        feeder.every_symbol()
        while events := consumer.poll(0.5):
            seen += [(type(e), e.symbol) for e in events]
    assert {s for _, s in seen} == {"BTCUSD", "BTC-USDT"}
    assert consumer.trade_gaps == 0  # the symbols it did get came complete


def test_run_calls_typed_callbacks_until_told_to_stop(config_path, feeder):
    trades: list[Trade] = []
    books: list[Book] = []
    with Consumer(load_config(config_path), symbols=["BTCUSDT"], use_shm=False) as consumer:
        def until() -> bool:
            feeder.every_symbol()
            return len(trades) >= 2 and len(books) >= 2
        consumer.run(on_trade=trades.append, on_book=books.append, until=until)
    assert {t.symbol for t in trades} == {b.symbol for b in books} == {"BTCUSDT"}
    assert all(isinstance(t, Trade) for t in trades) and all(isinstance(b, Book) for b in books)
    assert books[-1].mid() == 100.0 and books[-1].spread() == 2.0


def test_async_consumer_as_a_context_manager(config_path, feeder):
    async def collect() -> list[object]:
        got: list[object] = []
        async with AsyncConsumer(load_config(config_path), symbols=["BTC-USDT"], use_shm=False) as consumer:
            async def publish() -> None:
                while True:
                    feeder.every_symbol()
                    await asyncio.sleep(0.05)
            publisher = asyncio.create_task(publish())
            try:
                async with asyncio.timeout(20):
                    async for event in consumer:
                        got.append(event)
                        if {type(e) for e in got} == {Trade, Book}:
                            break
            finally:
                publisher.cancel()
        assert consumer.reader.hot_sock is not None and consumer.reader.hot_sock.closed  # closed on exit
        return got

    got = asyncio.run(collect())
    assert {e.symbol for e in got} == {"BTC-USDT"}  # type: ignore[attr-defined]


def test_async_run_awaits_coroutine_callbacks(config_path, feeder):
    async def collect() -> list[float]:
        prices: list[float] = []

        async def on_trade(trade: Trade) -> None:
            await asyncio.sleep(0)
            prices.append(trade.price)

        async with AsyncConsumer(load_config(config_path), symbols=["BTCUSD"], books=False,
                                 use_shm=False) as consumer:
            def until() -> bool:
                feeder.trade("BTCUSD", price=42.0)
                return len(prices) >= 3
            await asyncio.wait_for(consumer.run(on_trade=on_trade, until=until), 20)
        return prices

    assert asyncio.run(collect())[:3] == [42.0] * 3


def _as_from_a_shell() -> None:
    """The child starts with SIGINT as a shell gives it (default action, not blocked): the pytest
    process may have inherited or left another disposition or mask (an in-process event loop's
    signal handling), which a child keeps across exec, and Python then never raises
    KeyboardInterrupt in it (a full-suite run hung here after the SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_print_books_example_exits_quietly_on_ctrl_c(config_path, feeder):
    """Issue 16: Ctrl-C in examples/print_books.py printed a KeyboardInterrupt traceback."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "print_books.py"), str(config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=_as_from_a_shell)
    try:
        deadline = time.monotonic() + 90  # the interpreter's start and imports, on a loaded box
        line = ""
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        while not line.startswith("trade sim"):  # it is inside its read loop
            assert proc.poll() is None, f"example exited {proc.returncode}: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "example printed no trade"
            feeder.every_symbol()
            if sel.select(0.05):
                line = proc.stdout.readline()
        sel.close()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err, err


def _common(feeder, kind: str, symbol: str) -> dict:
    return dict(exchange="sim", symbol=symbol, epoch=1, seq=feeder._next(kind, symbol), ts_exchange=1, ts_received=1)


def test_the_other_kinds_reach_a_consumer_that_asks_and_it_keeps_the_latest_quote_and_ticker(config_path, feeder):
    """Issue 13: quotes and liquidations on the hot socket, tickers, CVD and bars on the L2 socket;
    typed events, one callback each, the latest quote and ticker per symbol, none for a consumer
    that did not ask (it still gets trades and books only)."""
    from pipeline.consumer import Cvd, DerivativeTicker, Liquidation, Quote, TradeBar

    def publish_others(symbol: str) -> None:
        bus.send(feeder.trades, schema.QUOTE.topic("sim", symbol), schema.encode(schema.Quote(
            **_common(feeder, "quote", symbol), bid_price=99.0, bid_amount=2.0, ask_price=101.0, ask_amount=1.0)))
        bus.send(feeder.trades, schema.LIQUIDATION.topic("sim", symbol), schema.encode(schema.Liquidation(
            **_common(feeder, "liq", symbol), side="sell", price=98.0, amount=3.0)))
        bus.send(feeder.l2, schema.DERIVATIVE_TICKER.topic("sim", symbol), schema.encode(schema.DerivativeTicker(
            **_common(feeder, "ticker", symbol), mark_price=100.5, funding_rate=0.0001)))
        bus.send(feeder.l2, schema.CVD.topic("sim", symbol), schema.encode(schema.Cvd(
            **_common(feeder, "cvd", symbol), cvd=1.0, buy_volume=1.0, sell_volume=0.0, since=0, trade_seq=1)))
        bus.send(feeder.l2, schema.TRADE_BAR.topic("sim", symbol), schema.encode(schema.TradeBar(
            **_common(feeder, "bar", symbol), interval="1s", interval_us=1_000_000, open_time=0, open=1.0,
            high=1.0, low=1.0, close=1.0, volume=1.0, buy_volume=1.0, sell_volume=0.0, trades=1,
            first_trade_seq=1, last_trade_seq=1)))

    got: dict[str, list] = {}
    config = load_config(config_path)
    with Consumer(config, symbols=["BTCUSDT"], use_shm=False, kinds=["quote", "derivative_ticker", "liquidation",
                                                                      "cvd", "trade_bar"]) as consumer, \
            Consumer(config, symbols=["BTCUSDT"], use_shm=False) as plain:
        callbacks = {name: got.setdefault(name, []).append
                     for name in ("on_trade", "on_book", "on_quote", "on_ticker", "on_liquidation", "on_cvd", "on_bar")}

        def until() -> bool:
            feeder.every_symbol()
            publish_others("BTCUSDT")
            publish_others("BTCUSD")
            return all(len(v) >= 2 for v in got.values())
        consumer.run(until=until, **callbacks)
        # the plain consumer reads while the same mix keeps coming (one poll could come back
        # empty when its subscriptions joined late: ZeroMQ's slow joiner)
        plain_types: set[type] = set()
        deadline = time.monotonic() + 20
        while Trade not in plain_types and time.monotonic() < deadline:
            feeder.every_symbol()
            publish_others("BTCUSDT")
            plain_types |= {type(e) for e in plain.poll(0.2)}
        assert plain_types and plain_types <= {Trade, Book}
        assert consumer.gaps == {}
        quote, ticker = consumer.quote("sim", "BTCUSDT"), consumer.ticker("sim", "BTCUSDT")
        assert quote is not None and (quote.bid_price, quote.ask_amount) == (99.0, 1.0)
        assert ticker is not None and ticker.mark_price == 100.5 and ticker.index_price is None
        assert consumer.quote("sim", "BTCUSD") is None  # not asked for
    types = {"on_quote": Quote, "on_ticker": DerivativeTicker, "on_liquidation": Liquidation, "on_cvd": Cvd,
             "on_bar": TradeBar, "on_trade": Trade, "on_book": Book}
    for name, events in got.items():
        assert all(type(e) is types[name] and e.symbol == "BTCUSDT" for e in events), name


def test_an_unknown_kind_is_a_clear_error(config_path):
    with pytest.raises(ValueError, match="'quotes' is not one of quote, derivative_ticker"):
        Consumer(load_config(config_path), kinds=["quotes"])
