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
