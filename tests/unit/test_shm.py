"""Shared-memory books: seqlock consistency across processes, crash recovery, readers."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import SharedMemoryError
from pipeline.shm import H_PID, BookReader, BookState, BookWriter


def test_write_then_read_round_trip(shm_prefix):
    w = BookWriter(shm_prefix, "ex", ["A", "B"], depth=3, epoch=11)
    try:
        w.write_view(1, 5, BookState.LIVE, 100, 200, 77, [3.0, 2.0], [1.0, 1.5], [4.0], [2.0])
        with BookReader.open(shm_prefix, "ex") as r:
            assert r.symbols == ("A", "B") and r.epoch == 11 and r.pid == os.getpid()
            s = r.read("B")
            assert (s.seq, s.state, s.update_id, s.epoch) == (5, BookState.LIVE, 77, 11)
            assert s.bids.tolist() == [[3.0, 1.0], [2.0, 1.5]] and s.asks.tolist() == [[4.0, 2.0]]
            assert r.read("A").state is BookState.SYNCING
            with pytest.raises(SharedMemoryError):
                r.read("C")
    finally:
        w.close()
    assert not Path(f"/dev/shm/{w.name}").exists() and not (shm_prefix.names_dir / "ex").exists()


def test_a_view_written_as_packed_doubles_reads_as_the_same_view(shm_prefix):
    """write_view_doubles (the feed's, with the book's view_doubles) and write_view write the same bytes."""
    from pipeline.book import PyViewBook, ViewBook

    w = BookWriter(shm_prefix, "ex", ["A", "B", "C"], depth=3, epoch=2)
    try:
        for i, cls in ((1, PyViewBook), (2, ViewBook)):
            book = cls(3)
            book.load_snapshot([(9.0, 1.0), (8.5, 2.0), (8.0, 3.0), (7.0, 1.0)], [(10.0, 4.0), (11.0, 0.5)])
            w.write_view_doubles(i, 6, BookState.LIVE, 1, 2, 3, *book.view_doubles())
        w.write_view(0, 6, BookState.LIVE, 1, 2, 3, *book.view_arrays())
        with BookReader.open(shm_prefix, "ex") as r:
            a, b, c = r.read("A"), r.read("B"), r.read("C")
            assert a.bids.tolist() == [[9.0, 1.0], [8.5, 2.0], [8.0, 3.0]] and a.asks.tolist() == [[10.0, 4.0], [11.0, 0.5]]
            for s in (b, c):
                assert (s.seq, s.update_id) == (6, 3)
                assert s.bids.tolist() == a.bids.tolist() and s.asks.tolist() == a.asks.tolist()
        with pytest.raises(ValueError):
            w.write_view_doubles(0, 7, BookState.LIVE, 1, 2, 3, 4, 0, bytes(32), bytes(32), b"", b"")
    finally:
        w.close()


WRITER = textwrap.dedent("""
    import sys, time
    from pipeline.shm import BookWriter, BookState, ShmSpace
    w = BookWriter(ShmSpace(sys.argv[1], sys.argv[3]), "ex", ["S"], depth=50, epoch=1)
    print("ready", flush=True)
    seq = 0
    end = time.time() + float(sys.argv[2])
    while time.time() < end:
        seq += 1
        n = 1 + seq % 50
        v = float(seq)
        px = [v] * n
        w.write_view(0, seq, BookState.LIVE, seq, seq, seq, px, px, px, px)
    w.close()
""")


def test_reader_in_another_process_never_sees_a_torn_view(shm_prefix, tmp_path):
    """Every field of a view is written from one seq; a torn read would mix two."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), shm_prefix, "1.5", str(shm_prefix.names_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        reader = BookReader.open(shm_prefix, "ex")
        reads, seqs = 0, set()
        while proc.poll() is None and reads < 20000:
            s = reader.read("S")
            if s.seq == 0:
                continue
            n = 1 + s.seq % 50
            assert len(s.bids) == n and len(s.asks) == n
            assert np.all(s.bids == float(s.seq)) and np.all(s.asks == float(s.seq))
            assert s.update_id == s.seq == s.ts_received_us
            reads += 1
            seqs.add(s.seq)
        reader.close()
        assert reads > 100 and len(seqs) > 10  # the reader saw many different writes
    finally:
        proc.kill()
        proc.wait()


def test_segment_left_by_a_crashed_writer_is_recreated(shm_prefix):
    w = BookWriter(shm_prefix, "ex", ["S"], depth=5, epoch=1)
    w.header[H_PID] = 2**22 + 12345  # a pid that does not run: the writer "crashed"
    w._seg.close()                   # leave the segment behind, like a SIGKILL would
    w2 = BookWriter(shm_prefix, "ex", ["S", "T"], depth=7, epoch=2)
    try:
        with BookReader.open(shm_prefix, "ex") as r:
            assert r.epoch == 2 and r.depth == 7 and r.symbols == ("S", "T")
    finally:
        w2.close()


def test_second_writer_is_refused_while_the_first_runs(shm_prefix):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    w = BookWriter(shm_prefix, "ex", ["S"], depth=5, epoch=1)
    try:
        w.header[H_PID] = child.pid
        with pytest.raises(SharedMemoryError, match="belongs to running process"):
            BookWriter(shm_prefix, "ex", ["S"], depth=5, epoch=2)
    finally:
        child.kill()
        child.wait()
        w.close()


def test_a_reader_process_exiting_does_not_unlink_the_segment(shm_prefix):
    """Python 3.11's resource tracker would unlink a segment a reader merely attached to."""
    w = BookWriter(shm_prefix, "ex", ["S"], depth=5, epoch=1)
    try:
        code = (f"from pipeline.shm import BookReader, ShmSpace; "
                f"r = BookReader.open(ShmSpace({str(shm_prefix)!r}, {str(shm_prefix.names_dir)!r}), 'ex'); "
                f"print(r.read('S').epoch)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "1", out.stderr
        assert Path(f"/dev/shm/{w.name}").exists()
        with BookReader.open(shm_prefix, "ex") as r:
            assert r.read("S").epoch == 1
    finally:
        w.close()


def test_missing_segment_is_a_clear_error(shm_prefix):
    with pytest.raises(SharedMemoryError, match="is the ingest running"):
        BookReader.open(shm_prefix, "nothing")
