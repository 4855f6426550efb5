"""TwinBook: pipeline/book.py's pure-Python ViewBook and the compiled one, run side by side.

Every call goes to both; their results (deltas, views, prices, sizes, best levels) must be
equal, call for call, or the call raises AssertionError naming the method.  The compiled
result is returned, so what runs on top (the feed, the replays) runs on the fast path.
tests/conftest.py puts it under the feed in every replay and fuzz test.
"""

from __future__ import annotations

from pipeline.book import CompiledViewBook, PyViewBook


class _Twin:
    __slots__ = ("_py", "_c", "_name")

    def __init__(self, py, c, name: str):
        object.__setattr__(self, "_py", py)
        object.__setattr__(self, "_c", c)
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attr: str):
        a, b = getattr(self._py, attr), getattr(self._c, attr)
        where = f"{self._name}.{attr}"
        if attr in ("bids", "asks"):
            return _Twin(a, b, where)
        if not callable(a):
            assert a == b, f"{where}: python {a!r} != compiled {b!r}"
            return b

        def both(*args):
            ra, rb = a(*args), b(*args)
            assert ra == rb, f"{where}{args!r}: python {ra!r} != compiled {rb!r}"
            return rb

        return both

    def __len__(self) -> int:
        a, b = len(self._py), len(self._c)
        assert a == b, f"{self._name}: len {a} != {b}"
        return b


class TwinBook(_Twin):
    __slots__ = ()

    def __init__(self, depth: int):
        assert CompiledViewBook is not None, "the compiled book is not built (or stale): make"
        super().__init__(PyViewBook(depth), CompiledViewBook(depth), "ViewBook")
