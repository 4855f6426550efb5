"""The CSV sink without sockets: bus payloads in, files out, with an injectable clock.

A small fake ingest makes real view deltas (pipeline.book.ViewBook, as the ingest
does), keeps "shared memory" (its current views) and a real shared-memory trade
ring.  Faults are injected on purpose: dropped messages, a new epoch, a sink
restart, a quiet tail, midnight, a directory that cannot be written.
"""

from __future__ import annotations

import gzip
import random
import time

import numpy as np
import pytest

from pipeline import schema
from pipeline.book import ViewBook
from pipeline.app.config import parse_config
from pipeline.config import ConfigError
from pipeline.shm import BookSnapshot, BookState
from pipeline.app.supervise import programs
from pipeline.trade_ring import TradeRingReader, TradeRingWriter
from sinks.csv_sink import CsvSink
from sinks.tardis import day_of
from tardis_reader import first_rows_are_a_block, read_rows, rebuild_book

DAY = 86_400_000_000
T0 = 1_723_161_000_000_000  # 2024-08-08T23:50:00Z
SYMBOLS = ("BTCUSDT", "ETHUSDT")


class Clock:
    def __init__(self, now: int):
        self.now = now

    def __call__(self) -> int:
        return self.now


class FakeIngest:
    """Books, bus messages, "shared memory" and the trade ring of one ingest start (epoch)."""

    def __init__(self, shm_prefix: str, epoch: int, depth: int = 5, seed: int = 1, ring_size: int = 64,
                 exchange: str = "sim"):
        self.epoch, self.depth, self.exchange = epoch, depth, exchange
        self.rng = random.Random(seed)
        self.books = {s: ViewBook(depth) for s in SYMBOLS}
        self.seq = dict.fromkeys(SYMBOLS, 0)
        self.trade_seq = dict.fromkeys(SYMBOLS, 0)
        self.ts = dict.fromkeys(SYMBOLS, 0)
        self.ring = TradeRingWriter(shm_prefix, exchange, SYMBOLS, ring_size, epoch)
        self.prefix = shm_prefix
        for s in SYMBOLS:
            self.books[s].load_snapshot([(100.0 - i, 1.0 + i) for i in range(20)],
                                        [(101.0 + i, 1.0 + i) for i in range(20)])

    def _msg(self, sym: str, snapshot: bool, bids, asks, now: int) -> bytes:
        self.seq[sym] += 1
        self.ts[sym] = now
        return schema.encode(schema.L2Update(
            exchange=self.exchange, symbol=sym, epoch=self.epoch, seq=self.seq[sym], ts_exchange=now - 500,
            ts_received=now, snapshot=snapshot, state="live", update_id=self.seq[sym], depth=self.depth,
            bids=bids, asks=asks))

    def snapshot(self, sym: str, now: int) -> bytes:
        bids, asks = self.books[sym].view()
        return self._msg(sym, True, bids, asks, now)

    def delta(self, sym: str, now: int) -> bytes | None:
        """One random venue change; the message of its view delta (None if the view did not change)."""
        book = self.books[sym]
        bid = self.rng.random() < 0.5
        price = (100.0 - self.rng.randrange(12)) if bid else (101.0 + self.rng.randrange(12))
        size = 0.0 if self.rng.random() < 0.3 else float(self.rng.randrange(1, 50))
        db, da = book.apply([(price, size)] if bid else [], [] if bid else [(price, size)])
        if not db and not da:
            return None
        return self._msg(sym, False, db, da, now)

    def trade(self, sym: str, now: int) -> bytes:
        self.trade_seq[sym] += 1
        seq = self.trade_seq[sym]
        msg = schema.Trade(exchange=self.exchange, symbol=sym, epoch=self.epoch, seq=seq, ts_exchange=now - 700,
                           ts_received=now, price=100.0 + seq % 3, amount=0.5, side="buy" if seq % 2 else "sell",
                           trade_id=f"{self.epoch % 1000}-{seq}")
        self.ring.append(SYMBOLS.index(sym), seq, msg.ts_exchange, now, msg.price, msg.amount, msg.side,
                         msg.trade_id)
        return schema.encode(msg)

    def view(self, sym: str):
        bids, asks = self.books[sym].view()
        return list(bids), list(asks)

    def shm(self, exchange: str, sym: str, epoch: int | None) -> BookSnapshot | None:
        if epoch is not None and epoch != self.epoch:
            return None
        bids, asks = self.view(sym)
        return BookSnapshot(self.exchange, sym, self.epoch, self.seq[sym], BookState.LIVE, self.ts[sym] - 500, self.ts[sym],
                            self.seq[sym], np.array(bids, dtype=float).reshape(-1, 2),
                            np.array(asks, dtype=float).reshape(-1, 2))

    def rings(self, exchange: str, epoch: int | None):
        try:
            r = TradeRingReader.open(self.prefix, self.exchange)
        except Exception:  # noqa: BLE001 - gone
            return None
        if epoch is not None and r.epoch != epoch:
            r.close()
            return None
        return r

    def close(self) -> None:
        self.ring.close()


def make_config(tmp_path, extra: str = "", exchange_extra: str = ""):
    return parse_config(f"""
[pipeline]
run_dir = "run"
[exchanges.sim]
adapter = "binance"
symbols = {list(SYMBOLS)!r}
depth = 5
{exchange_extra}
[sinks.csv]
dir = "csv"
flush_interval_s = 0.5
{extra}
""".replace("'", '"'), tmp_path)


def make_sink(config, ingest: FakeIngest, clock: Clock) -> CsvSink:
    sink = CsvSink(config, snapshots=lambda ex, sym, ep: ingest.shm(ex, sym, ep),
                   rings=lambda ex, ep: ingest.rings(ex, ep), clock=clock)
    sink.start()
    return sink


def book_files(tmp_path, sym):
    return sorted((tmp_path / "csv").glob(f"sim_incremental_book_L2_*_{sym}.csv*"))


def trade_ids(tmp_path, sym):
    out = []
    for p in sorted((tmp_path / "csv").glob(f"sim_trades_*_{sym}.csv*")):
        out += [r["id"] for r in read_rows(p)[1]]
    return out


@pytest.fixture
def ingest(shm_prefix):
    ing = FakeIngest(shm_prefix, epoch=T0 - 10_000_000)
    yield ing
    ing.close()


def test_book_files_rebuild_the_view_through_gaps_epochs_and_repeated_snapshots(tmp_path, ingest, shm_prefix):
    config = make_config(tmp_path)
    clock = Clock(T0)
    sink = make_sink(config, ingest, clock)  # block 1: the view at sink start
    now = T0
    for i in range(400):
        now += 1000
        for sym in SYMBOLS:
            msg = ingest.delta(sym, now)
            if msg is None:
                continue
            if 100 <= i < 110 and sym == "BTCUSDT":
                continue  # lost on the bus: the next delta shows a gap -> block 2 from "shared memory"
            sink.on_l2(msg)
        if i == 200:
            sink.on_l2(ingest.snapshot("ETHUSDT", now))  # a periodic snapshot repeating the book: no block
    clock.now = now
    sink.tick()
    assert sink.counters.book_gaps == 1 and sink.counters.book_resyncs == 1
    ingest.close()
    restarted = FakeIngest(shm_prefix, epoch=ingest.epoch + 60_000_000, seed=2)  # block 3: new epoch
    try:
        for sym in SYMBOLS:
            sink.on_l2(restarted.snapshot(sym, now))
        for i in range(200):
            now += 1000
            for sym in SYMBOLS:
                msg = restarted.delta(sym, now)
                if msg is not None:
                    sink.on_l2(msg)
        sink.close()
        for sym in SYMBOLS:
            bids, asks, blocks = rebuild_book(book_files(tmp_path, sym))
            assert (bids, asks) == restarted.view(sym), sym
            assert blocks == (3 if sym == "BTCUSDT" else 2), sym
            assert first_rows_are_a_block(book_files(tmp_path, sym)[0])
        assert sink.counters.epochs == 1
    finally:
        restarted.close()


def test_midnight_rotation_closes_the_day_and_starts_the_next_with_a_block(tmp_path, ingest):
    """Tested with an injected clock: the sink thinks it is 23:59:59 and then 00:00:00."""
    config = make_config(tmp_path, extra="gzip = true")
    midnight = (T0 // DAY + 1) * DAY
    clock = Clock(midnight - 2_000_000)
    sink = make_sink(config, ingest, clock)
    now = clock.now
    views_at_midnight = {}
    for i in range(300):
        now += 10_000  # 3 s in all: crosses midnight after 200 steps
        clock.now = now
        sink.tick()
        if now >= midnight and not views_at_midnight:
            views_at_midnight = {s: ingest.view(s) for s in SYMBOLS}
        for sym in SYMBOLS:
            msg = ingest.delta(sym, now)
            if msg is not None:
                sink.on_l2(msg)
            if i % 7 == 0:
                sink.on_trade(ingest.trade(sym, now))
    sink.close()
    day1, day2 = day_of(midnight - 1), day_of(midnight)
    assert day1 != day2
    csv_dir = tmp_path / "csv"
    for sym in SYMBOLS:
        d1 = csv_dir / f"sim_incremental_book_L2_{day1}_{sym}.csv.gz"  # closed days are gzipped
        d2 = csv_dir / f"sim_incremental_book_L2_{day2}_{sym}.csv"
        assert d1.exists() and d2.exists() and not (csv_dir / d1.name[:-3]).exists()
        assert rebuild_book([d1])[:2] == views_at_midnight[sym]
        assert rebuild_book([d2])[:2] == ingest.view(sym)  # the new day alone rebuilds the book
        assert first_rows_are_a_block(d1) and first_rows_are_a_block(d2)
        with gzip.open(csv_dir / f"sim_trades_{day1}_{sym}.csv.gz", "rt") as fh:
            day1_trades = fh.read().splitlines()[1:]
        day2_trades = read_rows(csv_dir / f"sim_trades_{day2}_{sym}.csv")[1]
        assert len(day1_trades) + len(day2_trades) == ingest.trade_seq[sym]
        assert all(r["local_timestamp"] >= str(midnight) for r in day2_trades)
    assert sink.statistics()["errors"] == 0 and sink.statistics()["files"] == 8


def test_every_file_has_its_header_when_the_day_starts_even_without_rows(tmp_path, ingest):
    config = make_config(tmp_path)
    clock = Clock(T0)
    sink = make_sink(config, ingest, clock)
    clock.now = (T0 // DAY + 1) * DAY + 5
    sink.tick()
    sink.close()
    files = sorted(p.name for p in (tmp_path / "csv").glob("*.csv"))
    assert len(files) == 8  # 2 symbols x 2 datatypes x 2 days
    for p in (tmp_path / "csv").glob("sim_trades_*.csv"):
        assert read_rows(p)[1] == []


def test_trade_gap_on_the_bus_is_filled_from_the_ring_by_seq(tmp_path, ingest):
    config = make_config(tmp_path)
    sink = make_sink(config, ingest, Clock(T0))
    now = T0
    for i in range(30):
        now += 1000
        msg = ingest.trade("BTCUSDT", now)
        if not 10 <= i < 15:
            sink.on_trade(msg)
    sink.close()
    expected = [f"{ingest.epoch % 1000}-{k}" for k in range(1, 31)]
    assert trade_ids(tmp_path, "BTCUSDT") == expected
    assert sink.counters.gaps_filled == 5 and sink.counters.trades_lost == 0


def test_quiet_tail_lost_on_the_bus_is_caught_up_from_the_ring(tmp_path, ingest):
    """The last trades of a burst are lost and no further trade comes to reveal the gap."""
    config = make_config(tmp_path)
    clock = Clock(T0)
    sink = make_sink(config, ingest, clock)
    now = T0
    for i in range(10):
        now += 1000
        msg = ingest.trade("ETHUSDT", now)
        if i < 6:
            sink.on_trade(msg)
    for _ in range(2):  # two checks: the first sees the ring ahead, the second fetches
        clock.now += 1_000_000
        sink.tick()
    sink.close()
    assert len(trade_ids(tmp_path, "ETHUSDT")) == 10
    assert sink.counters.gaps_filled == 4


def test_restarted_sink_writes_every_trade_exactly_once(tmp_path, ingest):
    """Killed after 12 trades (its buffer never flushed past 8); 20 more trades while it is down."""
    config = make_config(tmp_path)
    clock = Clock(T0)
    sink = make_sink(config, ingest, clock)
    now = T0
    for _ in range(8):
        now += 1000
        sink.on_trade(ingest.trade("BTCUSDT", now))
        sink.on_l2(ingest.delta("BTCUSDT", now) or ingest.snapshot("BTCUSDT", now))
    sink.flush_all()
    for _ in range(4):  # received, never written: the kill loses the buffer
        now += 1000
        sink.on_trade(ingest.trade("BTCUSDT", now))
    for f in sink.files.values():
        f.abandon()
    for _ in range(20):  # while the sink is down
        now += 1000
        ingest.trade("BTCUSDT", now)
        ingest.delta("BTCUSDT", now)
    clock.now = now
    again = make_sink(config, ingest, clock)
    for _ in range(5):
        now += 1000
        again.on_trade(ingest.trade("BTCUSDT", now))
        msg = ingest.delta("BTCUSDT", now)
        if msg is not None:
            again.on_l2(msg)
    again.close()
    assert trade_ids(tmp_path, "BTCUSDT") == [f"{ingest.epoch % 1000}-{k}" for k in range(1, 38)]
    assert again.counters.gaps_filled == 24
    bids, asks, blocks = rebuild_book(book_files(tmp_path, "BTCUSDT"))
    assert (bids, asks) == ingest.view("BTCUSDT") and blocks == 2  # one block per sink start


def test_unwritable_directory_is_retried_and_nothing_is_lost(tmp_path, ingest):
    blocker = tmp_path / "csv"
    blocker.write_text("a file where the directory should be")  # ENOTDIR / EEXIST, even for root
    config = make_config(tmp_path)
    clock = Clock(T0)
    sink = make_sink(config, ingest, clock)
    now = T0
    for _ in range(20):
        now += 1000
        clock.now = now
        sink.on_trade(ingest.trade("BTCUSDT", now))
        msg = ingest.delta("ETHUSDT", now)
        if msg is not None:
            sink.on_l2(msg)
    clock.now += 1_000_000
    sink.tick()
    st = sink.statistics()
    assert st["errors"] > 0 and st["failing_files"] > 0 and st["last_error"] and st["rows"] == 0
    blocker.unlink()  # the operator fixes it
    clock.now += 1_000_000
    sink.tick()
    sink.close()
    st = sink.statistics()
    assert st["failing_files"] == 0 and st["rows"] > 0 and st["rows_dropped"] == 0
    assert len(trade_ids(tmp_path, "BTCUSDT")) == 20
    assert rebuild_book(book_files(tmp_path, "ETHUSDT"))[:2] == ingest.view("ETHUSDT")


def test_statistics_have_the_documented_keys(tmp_path, ingest):
    sink = make_sink(make_config(tmp_path), ingest, Clock(T0))
    sink.close()
    assert {"rows", "files", "bytes", "last_write_us", "gaps_filled", "snapshots", "errors", "trades_lost",
            "book_resyncs", "epochs", "day", "dir", "pending_bytes"} <= sink.statistics().keys()


def test_exchange_column_uses_the_configured_tardis_id(tmp_path, ingest):
    config = make_config(tmp_path, exchange_extra='tardis_exchange = "binance"')
    sink = make_sink(config, ingest, Clock(T0))
    sink.on_trade(ingest.trade("BTCUSDT", T0 + 1))
    sink.close()
    (path,) = (tmp_path / "csv").glob("binance_trades_*_BTCUSDT.csv")
    assert {r["exchange"] for r in read_rows(path)[1]} == {"binance"}


@pytest.mark.parametrize("name,adapter,expected", [
    ("binance_us", "binance", "binance-us"),  # a table name with "_": the tardis spelling, not the name
    ("aster", "binance_futures", "aster"),  # the adapter Aster shares with Binance USD-M names no venue
])
def test_files_and_exchange_column_carry_a_tardis_style_id(tmp_path, shm_prefix, name, adapter, expected):
    config = parse_config(f"""
[exchanges.{name}]
adapter = "{adapter}"
symbols = {list(SYMBOLS)!r}
depth = 5
[sinks.csv]
dir = "csv"
""".replace("'", '"'), tmp_path)
    ingest = FakeIngest(shm_prefix, epoch=T0 - 10_000_000, exchange=name)
    try:
        sink = make_sink(config, ingest, Clock(T0))
        sink.on_trade(ingest.trade("BTCUSDT", T0 + 1))
        sink.on_l2(ingest.snapshot("BTCUSDT", T0 + 2))
        sink.close()
    finally:
        ingest.close()
    names = sorted(p.name for p in (tmp_path / "csv").glob("*.csv"))
    assert names and all(n.startswith(f"{expected}_") for n in names), names
    rows = [r for n in names for r in read_rows(tmp_path / "csv" / n)[1]]
    assert rows and {r["exchange"] for r in rows} == {expected}


def test_two_exchanges_whose_files_would_collide_are_refused(tmp_path):
    config = parse_config("""
[exchanges.a]
adapter = "binance"
symbols = ["BTCUSDT"]
tardis_exchange = "binance"
[exchanges.b]
adapter = "binance"
symbols = ["BTCUSDT"]
tardis_exchange = "binance"
[sinks.csv]
dir = "csv"
""", tmp_path)
    with pytest.raises(ConfigError) as info:
        CsvSink(config)
    assert info.value.key == "exchanges.b.tardis_exchange"


@pytest.mark.parametrize("extra,key,reason", [
    ("[sinks.csv]\ncolour = 1\n", "sinks.csv.colour", "unknown key"),
    ("[sinks.csv]\ngzip = 1\n", "sinks.csv.gzip", "expected true or false"),
    ("[sinks.csv]\nflush_interval_s = 0\n", "sinks.csv.flush_interval_s", "expected a positive number"),
    ('[sinks.csv]\nexchanges = ["nope"]\n', "sinks.csv.exchanges[0]", 'no such exchange "nope"'),
])
def test_bad_sink_config_names_key_and_reason(tmp_path, extra, key, reason):
    with pytest.raises(ConfigError) as info:
        parse_config('[exchanges.sim]\nsymbols = ["A"]\nadapter = "binance"\n' + extra, tmp_path)
    assert info.value.key == key and reason in info.value.reason


@pytest.mark.parametrize("line,key,reason", [
    ('tardis_exchange = "Binance Futures"', "exchanges.sim.tardis_exchange", "expected a tardis exchange id"),
    ('tardis_exchange = "binance_us"', "exchanges.sim.tardis_exchange", "lowercase words joined by '-'"),
    ('tardis_exchange = "binance--us"', "exchanges.sim.tardis_exchange", "expected a tardis exchange id"),
    ('tardis_exchange = "-binance"', "exchanges.sim.tardis_exchange", "expected a tardis exchange id"),
    ("trade_ring_size = 0", "exchanges.sim.trade_ring_size", "expected a positive integer"),
    ("trade_ring_size = 99999999", "exchanges.sim.trade_ring_size", "expected at most"),
])
def test_bad_exchange_sink_keys_name_key_and_reason(tmp_path, line, key, reason):
    with pytest.raises(ConfigError) as info:
        parse_config(f'[exchanges.sim]\nsymbols = ["A"]\nadapter = "binance"\n{line}\n', tmp_path)
    assert info.value.key == key and reason in info.value.reason


def test_pipeline_run_supervises_the_sink_only_when_configured(tmp_path):
    with_sink = make_config(tmp_path)
    assert ("sink-csv", ["sink", "csv"]) in [(n, argv[3:]) for n, argv in programs(with_sink, None)]
    without = parse_config('[exchanges.sim]\nsymbols = ["A"]\nadapter = "binance"\n', tmp_path)
    assert "sink-csv" not in [n for n, _ in programs(without, None)]


def test_sink_killed_before_its_first_flush_still_loses_no_trade(tmp_path, shm_prefix):
    """The sink starts before the ingest, receives trades, and dies before writing any of them.

    On the real clock: the restarted sink goes by the time the first run created the file."""
    config = make_config(tmp_path)
    base = time.time_ns() // 1000
    clock = Clock(base)
    holder: dict = {}
    rings = lambda ex, ep: holder["ingest"].rings(ex, ep) if "ingest" in holder else None  # noqa: E731
    shm = lambda ex, sym, ep: holder["ingest"].shm(ex, sym, ep) if "ingest" in holder else None  # noqa: E731
    sink = CsvSink(config, snapshots=shm, rings=rings, clock=clock)
    sink.start()  # no ingest yet: no ring, no book
    ingest = holder["ingest"] = FakeIngest(shm_prefix, epoch=base + 1_000_000)  # starts after the sink
    try:
        now = base + 2_000_000
        for _ in range(6):
            now += 1000
            sink.on_trade(ingest.trade("ETHUSDT", now))
        for f in sink.files.values():
            f.abandon()  # SIGKILL: nothing flushed, no state saved
        for _ in range(3):
            now += 1000
            ingest.trade("ETHUSDT", now)
        clock.now = now
        again = CsvSink(config, snapshots=shm, rings=rings, clock=clock)
        again.start()
        again.close()
        assert trade_ids(tmp_path, "ETHUSDT") == [f"{ingest.epoch % 1000}-{k}" for k in range(1, 10)]
    finally:
        ingest.close()


def _other(kind, sym: str, seq: int, now: int, **fields) -> bytes:
    return schema.encode(kind.payload(exchange="sim", symbol=sym, epoch=1, seq=seq, ts_exchange=now - 500,
                                      ts_received=now, **fields))


def test_quotes_tickers_and_liquidations_have_tardis_columns_and_daily_files(tmp_path, ingest):
    """Issue 13: datatypes quotes, derivative_ticker, liquidations: tardis' columns and units, one file per
    UTC day opened at its first row, an unstated ticker value empty (never 0), a lost message counted."""
    config = make_config(tmp_path, extra="gzip = true")
    midnight = (T0 // DAY + 1) * DAY
    clock = Clock(midnight - 1_000_000)
    sink = make_sink(config, ingest, clock)
    quote_seq = 0
    for i, now in enumerate((midnight - 500_000, midnight - 100_000, midnight + 200_000, midnight + 400_000)):
        clock.now = now
        sink.tick()
        quote_seq += 1 if i != 3 else 2  # the last one comes after a lost quote
        sink.on_other(schema.QUOTE, _other(schema.QUOTE, "BTCUSDT", quote_seq, now, bid_price=100.5 + i,
                                           bid_amount=2.0, ask_price=None if i == 1 else 101.0, ask_amount=None
                                           if i == 1 else 0.001))
        sink.on_other(schema.DERIVATIVE_TICKER, _other(schema.DERIVATIVE_TICKER, "BTCUSDT", i + 1, now,
                                                       mark_price=100.75, funding_rate=0.0001 if i else None,
                                                       funding_timestamp=midnight + 8 * 3600 * 1_000_000))
        sink.on_other(schema.LIQUIDATION, _other(schema.LIQUIDATION, "BTCUSDT", i + 1, now, side="sell",
                                                 price=99.5, amount=0.00001, liquidation_id="a,b" if i == 0 else ""))
    sink.close()
    csv_dir = tmp_path / "csv"
    day1, day2 = day_of(midnight - 1), day_of(midnight)
    assert not list(csv_dir.glob("sim_quotes_*_ETHUSDT.csv*"))  # no row, no file
    expected = {
        "quotes": "exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount",
        "derivative_ticker": "exchange,symbol,timestamp,local_timestamp,funding_timestamp,funding_rate,"
                             "predicted_funding_rate,open_interest,last_price,index_price,mark_price",
        "liquidations": "exchange,symbol,timestamp,local_timestamp,id,side,price,amount",
    }
    rows = {}
    for datatype, header in expected.items():
        d1 = csv_dir / f"sim_{datatype}_{day1}_BTCUSDT.csv.gz"  # the closed day, gzipped
        d2 = csv_dir / f"sim_{datatype}_{day2}_BTCUSDT.csv"
        h1, r1 = read_rows(d1)
        h2, r2 = read_rows(d2)
        assert ",".join(h1) == ",".join(h2) == header
        assert len(r1) == 2 and len(r2) == 2
        assert all(int(r["local_timestamp"]) < midnight for r in r1) and all(
            int(r["local_timestamp"]) >= midnight for r in r2)
        assert all(int(r["timestamp"]) == int(r["local_timestamp"]) - 500 for r in r1 + r2)  # µs
        rows[datatype] = r1 + r2
    q = rows["quotes"]
    assert (q[0]["bid_price"], q[0]["bid_amount"], q[0]["ask_price"], q[0]["ask_amount"]) == (
        "100.5", "2", "101", "0.001")
    assert (q[1]["ask_price"], q[1]["ask_amount"]) == ("", "")  # an empty side
    t = rows["derivative_ticker"]
    assert t[0]["funding_rate"] == "" and t[1]["funding_rate"] == "0.0001" and t[0]["open_interest"] == ""
    assert t[0]["mark_price"] == "100.75" and int(t[0]["funding_timestamp"]) == midnight + 8 * 3600 * 1_000_000
    liq = rows["liquidations"]
    assert (liq[0]["id"], liq[0]["side"], liq[0]["price"], liq[0]["amount"]) == ("a,b", "sell", "99.5", "0.00001")
    assert sink.statistics()["other_gaps"] == 1
