"""CSV edge cases (issue 19 item 10): ``local_timestamp`` went backwards after a resync block (the
strict tardis checker rejected the file), and a crossed "stale" snapshot was written as a book
block.  Now a file's local timestamps never decrease and only a live, uncrossed book is a block."""

from __future__ import annotations

from pipeline import schema
from tardis_reader import read_rows, rebuild_book
from test_tardis_sink import SYMBOLS, T0, Clock, FakeIngest, book_files, make_config, make_sink

import pytest

SYM = SYMBOLS[0]


@pytest.fixture
def ingest(shm_prefix):
    ing = FakeIngest(shm_prefix, epoch=T0 - 10_000_000)
    yield ing
    ing.close()


def local_timestamps(tmp_path) -> list[int]:
    return [int(r["local_timestamp"]) for p in book_files(tmp_path, SYM) for r in read_rows(p)[1]]


def test_a_resync_block_older_than_the_rows_before_it_does_not_take_local_timestamp_back(tmp_path, ingest):
    sink = make_sink(make_config(tmp_path), ingest, Clock(T0))
    now = T0
    for _ in range(50):
        now += 1000
        msg = ingest.delta(SYM, now)
        if msg is not None:
            sink.on_l2(msg)
    latest = now
    # the view shared memory holds after the gap carries an older receive time than the rows written
    # (a resync's snapshot stamped when REST answered, before the last diffs of the old book)
    lost = None
    while lost is None:  # a message lost on the bus: the next one is a gap, and a block from shm
        lost = ingest.delta(SYM, latest - 20_000)
    nxt = None
    while nxt is None:
        nxt = ingest.delta(SYM, latest - 19_000)
    sink.on_l2(nxt)
    for _ in range(20):
        now += 1000
        msg = ingest.delta(SYM, now)
        if msg is not None:
            sink.on_l2(msg)
    sink.close()
    assert sink.counters.book_gaps == 1
    stamps = local_timestamps(tmp_path)
    assert all(a <= b for a, b in zip(stamps, stamps[1:])), "local_timestamp went backwards"
    assert rebuild_book(book_files(tmp_path, SYM))[:2] == ingest.view(SYM)


def test_a_crossed_stale_snapshot_is_not_written_as_a_block_the_next_live_book_is(tmp_path, ingest):
    sink = make_sink(make_config(tmp_path), ingest, Clock(T0))
    now = T0 + 1000
    sink.on_l2(ingest.delta(SYM, now) or ingest.snapshot(SYM, now))
    sink.flush_all()
    good = rebuild_book(book_files(tmp_path, SYM))
    blocks_before = good[2]
    ingest.seq[SYM] += 1
    crossed = schema.L2Update(exchange="sim", symbol=SYM, epoch=ingest.epoch, seq=ingest.seq[SYM],
                              ts_exchange=now, ts_received=now + 10, snapshot=True, state="stale",
                              update_id=ingest.seq[SYM], depth=5, bids=[(105.0, 1.0)], asks=[(104.0, 1.0)])
    sink.on_l2(schema.encode(crossed))
    sink.flush_all()
    assert rebuild_book(book_files(tmp_path, SYM)) == good  # not written: the file keeps the trusted book
    assert sink.counters.blocks_withheld == 1
    sink.tick()  # the periodic check does not write it either, nor count it again
    sink.on_l2(ingest.snapshot(SYM, now + 2000))  # the ingest resynced: a live book, a block
    sink.close()
    bids, asks, blocks = rebuild_book(book_files(tmp_path, SYM))
    assert (bids, asks) == ingest.view(SYM) and blocks == blocks_before + 1
    assert sink.counters.blocks_withheld == 1
