"""The CSV sink and runtime streams (issue 14): a symbol added while the sink runs gets its files, the
book file starting with a snapshot block and rebuilding the book; its "removed" message closes them, and
later messages of it are counted, not written."""

from __future__ import annotations

from pipeline import schema
from pipeline.app.config import parse_config
from sinks.csv_sink import CsvSink
from tardis_reader import first_rows_are_a_block, rebuild_book
from test_tardis_sink import SYMBOLS, T0, Clock, FakeIngest, book_files, trade_ids

import pytest


@pytest.fixture
def ingest(shm_prefix):
    ing = FakeIngest(shm_prefix, epoch=T0 - 10_000_000)
    yield ing
    ing.close()


def test_an_added_symbol_gets_files_that_start_with_a_snapshot_and_removed_closes_them(tmp_path, ingest):
    config = parse_config(f"""
[pipeline]
run_dir = "run"
[exchanges.sim]
adapter = "binance"
symbols = ["{SYMBOLS[0]}"]
depth = 5
[sinks.csv]
dir = "csv"
flush_interval_s = 0.5
""", tmp_path)
    clock = Clock(T0)
    sink = CsvSink(config, snapshots=lambda ex, sym, ep: ingest.shm(ex, sym, ep),
                   rings=lambda ex, ep: ingest.rings(ex, ep), clock=clock)
    sink.start()
    added = SYMBOLS[1]
    assert not book_files(tmp_path, added)
    now = T0
    sink.on_l2(ingest.snapshot(added, now))  # a new book's first message: its snapshot
    for _ in range(200):
        now += 1000
        clock.now = now
        msg = ingest.delta(added, now)
        if msg is not None:
            sink.on_l2(msg)
    sink.on_trade(ingest.trade(added, now))
    sink.flush_all()
    (path,) = book_files(tmp_path, added)
    assert first_rows_are_a_block(path)
    assert rebuild_book([path])[:2] == ingest.view(added)
    assert trade_ids(tmp_path, added) == ["%d-1" % (ingest.epoch % 1000)]

    bids, asks = ingest.view(added)
    ingest.seq[added] += 1  # the ingest's final message: a snapshot with the state "removed"
    sink.on_l2(schema.encode(schema.L2Update(
        exchange="sim", symbol=added, epoch=ingest.epoch, seq=ingest.seq[added], ts_exchange=now, ts_received=now,
        snapshot=True, state="removed", update_id=ingest.seq[added], depth=5, bids=bids, asks=asks)))
    assert (config.exchanges["sim"].name, added) not in sink.books
    assert not any(k[1] == added for k in sink.files)
    unknown = sink.unknown_messages
    sink.on_trade(ingest.trade(added, now + 2000))  # in flight: counted, not written
    assert sink.unknown_messages == unknown + 1
    sink.flush_all()
    assert trade_ids(tmp_path, added) == ["%d-1" % (ingest.epoch % 1000)]
