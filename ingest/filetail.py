"""The file-tailing transport of an ingest process (the runner family).  Names no venue.

For adapters whose ``traits.transport`` is ``"files"``: a source that writes its events to
hourly files on this machine (a blockchain node's output directory) instead of serving them
over a socket.  ``FileRunner`` (a ``Runner``: the same stats, republish and REST code) does
what the WebSocket runner does for connections:

1. Bootstrap: the adapter's snapshot, either asked of the source over HTTP
   (``adapter.bootstrap_request()``, after which the source has written it to
   ``adapter.bootstrap_path()``) or read from that path directly (a replay).  The adapter
   decodes it and says from which line id (block) on the files apply.
2. Positioning: in each ``FileStream`` (``root/YYYYMMDD/H``, hours with or without zero
   padding) the first line after the snapshot's id is found by a binary search over byte
   offsets (lines are in id order; the adapter reads an id from a line's first bytes), in the
   newest hour file that starts at or before it.  A multi-gigabyte hour file costs a few dozen
   reads, not a scan.
3. Tailing: every ``poll_interval_s`` each stream reads what was appended, up to a bound per
   turn; complete lines go to ``adapter.parse_line`` and the events to the feed; a partial last
   line waits for its newline (never parsed).  At the end of what was written the adapter is
   told (``end_of_batch``: a block-per-several-lines layout closes its block).  When a newer
   hour file exists, the current one is drained to its end first, then the reader moves to the
   next hour in order; a partial line left at the end of an hour is counted and dropped.
4. Resync: the feed's resubscribe requests (a gap, an unknown order, a failed check) and the
   adapter's ``lost()`` lead to a fresh snapshot (or, after a failed check, the checked one
   again, ``adapter.rebuild_from_check``); the streams marked ``rewind`` are re-positioned after
   its id, the others read on.
5. Checks: every ``snapshot_check_interval_s`` a fresh snapshot is fetched and handed to the
   adapter to compare when its books reach that id.  Meanwhile the ``rewind`` streams are not
   read (the others are), so the snapshot cannot be older than the books: the source writes on,
   and the tail catches up after.

6. Runtime streams (issue 14): ``add_symbols`` tells the feed the new symbols are connected
   and the adapter follows them: it keeps their lines from the next block on
   (``adapter.pending_coins()``), and a task beside the tail takes a snapshot for them while the
   tail reads on for the other symbols (a mainnet L4 snapshot takes seconds: nothing waits for
   it); the adapter starts each new book from it and the kept lines
   (``adapter.offer_coin_snapshot``), asking again when it came too old.  ``remove_symbols`` has
   the adapter drop them.  A new symbol is checked against the symbols of the source's last
   snapshot.  Snapshots are taken one at a time (the source writes them to one path).

Why polling and not inotify: a poll of a few files every 10 ms costs a few fstat-free reads
that return nothing (~microseconds), adds at most 10 ms to a tail lag that the status shows,
and works the same on every filesystem (inotify misses writes made through NFS or a bind
mount from another namespace, where nodes often keep their data).

Status (shm process stats): ``frames`` counts lines, ``source_lag_us`` the last line's
event -> written time (a node: block -> gossiped to us and written), ``tail_lag_us`` written ->
read, ``backlog_bytes`` what is written but not read yet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import aiohttp

from ingest.events import DepthConnected, FileStream, Malformed, Unknown
from ingest.feed import P
from ingest.retry import backoff
from ingest.runner import Runner
from pipeline.errors import MalformedFrame, UnknownFrame

log = logging.getLogger(__name__)

READ_BYTES = 4 << 20          # read at most this much of one stream per turn (others get the loop)
ROLLOVER_CHECK_S = 0.2        # at the end of a file, look for the next hour this often
HEAD_BYTES = 512              # the first bytes of a line that carry its id
SNAPSHOT_READ_TIMEOUT = 120.0  # a node writes a large snapshot; wait this long for the POST


def hour_files(root: Path) -> list[Path]:
    """``root/YYYYMMDD/H`` files in time order (hours sort as numbers: 9 before 10)."""
    out = []
    try:
        days = [d for d in os.scandir(root) if d.is_dir() and d.name.isdigit()]
    except FileNotFoundError:
        return []
    for d in days:
        try:
            for h in os.scandir(d.path):
                if h.is_file() and h.name.isdigit():
                    out.append((d.name, int(h.name), Path(h.path)))
        except FileNotFoundError:
            continue
    return [p for _, _, p in sorted(out)]


def hour_key(path: Path) -> tuple[str, int]:
    return path.parent.name, int(path.name)


class Tail:
    """One FileStream: the open hour file, the read offset, the partial line."""

    def __init__(self, stream: FileStream, line_id):
        self.stream = stream
        self.line_id = line_id
        self.path: Path | None = None
        self.file = None
        self.offset = 0
        self.partial = b""
        self.partial_dropped = 0   # partial lines left at the end of an hour
        self._next_check = 0.0

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def _open(self, path: Path, offset: int) -> None:
        self.close()
        self.path = path
        self.file = open(path, "rb")
        self.file.seek(offset)
        self.offset = offset
        self.partial = b""

    # ------------------------------------------------------------------ positioning
    def _line_start(self, f, pos: int) -> int | None:
        """The offset of the first line that starts at or after ``pos`` (None: none complete)."""
        if pos == 0:
            return 0
        f.seek(pos - 1)
        at = pos - 1
        while True:
            chunk = f.read(65536)
            if not chunk:
                return None
            i = chunk.find(b"\n")
            if i >= 0:
                return at + i + 1
            at += len(chunk)

    def _id_at(self, f, start: int) -> int | None:
        f.seek(start)
        return self.line_id(f.read(HEAD_BYTES))

    def _search(self, f, size: int, after: int) -> int:
        """The offset of the first line whose id is > ``after`` (ids ascend through the file);
        the end of the last complete line when there is none."""
        lo, hi = 0, size
        while lo < hi:
            mid = (lo + hi) // 2
            s = self._line_start(f, mid)
            i = self._id_at(f, s) if s is not None and s < size else None
            if i is None or i > after:
                hi = mid
            else:
                lo = mid + 1
        s = self._line_start(f, lo)
        if s is not None and s <= size:
            return s
        # no line starts at or after lo: the end of the last complete line
        back = max(0, size - (1 << 20))
        while True:
            f.seek(back)
            chunk = f.read(size - back)
            i = chunk.rfind(b"\n")
            if i >= 0:
                return back + i + 1
            if back == 0:
                return 0
            back = max(0, back - (1 << 20))

    def position_after(self, after: int) -> bool:
        """Open the hour file holding the first line with id > ``after`` at that line.
        False when the stream has no file yet."""
        files = hour_files(self.stream.root)
        if not files:
            return False
        for path in reversed(files):
            with open(path, "rb") as f:
                first = self._id_at(f, 0)
                if first is not None and first <= after + 1:
                    size = os.fstat(f.fileno()).st_size
                    offset = self._search(f, size, after)
                    self._open(path, offset)
                    return True
        self._open(files[0], 0)  # every file starts later: the adapter sees the gap
        return True

    # --------------------------------------------------------------------- reading
    def read(self, now: float) -> tuple[list[bytes], bool]:
        """Complete lines appended since the last call (at most READ_BYTES), and whether
        the end of what is written was reached."""
        f = self.file
        data = f.read(READ_BYTES)
        if data:
            self.offset += len(data)
            buf = self.partial + data if self.partial else data
            lines = buf.split(b"\n")
            self.partial = lines.pop()
            return [ln for ln in lines if ln], len(data) < READ_BYTES
        if now < self._next_check:
            return [], True
        self._next_check = now + ROLLOVER_CHECK_S
        files = hour_files(self.stream.root)
        key = hour_key(self.path)
        later = [p for p in files if hour_key(p) > key]
        if not later:
            return [], True
        # a newer hour exists: the writer has left this one; drain it, then move on
        data = f.read()
        if data:
            self.offset += len(data)
            self._next_check = 0.0
            buf = self.partial + data
            lines = buf.split(b"\n")
            self.partial = lines.pop()
            return [ln for ln in lines if ln], False
        if self.partial:
            self.partial_dropped += 1
            log.warning("%s: %d bytes without a newline at the end of %s: dropped", self.stream.name,
                        len(self.partial), self.path)
        log.info("%s: hour %s done, reading %s", self.stream.name, self.path, later[0])
        self._open(later[0], 0)
        self._next_check = 0.0
        return [], False

    def backlog(self) -> int:
        """Bytes written but not read yet: the rest of this file and every later hour's."""
        if self.file is None:
            return 0
        try:
            n = os.fstat(self.file.fileno()).st_size - self.offset
            key = hour_key(self.path)
            for p in hour_files(self.stream.root):
                if hour_key(p) > key:
                    n += p.stat().st_size
        except OSError:
            return 0
        return max(0, n)


class FileRunner(Runner):
    """Snapshots, tails and timers of one exchange whose source is hourly files (module docstring)."""

    def __init__(self, exchange_config, adapter, feed, stop: asyncio.Event, rng=None):
        super().__init__(exchange_config, adapter, feed, stop, rng)
        self.options = adapter.options
        self.tails = [Tail(s, adapter.line_id) for s in adapter.file_streams()]
        self._resync = False
        self._checking = False   # a check snapshot is being taken: the rewind streams wait
        self.bootstraps = 0
        self._snapshot_symbols: frozenset[str] | None = None  # in the last snapshot (runtime checks)
        self._snapshot_lock = asyncio.Lock()  # one snapshot at a time: the source writes one path
        self._coin_task: asyncio.Task | None = None  # a snapshot for symbols added at runtime
        self.coin_snapshots = 0

    # --------------------------------------------------------------- snapshots
    async def _snapshot(self, session: aiohttp.ClientSession | None) -> tuple[int, dict] | None:
        """Ask for (or read) a snapshot and decode it; None (counted, logged) on failure."""
        async with self._snapshot_lock:
            return await self._take_snapshot(session)

    async def _take_snapshot(self, session: aiohttp.ClientSession | None) -> tuple[int, dict] | None:
        adapter = self.adapter
        req = adapter.bootstrap_request()
        if req is not None:
            self.header[P["rest_requests"]] += 1
            try:
                async with session.post(req.url, data=req.body, headers={"Content-Type": "application/json"},
                                        timeout=aiohttp.ClientTimeout(total=SNAPSHOT_READ_TIMEOUT)) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        self.header[P["rest_errors"]] += 1
                        self.health.rest_failed("snapshot", f"HTTP {resp.status}: {body[:60].decode('utf-8', 'replace')}")
                        log.warning("snapshot request: HTTP %d: %s", resp.status, body[:200])
                        return None
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                self.header[P["rest_errors"]] += 1
                self.health.rest_failed("snapshot", f"{type(exc).__name__}: {exc}")
                log.warning("snapshot request to %s failed: %s: %s", req.url, type(exc).__name__, exc)
                return None
        path = adapter.bootstrap_path()
        try:
            body = await asyncio.to_thread(Path(path).read_bytes)
            got = await asyncio.to_thread(adapter.decode_snapshot, body)
            self._snapshot_symbols = frozenset(got[1])
            return got
        except OSError as exc:
            self.health.rest_failed("snapshot", f"cannot read {path}: {exc.strerror}")
            log.warning("snapshot file %s: %s", path, exc)
        except MalformedFrame as exc:
            self.health.rest_failed("snapshot", f"unusable: {exc}")
            log.warning("snapshot %s unusable: %s", path, exc)
        return None

    async def _bootstrap(self, session, first: bool) -> bool:
        """Load a snapshot and position the streams after it; False when stopping."""
        delays = backoff(initial=0.5, cap=30.0, rng=self.rng)
        while not self.stop.is_set():
            rebuilt = None if first else self.adapter.rebuild_from_check(time.time_ns())
            if rebuilt is not None:
                log.info("books rebuilt from the checked snapshot at %d", self.adapter.height)
                self._deliver(rebuilt)
                return True
            got = await self._snapshot(session)
            if got is not None:
                height, books = got
                events = self.adapter.load_snapshot(height, books, time.time_ns())
                self.bootstraps += 1
                log.info("snapshot at %d: %d books", height, len(events))
                for tail in self.tails:
                    if first or tail.stream.rewind:
                        while not tail.position_after(height):
                            if self.stop.is_set():
                                return False
                            log.info("waiting for files under %s", tail.stream.root)
                            await asyncio.sleep(1.0)
                self._deliver(events)
                return True
            try:
                await asyncio.wait_for(self.stop.wait(), next(delays))
            except asyncio.TimeoutError:
                pass
        return False

    def _deliver(self, events) -> None:
        out = self.feed.receive(events)
        if out:
            self._carry_out(out)

    def _carry_out(self, requests, group=None) -> None:
        """Every request of the feed (fetch, resubscribe) means one thing here: resync."""
        for _ in requests:
            self._resync = True

    # ----------------------------------------------------------- runtime streams
    def add_symbols(self, symbols: tuple[str, ...]) -> None:
        """The feed and the adapter have them: their books start from a snapshot taken beside
        the tail (``_coin_snapshots``), which reads on meanwhile."""
        self._deliver(DepthConnected(tuple(symbols)))
        self._start_coin_snapshots()

    def _start_coin_snapshots(self) -> None:
        if self._coin_task is None and self.adapter.pending_coins() and getattr(self, "session", None) is not None:
            tg = getattr(self, "_tg", None)
            coro = self._coin_snapshots(self.session)
            self._coin_task = tg.create_task(coro, name="coin-snapshot") if tg else asyncio.ensure_future(coro)

    async def _coin_snapshots(self, session) -> None:
        """Snapshots for the symbols added at runtime until none waits (a snapshot older than
        the lines kept for a symbol is refused by the adapter: the next one is newer)."""
        delays = backoff(initial=0.5, cap=30.0, rng=self.rng)
        try:
            while self.adapter.pending_coins() and not self.stop.is_set():
                got = await self._snapshot(session)
                if got is not None:
                    self.coin_snapshots += 1
                    self._deliver(self.adapter.offer_coin_snapshot(*got, time.time_ns()))
                    if not self.adapter.pending_coins():
                        break
                    if self.adapter.bootstrap_request() is None:
                        # a replay's snapshot file never gets newer: every book again from it,
                        # the book streams re-read after it (the pause this task avoids on a node)
                        self._resync = True
                # failed, or refused as too old: the next one after a backoff
                try:
                    await asyncio.wait_for(self.stop.wait(), next(delays))
                except asyncio.TimeoutError:
                    pass
        finally:
            self._coin_task = None

    def remove_symbols(self, symbols: tuple[str, ...]) -> None:
        for s in symbols:
            self.adapter.remove_symbol(s)

    async def instrument_listed(self, symbol: str) -> bool | None:
        """Whether the source's last snapshot has ``symbol`` (None: no snapshot yet)."""
        known = self._snapshot_symbols
        return None if known is None else symbol in known

    # ----------------------------------------------------------------- tailing
    async def _tail(self, session) -> None:
        adapter, feed = self.adapter, self.feed
        parse, receive = adapter.parse_line, feed.receive
        counts = self._frames
        poll = self.options.poll_interval_s
        feed.receive(DepthConnected(tuple(adapter.symbols)))
        if not await self._bootstrap(session, first=True):
            return
        while not self.stop.is_set():
            idle = True
            for tail in self.tails:
                if tail.file is None or (self._checking and tail.stream.rewind):
                    continue
                lines, at_end = tail.read(time.monotonic())
                if lines:
                    idle = False
                    recv_ns = time.time_ns()
                    stream = tail.stream
                    for line in lines:
                        counts[0] += 1
                        try:
                            events = parse(stream, line, recv_ns)
                        except MalformedFrame as exc:  # counted by the feed, never raised
                            events = Malformed(getattr(exc, "symbol", None), str(exc))
                        except UnknownFrame as exc:
                            events = Unknown(str(exc))
                        out = receive(events)
                        if out:
                            self._carry_out(out)
                elif not at_end:
                    idle = False
                if at_end:
                    out = receive(adapter.end_of_batch(tail.stream, time.time_ns()))
                    if out:
                        self._carry_out(out)
                check = adapter.check_now(time.time_ns())
                if check:
                    self._deliver(check)
                if self._resync or adapter.lost():
                    self._resync = False
                    feed.flush()
                    if not await self._bootstrap(session, first=False):
                        return
            if self._coin_task is None and adapter.pending_coins():
                self._start_coin_snapshots()  # (a refused or failed one is taken again)
            if idle:
                try:
                    await asyncio.wait_for(self.stop.wait(), poll)
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)  # the flush, the stats and the other streams get the loop

    async def _check_loop(self, session) -> None:
        """Every snapshot_check_interval_s: a fresh snapshot for the adapter to compare."""
        interval = self.options.snapshot_check_interval_s
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), interval)
                return
            except asyncio.TimeoutError:
                pass
            # the book's streams wait while the source writes and we decode the snapshot: it is
            # then at or after their block, so the books can be compared when they reach it
            async with self._snapshot_lock:  # (not while another snapshot is taken: the tail reads on)
                self._checking = True
                try:
                    got = await self._take_snapshot(session)
                finally:
                    self._checking = False
            if got is not None and not self.adapter.hold_check(*got):
                log.info("snapshot check at %d skipped: the books are past it", got[0])

    # ------------------------------------------------------------------ timers
    def _copy_source_stats(self) -> None:
        header = self.header
        header[P["source_lag_us"]] = max(0, self.adapter.source_lag_ns // 1000)
        header[P["tail_lag_us"]] = max(0, self.adapter.tail_lag_ns // 1000)
        header[P["backlog_bytes"]] = sum(t.backlog() for t in self.tails)
        for name, value in getattr(self.adapter, "source_stats", dict)().items():  # (PROCESS_STATS names)
            header[P[name]] = value

    async def _source_stats_loop(self) -> None:
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), 0.25)
            except asyncio.TimeoutError:
                self._copy_source_stats()

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            self.session = session
            try:
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg  # (the control API serves changes once this is set)
                    tg.create_task(self._tail(session), name="tail")
                    tg.create_task(self._stats_loop(), name="stats")
                    tg.create_task(self._source_stats_loop(), name="source-stats")
                    tg.create_task(self._republish_loop(), name="republish")
                    if self.options.snapshot_check_interval_s > 0:
                        tg.create_task(self._check_loop(session), name="snapshot-check")
                    await self.stop.wait()
            finally:
                for tail in self.tails:
                    tail.close()


__all__ = ["FileRunner", "Tail", "hour_files"]
