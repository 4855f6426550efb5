"""The Parquet sink without sockets: the same bus payloads as the CSV sink gets, an injectable clock.

The fake ingest of tests/unit/test_tardis_sink.py (real view deltas, "shared memory", a real
shared-memory trade ring) feeds both sinks; the Parquet dataset read back with pyarrow/pandas
(tests/parquet_reader.py) must hold the CSV sink's rows, typed; files appear whole or not at all.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from parquet_reader import csv_frame, files, files_start_with_blocks, frame, rebuild_book
from pipeline.app.config import parse_config
from pipeline.config import ConfigError
from sinks.csv_sink import CsvSink
from sinks.parquet_sink import ParquetSink, arrow_schema

_spec = importlib.util.spec_from_file_location("tardis_sink_tests", Path(__file__).with_name("test_tardis_sink.py"))
_t = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_t)
Clock, FakeIngest, SYMBOLS, T0 = _t.Clock, _t.FakeIngest, _t.SYMBOLS, _t.T0

BOOK, TRADES = "incremental_book_L2", "trades"


def make_config(tmp_path, parquet: str = ""):
    return parse_config(f"""
[pipeline]
run_dir = "run"
[exchanges.sim]
adapter = "binance"
symbols = {list(SYMBOLS)!r}
depth = 5
[sinks.csv]
dir = "csv"
flush_interval_s = 0.5
[sinks.parquet]
dir = "pq"
{parquet}
""".replace("'", '"'), tmp_path)


def start(cls, config, ingest, clock):
    sink = cls(config, snapshots=lambda ex, sym, ep: ingest.shm(ex, sym, ep),
               rings=lambda ex, ep: ingest.rings(ex, ep), clock=clock)
    sink.start()
    return sink


@pytest.fixture
def ingest(shm_prefix):
    ing = FakeIngest(shm_prefix, epoch=T0 - 10_000_000)
    yield ing
    ing.close()


def play(sinks, ingest, clock, steps: int, lose=range(0), trades_every: int = 3, tick: bool = True):
    """Random deltas and trades into every sink; messages of the steps in ``lose`` never arrive."""
    now = clock.now
    for i in range(steps):
        now += 1000
        clock.now = now
        for sym in SYMBOLS:
            msg = ingest.delta(sym, now)
            if msg is not None and i not in lose:
                for s in sinks:
                    s.on_l2(msg)
            if i % trades_every == 0:
                t = ingest.trade(sym, now)
                if i not in lose:
                    for s in sinks:
                        s.on_trade(t)
        if tick and i % 50 == 0:
            for s in sinks:
                s.tick()


def test_the_dataset_holds_the_csv_sinks_rows_typed(tmp_path, ingest):
    """One file window (flush_interval_s longer than the run): exactly the CSV rows, through a bus gap
    (a block from shared memory, trades from the ring) -- same values, same units."""
    config = make_config(tmp_path, "flush_interval_s = 3600")
    clock = Clock(T0)
    csv = start(CsvSink, config, ingest, clock)
    parquet = start(ParquetSink, config, ingest, clock)
    play([csv, parquet], ingest, clock, 300, lose=range(100, 110))
    csv.close()
    parquet.close()
    assert parquet.counters.book_gaps == len(SYMBOLS) and parquet.counters.gaps_filled > 0
    for dt, pattern in ((BOOK, "sim_incremental_book_L2_*_{}.csv"), (TRADES, "sim_trades_*_{}.csv")):
        for sym in SYMBOLS:
            want = csv_frame(sorted((tmp_path / "csv").glob(pattern.format(sym))))
            got = frame(tmp_path / "pq", "sim", dt, sym).drop(columns=["file"])
            assert list(got.columns) == list(want.columns)
            pd.testing.assert_frame_equal(got, want, check_dtype=False, check_categorical=False)
    for sym in SYMBOLS:
        assert rebuild_book(frame(tmp_path / "pq", "sim", BOOK, sym))[:2] == ingest.view(sym)


def test_types_partitions_and_compression(tmp_path, ingest):
    config = make_config(tmp_path, "flush_interval_s = 0.05")
    clock = Clock(T0)
    sink = start(ParquetSink, config, ingest, clock)
    play([sink], ingest, clock, 200)
    sink.close()
    dataset = ds.dataset(tmp_path / "pq", format="parquet", partitioning="hive")
    assert set(dataset.schema.names) >= {"exchange", "datatype", "date", "timestamp", "price"}
    book = ds.dataset(tmp_path / "pq" / "exchange=sim" / "datatype=incremental_book_L2", format="parquet")
    assert book.schema == arrow_schema(BOOK)
    assert book.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert book.schema.field("side").type == pa.dictionary(pa.int8(), pa.string())
    assert book.schema.field("price").type == pa.float64()
    meta = pq.ParquetFile(files(tmp_path / "pq", "sim", BOOK)[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    dates = {p.parent.name for p in files(tmp_path / "pq", "sim", BOOK)}
    assert dates == {"date=2024-08-08"}


def test_every_file_starts_with_a_block_and_midnight_starts_a_new_date(tmp_path, ingest):
    config = make_config(tmp_path, "flush_interval_s = 0.05")
    clock = Clock(T0)
    sink = start(ParquetSink, config, ingest, clock)
    play([sink], ingest, clock, 300)
    clock.now = T0 + 10 * 60 * 1_000_000 + 5  # past midnight (T0 is 23:50)
    sink.tick()
    play([sink], ingest, clock, 300)
    sink.close()
    paths = files(tmp_path / "pq", "sim", BOOK)
    assert len(paths) > 5 and {p.parent.name for p in paths} == {"date=2024-08-08", "date=2024-08-09"}
    assert files_start_with_blocks(tmp_path / "pq", "sim", SYMBOLS)
    for p in paths:  # each file rebuilds the book at its end on its own
        df = pq.read_table(p).to_pandas()
        for sym in SYMBOLS:
            rows = df[df["symbol"].astype(str) == sym]
            assert rebuild_book(rows)[2] >= 1
    for sym in SYMBOLS:
        assert rebuild_book(frame(tmp_path / "pq", "sim", BOOK, sym))[:2] == ingest.view(sym)
        ids = list(frame(tmp_path / "pq", "sim", TRADES, sym)["id"])
        assert ids == [f"{ingest.epoch % 1000}-{n}" for n in range(1, len(ids) + 1)]
    assert not list((tmp_path / "pq").rglob("*.tmp"))


def test_a_crash_loses_the_window_only_and_the_restart_refills_trades_from_the_ring(tmp_path, ingest):
    """The first sink is dropped without closing (kill -9): its unwritten window is gone from disk; a
    partial file it left is removed; the next sink backfills every trade from the ring, once."""
    config = make_config(tmp_path, "flush_interval_s = 0.05")
    clock = Clock(T0)
    first = start(ParquetSink, config, ingest, clock)
    play([first], ingest, clock, 200)
    written = len(files(tmp_path / "pq", "sim", TRADES))
    play([first], ingest, clock, 20, trades_every=1, tick=False)  # buffered, never written: the crash window
    assert len(files(tmp_path / "pq", "sim", TRADES)) == written
    partial = files(tmp_path / "pq", "sim", BOOK)[-1].with_name(".part-0000000000000001.parquet.tmp")
    partial.write_bytes(b"PAR1 half a file")
    del first
    # killed after its last trades file was put in place but before the state file was saved: the
    # file's own marks say where to resume (no trade written twice)
    (tmp_path / "pq" / ".parquet-sink-state.json").unlink()
    second = start(ParquetSink, config, ingest, clock)
    assert second.partials_removed == 1 and not partial.exists()
    play([second], ingest, clock, 100)
    second.close()
    assert second.counters.gaps_filled > 0 and second.counters.trades_lost == 0
    for sym in SYMBOLS:
        ids = list(frame(tmp_path / "pq", "sim", TRADES, sym)["id"])
        assert ids == [f"{ingest.epoch % 1000}-{n}" for n in range(1, ingest.trade_seq[sym] + 1)], sym
        assert rebuild_book(frame(tmp_path / "pq", "sim", BOOK, sym))[:2] == ingest.view(sym)
    assert files_start_with_blocks(tmp_path / "pq", "sim", SYMBOLS)


def test_closed_files_are_uploaded_with_retries(tmp_path, ingest, monkeypatch):
    remote = tmp_path / "store"
    config = make_config(tmp_path, f'flush_interval_s = 0.05\nupload_url = "file://{remote}"\nupload_retries = 4')
    fs = fsspec.filesystem("file")
    real_put = type(fs).put_file
    failures = {"left": 2}

    def flaky_put(self, lpath, rpath, **kw):
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("store unavailable")
        return real_put(self, lpath, rpath, **kw)

    monkeypatch.setattr(type(fs), "put_file", flaky_put)
    clock = Clock(T0)
    sink = start(ParquetSink, config, ingest, clock)
    sink.uploader._sleep = lambda s: False  # no waiting between attempts in the test
    play([sink], ingest, clock, 100)
    sink.close()
    local = sorted(p.relative_to(tmp_path / "pq") for p in (tmp_path / "pq").rglob("part-*.parquet"))
    uploaded = sorted(p.relative_to(remote) for p in remote.rglob("part-*.parquet"))
    assert local and uploaded == local
    assert not list(remote.rglob("*.tmp"))
    stats = sink.statistics()
    assert stats["uploaded"] == len(local) and stats["upload_retries"] == 2 and stats["upload_failed"] == 0


def test_bad_parquet_config_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"sinks\.parquet\.compression"):
        make_config(tmp_path, 'compression = "brotli2"')
    with pytest.raises(ConfigError, match=r"sinks\.parquet\.flush_rows"):
        make_config(tmp_path, "flush_rows = 0")
    with pytest.raises(ConfigError, match=r"sinks\.parquet\.upload_url"):
        make_config(tmp_path, 'upload_url = "/no/scheme"')
    with pytest.raises(ConfigError, match=r"sinks\.parquet\.nope"):
        make_config(tmp_path, "nope = 1")


@pytest.mark.parametrize("cls", [CsvSink, ParquetSink])
@pytest.mark.parametrize("ingest_after_sink", [True, False])
def test_a_stopping_sink_takes_what_the_bus_never_brought_from_the_ring(tmp_path, shm_prefix, cls,
                                                                        ingest_after_sink):
    """Trades the bus lost (published before the subscription was up, or the tail of a burst) show
    up only at the second periodic check; a sink stopped before it still writes them, from the ring
    (a CI run replayed a short capture faster than the sinks subscribed and stopped them within a
    second: the Parquet trades dataset was empty)."""
    clock = Clock(T0)
    config = make_config(tmp_path)
    holder = {}
    sink = cls(config, snapshots=lambda ex, sym, ep: holder["i"].shm(ex, sym, ep) if holder else None,
               rings=lambda ex, ep: holder["i"].rings(ex, ep) if holder else None, clock=clock)
    if not ingest_after_sink:
        holder["i"] = FakeIngest(shm_prefix, epoch=T0 - 10_000_000)
    sink.start()
    if ingest_after_sink:
        holder["i"] = FakeIngest(shm_prefix, epoch=T0 + 1_000)
    ing = holder["i"]
    try:
        now = T0 + 2_000
        for i in range(7):
            now += 1000
            clock.now = now
            for sym in SYMBOLS[:2]:
                msg = ing.trade(sym, now)
                if not ingest_after_sink and i in (1, 2):
                    sink.on_trade(msg)  # the first arrive, the tail of the burst is lost
        sink.tick()  # one periodic check: it sees the ring ahead, a second one would fetch
        sink.close()
    finally:
        ing.close()
    for sym in SYMBOLS[:2]:
        want = [f"{ing.epoch % 1000}-{k}" for k in range(1, 8)]  # the ring was empty when the sink started
        if cls is CsvSink:
            assert _t.trade_ids(tmp_path, sym) == want
        else:
            assert list(frame(tmp_path / "pq", "sim", TRADES, sym)["id"]) == want
    assert sink.counters.trades_lost == 0


def test_quotes_tickers_and_liquidations_hold_the_csv_rows_typed(tmp_path, ingest):
    """Issue 13: the quotes, derivative_ticker and liquidations datasets hold the CSV sink's rows of the
    same bus messages (columns, units: timestamps in µs as timestamp[us, UTC]); a value the venue has
    not stated is null, never 0; a symbol with no rows of a kind has none; a lost message is counted."""
    from pipeline import schema

    other = _t._other
    config = make_config(tmp_path, "flush_interval_s = 0.05")
    clock = Clock(T0)
    csv = start(CsvSink, config, ingest, clock)
    parquet = start(ParquetSink, config, ingest, clock)
    funding = (T0 // 3_600_000_000 + 1) * 3_600_000_000
    quote_seq = 0
    for i in range(60):
        clock.now += 20_000
        now = clock.now
        quote_seq += 2 if i == 30 else 1  # quote 31 never arrives
        payloads = [
            (schema.QUOTE, other(schema.QUOTE, "BTCUSDT", quote_seq, now, bid_price=100.5 + i, bid_amount=2.0,
                                 ask_price=None if i % 7 == 3 else 101.0 + i, ask_amount=None if i % 7 == 3 else 0.001,
                                 update_id=1000 + i)),
            (schema.DERIVATIVE_TICKER, other(schema.DERIVATIVE_TICKER, "BTCUSDT", i + 1, now, mark_price=100.75 + i,
                                             index_price=100.5, funding_rate=0.0001 if i % 2 else None,
                                             funding_timestamp=funding, open_interest=None if i < 5 else 1234.5)),
        ]
        if i % 3 == 0:
            payloads.append((schema.LIQUIDATION, other(schema.LIQUIDATION, "ETHUSDT", i // 3 + 1, now,
                                                       side="buy" if i % 2 else "sell", price=2500.0 + i,
                                                       amount=0.00001, liquidation_id="a,b" if i == 3 else "")))
        for sink in (csv, parquet):
            for kind, payload in payloads:
                sink.on_other(kind, payload)
            sink.tick()
    csv.close()
    parquet.close()
    assert parquet.statistics()["other_gaps"] == csv.statistics()["other_gaps"] == 1
    assert parquet.statistics()["other_rows"] == 60 + 60 + 20
    root = tmp_path / "pq"
    for datatype, sym in (("quotes", "BTCUSDT"), ("derivative_ticker", "BTCUSDT"), ("liquidations", "ETHUSDT")):
        paths = files(root, "sim", datatype)
        assert len(paths) > 3, datatype  # a file per flush window
        assert ds.dataset(paths, format="parquet").schema == arrow_schema(datatype)
        want = csv_frame(sorted((tmp_path / "csv").glob(f"sim_{datatype}_*_{sym}.csv")))
        got = frame(root, "sim", datatype, sym).drop(columns=["file"])
        assert list(got.columns) == list(want.columns) and len(got) == len(want) > 0
        pd.testing.assert_frame_equal(got, want, check_dtype=False, check_categorical=False)
        others = set(frame(root, "sim", datatype)["symbol"]) - {sym}
        assert not others  # no rows for the other symbol
    ticker = frame(root, "sim", "derivative_ticker")
    assert arrow_schema("derivative_ticker").field("funding_timestamp").type == pa.timestamp("us", tz="UTC")
    assert (ticker["funding_timestamp"] == pd.Timestamp(funding, unit="us", tz="UTC")).all()
    assert ticker["open_interest"].isna().sum() == 5 and ticker["funding_rate"].isna().sum() == 30
    quotes = frame(root, "sim", "quotes")
    assert quotes["ask_price"].isna().sum() == quotes["ask_amount"].isna().sum() == len(range(3, 60, 7))
    assert set(frame(root, "sim", "liquidations")["id"]) == {"a,b", ""}
