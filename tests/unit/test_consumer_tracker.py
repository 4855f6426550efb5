"""BookTracker: snapshots replace, deltas apply by seq, gaps and new epochs resync."""

import numpy as np

from pipeline.consumer import Applied, BookTracker
from pipeline.schema import L2Update
from pipeline.shm import BookSnapshot, BookState


def l2(seq, epoch=1, snapshot=False, bids=(), asks=()):
    return L2Update(exchange="e", symbol="s", epoch=epoch, seq=seq, ts_exchange=0, ts_received=0,
                    snapshot=snapshot, state="live", depth=5, bids=list(bids), asks=list(asks))


def shm(seq, epoch=1, bids=((10.0, 1.0),), asks=((11.0, 1.0),)):
    return BookSnapshot("e", "s", epoch, seq, BookState.LIVE, 0, 0, 0, np.array(bids), np.array(asks))


def test_delta_before_any_snapshot_asks_for_resync():
    t = BookTracker("e", "s")
    assert t.apply(l2(5, bids=[(10.0, 2.0)])) is Applied.RESYNC


def test_shm_snapshot_then_newer_deltas_only():
    t = BookTracker("e", "s")
    t.load_shm(shm(5))
    assert t.apply(l2(4, bids=[(10.0, 9.0)])) is Applied.OLD
    assert t.apply(l2(5, bids=[(10.0, 9.0)])) is Applied.OLD
    assert t.apply(l2(6, bids=[(10.0, 2.0), (9.0, 1.0)], asks=[(11.0, 0.0)])) is Applied.APPLIED
    assert t.book.top() == ([(10.0, 2.0), (9.0, 1.0)], [])


def test_gap_and_new_epoch_resync():
    t = BookTracker("e", "s")
    t.load_shm(shm(5))
    assert t.apply(l2(7)) is Applied.RESYNC and t.gaps == 1
    t.load_shm(shm(7))
    assert t.apply(l2(8)) is Applied.APPLIED
    assert t.apply(l2(9, epoch=2)) is Applied.RESYNC


def test_snapshot_message_replaces_the_book():
    t = BookTracker("e", "s")
    assert t.apply(l2(3, snapshot=True, bids=[(1.0, 1.0)])) is Applied.APPLIED
    assert t.apply(l2(4, bids=[(2.0, 1.0)])) is Applied.APPLIED
    assert t.apply(l2(5, snapshot=True, asks=[(3.0, 1.0)])) is Applied.APPLIED
    assert t.book.top() == ([], [(3.0, 1.0)])


def test_new_epoch_snapshot_counts_as_a_resync():
    t = BookTracker("e", "s")
    t.load_shm(shm(5))
    assert t.apply(l2(1, epoch=2, snapshot=True, bids=[(1.0, 1.0)])) is Applied.APPLIED
    assert t.resyncs == 2 and t.book.epoch == 2 and t.book.seq == 1


def test_book_top_of_book_figures():
    from pipeline.consumer import Book

    b = Book("e", "s")
    assert (b.best_bid(), b.best_ask(), b.mid(), b.spread(), b.microprice()) == (None, None, None, None, None)
    b.bids = {100.0: 3.0, 99.0: 10.0}
    assert b.mid() is None and b.spread() is None and b.microprice() is None  # one side empty
    b.asks = {101.0: 1.0, 102.0: 5.0}
    assert b.best_bid() == (100.0, 3.0) and b.best_ask() == (101.0, 1.0)
    assert b.mid() == 100.5
    assert b.spread() == 1.0
    # size-weighted: the bigger bid queue pulls the price toward the ask
    assert b.microprice() == (100.0 * 1.0 + 101.0 * 3.0) / 4.0 == 100.75
    b.asks[101.0] = 3.0
    assert b.microprice() == b.mid()  # equal sizes: the mid


def test_a_symbol_given_as_a_string_is_a_clear_error():
    """symbols="BTCUSDT" would otherwise subscribe to the letters B, T, C..."""
    import pytest

    from pipeline.config import load_config
    from pipeline.consumer import Consumer

    with pytest.raises(TypeError, match=r"symbols must be a list of names, e.g. \['BTCUSDT'\]"):
        Consumer(load_config(None), symbols="BTCUSDT")
