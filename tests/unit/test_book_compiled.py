"""The compiled book (pipeline/_cbook.pyx) against the reference (pipeline/book.py): identical
deltas, views and sides after every call, on random operation sequences.  Real streams: every
replay and fuzz test runs the feed on both at once (tests/twinbook.py, tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from pipeline import book as book_mod
from pipeline.book import CompiledViewBook, PyViewBook

needs_compiled = pytest.mark.skipif(CompiledViewBook is None, reason=book_mod.BOOK_IMPLEMENTATION)

# a coarse grid (many collisions, inserts and deletes at the view's edge) plus some arbitrary prices
price = st.one_of(st.integers(1, 80).map(lambda i: i / 4), st.floats(0.01, 20.0, allow_nan=False))
size = st.one_of(st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.25]), st.floats(0.0, 1e9, allow_nan=False))
levels = st.lists(st.tuples(price, size), max_size=12)
op = st.one_of(
    st.tuples(st.just("apply"), levels, levels),
    st.tuples(st.just("apply"), levels, levels),
    st.tuples(st.just("apply"), levels, levels),
    st.tuples(st.just("load_snapshot"), levels, levels),
    st.tuples(st.just("replace"), levels, levels),
    st.tuples(st.just("trim"), st.integers(1, 12)),  # a venue cap is >= 1 (the reference treats 0 oddly)
    st.tuples(st.just("clear")),
)


def state(b) -> tuple:
    """Everything a caller can read from a book."""
    return (b.view(), b.view_arrays(), b.view_prices(), b.view_edges(), b.view_doubles(), b.is_crossed(), b.best_bid(), b.best_ask(),
            b.bids.prices, b.bids.sizes, b.asks.prices, b.asks.sizes, len(b.bids), len(b.asks),
            b.bids.top(7), b.asks.top(7), b.bids.worst_beyond(3), b.asks.worst_beyond(3))


@needs_compiled
@settings(max_examples=400, deadline=None)
@given(depth=st.integers(1, 10), ops=st.lists(op, max_size=30))
def test_compiled_and_python_books_give_identical_deltas_and_views(depth, ops):
    py, c = PyViewBook(depth), CompiledViewBook(depth)
    for name, *args in ops:
        out_py, out_c = getattr(py, name)(*args), getattr(c, name)(*args)
        assert out_py == out_c, (name, args)
        assert state(py) == state(c), (name, args)


@needs_compiled
def test_a_change_tuple_passes_into_the_delta_as_given():
    """Both books hand the caller's own level tuples on (a delta costs no new tuple per level)."""
    c = CompiledViewBook(3)
    c.load_snapshot([(10.0, 1.0), (9.0, 1.0)], [(11.0, 1.0)])
    change = (9.5, 2.0)
    (got,), _ = c.apply([change], [])
    assert got is change


def test_the_compiled_book_is_built_and_current_where_there_is_a_compiler():
    """`make test` builds it (setup.py); a missing or stale build would leave only the fallback tested."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the pure-Python book is the one that runs")
    assert CompiledViewBook is not None, book_mod.BOOK_IMPLEMENTATION
    assert book_mod.ViewBook is CompiledViewBook
    assert book_mod.BOOK_IMPLEMENTATION.startswith("compiled")


def test_L2P_BOOK_python_selects_the_pure_python_book():
    out = subprocess.run([sys.executable, "-c", "from pipeline import book; print(book.ViewBook.__module__, "
                          "book.BOOK_IMPLEMENTATION)"], capture_output=True, text=True, check=True,
                         env={**os.environ, "L2P_BOOK": "python"})
    assert out.stdout.split(None, 1) == ["pipeline.book", "pure Python (L2P_BOOK=python)\n"]


@needs_compiled
def test_a_build_older_than_its_source_is_not_used(tmp_path, monkeypatch):
    edited = tmp_path / "_cbook.pyx"
    edited.write_bytes(book_mod.CSOURCE.read_bytes() + b"\n# edited\n")
    monkeypatch.setattr(book_mod, "CSOURCE", edited)
    cls, why = book_mod._compiled_book()
    assert cls is None and "older than pipeline/_cbook.pyx" in why
