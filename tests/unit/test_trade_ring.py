"""Shared-memory trade ring: seq-indexed slots, overwrite detection, torn-read safety, crash recovery."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ingest.events import TradeEvent
from ingest.feed import BusPublisher, FeedBooks
from ingest.adapters import create as load_adapter
from pipeline.config import ExchangeConfig
from pipeline.errors import SharedMemoryError
from pipeline.shm import BookWriter
from pipeline.trade_ring import H_PID, ID_BYTES, TradeRingReader, TradeRingWriter


def _append(w, i, seq, tid=None, side="buy"):
    w.append(i, seq, 1_000_000 + seq, 2_000_000 + seq, 100.0 + seq, 0.5 * seq, side, tid or f"t{seq}")


def test_round_trip_by_seq_with_every_field(shm_prefix):
    w = TradeRingWriter(shm_prefix, "ex", ["A", "B"], capacity=8, epoch=42)
    try:
        _append(w, 1, 1, side="sell")
        _append(w, 1, 2, side="unknown")
        with TradeRingReader.open(shm_prefix, "ex") as r:
            assert (r.exchange, r.symbols, r.epoch, r.capacity, r.pid) == ("ex", ("A", "B"), 42, 8, os.getpid())
            assert r.head("A") == 0 and r.head("B") == 2
            t = r.read("B", 1)
            assert (t.exchange, t.symbol, t.epoch, t.seq, t.ts_exchange, t.ts_received, t.price, t.amount, t.side,
                    t.trade_id) == ("ex", "B", 42, 1, 1_000_001, 2_000_001, 101.0, 0.5, "sell", "t1")
            assert r.read("B", 2).side == "unknown"
            assert r.read("B", 3) is None          # not written yet
            assert r.read("A", 1) is None
            with pytest.raises(SharedMemoryError):
                r.head("C")
    finally:
        w.close()
    assert not Path(f"/dev/shm/{w.name}").exists() and not (shm_prefix.names_dir / "ex_trades").exists()


def test_overwritten_trades_are_reported_gone_and_newer_ones_kept(shm_prefix):
    w = TradeRingWriter(shm_prefix, "ex", ["A"], capacity=4, epoch=1)
    try:
        for seq in range(1, 11):
            _append(w, 0, seq)
        with TradeRingReader.open(shm_prefix, "ex") as r:
            assert r.head("A") == 10 and r.oldest("A") == 7
            assert [s for s, t in r.read_range("A", 1, 10) if t is not None] == [7, 8, 9, 10]
            assert r.read("A", 6) is None and r.read("A", 0) is None
            assert r.find("A", "t9") == 9 and r.find("A", "t9", ts_received=2_000_009) == 9
            assert r.find("A", "t9", ts_received=1) is None and r.find("A", "t3") is None
    finally:
        w.close()


def test_trade_id_longer_than_a_slot_is_not_kept(shm_prefix):
    w = TradeRingWriter(shm_prefix, "ex", ["A"], capacity=4, epoch=1)
    try:
        _append(w, 0, 1, tid="x" * ID_BYTES)
        _append(w, 0, 2, tid="y" * (ID_BYTES + 1))
        with TradeRingReader.open(shm_prefix, "ex") as r:
            assert r.read("A", 1).trade_id == "x" * ID_BYTES
            assert r.read("A", 2) is None and r.head("A") == 2
    finally:
        w.close()


def test_reader_maps_read_only(shm_prefix):
    w = TradeRingWriter(shm_prefix, "ex", ["A"], capacity=4, epoch=1)
    try:
        with TradeRingReader.open(shm_prefix, "ex") as r:
            with pytest.raises((TypeError, ValueError)):
                r.streams[0].head[0] = 5
    finally:
        w.close()


def test_ring_of_a_dead_writer_is_reclaimed_and_of_a_live_one_refused(shm_prefix):
    w = TradeRingWriter(shm_prefix, "ex", ["A"], capacity=4, epoch=1)
    with pytest.raises(SharedMemoryError):
        # same pid looks alive only for another process: fake a live foreign writer
        w.header[H_PID] = os.getppid()
        TradeRingWriter(shm_prefix, "ex", ["A"], capacity=4, epoch=2)
    w.header[H_PID] = 2 ** 22 + 12345  # no such process
    w.close(unlink=False)
    w2 = TradeRingWriter(shm_prefix, "ex", ["A"], capacity=4, epoch=3)
    try:
        with TradeRingReader.open(shm_prefix, "ex") as r:
            assert r.epoch == 3 and r.head("A") == 0
    finally:
        w2.close()


def test_absent_ring_is_a_shared_memory_error(shm_prefix):
    with pytest.raises(SharedMemoryError):
        TradeRingReader.open(shm_prefix, "nope")


WRITER = textwrap.dedent("""
    import sys, time
    from pipeline.shm import ShmSpace
    from pipeline.trade_ring import TradeRingWriter
    w = TradeRingWriter(ShmSpace(sys.argv[1], sys.argv[3]), "ex", ["S"], capacity=64, epoch=1)
    print("ready", flush=True)
    seq = 0
    end = time.time() + float(sys.argv[2])
    while time.time() < end:
        seq += 1
        w.append(0, seq, seq, seq, float(seq), float(seq), "buy", str(seq) * (1 + seq % 7))
    print(seq, flush=True)
    w.close()
""")


def test_reader_in_another_process_never_sees_a_torn_trade(shm_prefix, tmp_path):
    """Every field of trade ``seq`` derives from seq; a torn copy would mix two trades."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), shm_prefix, "1.0", str(shm_prefix.names_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        r = TradeRingReader.open(shm_prefix, "ex")
        good = gone = 0
        while proc.poll() is None:
            head = r.head("S")
            for seq in range(max(1, head - 70), head + 2):
                t = r.read("S", seq)
                if t is None:
                    gone += 1
                    continue
                assert (t.seq, t.ts_exchange, t.ts_received, t.price, t.amount) == (seq, seq, seq, seq, seq)
                assert t.trade_id == str(seq) * (1 + seq % 7)
                good += 1
        r.close()
    finally:
        proc.wait(10)
    assert good > 1000 and gone > 0


def test_ingest_feed_puts_every_published_trade_in_the_ring(shm_prefix):
    cfg = ExchangeConfig(name="ex", adapter="binance", symbols=("A", "B"), depth=5)
    writer = BookWriter(shm_prefix, "ex", cfg.symbols, 5, epoch=9)
    ring = TradeRingWriter(shm_prefix, "ex", cfg.symbols, capacity=16, epoch=9)
    sent = []

    class Recorder(BusPublisher):
        def send_trade(self, topic, msg):
            sent.append(msg)

    feed = FeedBooks("ex", load_adapter(cfg), writer, Recorder(None, None), epoch=9, trade_ring=ring)
    try:
        for k in range(3):
            feed.receive(TradeEvent("B", 10.0 + k, 1.0, "sell", f"id{k}", 5_000 + k, 7_000_000 + k * 1000))
        with TradeRingReader.open(shm_prefix, "ex") as r:
            got = [r.read("B", s) for s in (1, 2, 3)]
        assert [(t.seq, t.trade_id, t.price, t.side, t.ts_exchange, t.ts_received) for t in got] == \
            [(m.seq, m.trade_id, m.price, m.side, m.ts_exchange, m.ts_received) for m in sent]
    finally:
        ring.close()
        writer.close()
