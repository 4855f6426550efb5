"""Issue 19 item 5, the sinks' view: a venue's trade-id gap is counted (the tardis trades file has no
column for it), and the trades after a "missing" marker are held until the REST backfill came, so the
file has every id in order and its local_timestamp never decreases; a backfill that never comes ends
the hold after HOLD_S, one that comes late is written where it arrives, counted."""

from __future__ import annotations

from pipeline import schema
from sinks import recorder
from sinks.recorder import SinkCounters, TradeStream
from sinks.tardis import RowWriter, TupleRows

EPOCH = 7


def _trade(seq: int, tid: int, recv: int) -> schema.Trade:
    return schema.Trade(exchange="binance", symbol="BTCUSDT", epoch=EPOCH, seq=seq, ts_exchange=1_000 + tid,
                        ts_received=recv, price=100.0, amount=1.0, side="buy", trade_id=str(tid))


def _gap(state: str, first: int, last: int, backfill=False, backfilled=0, first_seq=0, last_seq=0, seq=1):
    return schema.TradeGap(exchange="binance", symbol="BTCUSDT", epoch=EPOCH, seq=seq, ts_exchange=0, ts_received=0,
                           state=state, first_id=first, last_id=last, count=last - first + 1, backfill=backfill,
                           backfilled=backfilled, first_seq=first_seq, last_seq=last_seq)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _stream(rows=None):
    clock = Clock()
    counters = SinkCounters()
    return TradeStream("binance", "BTCUSDT", rows or RowWriter("binance", "BTCUSDT"), lambda ex, ep: None, counters,
                       clock=clock), counters, clock


def _ids_and_times(text: str) -> list[tuple[int, int]]:
    return [(int(r.split(",")[4]), int(r.split(",")[3])) for r in text.splitlines()]


def test_held_trades_and_their_backfill_are_written_in_id_order():
    s, c, clock = _stream()
    out = s.on_trade(_trade(1, 100, 10)) + s.on_trade(_trade(2, 101, 11))
    assert s.on_gap(_gap("missing", 102, 104, backfill=True)) == ""
    assert s.on_trade(_trade(3, 105, 20)) == "" and s.on_trade(_trade(4, 106, 21)) == ""  # held
    assert s.on_gap(_gap("backfilled", 102, 104, backfilled=3, first_seq=5, last_seq=7, seq=2)) == ""
    out += s.on_trade(_trade(5, 102, 50)) + s.on_trade(_trade(6, 103, 50))
    out += s.on_trade(_trade(7, 104, 50))  # the last one announced: everything goes out
    rows = _ids_and_times(out)
    assert [i for i, _ in rows] == list(range(100, 107))
    # the backfilled trades take the local time of the first live trade after them: never decreasing
    assert [t for _, t in rows] == [10, 11, 20, 20, 20, 20, 21]
    assert (c.trade_id_gaps, c.trades_missed, c.trades_backfilled, c.backfill_late) == (1, 3, 3, 0)
    assert s.last_written == ("106", 21)  # where a restart resumes: the file's last row
    assert s.on_trade(_trade(8, 107, 60)).count("\n") == 1  # no longer held


def test_a_backfill_of_nothing_ends_the_hold_at_once():
    s, c, _ = _stream()
    s.on_trade(_trade(1, 100, 10))
    s.on_gap(_gap("missing", 101, 101, backfill=True))
    assert s.on_trade(_trade(2, 102, 20)) == ""
    out = s.on_gap(_gap("backfilled", 101, 101, backfilled=0, seq=2))
    assert _ids_and_times(out) == [(102, 20)] and (c.trades_missed, c.trades_backfilled) == (1, 0)


def test_a_gap_without_backfill_is_counted_and_nothing_waits():
    s, c, _ = _stream()
    s.on_trade(_trade(1, 100, 10))
    s.on_gap(_gap("missing", 101, 150))
    assert _ids_and_times(s.on_trade(_trade(2, 151, 20))) == [(151, 20)]
    assert (c.trade_id_gaps, c.trades_missed) == (1, 50)


def test_a_hold_past_its_bound_is_written_and_a_late_backfill_follows_where_it_arrives():
    s, c, clock = _stream()
    s.on_trade(_trade(1, 100, 10))
    s.on_gap(_gap("missing", 101, 102, backfill=True))
    s.on_trade(_trade(2, 103, 20))
    assert s.catch_up() == ""  # (no ring here) still waiting
    clock.now = recorder.HOLD_S + 1
    assert _ids_and_times(s.catch_up()) == [(103, 20)]
    s.on_gap(_gap("backfilled", 101, 102, backfilled=2, first_seq=3, last_seq=4, seq=2))
    out = s.on_trade(_trade(3, 101, 90)) + s.on_trade(_trade(4, 102, 90))
    assert _ids_and_times(out) == [(101, 90), (102, 90)]
    assert (c.trades_backfilled, c.backfill_late) == (2, 2)


def test_a_stop_writes_what_is_held_and_the_parquet_rows_are_held_alike():
    s, c, _ = _stream(TupleRows("binance", "BTCUSDT"))
    s.on_trade(_trade(1, 100, 10))
    s.on_gap(_gap("missing", 101, 101, backfill=True))
    assert not s.on_trade(_trade(2, 102, 20))  # ("" or [] alike: nothing to add)
    assert [r[2] for r in s.catch_up(final=True)] == ["102"]


def test_a_gap_across_an_ingest_restart_is_held_in_the_new_epoch_and_repeats_are_dropped():
    s, c, _ = _stream()
    s.on_trade(_trade(1, 100, 10))
    s.on_trade(_trade(2, 101, 11))
    new = EPOCH + 1
    gap = _gap("missing", 100, 103, backfill=True)  # reaching back into what the last run published
    gap.epoch = new
    s.on_gap(gap)
    t = _trade(1, 104, 30)
    t.epoch = new
    assert s.on_trade(t) == ""  # held, in the new epoch
    done = _gap("backfilled", 100, 103, backfilled=4, first_seq=2, last_seq=5, seq=2)
    done.epoch = new
    s.on_gap(done)
    out = ""
    for seq, tid in zip(range(2, 6), range(100, 104)):
        t = _trade(seq, tid, 40)
        t.epoch = new
        out += s.on_trade(t)
    assert [i for i, _ in _ids_and_times(out)] == [102, 103, 104]
    assert c.duplicates == 2


def test_a_backfilled_marker_whose_missing_one_was_lost_is_still_counted():
    """A subscriber still reconnecting to a restarted ingest may miss the "missing" marker: the
    follow-up carries the same ids, so the gap is counted; its trades come after the live ones."""
    s, c, _ = _stream()
    s.on_trade(_trade(1, 100, 10))
    s.on_trade(_trade(2, 103, 11))  # (no hold: the marker never came)
    s.on_gap(_gap("backfilled", 101, 102, backfilled=2, first_seq=3, last_seq=4, seq=2))
    out = s.on_trade(_trade(3, 101, 20)) + s.on_trade(_trade(4, 102, 20))
    assert [i for i, _ in _ids_and_times(out)] == [101, 102]
    assert (c.trade_id_gaps, c.trades_missed, c.trades_backfilled, c.backfill_late) == (1, 2, 2, 2)
