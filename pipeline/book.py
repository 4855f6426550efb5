"""Full L2 book per symbol and the exact delta of its top-N view.  Pure: no I/O.

The full book keeps, per side, two parallel Python lists: prices sorted ascending and
their sizes.  That layout is the fastest measured here for "apply ~20 level changes
and take the top 50" (shared/docs/building-block-costs.md section 3: 11 us vs 20 us
for sortedcontainers and 24 us for per-level numpy).  Asks keep their best level at
the front, bids at the back, so both sides take their top N with one C-level slice
and no per-level arithmetic, and most inserts and deletes (near the top) move few
list items.

The *view* is the top ``depth`` levels, best first.  ``apply`` returns the exact
difference of the view: every level inside the view whose size changed, and an
explicit size-0 delete for every level that left it (DESIGN.md "The path of one
message").  So snapshot + deltas == view, nothing stale.  Levels beyond the venue's
snapshot depth are unknown, so only the top ``depth`` is ever published.
"""

from __future__ import annotations

import hashlib
import os
import struct
from bisect import bisect_left
from pathlib import Path
from typing import Iterable, Sequence

Level = tuple[float, float]
_DOUBLES: dict[int, struct.Struct] = {}


def _doubles(n: int) -> struct.Struct:
    s = _DOUBLES.get(n)
    if s is None:
        s = _DOUBLES[n] = struct.Struct(f"{n}d")
    return s


class AskSide:
    """Asks: prices ascending, best (lowest) first; sizes by price."""

    __slots__ = ("prices", "size")
    is_bid = False

    def __init__(self) -> None:
        self.prices: list[float] = []
        self.size: dict[float, float] = {}

    def load(self, levels: Iterable[Level]) -> None:
        """Replace the side with ``levels`` (any order); zero sizes are skipped."""
        self.size = {p: s for p, s in levels if s > 0.0}
        self.prices = sorted(self.size)

    def apply(self, levels: Iterable[Level]) -> bool:
        """Set absolute sizes (0 deletes; deleting an unknown level is a no-op).

        A modify (two thirds of real changes) is one dict store; only inserts and
        deletes touch the sorted price list.  Sizes are never negative (adapters reject
        them), so a size's truth value says "set" or "delete".  Returns whether any level
        was added or removed (if not, the set of prices in the view is unchanged).
        """
        prices, size = self.prices, self.size
        moved = False
        for p, s in levels:
            if p in size:
                if s:
                    size[p] = s
                else:
                    del size[p]
                    del prices[bisect_left(prices, p)]
                    moved = True
            elif s:
                size[p] = s
                prices.insert(bisect_left(prices, p), p)
                moved = True
        return moved

    def top_prices(self, n: int) -> list[float]:
        return self.prices[:n]

    def top(self, n: int) -> tuple[list[float], list[float]]:
        px = self.top_prices(n)
        size = self.size
        return px, [size[p] for p in px]

    @property
    def sizes(self) -> list[float]:
        """Sizes in the order of ``prices`` (for tests and dumps; not the hot path)."""
        return [self.size[p] for p in self.prices]

    def best(self) -> Level | None:
        return (self.prices[0], self.size[self.prices[0]]) if self.prices else None

    def worst_beyond(self, n: int) -> list[float]:
        """Prices of the levels past the best ``n`` (what a top-``n`` venue no longer holds)."""
        return self.prices[n:]

    def changes_to(self, levels: Iterable[Level]) -> list[Level]:
        """The absolute level changes that turn this side into ``levels`` (0 = delete)."""
        new = {p: s for p, s in levels if s > 0.0}
        old = self.size
        changes = [(p, 0.0) for p in self.prices if p not in new]
        changes += [(p, s) for p, s in new.items() if old.get(p) != s]
        return changes

    def __len__(self) -> int:
        return len(self.prices)


class BidSide(AskSide):
    """Bids: prices ascending too, best (highest) at the back."""

    __slots__ = ()
    is_bid = True

    def top_prices(self, n: int) -> list[float]:
        return self.prices[:-n - 1:-1]

    def best(self) -> Level | None:
        return (self.prices[-1], self.size[self.prices[-1]]) if self.prices else None

    def worst_beyond(self, n: int) -> list[float]:
        return self.prices[:-n] if len(self.prices) > n else []


class ViewBook:
    """A full book plus its published top-``depth`` view, with exact view deltas.

    The view is kept as prices only (best first); its sizes are read from the sides
    when the view is read (shared memory is written once per batch, not per update)."""

    __slots__ = ("depth", "bids", "asks", "_view_px")

    def __init__(self, depth: int):
        self.depth = depth
        self.bids = BidSide()
        self.asks = AskSide()
        # the view's prices as last returned, best first: [bids, asks]
        self._view_px: list[list[float]] = [[], []]

    def clear(self) -> None:
        """Forget everything (a new book never merges into an old one)."""
        self.bids = BidSide()
        self.asks = AskSide()
        self._view_px = [[], []]

    def load_snapshot(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Replace the whole book with a snapshot and reset the view to its top."""
        self.bids.load(bids)
        self.asks.load(asks)
        n = self.depth
        self._view_px = [self.bids.top_prices(n), self.asks.top_prices(n)]

    def apply(self, bids: Sequence[Level], asks: Sequence[Level]) -> tuple[list[Level], list[Level]]:
        """Apply absolute level changes; return the (bids, asks) delta of the view."""
        return self._apply_side(0, self.bids, bids), self._apply_side(1, self.asks, asks)

    def _apply_side(self, idx: int, side: AskSide, changes: Sequence[Level]) -> list[Level]:
        # The ingest's hot path: comparisons are written out per side, no call per level.
        # "Beyond" the view's last price w means p < w for bids, p > w for asks.
        if not changes:
            return []
        moved = side.apply(changes)
        is_bid = side.is_bid
        old_px = self._view_px[idx]
        n = self.depth
        # Changes strictly beyond a full view's last level cannot change the view:
        # an insert there stays outside, a delete there pulls nothing in.
        if old_px and (len(old_px) == n or not moved):
            worst = old_px[-1]
            if (max(changes)[0] < worst) if is_bid else (min(changes)[0] > worst):
                return []
        if not moved:
            # No level was added or removed: every change was a modify of an existing
            # level (s > 0) or a delete of an unknown one (s == 0, a no-op).  The view's
            # prices are the same; the delta is the modifies inside it, in order.
            if not old_px:
                return []
            worst = old_px[-1]
            if is_bid:
                return [c for c in changes if c[1] and c[0] >= worst]
            return [c for c in changes if c[1] and c[0] <= worst]
        new_px = side.top_prices(n)
        self._view_px[idx] = new_px
        # Levels were added or removed.  The delta needs only the changes and the
        # view's boundary, not a walk over all N levels:
        # - a change inside the new view: its new size (0 = delete);
        # - old levels beyond the new last level were pushed out: deletes;
        # - new levels beyond the old last level were pulled in: their sizes.
        # A price may appear twice (same final value) or as a delete of a level the
        # consumer never had; applying the list in order is exact either way.
        if len(new_px) == n:
            w = new_px[-1]
            if is_bid:
                delta = [c for c in changes if c[0] >= w]
                for p in reversed(old_px):
                    if p >= w:
                        break
                    delta.append((p, 0.0))
            else:
                delta = [c for c in changes if c[0] <= w]
                for p in reversed(old_px):
                    if p <= w:
                        break
                    delta.append((p, 0.0))
        else:  # the whole side fits in the view: every change is inside it
            delta = list(changes)
        if len(old_px) == n:  # only a full old view can have had levels below it
            ow = old_px[-1]
            i = len(new_px) - 1
            size = side.size
            if is_bid:
                while i >= 0 and new_px[i] < ow:
                    delta.append((new_px[i], size[new_px[i]]))
                    i -= 1
            else:
                while i >= 0 and new_px[i] > ow:
                    delta.append((new_px[i], size[new_px[i]]))
                    i -= 1
        return delta

    def replace(self, bids: Iterable[Level], asks: Iterable[Level]) -> tuple[list[Level], list[Level]]:
        """Make the book equal to a full snapshot; return the exact view delta.

        For venues that send whole books (every Hyperliquid ``l2Book``, Bybit's resent
        snapshots): consumers get a delta, not a new snapshot, and the result is the
        same as ``clear`` + ``load_snapshot``.
        """
        return self.apply(self.bids.changes_to(bids), self.asks.changes_to(asks))

    def trim(self, cap: int) -> tuple[list[Level], list[Level]]:
        """Drop levels past the best ``cap`` per side (a top-N venue sends no deletes for
        levels that fall out of its N, exchange-protocols.md section 4 rule 6); returns
        the view delta (empty unless the view is deeper than ``cap``)."""
        db = self._apply_side(0, self.bids, [(p, 0.0) for p in self.bids.worst_beyond(cap)]) \
            if len(self.bids) > cap else []
        da = self._apply_side(1, self.asks, [(p, 0.0) for p in self.asks.worst_beyond(cap)]) \
            if len(self.asks) > cap else []
        return db, da

    def is_crossed(self) -> bool:
        """Best bid at or above best ask: the book is wrong (a missed update)."""
        b, a = self.bids.prices, self.asks.prices
        return bool(b and a and b[-1] >= a[0])

    def view(self) -> tuple[list[Level], list[Level]]:
        """The current top-``depth`` view, best first, as (price, size) lists."""
        bs, as_ = self.bids.size, self.asks.size
        return [(p, bs[p]) for p in self._view_px[0]], [(p, as_[p]) for p in self._view_px[1]]

    def view_prices(self) -> tuple[list[float], list[float]]:
        """The view's prices as last returned by ``apply``, best first: (bids, asks) (do not mutate)."""
        return self._view_px[0], self._view_px[1]

    def view_doubles(self) -> tuple[int, int, bytes, bytes, bytes, bytes]:
        """(bid levels, ask levels, bid prices, bid sizes, ask prices, ask sizes), the four arrays as
        native doubles (bytes), best first: what shared memory holds (pipeline/shm.py)."""
        bp, bs, ap, as_ = self.view_arrays()
        nb, na = len(bp), len(ap)
        fb, fa = _doubles(nb), _doubles(na)
        return nb, na, fb.pack(*bp), fb.pack(*bs), fa.pack(*ap), fa.pack(*as_)

    def view_edges(self) -> tuple[int, float, int, float]:
        """(levels, last price) of the view per side: bids, then asks (0.0 for an empty side)."""
        bp, ap = self._view_px
        return len(bp), bp[-1] if bp else 0.0, len(ap), ap[-1] if ap else 0.0

    def view_arrays(self) -> tuple[list[float], list[float], list[float], list[float]]:
        """The view as bid prices, bid sizes, ask prices, ask sizes, best first (do not mutate)."""
        bp, ap = self._view_px
        bs, as_ = self.bids.size, self.asks.size
        return bp, [bs[p] for p in bp], ap, [as_[p] for p in ap]

    def best_bid(self) -> Level | None:
        return self.bids.best()

    def best_ask(self) -> Level | None:
        return self.asks.best()


# ------------------------------------------------------------------ which book runs
# pipeline/_cbook.pyx is the same ViewBook compiled with Cython (setup.py builds it at install;
# tests/unit/test_book_compiled.py proves both give identical views and deltas).  The name
# ``ViewBook`` is the compiled one when it is built and current, else the class above, which
# stays importable as ``PyViewBook``.  ``L2P_BOOK=python`` forces the pure-Python one.
PyViewBook = ViewBook
CSOURCE = Path(__file__).with_name("_cbook.pyx")


def _compiled_book() -> tuple[type | None, str]:
    """(the compiled ViewBook or None, why not / what it is)."""
    if os.environ.get("L2P_BOOK", "").lower() == "python":
        return None, "pure Python (L2P_BOOK=python)"
    try:
        from pipeline import _cbook
    except ImportError as exc:
        return None, f"pure Python (the compiled book is not built: {exc})"
    if CSOURCE.exists() and hashlib.sha256(CSOURCE.read_bytes()).hexdigest() != _cbook.SOURCE_SHA256:
        return None, "pure Python (the compiled book is older than pipeline/_cbook.pyx: run `make`)"
    return _cbook.ViewBook, "compiled (Cython, pipeline/_cbook.pyx)"


CompiledViewBook, BOOK_IMPLEMENTATION = _compiled_book()
if CompiledViewBook is not None:
    ViewBook = CompiledViewBook  # type: ignore[misc]  # noqa: F811
