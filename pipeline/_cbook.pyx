# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The compiled ViewBook: the same behaviour as pipeline/book.py, with each side in C arrays.

pipeline/book.py is the reference (and what runs when this extension was not built);
tests/unit/test_book_compiled.py checks that both give identical views and deltas, call
for call, on random and real streams.  What differs is only the layout:

- each side is two C arrays of doubles (keys ascending, sizes), best level at the END, so
  inserts and deletes near the top move few items (one memmove);
- the key of a level is its price for bids and minus its price for asks (exact in binary
  floating point), so "better" is "larger key" on both sides and one code path serves both;
- a level is found by binary search on the keys: no Python dict, no Python float per level.

The delta algorithm is pipeline/book.py's ``ViewBook._apply_side``, step for step, on keys;
the changes that pass into a delta are the caller's own tuples, as there.
"""

from libc.stdlib cimport malloc, realloc, free, qsort
from libc.string cimport memmove, memcpy
from libc.math cimport INFINITY

cdef extern from *:
    """
    #ifndef L2P_SOURCE_SHA256
    #define L2P_SOURCE_SHA256 ""
    #endif
    """
    const char* L2P_SOURCE_SHA256

# sha256 of this file as built (setup.py passes it): pipeline/book.py refuses a stale build
SOURCE_SHA256 = L2P_SOURCE_SHA256.decode("ascii")


cdef struct Entry:
    double k
    double v
    Py_ssize_t i


cdef int _cmp_entry(const void* a, const void* b) noexcept nogil:
    cdef const Entry* x = <const Entry*>a
    cdef const Entry* y = <const Entry*>b
    if x.k < y.k:
        return -1
    if x.k > y.k:
        return 1
    return -1 if x.i < y.i else (1 if x.i > y.i else 0)


cdef class CSide:
    """One side of a book (see the module docstring for the layout)."""

    cdef double* k
    cdef double* v
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef double sign
    cdef readonly bint is_bid

    def __cinit__(self, bint is_bid):
        self.is_bid = is_bid
        self.sign = 1.0 if is_bid else -1.0
        self.n = 0
        self.cap = 64
        self.k = <double*>malloc(self.cap * sizeof(double))
        self.v = <double*>malloc(self.cap * sizeof(double))
        if self.k is NULL or self.v is NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.k)
        free(self.v)

    cdef int _reserve(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self.cap
        cdef double* k
        cdef double* v
        if need <= cap:
            return 0
        while cap < need:
            cap *= 2
        k = <double*>realloc(self.k, cap * sizeof(double))
        if k is NULL:
            raise MemoryError()
        self.k = k
        v = <double*>realloc(self.v, cap * sizeof(double))
        if v is NULL:
            raise MemoryError()
        self.v = v
        self.cap = cap
        return 0

    cdef inline Py_ssize_t _lower(self, double key) noexcept nogil:
        """First index whose key is >= ``key``."""
        cdef Py_ssize_t lo = 0, hi = self.n, mid
        cdef double* k = self.k
        while lo < hi:
            mid = (lo + hi) >> 1
            if k[mid] < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def load(self, levels):
        """Replace the side with ``levels`` (any order; the last size of a price wins); zero sizes skipped."""
        cdef list items = [lv for lv in levels]
        cdef Py_ssize_t m = len(items), i, j = 0, out = 0
        cdef double p, s
        cdef Entry* e = <Entry*>malloc((m if m else 1) * sizeof(Entry))
        if e is NULL:
            raise MemoryError()
        try:
            for i in range(m):
                p, s = items[i]
                if s > 0.0:
                    e[j].k = self.sign * p
                    e[j].v = s
                    e[j].i = i
                    j += 1
            qsort(e, j, sizeof(Entry), _cmp_entry)
            self._reserve(j)
            for i in range(j):
                if i + 1 < j and e[i + 1].k == e[i].k:
                    continue  # a later level of the same price wins
                self.k[out] = e[i].k
                self.v[out] = e[i].v
                out += 1
            self.n = out
        finally:
            free(e)

    cdef bint _apply(self, changes) except -1:
        """Set absolute sizes (0 deletes; deleting an unknown level is a no-op); True if a
        level was added or removed."""
        cdef double p, s, key
        cdef Py_ssize_t i
        cdef bint moved = False
        for c in changes:
            p, s = c
            key = self.sign * p
            i = self._lower(key)
            if i < self.n and self.k[i] == key:
                if s != 0.0:
                    self.v[i] = s
                else:
                    memmove(&self.k[i], &self.k[i + 1], (self.n - i - 1) * sizeof(double))
                    memmove(&self.v[i], &self.v[i + 1], (self.n - i - 1) * sizeof(double))
                    self.n -= 1
                    moved = True
            elif s != 0.0:
                if self.n == self.cap:
                    self._reserve(self.n + 1)
                memmove(&self.k[i + 1], &self.k[i], (self.n - i) * sizeof(double))
                memmove(&self.v[i + 1], &self.v[i], (self.n - i) * sizeof(double))
                self.k[i] = key
                self.v[i] = s
                self.n += 1
                moved = True
        return moved

    def apply(self, levels):
        return self._apply(levels)

    def top(self, Py_ssize_t n):
        """(prices, sizes) of the best ``n`` levels, best first."""
        cdef Py_ssize_t m = min(n, self.n), i
        cdef list px = [], sz = []
        for i in range(self.n - 1, self.n - 1 - m, -1):
            px.append(self.sign * self.k[i])
            sz.append(self.v[i])
        return px, sz

    def top_prices(self, Py_ssize_t n):
        return self.top(n)[0]

    @property
    def prices(self):
        """Prices ascending (as pipeline/book.py's sides keep them)."""
        cdef Py_ssize_t i
        if self.is_bid:
            return [self.k[i] for i in range(self.n)]
        return [-self.k[i] for i in range(self.n - 1, -1, -1)]

    @property
    def sizes(self):
        """Sizes in the order of ``prices``."""
        cdef Py_ssize_t i
        if self.is_bid:
            return [self.v[i] for i in range(self.n)]
        return [self.v[i] for i in range(self.n - 1, -1, -1)]

    def best(self):
        if not self.n:
            return None
        return (self.sign * self.k[self.n - 1], self.v[self.n - 1])

    def worst_beyond(self, Py_ssize_t n):
        """Prices of the levels past the best ``n``, ascending."""
        cdef Py_ssize_t i, rest = self.n - n
        if rest <= 0:
            return []
        if self.is_bid:
            return [self.k[i] for i in range(rest)]
        return [-self.k[i] for i in range(rest - 1, -1, -1)]

    def changes_to(self, levels):
        """The absolute level changes that turn this side into ``levels`` (0 = delete)."""
        cdef dict new = {p: s for p, s in levels if s > 0.0}
        cdef list changes = []
        cdef Py_ssize_t i, j
        cdef double p
        rng = range(self.n) if self.is_bid else range(self.n - 1, -1, -1)
        for i in rng:
            p = self.sign * self.k[i]
            if p not in new:
                changes.append((p, 0.0))
        for q, s in new.items():
            j = self._lower(self.sign * q)
            if not (j < self.n and self.k[j] == self.sign * q and self.v[j] == s):
                changes.append((q, s))
        return changes

    def __len__(self):
        return self.n


cdef class ViewBook:
    """pipeline/book.py's ViewBook, compiled (module docstring)."""

    cdef readonly Py_ssize_t depth
    cdef readonly CSide bids
    cdef readonly CSide asks
    cdef double* _vk[2]        # the view's keys as last returned, best first: [bids, asks]
    cdef Py_ssize_t _vn[2]

    def __cinit__(self, Py_ssize_t depth):
        self._vk[0] = <double*>malloc((depth if depth > 0 else 1) * sizeof(double))
        self._vk[1] = <double*>malloc((depth if depth > 0 else 1) * sizeof(double))
        if self._vk[0] is NULL or self._vk[1] is NULL:
            raise MemoryError()

    def __init__(self, Py_ssize_t depth):
        self.depth = depth
        self.bids = CSide(True)
        self.asks = CSide(False)
        self._vn[0] = self._vn[1] = 0

    def __dealloc__(self):
        free(self._vk[0])
        free(self._vk[1])

    cdef void _take_view(self, int idx, CSide side) noexcept:
        cdef Py_ssize_t m = min(self.depth, side.n), i
        cdef double* vk = self._vk[idx]
        for i in range(m):
            vk[i] = side.k[side.n - 1 - i]
        self._vn[idx] = m

    def clear(self):
        """Forget everything (a new book never merges into an old one)."""
        self.bids = CSide(True)
        self.asks = CSide(False)
        self._vn[0] = self._vn[1] = 0

    def load_snapshot(self, bids, asks):
        """Replace the whole book with a snapshot and reset the view to its top."""
        self.bids.load(bids)
        self.asks.load(asks)
        self._take_view(0, self.bids)
        self._take_view(1, self.asks)

    def apply(self, bids, asks):
        """Apply absolute level changes; return the (bids, asks) delta of the view."""
        return self._apply_side(0, self.bids, bids), self._apply_side(1, self.asks, asks)

    cdef list _apply_side(self, int idx, CSide side, changes):
        cdef Py_ssize_t n = self.depth, on, nn, i
        cdef double sign = side.sign, w, ow, key, best
        cdef double* ov
        cdef double* nv
        cdef list delta
        cdef bint moved
        if not changes:
            return []
        moved = side._apply(changes)
        on = self._vn[idx]
        ov = self._vk[idx]
        # Changes strictly beyond a full view's last level cannot change the view.
        if on and (on == n or not moved):
            w = ov[on - 1]
            best = -INFINITY
            for c in changes:
                key = sign * <double>c[0]
                if key > best:
                    best = key
            if best < w:
                return []
        if not moved:
            # every change was a modify of an existing level or a delete of an unknown
            # one: the view's prices are the same; the delta is the modifies inside it
            if not on:
                return []
            w = ov[on - 1]
            return [c for c in changes if c[1] and sign * <double>c[0] >= w]
        # levels were added or removed: the new view, then the delta from the boundary
        nn = min(n, side.n)
        nv = <double*>malloc((nn if nn else 1) * sizeof(double))
        if nv is NULL:
            raise MemoryError()
        try:
            for i in range(nn):
                nv[i] = side.k[side.n - 1 - i]
            if nn == n:
                w = nv[n - 1]
                delta = [c for c in changes if sign * <double>c[0] >= w]
                for i in range(on - 1, -1, -1):
                    if ov[i] >= w:
                        break
                    delta.append((sign * ov[i], 0.0))
            else:  # the whole side fits in the view: every change is inside it
                delta = list(changes)
            if on == n:  # only a full old view can have had levels below it
                ow = ov[on - 1]
                i = nn - 1
                while i >= 0 and nv[i] < ow:
                    delta.append((sign * nv[i], side.v[side.n - 1 - i]))
                    i -= 1
            memcpy(ov, nv, nn * sizeof(double))
            self._vn[idx] = nn
        finally:
            free(nv)
        return delta

    def replace(self, bids, asks):
        """Make the book equal to a full snapshot; return the exact view delta."""
        return self.apply(self.bids.changes_to(bids), self.asks.changes_to(asks))

    def trim(self, Py_ssize_t cap):
        """Drop levels past the best ``cap`` per side; return the view delta."""
        db = self._apply_side(0, self.bids, [(p, 0.0) for p in self.bids.worst_beyond(cap)]) \
            if self.bids.n > cap else []
        da = self._apply_side(1, self.asks, [(p, 0.0) for p in self.asks.worst_beyond(cap)]) \
            if self.asks.n > cap else []
        return db, da

    def is_crossed(self):
        """Best bid at or above best ask: the book is wrong (a missed update)."""
        cdef CSide b = self.bids, a = self.asks
        return bool(b.n and a.n and b.k[b.n - 1] >= -a.k[a.n - 1])

    cdef tuple _view_side(self, int idx, CSide side):
        # the view is always the side's top (as in pipeline/book.py): read it from there
        cdef Py_ssize_t m = self._vn[idx], i
        cdef list px = [], sz = []
        for i in range(m):
            px.append(side.sign * side.k[side.n - 1 - i])
            sz.append(side.v[side.n - 1 - i])
        return px, sz

    def view(self):
        """The current top-``depth`` view, best first, as (price, size) lists."""
        bp, bs = self._view_side(0, self.bids)
        ap, as_ = self._view_side(1, self.asks)
        return list(zip(bp, bs)), list(zip(ap, as_))

    def view_arrays(self):
        """The view as bid prices, bid sizes, ask prices, ask sizes, best first."""
        bp, bs = self._view_side(0, self.bids)
        ap, as_ = self._view_side(1, self.asks)
        return bp, bs, ap, as_

    def view_doubles(self):
        """(bid levels, ask levels, bid prices, bid sizes, ask prices, ask sizes), the four arrays as
        native doubles (bytes), best first: what shared memory holds (pipeline/shm.py)."""
        cdef Py_ssize_t nb = self._vn[0], na = self._vn[1], i
        cdef CSide b = self.bids, a = self.asks
        cdef Py_ssize_t m = nb if nb > na else na
        cdef double* t = <double*>malloc((4 * m if m else 1) * sizeof(double))
        if t is NULL:
            raise MemoryError()
        try:
            for i in range(nb):
                t[i] = b.k[b.n - 1 - i]
                t[m + i] = b.v[b.n - 1 - i]
            for i in range(na):
                t[2 * m + i] = -a.k[a.n - 1 - i]
                t[3 * m + i] = a.v[a.n - 1 - i]
            return (nb, na, (<char*>t)[:nb * 8], (<char*>(t + m))[:nb * 8],
                    (<char*>(t + 2 * m))[:na * 8], (<char*>(t + 3 * m))[:na * 8])
        finally:
            free(t)

    def view_prices(self):
        """The view's prices as last returned by apply, best first: (bids, asks)."""
        cdef Py_ssize_t i
        return ([self._vk[0][i] for i in range(self._vn[0])],
                [-self._vk[1][i] for i in range(self._vn[1])])

    def view_edges(self):
        """(levels, last price) of the view per side: bids, then asks (0.0 for an empty side)."""
        cdef Py_ssize_t nb = self._vn[0], na = self._vn[1]
        return (nb, self._vk[0][nb - 1] if nb else 0.0, na, -self._vk[1][na - 1] if na else 0.0)

    def best_bid(self):
        return self.bids.best()

    def best_ask(self):
        return self.asks.best()
