"""CSV files of the sink: crash repair, buffered writes, write errors, gzip (sinks/files.py)."""

import errno
import gzip
import os

import pytest

from sinks import files as files_mod
from sinks.files import DailyFile, gzip_file, last_row, repair_file
from sinks.tardis import BOOK, BOOK_HEADER, TRADES, TRADES_HEADER, RowWriter
from tardis_reader import read_rows, rebuild_book

W = RowWriter("sim", "BTCUSDT")


def test_new_file_gets_its_header_even_with_no_rows(tmp_path):
    f = DailyFile(tmp_path / "sub" / "sim_trades_2024-01-01_BTCUSDT.csv", TRADES)
    f.ensure_open()
    f.close()
    assert f.path.read_text() == TRADES_HEADER


def test_trailing_partial_line_left_by_a_crash_is_cut_before_appending(tmp_path):
    path = tmp_path / "sim_trades_2024-01-01_BTCUSDT.csv"
    good = W.trade(1, 2, "7", "buy", 10.0, 1.0)
    path.write_text(TRADES_HEADER + good + "sim,BTCUSDT,3,4,8,se")  # killed mid-row
    f = DailyFile(path, TRADES)
    f.append(W.trade(5, 6, "9", "sell", 11.0, 2.0), 1)
    f.close()
    assert path.read_text() == TRADES_HEADER + good + W.trade(5, 6, "9", "sell", 11.0, 2.0)
    assert [r["id"] for r in read_rows(path)[1]] == ["7", "9"]


def test_partial_header_is_replaced_by_a_whole_one(tmp_path):
    path = tmp_path / "sim_trades_2024-01-01_BTCUSDT.csv"
    path.write_text(TRADES_HEADER[:10])
    f = DailyFile(path, TRADES)
    f.ensure_open()
    f.close()
    assert path.read_text() == TRADES_HEADER


@pytest.mark.parametrize("levels", [3, 2000], ids=["small-block", "block-longer-than-a-read-chunk"])
def test_unfinished_snapshot_block_is_cut_so_blocks_never_merge(tmp_path, levels):
    """A block killed half-way would otherwise merge with the block the restart writes."""
    path = tmp_path / "sim_incremental_book_L2_2024-01-01_BTCUSDT.csv"
    first = W.snapshot(1, 1, [(100.0 - i, 1.0) for i in range(levels)], [(101.0 + i, 1.0) for i in range(levels)])
    delta = W.delta(2, 2, [(100.0, 5.0)], [])
    unfinished = W.snapshot(3, 3, [(90.0 - i, 9.0) for i in range(levels)], [(91.0, 9.0)])
    cut_at = unfinished.index("\n", len(unfinished) // 2) + 1
    path.write_text(BOOK_HEADER + first + delta + unfinished[:cut_at] + "sim,BTC")
    f = DailyFile(path, BOOK)
    f.ensure_open()
    assert path.read_text() == BOOK_HEADER + first + delta
    f.append(W.snapshot(4, 4, [(50.0, 1.0)], [(51.0, 2.0)]), 3)
    f.close()
    bids, asks, blocks = rebuild_book([path])
    assert (bids, asks, blocks) == ([(50.0, 1.0)], [(51.0, 2.0)], 2)


def test_file_that_is_not_ours_is_moved_aside(tmp_path):
    path = tmp_path / "sim_trades_2024-01-01_BTCUSDT.csv"
    path.write_text("something,else\n1,2\n")
    f = DailyFile(path, TRADES)
    f.ensure_open()
    f.close()
    assert path.read_text() == TRADES_HEADER
    aside = [p for p in tmp_path.iterdir() if ".bad-" in p.name]
    assert len(aside) == 1 and aside[0].read_text() == "something,else\n1,2\n"


def test_disk_full_keeps_rows_buffered_until_a_retry_succeeds(tmp_path):
    path = tmp_path / "sim_trades_2024-01-01_BTCUSDT.csv"
    path.symlink_to("/dev/full")  # every write: ENOSPC
    f = DailyFile(path, TRADES)
    rows = [W.trade(i, i, str(i), "buy", 1.0 + i, 1.0) for i in range(50)]
    for r in rows:
        f.append(r, 1)
    with pytest.raises(OSError) as exc:
        f.flush()
    assert exc.value.errno == errno.ENOSPC
    assert f.pending_rows == 50 and f.rows_written == 0
    f.abandon()
    path.unlink()  # space again
    f.close()
    assert path.read_text() == TRADES_HEADER + "".join(rows)
    assert f.rows_written == 50 and f.pending_rows == 0


def test_write_that_stops_half_way_continues_exactly_where_it_stopped(tmp_path, monkeypatch):
    path = tmp_path / "sim_trades_2024-01-01_BTCUSDT.csv"
    f = DailyFile(path, TRADES)
    f.ensure_open()
    rows = [W.trade(i, i, str(i), "sell", 2.0, 3.0) for i in range(10)]
    for i, r in enumerate(rows):
        f.append(r, 1, mark=i)
    real_write = os.write
    calls = []

    def short_then_full(fd, data):  # the disk fills up in the middle of a row
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:len(data) // 2 + 3]))
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(files_mod.os, "write", short_then_full)
    with pytest.raises(OSError):
        f.flush()
    assert 0 < f.bytes_written < len("".join(rows)) and f.durable_mark is not None and f.durable_mark < 9
    f.flush()
    f.close()
    assert path.read_text() == TRADES_HEADER + "".join(rows)
    assert f.durable_mark == 9 and f.rows_written == 10


def test_dropping_the_buffer_keeps_the_rest_of_a_half_written_row(tmp_path, monkeypatch):
    path = tmp_path / "sim_trades_2024-01-01_BTCUSDT.csv"
    f = DailyFile(path, TRADES)
    f.ensure_open()
    rows = [W.trade(i, i, str(i), "sell", 2.0, 3.0) for i in range(4)]
    for r in rows:
        f.append(r, 1)
    real_write = os.write
    state = {"n": 0}

    def half(fd, data):
        state["n"] += 1
        if state["n"] == 1:
            return real_write(fd, bytes(data[:len(rows[0]) + 5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files_mod.os, "write", half)
    with pytest.raises(OSError):
        f.flush()
    assert f.drop_pending() == 2  # rows 2 and 3; the rest of row 1 stays
    monkeypatch.setattr(files_mod.os, "write", real_write)
    f.close()
    assert path.read_text() == TRADES_HEADER + rows[0] + rows[1]


def test_last_row_is_the_last_complete_trade(tmp_path):
    path = tmp_path / "t.csv"
    assert last_row(path) is None
    path.write_text(TRADES_HEADER)
    assert last_row(path) is None
    path.write_text(TRADES_HEADER + W.trade(1, 2, "a", "buy", 1.0, 1.0) + W.trade(3, 4, "b", "sell", 1.0, 1.0))
    assert last_row(path) == ["sim", "BTCUSDT", "3", "4", "b", "sell", "1", "1"]


def test_leftover_of_a_crash_is_repaired_and_gzip_keeps_it_readable(tmp_path):
    path = tmp_path / "sim_incremental_book_L2_2024-01-01_BTCUSDT.csv"
    block = W.snapshot(1, 1, [(1.0, 1.0)], [(2.0, 1.0)])
    path.write_text(BOOK_HEADER + block + "sim,BTCUSDT,2,2,true,bid,1,")
    repair_file(path, BOOK)
    gz = gzip_file(path)
    assert not path.exists() and gz.name.endswith(".csv.gz")
    with gzip.open(gz, "rt") as fh:
        assert fh.read() == BOOK_HEADER + block
    assert rebuild_book([gz])[:2] == ([(1.0, 1.0)], [(2.0, 1.0)])


def test_a_gzipped_day_written_again_is_unpacked_and_appended(tmp_path):
    path = tmp_path / "sim_trades_2024-01-01_BTCUSDT.csv"
    path.write_text(TRADES_HEADER + W.trade(1, 1, "1", "buy", 1.0, 1.0))
    gzip_file(path)
    f = DailyFile(path, TRADES)
    f.append(W.trade(2, 2, "2", "buy", 1.0, 1.0), 1)
    f.close()
    assert [r["id"] for r in read_rows(path)[1]] == ["1", "2"]
    assert not path.with_name(path.name + ".gz").exists()
