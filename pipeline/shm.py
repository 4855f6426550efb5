"""Shared-memory books: one segment per exchange, one writer, any number of readers.

Layout (native byte order, 8-byte aligned; LAYOUT_VERSION guards changes)::

    segment header   u64[HEADER_WORDS]  magic, version, depth, n_symbols, pid, epoch,
                                        created_ns, heartbeat_ns, then process stats
    exchange name    32 bytes
    symbol table     n_symbols x 32 bytes (ascii, NUL padded)
    per symbol slot:
        lock         u64                 seqlock counter: odd while the writer writes
        view header  i64[VIEW_WORDS]     epoch, seq, state, ts_exchange_us,
                                         ts_received_us, update_id, n_bids, n_asks
        bid prices   f64[depth]          best first
        bid sizes    f64[depth]
        ask prices   f64[depth]          best first
        ask sizes    f64[depth]
        stats        i64[STAT_WORDS]     counters (see FEED_STATS), outside the lock
    health records   (1 + n_symbols + MAX_CONNECTIONS) x RECORD_BYTES: why a feed or a
                     connection is not working (see "Health records" below)

The view is guarded by a sequence lock: the writer bumps ``lock`` to odd, writes,
bumps it to even.  A reader copies the view and retries when ``lock`` was odd or
changed meanwhile, so it never blocks the writer and never sees a torn book
(building-block-costs.md section 3: ~12% torn reads without it).  Counters are
single aligned 8-byte words, written without the lock; a reader may see one
counter a step older than another, never a torn value.

Health records.  A venue that cannot be reached leaves every counter at 0; what the
operator needs is the failures and their reason.  Record 0 is the exchange's (its last
error from anywhere: connections, REST, discovery), records 1..n_symbols are the feeds',
then one per WebSocket connection (``H_CONNECTIONS`` in the header says how many the
runner opened; beyond MAX_CONNECTIONS they have no record, and the process totals still
count them).  A record is words i64[RECORD_WORDS] (lock, error time, failure counts,
connection state) then a label and the last error as short UTF-8 text.  Errors are rare,
so a record is written whole under its own seqlock (the lock word first), and read with
a retry like a view.

Runtime streams (DESIGN.md contract 9).  A segment has room for ``n_symbols`` slots (the
exchange's ``max_symbols``), more than the configured symbols, so the ingest can add a symbol
without a new segment.  A free slot has an empty name.  A removed symbol keeps its slot, with
its name and the final state REMOVED, until a later addition reuses the slot.  Changing a
slot's name bumps ``H_NAMES_GEN`` to odd, writes the name and resets the view, then bumps it to
even (the seqlock of the name table): a reader re-reads the table whenever the word changed and
checks it again after copying a view, so it never returns one symbol's view under another's
name.

Names.  A segment's name is ``<prefix>_<key>_<token>``: the prefix is ``Config.shm_prefix``
(a hash of run_dir, so two pipelines with different run_dirs never collide), the key the unit
(the exchange, or ``NAME.K`` for shard K of an exchange with ``processes`` > 1:
pipeline/shards.py; the exchange name inside is NAME; ``UNIT_trades`` for its trade ring), and
the token 16 random hex digits drawn anew by every writer.  Another local user can therefore
not pre-create a segment the ingest is about to create (O_EXCL would refuse it and block the
ingest) nor guess it.  The writer publishes the name in ``RUN_DIR/shm/<key>`` (written whole
and renamed into place; run_dir is the pipeline's own directory), and every reader finds it
there: ``find_segment`` is the one way to a segment's name (``SegmentReader.open`` calls it).
A reader checks the name file and the segment: owned by this user or the pipeline's
(``[pipeline] shm_owner``, else run_dir's owner), writable by no one else.  A writer killed
with its segment mapped leaves both; the next writer of the key removes every segment of the
key whose writer is dead and publishes a new name, and readers reopen on the new epoch as
they always did.  ``[pipeline] shm_group`` makes segments and name files 0640 of that group
(run_dir traversable by it, 0710), so members of the group read the books and forge none.

Python 3.11's ``SharedMemory`` registers a segment with the resource tracker even in
a process that only attaches to it, and the tracker then unlinks it when that
process exits.  Readers here never use ``SharedMemory``: on Linux they map
``/dev/shm/NAME`` read-only with mmap; elsewhere they attach and unregister at once.
"""

from __future__ import annotations

import enum
import mmap
import os
import re
import secrets
import stat
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, SharedMemoryError
from pipeline.pidfile import pid_alive

MAGIC = int.from_bytes(b"L2PIPE01", "little")
LAYOUT_VERSION = 5
HEADER_WORDS = 32
NAME_BYTES = 32
VIEW_WORDS = 8
STAT_WORDS = 32  # FEED_STATS uses 27: room for more counters
DEV_SHM = Path("/dev/shm")

# segment header word indexes
H_MAGIC, H_VERSION, H_DEPTH, H_NSYM, H_PID, H_EPOCH, H_CREATED_NS, H_HEARTBEAT_NS = range(8)
H_CONNECTIONS = HEADER_WORDS - 1  # WebSocket connections the runner holds (health records)
H_NAMES_GEN = HEADER_WORDS - 2  # name-table generation: odd while a slot is renamed (module docstring)
# process stats kept in the header (written by the ingest process)
PROCESS_STATS = (
    "loop_lag_us",         # event-loop delay, p50 over the last minute (pipeline/lag.py)
    "loop_lag_max_us",     # ... max over the last minute
    "publish_lag_us",      # receive -> publish, p50 over the last minute
    "publish_lag_max_us",  # ... max over the last minute
    "frames",              # websocket frames received
    "connections",         # websocket connections opened
    "reconnects",          # connections lost and reopened
    "connect_failures",    # connection attempts that failed (DNS, refused, TLS, handshake, timeout)
    "rest_requests",       # REST snapshot requests sent
    "rest_errors",         # REST failures (status, timeout, body)
    "rest_throttled",      # 429/418 answers, or waits for the weight budget
    "rest_weight_used",    # venue's used-weight header, last seen
    "unknown_frames",      # well-formed frames of unknown kind
    "malformed_frames",    # frames that failed to parse (no symbol known)
    "loop_lag_p99_us",     # event-loop delay, p99 over the last minute
    "publish_lag_p99_us",  # receive -> publish, p99 over the last minute
    "publish_lag_1s_us",   # receive -> publish, p50 over the last second (a trend, for benchmarks)
    "source_lag_us",       # file sources: the last line's event time -> written to the file (a node: gossip)
    "tail_lag_us",         # file sources: written -> read by us
    "backlog_bytes",       # file sources: written but not read yet
    "status_mismatches",   # file sources: the source's own order statuses disagreed with the book
)
H_PROCESS_STATS = 8

# view header word indexes
V_EPOCH, V_SEQ, V_STATE, V_TS_EXCHANGE, V_TS_RECEIVED, V_UPDATE_ID, V_NBIDS, V_NASKS = range(VIEW_WORDS)

# per-symbol counters (stats words), in this order; keys of `pipeline status --json` feeds
FEED_STATS = (
    "updates",          # exchange book messages applied
    "trades",           # trades published
    "gaps",             # sequence gaps detected
    "resyncs",          # snapshots installed after the first
    "malformed",        # malformed frames for this symbol
    "checksum_ok",      # BBO / checksum verifications that matched
    "checksum_failed",  # ... that did not (each one resyncs)
    "last_update_ns",   # local receive time of the last applied update
    "last_trade_ns",    # local receive time of the last trade
    "trade_seq",        # seq of the last trade published
    "l2_seq",           # seq of the last L2 message published
    "buffered",         # diffs buffered while waiting for a snapshot
    "connected",        # 1 when the symbol's depth connection is open
    "stale_since_ns",   # when the book went stale (0 when live)
    "dropped",          # frames skipped as already covered (u <= book id)
    "quotes",           # venue quotes (BBO) received and published
    "last_quote_ns",    # local receive time of the last quote
    "tickers",          # derivative ticker updates received (published when the merged state changed)
    "last_ticker_ns",   # local receive time of the last ticker update
    "liquidations",     # liquidations published
    "last_liquidation_ns",  # local receive time of the last liquidation
    "stale_after_ms",   # the book's staleness limit (no change for this long: stale); 0: none
    "stalls",           # times the book went stale for want of a change, or its connection stalled
    "trades_missed",    # venue trade ids skipped (venues whose ids are contiguous): trades lost upstream
    "trade_id_gaps",    # ... in how many gaps (each one a trade_gap "missing" message on the bus)
    "trades_backfilled",  # missed trades fetched over REST and published (trade_gap "backfilled")
)
assert len(FEED_STATS) <= STAT_WORDS and len(PROCESS_STATS) + H_PROCESS_STATS <= H_NAMES_GEN

# health records (module docstring): word indexes, then the label and error text
RECORD_WORDS = 8
R_LOCK, R_ERROR_NS, R_CONNECT_FAILURES, R_REST_ERRORS, R_STATE, R_OPENED, R_SYMBOLS, R_STATE_NS = range(RECORD_WORDS)
LABEL_BYTES = 64
ERROR_BYTES = 128
RECORD_BYTES = RECORD_WORDS * 8 + LABEL_BYTES + ERROR_BYTES
MAX_CONNECTIONS = 32


class BookState(enum.IntEnum):
    """State of one symbol's view."""

    SYNCING = 0  # no valid book yet: waiting for / aligning a snapshot
    LIVE = 1     # in sync with the venue
    STALE = 2    # a gap, mismatch or dead connection: do not trust; a resync is under way
    REMOVED = 3  # unsubscribed at runtime: final, no more updates (its slot may be reused later)


class ConnState(enum.IntEnum):
    """State of one WebSocket connection (its health record)."""

    CONNECTING = 0  # an attempt is under way
    OPEN = 1        # connected, frames flowing
    DOWN = 2        # the last attempt failed or the connection was lost; waiting to retry


@dataclass(frozen=True)
class HealthRecord:
    """A consistent copy of one health record (times in ns since the epoch; 0: never)."""

    label: str
    error: str
    error_ns: int
    connect_failures: int
    rest_errors: int
    state: ConnState
    state_ns: int
    opened: int
    symbols: int


def _clip_text(text: str, size: int) -> bytes:
    """``text`` as UTF-8 in at most ``size - 1`` bytes, cut at a character boundary."""
    raw = text.encode("utf-8", "replace")[:size - 1]
    return raw.decode("utf-8", "ignore").encode("utf-8")




@dataclass(frozen=True)
class Layout:
    depth: int
    n_symbols: int

    @property
    def slot_bytes(self) -> int:
        return 8 + VIEW_WORDS * 8 + 2 * self.depth * 16 + STAT_WORDS * 8

    @property
    def slots_offset(self) -> int:
        raw = HEADER_WORDS * 8 + NAME_BYTES + self.n_symbols * NAME_BYTES
        return (raw + 63) // 64 * 64

    @property
    def records_offset(self) -> int:
        return self.slots_offset + self.n_symbols * self.slot_bytes

    @property
    def n_records(self) -> int:
        return 1 + self.n_symbols + MAX_CONNECTIONS

    @property
    def size(self) -> int:
        return self.records_offset + self.n_records * RECORD_BYTES


@dataclass(frozen=True)
class BookSnapshot:
    """A consistent copy of one symbol's view."""

    exchange: str
    symbol: str
    epoch: int
    seq: int
    state: BookState
    ts_exchange_us: int
    ts_received_us: int
    update_id: int
    bids: np.ndarray  # float64 [n, 2] (price, size), best first
    asks: np.ndarray

    def to_json(self, depth: int | None = None) -> dict:
        n = depth if depth is not None else max(len(self.bids), len(self.asks))
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "epoch": self.epoch,
            "seq": self.seq,
            "state": self.state.name.lower(),
            "bids": self.bids[:n].tolist(),
            "asks": self.asks[:n].tolist(),
        }


class _Slot:
    """numpy views onto one symbol's slot, and its byte offsets for struct writes."""

    __slots__ = ("lock", "view", "bid_px", "bid_sz", "ask_px", "ask_sz", "stats",
                 "off_lock", "off_view", "off_bid_px", "off_bid_sz", "off_ask_px", "off_ask_sz")

    def __init__(self, buf, offset: int, depth: int):
        self.off_lock = offset
        self.lock = np.ndarray((1,), np.uint64, buf, offset)
        self.off_view = offset + 8
        self.view = np.ndarray((VIEW_WORDS,), np.int64, buf, self.off_view)
        off = offset + 8 + VIEW_WORDS * 8
        self.off_bid_px, self.off_bid_sz = off, off + depth * 8
        self.off_ask_px, self.off_ask_sz = off + 2 * depth * 8, off + 3 * depth * 8
        self.bid_px = np.ndarray((depth,), np.float64, buf, self.off_bid_px)
        self.bid_sz = np.ndarray((depth,), np.float64, buf, self.off_bid_sz)
        self.ask_px = np.ndarray((depth,), np.float64, buf, self.off_ask_px)
        self.ask_sz = np.ndarray((depth,), np.float64, buf, self.off_ask_sz)
        self.stats = np.ndarray((STAT_WORDS,), np.int64, buf, off + 4 * depth * 8)


# struct.pack_into first zeroes its whole destination and then writes the fields,
# so it is used only for data *inside* the seqlock (view header, levels).  The lock
# word itself is stored with one aligned 8-byte numpy item assignment: a reader
# must never see it pass through 0 (even) mid-write -- the cross-process torn-read
# test caught exactly that.
_VIEW = struct.Struct("8q")
_LEVELS: dict[int, struct.Struct] = {}


def _levels_struct(n: int) -> struct.Struct:
    s = _LEVELS.get(n)
    if s is None:
        s = _LEVELS[n] = struct.Struct(f"{n}d")
    return s


def _encode_name(name: str) -> bytes:
    raw = name.encode("ascii")
    if len(raw) >= NAME_BYTES:
        raise SharedMemoryError(f"name {name!r} longer than {NAME_BYTES - 1} bytes")
    return raw.ljust(NAME_BYTES, b"\0")


def write_names(buf, offset: int, exchange: str, symbols) -> None:
    """The name table of a segment: the exchange, then one slot per symbol (NAME_BYTES each)."""
    buf[offset:offset + NAME_BYTES] = _encode_name(exchange)
    off = offset + NAME_BYTES
    for i, sym in enumerate(symbols):
        buf[off + i * NAME_BYTES: off + (i + 1) * NAME_BYTES] = _encode_name(sym)


def write_name(buf, offset: int, i: int, symbol: str) -> None:
    """Rename slot ``i`` of the name table at ``offset`` (the caller holds the table's seqlock)."""
    at = offset + NAME_BYTES + i * NAME_BYTES
    buf[at:at + NAME_BYTES] = _encode_name(symbol)


def read_names(buf, offset: int, n_symbols: int) -> tuple[str, tuple[str, ...]]:
    """(exchange, symbols) from a name table written by write_names."""
    def name(at: int) -> str:
        return bytes(buf[at:at + NAME_BYTES]).rstrip(b"\0").decode("ascii")
    off = offset + NAME_BYTES
    return name(offset), tuple(name(off + i * NAME_BYTES) for i in range(n_symbols))


SEGMENT_MODE = 0o600  # owner only: another local user can neither read the books nor forge one
GROUP_MODE = 0o640  # with [pipeline] shm_group: members of the group read, nobody else writes
TOKEN_HEX = 16  # random hex digits in every segment name (module docstring "Names")
NAMES_DIR = "shm"  # under run_dir: one file per segment key, holding the segment's current name


class ShmSpace(str):
    """A pipeline's shared-memory namespace (``Config.shm_prefix``).

    The string itself is the prefix every segment name starts with, so ``f"{space}*"`` globs
    find its segments in /dev/shm.  It also carries where writers publish the random names
    (``names_dir``, RUN_DIR/shm), the group segments are given to (``group``, a gid, or None:
    owner only) and the uid readers accept besides their own (``owner``; None: run_dir's owner).
    """

    names_dir: Path
    group: int | None
    owner: int | None

    def __new__(cls, prefix: str, names_dir: str | os.PathLike, group: int | None = None,
                owner: int | None = None):
        self = super().__new__(cls, prefix)
        self.names_dir, self.group, self.owner = Path(names_dir), group, owner
        return self

    def __reduce__(self):
        return ShmSpace, (str(self), self.names_dir, self.group, self.owner)

    @property
    def mode(self) -> int:
        return SEGMENT_MODE if self.group is None else GROUP_MODE

    def trusted_uids(self) -> frozenset[int]:
        """Whose segments and name files a reader accepts: its own, and the pipeline's user."""
        uids = {os.geteuid()}
        if self.owner is not None:
            uids.add(self.owner)
        else:
            try:
                uids.add(os.stat(self.names_dir.parent).st_uid)  # run_dir's owner: the pipeline's user
            except OSError:
                pass
        return frozenset(uids)


def _space(prefix) -> ShmSpace:
    if not isinstance(prefix, ShmSpace):
        raise TypeError(f"shared-memory names are published under run_dir: pass Config.shm_prefix (a ShmSpace), "
                        f"not the plain string {prefix!r}")
    return prefix


def _name_pattern(space: ShmSpace, key: str) -> re.Pattern:
    return re.compile(re.escape(f"{space}_{key}_") + f"[0-9a-f]{{{TOKEN_HEX}}}")


def _check_owner(name: str, st: os.stat_result, mode: bool = True, uids: frozenset[int] | None = None,
                 what: str = "segment") -> None:
    """A segment (or name file) must belong to this user (a reader: or the pipeline's, ``uids``) and be
    writable by no one else: a local user could otherwise pre-create it (blocking the ingest) or forge
    the book every reader serves as live."""
    euid = os.geteuid()
    uids = uids or frozenset((euid,))
    if st.st_uid not in uids:
        whose = " or ".join(f"uid {u}" for u in sorted(uids))
        raise SharedMemoryError(
            f"{what} {name!r} belongs to uid {st.st_uid}, not to this user or the pipeline's ({whose}): another "
            f"local user created it; refusing it (remove it as that user or root, or use another run_dir)")
    if mode and st.st_mode & 0o022:
        raise SharedMemoryError(f"{what} {name!r} is writable by other users (mode {st.st_mode & 0o777:o}): "
                                f"refusing it")


def find_segment(prefix: ShmSpace, key: str) -> str:
    """The current name of segment ``key`` (a unit; ``UNIT_trades`` for its trade ring), as its writer
    published it under run_dir.  Every reader comes through here (``SegmentReader.open``).  Raises
    SharedMemoryError when none is published, or when the name file is not the pipeline's."""
    space = _space(prefix)
    path = space.names_dir / key
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise SharedMemoryError(f"no shared-memory segment {key!r} published in {space.names_dir} "
                                f"(is the ingest running?)") from None
    except OSError as exc:  # EACCES (not of the pipeline's group), ELOOP (a symlink)
        raise SharedMemoryError(f"segment name file {path} cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SharedMemoryError(f"segment name file {path} is not a regular file: refusing it")
        _check_owner(str(path), st, uids=space.trusted_uids(), what="segment name file")
        raw = os.read(fd, 256)
    finally:
        os.close(fd)
    name = raw.decode("ascii", "replace").strip()
    if not _name_pattern(space, key).fullmatch(name):
        raise SharedMemoryError(f"segment name file {path} holds {name[:80]!r}, not a name of this pipeline's "
                                f"segment {key!r}: refusing it")
    return name


def open_published(prefix: ShmSpace, key: str) -> "_Segment":
    """Map segment ``key`` read-only, found through its name file, checked like the file."""
    space = _space(prefix)
    name = find_segment(space, key)
    return _Segment(name, None, create=False, uids=space.trusted_uids(), named_by=space.names_dir / key)


def _prepare_names_dir(space: ShmSpace) -> Path:
    """RUN_DIR/shm, ours and not a symlink; with a group, it and run_dir are made traversable by it."""
    d = space.names_dir
    d.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        d.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode):
        raise SharedMemoryError(f"{d} is not a directory (a symlink?): refusing to publish segment names there")
    _check_owner(str(d), st, what="directory")
    try:
        if space.group is None:
            os.chmod(d, 0o700)
        else:
            os.chown(d, -1, space.group)
            os.chmod(d, 0o750)
            run = os.stat(d.parent)
            if run.st_uid == os.geteuid() and (run.st_gid != space.group or not run.st_mode & 0o010):
                os.chown(d.parent, -1, space.group)
                os.chmod(d.parent, stat.S_IMODE(run.st_mode) | 0o010)  # the group may pass, not list
    except PermissionError:
        raise ConfigError("pipeline.shm_group", f"this user (uid {os.geteuid()}) cannot give {d} to group "
                          f"{space.group} (not a member of it?)") from None
    return d


def _give_to_group(fd: int, space: ShmSpace, what: str) -> None:
    """chmod (whatever the umask) and, with a group, chgrp an object we just created."""
    if space.group is not None:
        try:
            os.fchown(fd, -1, space.group)
        except PermissionError:
            raise ConfigError("pipeline.shm_group", f"this user (uid {os.geteuid()}) cannot give {what} to "
                              f"group {space.group} (not a member of it?)") from None
    os.fchmod(fd, space.mode)


def publish_segment(space: ShmSpace, key: str, name: str) -> None:
    """Make ``name`` the segment readers of ``key`` find: written to a temporary file, renamed into place."""
    d = _prepare_names_dir(space)
    tmp = d / f".{key}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        _give_to_group(fd, space, str(tmp))
        os.write(fd, f"{name}\n".encode("ascii"))
    finally:
        os.close(fd)
    os.replace(tmp, d / key)


def unpublish_segment(space: ShmSpace, key: str, name: str) -> None:
    """Remove ``key``'s name file if it still names ``name`` (not a newer writer's)."""
    path = space.names_dir / key
    try:
        if path.read_text(encoding="ascii", errors="replace").strip() == name:
            path.unlink()
    except (FileNotFoundError, NotADirectoryError):
        pass


def new_segment_name(space: ShmSpace, key: str) -> str:
    return f"{space}_{key}_{secrets.token_hex(TOKEN_HEX // 2)}"


def sweep_segments(prefix: ShmSpace, key: str, reader_cls, refuse_live: bool = True) -> list[str]:
    """Remove the segments of ``key`` that dead writers left (the published one, any other with the key's
    name pattern, and the old predictable name), and a name file naming none.  A segment whose writer
    still runs raises SharedMemoryError (``refuse_live``) or is kept.  Another user's segment is never
    touched: our names are random, so it blocks nothing.  Returns the paths removed."""
    space = _space(prefix)
    pattern = _name_pattern(space, key)
    names = {f"{space}_{key}"}
    if DEV_SHM.is_dir():
        names.update(p.name for p in DEV_SHM.glob(f"{space}_{key}_*") if pattern.fullmatch(p.name))
    try:
        names.add(find_segment(space, key))
    except SharedMemoryError:
        pass
    removed = []
    for name in sorted(names):
        path = DEV_SHM / name
        try:
            if os.lstat(path).st_uid != os.geteuid():
                continue
        except FileNotFoundError:
            continue
        try:
            old = reader_cls.open_segment(name)
        except SharedMemoryError:
            pid = 0  # empty, garbage, another layout: nobody's
        else:
            pid = old.pid
            old.close()
        if pid != os.getpid() and pid_alive(pid):
            if refuse_live:
                raise SharedMemoryError(f"segment {name!r} belongs to running process {pid}: another ingest "
                                        f"for {key!r} with the same run_dir?")
            continue
        _Segment.unlink(name)
        removed.append(str(path))
    path = space.names_dir / key
    try:
        named = find_segment(space, key)
    except SharedMemoryError:
        named = None
    if path.is_file() and (named is None or not (DEV_SHM / named).exists()):
        path.unlink(missing_ok=True)
        removed.append(str(path))
    return removed


class SegmentCreator:
    """What the writers of every layout share: the name (random), the sweep, creation, publication."""

    key: str
    name: str

    def _create_segment(self, prefix: ShmSpace, key: str, size: int, reader_cls) -> "_Segment":
        space = self._space = _space(prefix)
        self.key = key
        sweep_segments(space, key, reader_cls)
        self.name = new_segment_name(space, key)
        return _Segment(self.name, size, create=True, space=space)

    def _publish(self) -> None:
        """Last, once the header is complete: readers find the segment from now on."""
        try:
            publish_segment(self._space, self.key, self.name)
        except BaseException:
            _Segment.unlink(self.name)
            raise

    def _unlink(self) -> None:
        unpublish_segment(self._space, self.key, self.name)
        _Segment.unlink(self.name)


class _Segment:
    """A mapped segment: create (writer) or open read-only (reader)."""

    def __init__(self, name: str, size: int | None, create: bool, space: ShmSpace | None = None,
                 uids: frozenset[int] | None = None, named_by: Path | None = None):
        """``space``: a writer's (mode and group).  ``uids``: the owners a reader accepts (default: this
        user); ``named_by``: the name file the reader found ``name`` in (for its errors)."""
        self.name = name
        self._shm = None
        if DEV_SHM.is_dir():
            path = DEV_SHM / name
            if create:
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, SEGMENT_MODE)
                except FileExistsError:
                    _check_owner(name, os.lstat(path))
                    raise SharedMemoryError(f"segment {name!r} was created meanwhile by another process of "
                                            f"this user: another ingest with the same run_dir?") from None
                try:
                    if space is not None:
                        _give_to_group(fd, space, f"segment {name!r}")  # and the mode, whatever the umask
                    else:
                        os.fchmod(fd, SEGMENT_MODE)  # whatever the umask
                    os.ftruncate(fd, size)
                    self._mmap = mmap.mmap(fd, size)
                except BaseException:
                    os.unlink(path)
                    raise
                finally:
                    os.close(fd)
            else:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                except FileNotFoundError:
                    raise SharedMemoryError(f"no shared-memory segment {name!r} (is the ingest running?)") from None
                except OSError as exc:  # ELOOP: a symlink planted under our name
                    raise SharedMemoryError(f"segment {name!r} cannot be opened: {exc.strerror}") from None
                try:
                    st = os.fstat(fd)
                    try:
                        _check_owner(name, st, uids=uids)
                    except SharedMemoryError as exc:
                        if named_by is None:
                            raise
                        raise SharedMemoryError(f"{exc} (named in {named_by})") from None
                    size = st.st_size
                    if size == 0:
                        raise SharedMemoryError(f"segment {name!r} is empty (being created)")
                    self._mmap = mmap.mmap(fd, size, prot=mmap.PROT_READ)
                finally:
                    os.close(fd)
            self.buf = memoryview(self._mmap)
        else:  # pragma: no cover - non-Linux fallback
            from multiprocessing import resource_tracker, shared_memory

            try:
                self._shm = shared_memory.SharedMemory(name=name, create=create, size=size or 0)
            except FileNotFoundError:
                raise SharedMemoryError(f"no shared-memory segment {name!r} (is the ingest running?)") from None
            if not create:
                resource_tracker.unregister(self._shm._name, "shared_memory")  # see module docstring
            self.buf = self._shm.buf
        self.size = len(self.buf)

    @staticmethod
    def unlink(name: str) -> None:
        """Remove a segment of ours; one another user created under our name is refused, not removed."""
        path = DEV_SHM / name
        try:
            _check_owner(name, os.lstat(path), mode=False)
            os.unlink(path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        buf, self.buf = self.buf, None
        if buf is not None:
            buf.release()
        if self._shm is not None:
            self._shm.close()
        elif getattr(self, "_mmap", None) is not None:
            try:
                self._mmap.close()
            except BufferError:  # a numpy view still alive somewhere; the OS unmaps at exit
                pass


class _Records:
    """numpy views onto a segment's health records, and their byte offsets."""

    def __init__(self, buf, layout: Layout):
        self.buf = buf
        self.n_symbols = layout.n_symbols
        base = layout.records_offset
        self.offsets = [base + r * RECORD_BYTES for r in range(layout.n_records)]
        self.words = [np.ndarray((RECORD_WORDS,), np.int64, buf, off) for off in self.offsets]

    def feed(self, i: int) -> int:
        return 1 + i

    def connection(self, j: int) -> int | None:
        return 1 + self.n_symbols + j if 0 <= j < MAX_CONNECTIONS else None

    def text(self, r: int, at: int, size: int) -> str:
        off = self.offsets[r] + RECORD_WORDS * 8 + at
        return bytes(self.buf[off:off + size]).split(b"\0", 1)[0].decode("utf-8", "replace")

    def set_text(self, r: int, at: int, size: int, text: str) -> None:
        off = self.offsets[r] + RECORD_WORDS * 8 + at
        self.buf[off:off + size] = _clip_text(text, size).ljust(size, b"\0")

    def read(self, r: int, max_tries: int = 100000) -> HealthRecord:
        w = self.words[r]
        for attempt in range(max_tries):
            s1 = int(w[R_LOCK])
            if not s1 & 1:
                words = w.copy()
                label, error = self.text(r, 0, LABEL_BYTES), self.text(r, LABEL_BYTES, ERROR_BYTES)
                if int(w[R_LOCK]) == s1:
                    return HealthRecord(label, error, int(words[R_ERROR_NS]), int(words[R_CONNECT_FAILURES]),
                                        int(words[R_REST_ERRORS]), ConnState(int(words[R_STATE])),
                                        int(words[R_STATE_NS]), int(words[R_OPENED]), int(words[R_SYMBOLS]))
            # Mid-write, or written while copied: give the writer the core now and then, and back off
            # after many misses (a loaded 2-core machine can preempt the writer inside its write; the
            # ingest writes a record only on an error, so only a stress test ever gets here).
            if attempt & 15 == 15:
                time.sleep(0 if attempt < 1024 else 1e-5)
        raise SharedMemoryError("could not read a consistent health record (writer stuck mid-write?)")


def _read_header(buf) -> np.ndarray:
    return np.ndarray((HEADER_WORDS,), np.int64, buf, 0)


class BookWriter(SegmentCreator):
    """The single writer of one exchange's segment (the ingest process)."""

    def __init__(self, prefix: str, exchange: str, symbols: list[str] | tuple[str, ...], depth: int, epoch: int,
                 capacity: int | None = None, unit: str | None = None):
        """``capacity``: slots in the segment (``max_symbols``; at least ``len(symbols)``).  ``unit``: the
        segment's name part when it is one shard's (``NAME.K``, pipeline/shards.py); the exchange's otherwise."""
        self.exchange = exchange
        n_slots = max(len(symbols), capacity or 0)
        self.symbols: list[str] = list(symbols) + [""] * (n_slots - len(symbols))  # by slot; "" = free
        self.depth = depth
        self.epoch = epoch
        self.layout = Layout(depth, n_slots)
        self._seg = self._create_segment(prefix, unit or exchange, self.layout.size, BookReader)
        buf = self._seg.buf
        self.header = _read_header(buf)
        self.header[:] = 0
        write_names(buf, HEADER_WORDS * 8, exchange, self.symbols)
        self.slots = [_Slot(buf, self.layout.slots_offset + i * self.layout.slot_bytes, depth)
                      for i in range(n_slots)]
        for slot in self.slots:
            slot.view[V_EPOCH] = epoch
            slot.view[V_STATE] = BookState.SYNCING
        self.records = _Records(buf, self.layout)
        self._buf = buf
        h = self.header
        h[H_VERSION], h[H_DEPTH], h[H_NSYM], h[H_PID] = LAYOUT_VERSION, depth, n_slots, os.getpid()
        h[H_EPOCH], h[H_CREATED_NS], h[H_HEARTBEAT_NS] = epoch, time.time_ns(), time.time_ns()
        h[H_MAGIC] = np.int64(np.uint64(MAGIC).astype(np.int64))  # last: readers check it
        self._publish()

    def index(self, symbol: str) -> int:
        return self.symbols.index(symbol)

    @property
    def capacity(self) -> int:
        return len(self.symbols)

    def assign(self, i: int, symbol: str, seq: int = 0) -> None:
        """Give slot ``i`` to ``symbol`` (a runtime addition): its name, an empty SYNCING view
        at ``seq``, zeroed counters and health record.  Under the name-table seqlock."""
        _encode_name(symbol)  # a too-long name raises before anything changes
        h = self.header
        h[H_NAMES_GEN] += 1  # odd: renaming
        write_name(self._buf, HEADER_WORDS * 8, i, symbol)
        self.symbols[i] = symbol
        self.write_view(i, seq, BookState.SYNCING, 0, 0, 0, (), (), (), ())
        self.slots[i].stats[:] = 0
        r = self.records.feed(i)
        w = self.records.words[r]
        w[R_LOCK] += 1
        w[1:] = 0
        self.records.set_text(r, 0, LABEL_BYTES + ERROR_BYTES, "")
        w[R_LOCK] += 1
        h[H_NAMES_GEN] += 1  # even: consistent

    def write_view(self, i: int, seq: int, state: BookState, ts_exchange_us: int, ts_received_us: int,
                   update_id: int, bid_px, bid_sz, ask_px, ask_sz) -> None:
        """Publish symbol ``i``'s view under the seqlock (lists, best first).

        struct.pack_into on the mapped buffer: measured ~4x cheaper than numpy item
        and slice assignment for a 50-level view on this machine (only inside the
        lock: see _VIEW).
        """
        slot = self.slots[i]
        buf = self._buf
        nb, na = min(len(bid_px), self.depth), min(len(ask_px), self.depth)
        lock_word = slot.lock
        lock_word[0] += 1  # odd: writing
        _VIEW.pack_into(buf, slot.off_view, self.epoch, seq, state, ts_exchange_us, ts_received_us,
                        update_id, nb, na)
        if nb:
            fb = _levels_struct(nb)
            if nb < len(bid_px):
                bid_px, bid_sz = bid_px[:nb], bid_sz[:nb]
            fb.pack_into(buf, slot.off_bid_px, *bid_px)
            fb.pack_into(buf, slot.off_bid_sz, *bid_sz)
        if na:
            fa = _levels_struct(na)
            if na < len(ask_px):
                ask_px, ask_sz = ask_px[:na], ask_sz[:na]
            fa.pack_into(buf, slot.off_ask_px, *ask_px)
            fa.pack_into(buf, slot.off_ask_sz, *ask_sz)
        lock_word[0] += 1  # even: consistent

    def write_view_doubles(self, i: int, seq: int, state: BookState, ts_exchange_us: int, ts_received_us: int,
                           update_id: int, nb: int, na: int, bid_px: bytes, bid_sz: bytes, ask_px: bytes,
                           ask_sz: bytes) -> None:
        """``write_view`` with the levels already packed as native doubles (``ViewBook.view_doubles``:
        the compiled book packs them in C), so the copy into the segment is one memcpy per array."""
        if nb > self.depth or na > self.depth:
            raise ValueError(f"view of {nb}/{na} levels in a segment of depth {self.depth}")
        slot = self.slots[i]
        buf = self._buf
        lock_word = slot.lock
        lock_word[0] += 1  # odd: writing
        _VIEW.pack_into(buf, slot.off_view, self.epoch, seq, state, ts_exchange_us, ts_received_us,
                        update_id, nb, na)
        o = slot.off_bid_px
        buf[o:o + len(bid_px)] = bid_px
        o = slot.off_bid_sz
        buf[o:o + len(bid_sz)] = bid_sz
        o = slot.off_ask_px
        buf[o:o + len(ask_px)] = ask_px
        o = slot.off_ask_sz
        buf[o:o + len(ask_sz)] = ask_sz
        lock_word[0] += 1  # even: consistent

    def heartbeat(self, now_ns: int | None = None) -> None:
        self.header[H_HEARTBEAT_NS] = now_ns or time.time_ns()

    def update_record(self, r: int, now_ns: int, *, error: str | None = None, label: str | None = None,
                      connect_failures: int = 0, rest_errors: int = 0, state: ConnState | None = None,
                      opened: int = 0, symbols: int | None = None) -> None:
        """Change health record ``r`` under its lock: add the counts, set what is given
        (``error`` with ``now_ns`` as its time; ``state`` with ``now_ns`` as its start).
        Record indexes: 0 the exchange, ``records.feed(i)``, ``records.connection(j)``."""
        rec = self.records
        w = rec.words[r]
        w[R_LOCK] += 1  # odd: writing
        if error is not None:
            rec.set_text(r, LABEL_BYTES, ERROR_BYTES, error)
            w[R_ERROR_NS] = now_ns
        if label is not None:
            rec.set_text(r, 0, LABEL_BYTES, label)
        if state is not None:
            w[R_STATE], w[R_STATE_NS] = state, now_ns
        if symbols is not None:
            w[R_SYMBOLS] = symbols
        w[R_CONNECT_FAILURES] += connect_failures
        w[R_REST_ERRORS] += rest_errors
        w[R_OPENED] += opened
        w[R_LOCK] += 1  # even: consistent

    def set_connections(self, n: int) -> None:
        """How many WebSocket connections the runner holds (the first MAX_CONNECTIONS have records)."""
        self.header[H_CONNECTIONS] = n

    def close(self, unlink: bool = True) -> None:
        self.header = None
        self.slots = []
        self.records = None
        self._buf = None
        self._seg.close()
        if unlink:
            self._unlink()


def segment_key(unit: str) -> str:
    """The key of a unit's book segment (its name file under RUN_DIR/shm)."""
    return unit


class SegmentReader:
    """What every read-only segment attachment shares: open, pid, epoch, close.

    Subclasses set ``key_for(unit)`` (the segment's key: ``segment_key``, ``ring_key``) and parse
    their layout in ``__init__(seg)``; the header words H_PID and H_EPOCH are common to all layouts.
    """

    key_for = staticmethod(segment_key)

    @classmethod
    def open_segment(cls, name: str):
        """Attach to the segment of this exact name (this user's only; the writers' sweep)."""
        return cls(_Segment(name, None, create=False))

    @classmethod
    def open(cls, prefix: ShmSpace, unit: str):
        """Attach read-only to ``unit``'s segment (an exchange, or one shard ``NAME.K``), found through the
        name its writer published under run_dir (``find_segment``).  Raises SharedMemoryError if absent,
        or not the pipeline's (owner, mode)."""
        return cls(open_published(prefix, cls.key_for(unit)))

    @property
    def pid(self) -> int:
        return int(self.header[H_PID])

    @property
    def epoch(self) -> int:
        return int(self.header[H_EPOCH])

    def close(self) -> None:
        self.header = None
        self._seg.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _inode(name: str) -> int | None:
    """The inode of segment ``name`` in /dev/shm now (None: gone, or no /dev/shm)."""
    try:
        return os.stat(DEV_SHM / name).st_ino
    except OSError:
        return None


class BookReader(SegmentReader):
    """Read-only access to one exchange's segment.  Never blocks the writer.

    Usage::

        reader = BookReader.open(config.shm_prefix, "sim")
        book = reader.read("BTCUSDT")        # consistent BookSnapshot
        stats = reader.stats("BTCUSDT")      # dict of FEED_STATS counters
    """

    def __init__(self, seg: _Segment):
        self._seg = seg
        buf = seg.buf
        self.header = _read_header(buf)
        if int(np.int64(self.header[H_MAGIC]).astype(np.uint64)) != MAGIC or self.header[H_VERSION] != LAYOUT_VERSION:
            seg.close()
            raise SharedMemoryError(f"segment {seg.name!r} has no valid header (being created, or another layout)")
        self.depth = int(self.header[H_DEPTH])
        n = int(self.header[H_NSYM])
        self.layout = Layout(self.depth, n)
        if seg.size < self.layout.size:
            seg.close()
            raise SharedMemoryError(f"segment {seg.name!r} is truncated")
        self._names_gen = -1
        self._refresh_names()
        self.slots = [_Slot(buf, self.layout.slots_offset + i * self.layout.slot_bytes, self.depth) for i in range(n)]
        self.records = _Records(buf, self.layout)
        self._ino = _inode(seg.name)  # replaced() compares it: a restarted writer's segment is another file

    def replaced(self) -> bool:
        """Whether the segment's name now leads elsewhere: removed (its writer stopped) or created anew
        (a restarted writer, a new epoch).  A reader keeps the mapping it opened until it closes it, so
        one that polls the views asks this (an ``os.stat``, about a microsecond) to see a restart at once."""
        return self._ino is None or _inode(self._seg.name) != self._ino

    def _refresh_names(self) -> int:
        """Re-read the name table if the writer changed it; the (even) generation read."""
        h = self.header
        for attempt in range(100000):
            gen = int(h[H_NAMES_GEN])
            if gen == self._names_gen:
                return gen
            if not gen & 1:
                exchange, names = read_names(self._seg.buf, HEADER_WORDS * 8, self.layout.n_symbols)
                if int(h[H_NAMES_GEN]) == gen:
                    self.exchange, self._names, self._names_gen = exchange, names, gen
                    self._index = {s: i for i, s in enumerate(names) if s}
                    return gen
            if attempt & 63 == 63:
                time.sleep(0)
        raise SharedMemoryError("could not read a consistent name table (writer stuck mid-write?)")

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols with a slot now (live, syncing, stale or removed), in slot order."""
        self._refresh_names()
        return tuple(s for s in self._names if s)

    @property
    def capacity(self) -> int:
        """Slots in the segment (the exchange's ``max_symbols``)."""
        return self.layout.n_symbols

    @property
    def heartbeat_ns(self) -> int:
        return int(self.header[H_HEARTBEAT_NS])

    def exchange_health(self) -> HealthRecord:
        """The exchange's record: its last error from anywhere (connections, REST, discovery)."""
        return self.records.read(0)

    def feed_health(self, symbol: str) -> HealthRecord:
        """``symbol``'s record: failed connects and REST errors that concern it, its last error."""
        self._slot(symbol)  # the same error as read() for an unknown symbol (and fresh names)
        return self.records.read(self.records.feed(self._index[symbol]))

    def connections_health(self) -> tuple[list[HealthRecord], int]:
        """The records of the runner's connections, and how many connections it holds
        (more than the records when it holds over MAX_CONNECTIONS)."""
        n = int(self.header[H_CONNECTIONS])
        rec = self.records
        return [rec.read(rec.connection(j)) for j in range(min(n, MAX_CONNECTIONS))], n

    def process_stats(self) -> dict[str, int]:
        h = self.header
        return {name: int(h[H_PROCESS_STATS + i]) for i, name in enumerate(PROCESS_STATS)}

    def _slot(self, symbol: str) -> _Slot:
        self._refresh_names()
        try:
            return self.slots[self._index[symbol]]
        except KeyError:
            raise SharedMemoryError(f"symbol {symbol!r} is not in {self.exchange!r} (has: {', '.join(self.symbols)})") from None

    def read(self, symbol: str, depth: int | None = None, max_tries: int = 100000) -> BookSnapshot:
        """A consistent copy of ``symbol``'s view (retries while the writer writes, or while
        it gives the slot to another symbol)."""
        slot = self._slot(symbol)
        lock, v = slot.lock, slot.view
        gen = self._names_gen
        h = self.header
        for attempt in range(max_tries):
            if int(h[H_NAMES_GEN]) != gen:  # renamed meanwhile: find the symbol again
                slot = self._slot(symbol)
                lock, v, gen = slot.lock, slot.view, self._names_gen
            s1 = int(lock[0])
            if s1 & 1:
                if attempt & 63 == 63:
                    time.sleep(0)
                continue
            view = v.copy()
            nb, na = int(view[V_NBIDS]), int(view[V_NASKS])
            if depth is not None:
                nb, na = min(nb, depth), min(na, depth)
            bids = np.column_stack((slot.bid_px[:nb], slot.bid_sz[:nb]))
            asks = np.column_stack((slot.ask_px[:na], slot.ask_sz[:na]))
            if int(lock[0]) == s1 and int(h[H_NAMES_GEN]) == gen:
                return BookSnapshot(self.exchange, symbol, int(view[V_EPOCH]), int(view[V_SEQ]),
                                    BookState(int(view[V_STATE])), int(view[V_TS_EXCHANGE]),
                                    int(view[V_TS_RECEIVED]), int(view[V_UPDATE_ID]), bids, asks)
        raise SharedMemoryError(f"could not read a consistent view of {symbol!r} (writer stuck mid-write?)")

    def read_head(self, symbol: str, max_tries: int = 100000) -> tuple[int, int, int, int, int, int]:
        """``(epoch, seq, state, ts_exchange_us, ts_received_us, update_id)`` of ``symbol``'s view, consistent
        (the same seqlock as ``read``) without copying its levels: what a reader polling for changes needs."""
        slot = self._slot(symbol)
        lock, v = slot.lock, slot.view
        gen = self._names_gen
        h = self.header
        for attempt in range(max_tries):
            if int(h[H_NAMES_GEN]) != gen:
                slot = self._slot(symbol)
                lock, v, gen = slot.lock, slot.view, self._names_gen
            s1 = int(lock[0])
            if s1 & 1:
                if attempt & 63 == 63:
                    time.sleep(0)
                continue
            view = v.tolist()
            if int(lock[0]) == s1 and int(h[H_NAMES_GEN]) == gen:
                return view[V_EPOCH], view[V_SEQ], view[V_STATE], view[V_TS_EXCHANGE], view[V_TS_RECEIVED], \
                    view[V_UPDATE_ID]
        raise SharedMemoryError(f"could not read a consistent view of {symbol!r} (writer stuck mid-write?)")

    def stats(self, symbol: str) -> dict[str, int]:
        st = self._slot(symbol).stats
        return {name: int(st[i]) for i, name in enumerate(FEED_STATS)}

    def close(self) -> None:
        self.slots = []
        self.records = None
        super().close()
