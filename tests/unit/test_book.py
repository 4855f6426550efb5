"""ViewBook deltas against a plain dict reference: snapshot + deltas == view."""

from hypothesis import given, settings, strategies as st

from pipeline.book import ViewBook

prices = st.integers(min_value=1, max_value=60).map(float)
sizes = st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5])
changes = st.lists(st.tuples(prices, sizes), max_size=8).map(lambda xs: list(dict(xs).items()))


def _apply(ref: dict, delta) -> None:
    for p, s in delta:
        if s == 0:
            ref.pop(p, None)
        else:
            ref[p] = s


@settings(max_examples=300, deadline=None)
@given(depth=st.integers(1, 10), snap_b=changes, snap_a=changes,
       steps=st.lists(st.tuples(changes, changes), max_size=40))
def test_deltas_rebuild_exact_view(depth, snap_b, snap_a, steps):
    vb = ViewBook(depth)
    # bids below 30, asks above 30 keep the book uncrossed (the book does not judge crossing)
    vb.load_snapshot([(p, s) for p, s in snap_b if p < 30], [(p + 30, s) for p, s in snap_a])
    bids, asks = vb.view()
    ref_b, ref_a = dict(bids), dict(asks)
    full_b = {p: s for p, s in snap_b if p < 30 and s > 0}
    full_a = {p + 30: s for p, s in snap_a if s > 0}
    for cb, ca in steps:
        cb = [(p, s) for p, s in cb if p < 30]
        ca = [(p + 30, s) for p, s in ca]
        db, da = vb.apply(cb, ca)
        _apply(ref_b, db)
        _apply(ref_a, da)
        _apply(full_b, cb)
        _apply(full_a, ca)
        vbids, vasks = vb.view()
        # the view is the top `depth` of the full reference book
        assert vbids == sorted(full_b.items(), reverse=True)[:depth]
        assert vasks == sorted(full_a.items())[:depth]
        # and snapshot + deltas reproduces it exactly, with nothing stale
        assert sorted(ref_b.items(), reverse=True) == vbids
        assert sorted(ref_a.items()) == vasks
        assert all(s > 0 for _, s in vbids + vasks)


def test_delete_of_unknown_level_is_ignored():
    vb = ViewBook(5)
    vb.load_snapshot([(10.0, 1.0)], [(11.0, 1.0)])
    assert vb.apply([(9.0, 0.0)], []) == ([], [])
    assert vb.view() == ([(10.0, 1.0)], [(11.0, 1.0)])


def test_level_leaving_the_view_gets_explicit_delete_and_entering_level_is_sent():
    vb = ViewBook(2)
    vb.load_snapshot([(10.0, 1.0), (9.0, 1.0), (8.0, 1.0)], [])
    db, _ = vb.apply([(11.0, 2.0)], [])           # 11 enters, 9 is pushed out
    assert sorted(db) == [(9.0, 0.0), (11.0, 2.0)]
    db, _ = vb.apply([(11.0, 0.0)], [])           # 11 leaves, 9 comes back in
    assert sorted(db) == [(9.0, 1.0), (11.0, 0.0)]
    db, _ = vb.apply([(7.0, 4.0)], [])            # beyond a full view: nothing to send
    assert db == []


books = st.tuples(changes, changes).map(lambda ba: ([(p, s) for p, s in ba[0] if p < 30 and s > 0],
                                                    [(p + 30, s) for p, s in ba[1] if s > 0]))


@settings(max_examples=200, deadline=None)
@given(depth=st.integers(1, 10), first=books, later=st.lists(books, max_size=15))
def test_replace_by_full_snapshots_gives_exact_deltas(depth, first, later):
    """Venues that send whole books (Hyperliquid l2Book): each replacement's delta
    applied to the consumer's copy gives exactly the view of the new snapshot."""
    vb = ViewBook(depth)
    vb.load_snapshot(*first)
    ref_b, ref_a = (dict(side) for side in vb.view())
    for bids, asks in later:
        db, da = vb.replace(bids, asks)
        _apply(ref_b, db)
        _apply(ref_a, da)
        fresh = ViewBook(depth)
        fresh.load_snapshot(bids, asks)
        assert vb.view() == fresh.view()
        assert sorted(ref_b.items(), reverse=True) == fresh.view()[0]
        assert sorted(ref_a.items()) == fresh.view()[1]


@settings(max_examples=200, deadline=None)
@given(depth=st.integers(1, 10), cap=st.integers(1, 10), snap=books,
       steps=st.lists(st.tuples(changes, changes), max_size=20))
def test_trim_to_venue_depth_keeps_exact_view(depth, cap, snap, steps):
    """A top-N venue (Bybit orderbook.N) sends no delete for levels leaving its N: the
    book trims itself after every update and the view deltas stay exact."""
    vb = ViewBook(depth)
    vb.load_snapshot(*snap)
    vb.trim(cap)
    ref_b, ref_a = (dict(side) for side in vb.view())
    # the venue's book is its top `cap` from the start: the reference is trimmed too
    full_b = dict(sorted(snap[0], reverse=True)[:cap])
    full_a = dict(sorted(snap[1])[:cap])
    for cb, ca in steps:
        cb = [(p, s) for p, s in cb if p < 30]
        ca = [(p + 30, s) for p, s in ca]
        for delta, ref in zip(vb.apply(cb, ca) + vb.trim(cap), (ref_b, ref_a, ref_b, ref_a)):
            _apply(ref, delta)
        _apply(full_b, cb)
        _apply(full_a, ca)
        full_b = dict(sorted(full_b.items(), reverse=True)[:cap])
        full_a = dict(sorted(full_a.items())[:cap])
        assert len(vb.bids) <= cap and len(vb.asks) <= cap
        assert vb.view()[0] == sorted(full_b.items(), reverse=True)[:depth]
        assert vb.view()[1] == sorted(full_a.items())[:depth]
        assert sorted(ref_b.items(), reverse=True) == vb.view()[0]
        assert sorted(ref_a.items()) == vb.view()[1]


def test_crossed_book_is_detected():
    vb = ViewBook(5)
    vb.load_snapshot([(10.0, 1.0)], [(11.0, 1.0)])
    assert not vb.is_crossed()
    vb.apply([(11.0, 1.0)], [])
    assert vb.is_crossed()
