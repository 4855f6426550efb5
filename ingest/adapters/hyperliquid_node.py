"""Hyperliquid from a node's own files (``hyperliquid_node``): full-depth books, every block.  Sans-I/O.

A non-validating Hyperliquid node started with ``--write-raw-book-diffs`` and ``--write-fills``
writes, per hour, ``node_raw_book_diffs_*`` and ``node_fills_*`` files under its data directory
(``node_data_dir``, default ``~/hl/data``), in one of two layouts
(shared/data/samples/README.md, hyperliquid_node; exchange-protocols.md section 6 for coin names):

- ``--batch-by-block`` (``mode = "by_block"``): ``node_X_by_block/hourly/YYYYMMDD/H``, one
  line per block ``{"local_time","block_time","block_number","events":[...]}``;
- ``--stream-with-block-info`` (``mode = "streaming"``): ``node_X_streaming/hourly/YYYYMMDD/H``,
  the same envelope with one event per line (an empty block is one line with ``events: []``).

Hours may be written without zero padding (``.../20260505/7``).  The file-tailing transport
(ingest/filetail.py, which names no venue) reads the files and hands complete lines here;
this module knows their meaning:

- Bootstrap: an L4 snapshot ``[height, [[coin, [[[user, order], ...bids], [...asks]]], ...]]``
  (the node's info server ``fileSnapshot`` of ``l4Snapshots`` with its height, or a file for
  replays).  Every block after ``height`` is then applied; blocks up to it are skipped.
- Book diffs, by ``oid``: ``{"new": {"sz"}}`` adds the order (side and price from the event),
  ``{"update": {"origSz", "newSz"}}`` sets its size, ``"remove"`` deletes it.  An ``update`` or
  ``remove`` of an order we do not hold is counted (``counts.unknown_oid``) and resyncs its coin.
  The orders are aggregated into price levels per coin; each block that changed a coin becomes
  one ``DepthDiff`` for it with the changed levels' new totals (0 deletes), ``first_id = last_id``
  = the block number, ``prev_id`` = the block of the coin's previous diff (or the snapshot
  height): the feed's ``check`` applies a diff only when it chains from the book's block.
- Sizes are summed as integers of 1e-8 (exact: a float sum drifts after many adds and removes);
  a level's total becomes a float once, when published.  Prices key levels as floats (two
  spellings of one decimal are one float).
- Blocks must be contiguous: a block number that skips is a gap (``counts.block_gaps``); every
  coin gets an unchainable diff (the feed counts a gap, marks the book stale and asks for a
  resync) and the order books are dropped until the transport loads a fresh snapshot.
- Periodic check: a fresh snapshot at height H is held until the diffs reach H, then compared
  with the live order book coin by coin (a CRC of every order's oid, side, price and size): the
  diff that ends block H carries the snapshot's CRC; the feed compares it with ``checksum()``
  (ours) and, on a mismatch, counts ``checksum_failed`` and resyncs that coin, which the
  transport rebuilds from that snapshot.
- Trades from fills: the two sides of a trade share ``tid``; one TradeEvent per ``tid``, taker
  side from the ``crossed: true`` fill (or the opposite of the maker's side when only the maker
  fill was read).  In streaming mode a block's fills are paired when the block ends.  Fills
  with a ``liquidation`` field are liquidations (``counts.liquidations``).
- Times: ``time_exchange`` is the block time; ``local_time`` (when the node wrote the line)
  gives the lag split for status: block -> written (gossip), written -> read (tail).
"""

from __future__ import annotations

import logging
import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Union

import msgspec

from ingest.adapters.base import APPLY, GAP, SKIP, Adapter, AdapterTraits, SnapshotSource, Verdict  # noqa: F401
from ingest.adapters.common import DECODE_ERRORS, RecentKeys, configure, malformed as _malformed
from ingest.adapters.hyperliquid import HyperliquidAdapter
from ingest.events import (DepthDiff, DepthSnapshot, FileStream, Instrument, L4Event, LiquidationEvent,
                           SnapshotRequest, StreamGroup, TradeEvent)
from pipeline.config import ExchangeConfig, check_keys, expect_bool, expect_number, expect_path, expect_str, show
from pipeline.errors import ConfigError, MalformedFrame, UnknownFrame

log = logging.getLogger(__name__)

SCALE = 10 ** 8           # sizes as integers of 1e-8 (Hyperliquid sizes have at most 8 decimals)
NO_CHAIN = -2             # prev_id of a diff that must not chain: the coin's book is lost
MODES = {"by_block": "by_block", "streaming": "streaming"}  # mode -> directory suffix
STREAMS = ("node_raw_book_diffs", "node_fills", "node_order_statuses")
MARK_BLOCKS = 512         # order statuses: blocks of book changes kept for them (the status files may lag)
WAIT_BLOCKS = 4096        # ... blocks of statuses kept waiting for the book to reach them

# --------------------------------------------------------------------- wire structs


class _New(msgspec.Struct):
    sz: str


class _Update(msgspec.Struct):
    newSz: str
    origSz: str = ""


class _DiffObj(msgspec.Struct, forbid_unknown_fields=False):
    new: _New | None = None
    update: _Update | None = None


class _Diff(msgspec.Struct):
    oid: int
    coin: str
    side: str
    px: str
    raw_book_diff: Union[Literal["remove"], _DiffObj]
    user: str = ""


class _DiffBlock(msgspec.Struct):
    local_time: str
    block_time: str
    block_number: int
    events: list[_Diff]


class _Liquidation(msgspec.Struct, forbid_unknown_fields=False):
    liquidatedUser: str = ""
    markPx: str = ""
    method: str = ""


class _Fill(msgspec.Struct, forbid_unknown_fields=False):
    coin: str
    px: str
    sz: str
    side: str
    tid: int
    crossed: bool
    time: int = 0
    oid: int = 0
    liquidation: _Liquidation | None = None


class _StatusOrder(msgspec.Struct, forbid_unknown_fields=False):
    coin: str
    oid: int


class _Status(msgspec.Struct, forbid_unknown_fields=False):
    status: str
    order: _StatusOrder


class _StatusBlock(msgspec.Struct):
    local_time: str
    block_time: str
    block_number: int
    events: list[_Status]


class _FillBlock(msgspec.Struct):
    local_time: str
    block_time: str
    block_number: int
    events: list[tuple[str, _Fill]]


class _Head(msgspec.Struct, forbid_unknown_fields=False):
    local_time: str
    block_time: str
    block_number: int


class _SnapOrder(msgspec.Struct, forbid_unknown_fields=False):
    coin: str
    side: str
    limitPx: str
    sz: str
    oid: int


_SnapSide = list[tuple[str, _SnapOrder]]
_Snapshot = tuple[int, list[tuple[str, tuple[_SnapSide, _SnapSide]]]]

_dec_diffs = msgspec.json.Decoder(_DiffBlock)
_dec_fills = msgspec.json.Decoder(_FillBlock)
_dec_statuses = msgspec.json.Decoder(_StatusBlock)
_dec_head = msgspec.json.Decoder(_Head)
_dec_snapshot = msgspec.json.Decoder(_Snapshot)
_SIDES = {"B": True, "A": False}   # is_bid
_TAKER = {"B": "buy", "A": "sell"}
_OTHER = {"B": "sell", "A": "buy"}


def size_units(text: str) -> int:
    """A decimal size string -> integer units of 1e-8 (exact).  Raises ValueError."""
    whole, _, frac = text.partition(".")
    if len(frac) > 8:
        if frac[8:].strip("0"):
            raise ValueError(f"size {text!r} has more than 8 decimals")
        frac = frac[:8]
    n = int(whole or "0") * SCALE + (int(frac.ljust(8, "0")) if frac else 0)
    if n < 0 or not whole.lstrip("-").isdigit() and whole:
        raise ValueError(f"bad size {text!r}")
    return n


_EPOCH_CACHE: dict[str, int] = {}


def node_time_ns(text: str) -> int:
    """``2026-05-05T17:39:13.394386432`` (UTC, up to 9 decimals) -> ns since the epoch.
    The whole-second part is cached: lines of one second share it."""
    head, _, frac = text.partition(".")
    base = _EPOCH_CACHE.get(head)
    if base is None:
        if len(_EPOCH_CACHE) > 4096:
            _EPOCH_CACHE.clear()
        base = int(datetime.fromisoformat(head).replace(tzinfo=timezone.utc).timestamp()) * 1_000_000_000
        _EPOCH_CACHE[head] = base
    return base + (int(frac[:9].ljust(9, "0")) if frac else 0)


class CoinBook:
    """One coin's orders by oid and their totals per price level (integer units)."""

    __slots__ = ("orders", "bids", "asks", "touched", "last_id")

    def __init__(self, last_id: int):
        self.orders: dict[int, tuple[bool, float, int]] = {}   # oid -> (is_bid, price, units)
        self.bids: dict[float, int] = {}
        self.asks: dict[float, int] = {}
        self.touched: set[tuple[bool, float]] = set()  # levels changed in the open block
        self.last_id = last_id                          # block of the last diff emitted

    def add(self, oid: int, is_bid: bool, px: float, units: int) -> None:
        old = self.orders.get(oid)
        if old is not None:  # a `new` for an order we hold: the new one replaces it
            self.remove(oid)
        self.orders[oid] = (is_bid, px, units)
        levels = self.bids if is_bid else self.asks
        levels[px] = levels.get(px, 0) + units
        self.touched.add((is_bid, px))

    def set_size(self, oid: int, units: int) -> bool:
        old = self.orders.get(oid)
        if old is None:
            return False
        is_bid, px, was = old
        self.orders[oid] = (is_bid, px, units)
        levels = self.bids if is_bid else self.asks
        levels[px] = levels.get(px, 0) + units - was
        self.touched.add((is_bid, px))
        return True

    def remove(self, oid: int) -> bool:
        old = self.orders.pop(oid, None)
        if old is None:
            return False
        is_bid, px, units = old
        levels = self.bids if is_bid else self.asks
        left = levels.get(px, 0) - units
        if left > 0:
            levels[px] = left
        else:
            levels.pop(px, None)
        self.touched.add((is_bid, px))
        return True

    def levels(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The whole book as (price, size) levels, bids high->low, asks low->high."""
        return ([(p, u / SCALE) for p, u in sorted(self.bids.items(), reverse=True)],
                [(p, u / SCALE) for p, u in sorted(self.asks.items())])

    def take_changes(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The levels changed since the last call with their new totals (0: gone)."""
        bids, asks = [], []
        for is_bid, px in self.touched:
            if is_bid:
                bids.append((px, self.bids.get(px, 0) / SCALE))
            else:
                asks.append((px, self.asks.get(px, 0) / SCALE))
        self.touched.clear()
        return bids, asks

    def crc(self) -> int:
        """CRC32 of every order (oid, side, price, size), in oid order; never 0."""
        parts = [f"{oid}:{'B' if b else 'A'}:{px!r}:{u}" for oid, (b, px, u) in sorted(self.orders.items())]
        return zlib.crc32("|".join(parts).encode()) or 1


@dataclass(slots=True)
class PendingCoin:
    """A coin added at runtime, until its book is installed: its diffs from ``first_block`` on,
    and the snapshot (at ``height``) it will start from once the books reach that block."""

    first_block: int
    diffs: list = field(default_factory=list)     # (block, diff event)
    snapshot: CoinBook | None = None
    height: int = -1


@dataclass(frozen=True, slots=True)
class NodeOptions:
    node_data_dir: Path
    mode: str
    snapshot_url: str
    snapshot_file: Path | None
    snapshot_out_path: Path
    snapshot_check_interval_s: float
    poll_interval_s: float
    l4: bool
    order_statuses: bool


class HyperliquidNodeAdapter(Adapter):
    """Books and trades of a Hyperliquid node's hourly files (module docstring)."""

    name = "hyperliquid_node"
    CHANNELS = ("trades", "book", "liquidations")  # liquidations: fills with a ``liquidation`` field
    DEFAULTS = {
        "rest_url": "http://127.0.0.1:3001",   # the node's info server
        "rest_depth_path": "/info",
        "rest_weight_limit": 600,
    }
    SHARDABLE = False  # every process would tail every file: one process reads the node
    OPTIONS = ("node_data_dir", "mode", "snapshot_url", "snapshot_file", "snapshot_out_path",
               "snapshot_check_interval_s", "poll_interval_s", "l4", "order_statuses")
    NODE_DATA_DIR = "~/hl/data"
    TRADE_KEYS_PER_COIN = 20_000

    @classmethod
    def parse_options(cls, table: dict, where: str, base_dir=None) -> dict:
        """The node's files and snapshots (docs/adapters.md "hyperliquid_node")."""
        check_keys(table, set(cls.OPTIONS), where)
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        out: dict = {}
        for key in ("node_data_dir", "snapshot_file", "snapshot_out_path"):
            if key in table:
                v = table[key]
                out[key] = v if isinstance(v, Path) else expect_path(v, f"{where}.{key}", base)
        if "mode" in table:
            mode = expect_str(table["mode"], f"{where}.mode")
            if mode not in MODES:
                raise ConfigError(f"{where}.mode", f'expected "by_block" or "streaming", got {show(mode)}')
            out["mode"] = mode
        if "snapshot_url" in table:
            url = expect_str(table["snapshot_url"], f"{where}.snapshot_url")
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{where}.snapshot_url", f"expected an http:// or https:// URL, got {show(url)}")
            out["snapshot_url"] = url
        for key in ("snapshot_check_interval_s", "poll_interval_s"):
            if key in table:
                out[key] = expect_number(table[key], f"{where}.{key}", positive=key == "poll_interval_s")
        for key in ("l4", "order_statuses"):
            if key in table:
                out[key] = expect_bool(table[key], f"{where}.{key}")
        return out

    def __init__(self, config: ExchangeConfig):
        configure(self, config)
        where = f"exchanges.{config.name}"
        o = self.parse_options(dict(config.options), where)
        data_dir = o.get("node_data_dir") or Path(self.NODE_DATA_DIR).expanduser()
        self.options = NodeOptions(
            node_data_dir=data_dir, mode=o.get("mode", "by_block"),
            snapshot_url=o.get("snapshot_url", f"{self.rest_url}{self.rest_depth_path}"),
            snapshot_file=o.get("snapshot_file"),
            snapshot_out_path=o.get("snapshot_out_path") or Path(f"/tmp/pipeline-l4-snapshot-{config.name}.json"),
            # a replay from a file has nothing fresh to compare with
            snapshot_check_interval_s=o.get("snapshot_check_interval_s", 0.0 if o.get("snapshot_file") else 300.0),
            poll_interval_s=o.get("poll_interval_s", 0.01), l4=o.get("l4", False),
            order_statuses=o.get("order_statuses", False))
        self.streaming = self.options.mode == "streaming"
        # Snapshots come from the source itself (a resync asks the transport for a fresh one);
        # the periodic check is a checksum event; files, not WebSockets
        self.traits = AdapterTraits(SnapshotSource.STREAM, checksum=True, transport="files",
                                    rest_weight_limit=self.rest_weight_limit)
        self._known = frozenset(config.symbols)
        self._books: dict[str, CoinBook] | None = None   # None: no snapshot loaded (or lost)
        self.height = -1          # the last block applied to the books (the snapshot's, at first)
        self._open: int | None = None      # streaming: the block whose lines are being read
        self._reopenable: int | None = None  # streaming: the block closed at the end of the last read
        self._open_time = (0, 0)            # its (block time µs, first line's receive ns)
        self._check: tuple[int, dict[str, int], dict] | None = None  # (height, coin -> CRC, snapshot)
        self._ours: dict[str, int] = {}  # coin -> our CRC at the checked block, until the feed asks
        self.fills_block = -1     # the last block of fills read
        self._fills_open: list[tuple] = []  # streaming: (block, time µs, recv, fill, user)
        self._seen_tids = {s: RecentKeys(self.TRADE_KEYS_PER_COIN) for s in config.symbols}
        self.counts = {"unknown_oid": 0, "block_gaps": 0, "blocks": 0, "lines": 0, "fill_gaps": 0,
                       "liquidations": 0, "snapshot_checks": 0, "snapshot_checks_missed": 0,
                       "coins_added": 0, "coin_snapshots_stale": 0,
                       "status_lines": 0, "statuses_checked": 0, "status_mismatches": 0, "status_blocks_unchecked": 0}
        # lag split of the last line read (ns): block -> written by the node, written -> read
        self.source_lag_ns = 0
        self.tail_lag_ns = 0
        # l4 = true: each block's order changes per coin, oid -> (side, price, size after)
        self.l4 = self.options.l4
        self._l4: dict[str, dict[int, tuple[str, float, float]]] = {}
        # coins added at runtime while the others' books run: their diffs from the next block
        # on, until a snapshot of their own is installed (``offer_coin_snapshot``)
        self._pending: dict[str, PendingCoin] = {}
        # order_statuses = true: each block's statuses are checked against the book's changes of
        # that block (``_check_statuses``): block -> oid -> on our book after the block (touched
        # oids only), and the statuses waiting for the book: block -> oid -> (coin, last status)
        self.statuses = self.options.order_statuses
        self._marks: dict[int, dict[int, bool]] = {}
        self._status_wait: dict[int, dict[int, tuple[str, str]]] = {}
        self._status_done = -1   # the last block whose statuses are all read
        self._depth_seen = -1    # the last block the book diffs have begun
        self._logged_status: set[str] = set()
        self._since: dict[str, int] = {}  # coin -> first block whose changes of its book are all marked

    # ------------------------------------------------------------------ naming
    def instrument(self, symbol: str) -> Instrument:
        return HyperliquidAdapter.instrument(self, symbol)  # the same coin names as the API

    # ------------------------------------------------------------ the transport's part
    def file_streams(self) -> list[FileStream]:
        """The hourly file sets to tail: book diffs (re-read from the snapshot on a resync) and
        fills (read once, from the first snapshot on)."""
        suffix = MODES[self.options.mode]
        root = self.options.node_data_dir
        streams = [FileStream("depth", root / f"node_raw_book_diffs_{suffix}" / "hourly", rewind=True),
                   FileStream("trades", root / f"node_fills_{suffix}" / "hourly", rewind=False)]
        if self.statuses:  # (read on across resyncs: a block the book skipped is not checked)
            streams.append(FileStream("statuses", root / f"node_order_statuses_{suffix}" / "hourly", rewind=False))
        return streams

    def bootstrap_request(self) -> SnapshotRequest | None:
        """The info-server request that makes the node write an L4 snapshot with its height to
        ``snapshot_out_path`` (None: read ``snapshot_file``, a replay)."""
        if self.options.snapshot_file is not None:
            return None
        body = msgspec.json.encode({"type": "fileSnapshot",
                                    "request": {"type": "l4Snapshots", "includeUsers": True,
                                                "includeTriggerOrders": False},
                                    "outPath": str(self.options.snapshot_out_path), "includeHeightInOutput": True})
        return SnapshotRequest(self.options.snapshot_url, 1, "POST", body)

    def bootstrap_path(self) -> Path:
        return self.options.snapshot_file or self.options.snapshot_out_path

    @staticmethod
    def line_id(head: bytes) -> int | None:
        """The block number of a line from its first bytes (the transport's file search)."""
        i = head.find(b'"block_number":')
        if i < 0:
            return None
        j = i + 15
        while j < len(head) and head[j] in b" \t":
            j += 1
        k = j
        while k < len(head) and 48 <= head[k] <= 57:
            k += 1
        return int(head[j:k]) if k > j and k < len(head) else None

    @staticmethod
    def decode_snapshot(body: bytes) -> tuple[int, dict[str, CoinBook]]:
        """An L4 snapshot -> (height, coin -> CoinBook).  Raises MalformedFrame."""
        try:
            height, coins = _dec_snapshot.decode(body)
        except DECODE_ERRORS as exc:
            raise _malformed(f"L4 snapshot: {exc}", None) from None
        books = {}
        try:
            for coin, (bids, asks) in coins:
                book = books[coin] = CoinBook(height)
                for _, o in bids:
                    book.add(o.oid, True, float(o.limitPx), size_units(o.sz))
                for _, o in asks:
                    book.add(o.oid, False, float(o.limitPx), size_units(o.sz))
                book.touched.clear()
        except ValueError as exc:
            raise _malformed(f"L4 snapshot: {exc}", None) from None
        return height, books

    def load_snapshot(self, height: int, books: dict[str, CoinBook], recv_ns: int) -> list[DepthSnapshot]:
        """Install a decoded snapshot: the order books of our coins at ``height``; one
        DepthSnapshot per coin (a coin the snapshot lacks has an empty book)."""
        mine = {}
        for coin in self.symbols:
            book = books.get(coin)
            if book is None:
                log.warning("%s: not in the L4 snapshot at block %d: its book is empty", coin, height)
                book = CoinBook(height)
            book.last_id = height
            book.touched.clear()
            mine[coin] = book
        self._books = mine
        self._since = {coin: height + 1 for coin in mine}
        self._pending = {}  # every coin's book is in this snapshot
        self.height = height
        self._open = self._reopenable = None
        self._check = None
        if self.fills_block < 0:
            self.fills_block = height
        ts_us = 0
        out = []
        for coin, book in mine.items():
            bids, asks = book.levels()
            out.append(DepthSnapshot(coin, height, bids, asks, ts_us, recv_ns))
        return out

    def hold_check(self, height: int, books: dict[str, CoinBook]) -> bool:
        """A fresh snapshot to compare with the live books when the diffs reach ``height``.
        False (counted) when they are past it already: nothing to compare with."""
        if self._books is None:
            return False
        if height < self.height or (height == self.height and self._open is not None):
            self.counts["snapshot_checks_missed"] += 1
            return False
        crcs = {coin: (books[coin].crc() if coin in books else CoinBook(height).crc()) for coin in self.symbols}
        self._check = (height, crcs, books)
        return True

    def check_now(self, recv_ns: int) -> list[DepthDiff]:
        """The held check, when the books are at its height already (between blocks)."""
        if self._check is None or self._books is None or self._check[0] != self.height or self._open is not None:
            return []
        if self.streaming and self._reopenable == self.height:
            return []  # more lines of that block may come: compared when the next block begins
        return self._check_events(self.height, 0, recv_ns)

    def rebuild_from_check(self, recv_ns: int) -> list[DepthSnapshot] | None:
        """After a failed check: the books again from the checked snapshot, if the diffs have
        not moved past it (else None: the transport fetches a fresh one)."""
        held = self._last_checked
        if held is None or held[0] != self.height or self._open is not None:
            return None
        return self.load_snapshot(held[0], held[2], recv_ns)

    _last_checked: tuple | None = None

    def _check_events(self, height: int, ts_us: int, recv_ns: int) -> list[DepthDiff]:
        _, crcs, books = self._check
        self._last_checked = self._check
        self._check = None
        self.counts["snapshot_checks"] += 1
        out = []
        for coin, book in self._books.items():
            # an empty diff at the book's block: SKIP by the sequence rule would lose it, so it
            # chains from the book's block (prev_id = last_id) and carries the snapshot's CRC;
            # ours is taken now, at that block (the feed asks for it after more lines are read)
            self._ours[coin] = book.crc()
            out.append(DepthDiff(coin, height, height, book.last_id, [], [], ts_us, recv_ns, crcs[coin]))
            book.last_id = height
        return out

    def checksum(self, symbol: str, book) -> int:
        """Our order book of ``symbol`` at the checked block, as the CRC the check carries
        (taken when the check was emitted; 0 when there is none)."""
        return self._ours.pop(symbol, 0)

    # ------------------------------------------------------------------- lines
    def parse_line(self, stream: FileStream, line: bytes, recv_ns: int):
        """One complete line of ``stream`` -> events for the feed (or None).
        Raises MalformedFrame or UnknownFrame (a line not of this source)."""
        self.counts["lines"] += 1
        if stream.name == "depth":
            return self._diff_line(line, recv_ns)
        if stream.name == "statuses":
            return self._status_line(line, recv_ns)
        return self._fill_line(line, recv_ns)

    def end_of_batch(self, stream: FileStream, recv_ns: int):
        """The transport read everything written so far: streaming mode closes the open
        block (more lines of it may still come: they chain as a second update of the block)."""
        if not self.streaming:
            return None
        if stream.name == "depth":
            n = self._open
            if n is None:
                return None  # nothing open (the last block stays reopenable)
            out = self._close_block(recv_ns)
            self._reopenable = n
            return out or None
        return self._close_fills() or None

    def _lags(self, local_time: str, block_ns: int, recv_ns: int) -> int:
        written = node_time_ns(local_time)
        self.source_lag_ns = written - block_ns
        self.tail_lag_ns = recv_ns - written
        return written

    def _diff_line(self, line: bytes, recv_ns: int):
        try:
            blk = _dec_diffs.decode(line)
        except DECODE_ERRORS as exc:
            raise _malformed(f"book diffs line: {exc}", None) from None
        n = blk.block_number
        try:
            block_ns = node_time_ns(blk.block_time)
            self._lags(blk.local_time, block_ns, recv_ns)
        except ValueError as exc:
            raise _malformed(f"book diffs line: bad time: {exc}", None) from None
        books = self._books
        if books is None:
            return None  # no snapshot yet (or lost): the transport is fetching one
        out: list = []
        if n != self._open:
            if self._open is not None:
                out += self._close_block(recv_ns)
            if self._check is not None and self._check[0] == self.height < n and n != self._reopenable:
                # streaming: block `height` is complete only now that a later one begins
                out += self._check_events(self.height, self._open_time[0], recv_ns)
            if n == self.height + 1 or n == self._reopenable:
                self._open = n  # the next block, or more lines of one closed at the end of a read
                self._open_time = (block_ns // 1000, recv_ns)
            elif n <= self.height:
                return out or None  # a block the snapshot (or an earlier read) covers
            else:
                return self._gap(n, block_ns, recv_ns, out)
            self._reopenable = None
        known, pending, apply = self._known, self._pending, self._apply
        marks = None
        if self.statuses:
            marks = self._marks.setdefault(n, {})
            if n > self._depth_seen:
                self._depth_seen = n
        for ev in blk.events:
            coin = ev.coin
            if coin not in known:
                continue
            book = books.get(coin)
            if book is None:
                p = pending.get(coin)
                if p is not None and n > p.height:  # added at runtime: kept until its snapshot is
                    p.diffs.append((n, ev))         # installed (blocks up to the snapshot's: in it)
                continue  # else this coin's book was lost: it waits for the resync
            if not apply(book, coin, ev):
                out.append(self._lose(coin, n, block_ns // 1000, recv_ns, f"unknown oid {ev.oid}"))
            elif marks is not None:
                marks[ev.oid] = ev.oid in book.orders
        if not self.streaming:
            out += self._close_block(recv_ns)
        if self._status_wait:
            self._check_statuses()
        return out or None

    def _apply(self, book: CoinBook, coin: str, ev: _Diff) -> bool:
        """One diff event on one coin's book (False: an update/remove of an order it lacks).
        Raises MalformedFrame."""
        d = ev.raw_book_diff
        try:
            if d == "remove":
                ok = book.remove(ev.oid)
            elif d.new is not None:
                is_bid = _SIDES.get(ev.side)
                if is_bid is None:
                    raise ValueError(f"side {ev.side!r}")
                book.add(ev.oid, is_bid, float(ev.px), size_units(d.new.sz))
                ok = True
            elif d.update is not None:
                ok = book.set_size(ev.oid, size_units(d.update.newSz))
            else:
                raise ValueError("raw_book_diff without new, update or remove")
        except ValueError as exc:
            raise _malformed(f"book diff of oid {ev.oid}: {exc}", coin) from None
        if ok and self.l4:
            o = book.orders.get(ev.oid)
            self._l4.setdefault(coin, {})[ev.oid] = (
                ("bid" if o[0] else "ask", o[1], o[2] / SCALE) if o is not None
                else ("bid" if ev.side == "B" else "ask", float(ev.px), 0.0))
        return ok

    def _close_block(self, recv_ns: int) -> list:
        n = self._open
        if n is None:
            return []
        self._open = None
        self.height = n
        self.counts["blocks"] += 1
        ts_us, _ = self._open_time
        out = []
        for coin, book in self._books.items():
            if book.touched:
                bids, asks = book.take_changes()
                out.append(DepthDiff(coin, n, n, book.last_id, bids, asks, ts_us, recv_ns))
                book.last_id = n
        if self._l4:
            changes, self._l4 = self._l4, {}
            out += [L4Event(coin, n, [(oid, *o) for oid, o in orders.items()], ts_us, recv_ns)
                    for coin, orders in changes.items() if coin in self._books]
        if self._check is not None and self._check[0] == n and not self.streaming:
            out += self._check_events(n, ts_us, recv_ns)  # (streaming: when the next block begins)
        if self._pending:
            out += self._install_ready(recv_ns)
        return out

    def _lose(self, coin: str, n: int, ts_us: int, recv_ns: int, why: str) -> DepthDiff:
        """Drop one coin's order book (it is wrong): an unchainable diff for the feed."""
        self.counts["unknown_oid"] += 1
        log.warning("%s: %s in block %d: its book resyncs", coin, why, n)
        del self._books[coin]
        return DepthDiff(coin, n, n, NO_CHAIN, [], [], ts_us, recv_ns)

    def _gap(self, n: int, block_ns: int, recv_ns: int, out: list):
        """Blocks are missing before ``n``: every book is lost until a fresh snapshot."""
        self.counts["block_gaps"] += 1
        log.warning("book diffs jump from block %d to %d: resyncing every coin", self.height, n)
        for coin in self._books:
            out.append(DepthDiff(coin, n, n, NO_CHAIN, [], [], block_ns // 1000, recv_ns))
        self._books = None
        self._open = self._reopenable = None
        self._l4 = {}
        self._pending = {}  # the fresh snapshot has every coin
        return out

    def source_stats(self) -> dict[str, int]:
        """Counters the transport copies to the process stats (pipeline/shm.py PROCESS_STATS)."""
        return {"status_mismatches": self.counts["status_mismatches"]}

    def lost(self) -> bool:
        """The books need a fresh snapshot (a gap, an unknown oid); a coin added at runtime
        does not make them lost: it waits for a snapshot of its own (``pending_coins``)."""
        return self._books is None or len(self._books) + len(self._pending) < len(self.symbols)

    # ------------------------------------------------------------------- statuses
    # ``node_order_statuses_*`` (``order_statuses = true``; the node runs with
    # --write-order-statuses): every order's status changes per block.  The book is kept from the
    # diffs alone (each diff has what it needs); the statuses are an independent account of the
    # same block, checked against it order by order.  In the real sample (mainnet, 51 blocks)
    # every order whose last status in a block is ``open`` has a diff in that block (a ``new``,
    # maybe removed again), and every ``canceled``/``*Canceled``/``filled`` one is not on the book
    # after it (a ``remove``, or a taker that never rested); ``*Rejected`` ones never touch it
    # (95% of the lines).  A break of that is ``status_mismatches`` (the diffs and the statuses
    # disagree: an order the book missed or kept), counted and logged once per kind; the book is
    # not resynced for it (the periodic snapshot check is what rebuilds books).

    def _status_line(self, line: bytes, recv_ns: int):
        try:
            blk = _dec_statuses.decode(line)
        except DECODE_ERRORS as exc:
            raise _malformed(f"order statuses line: {exc}", None) from None
        self.counts["status_lines"] += 1
        n = blk.block_number
        known = self._known
        wait = None
        for ev in blk.events:
            s = ev.status
            if s.endswith("Rejected") or ev.order.coin not in known:
                continue  # (a rejected order never reaches the book)
            if wait is None:
                wait = self._status_wait.setdefault(n, {})
            wait[ev.order.oid] = (ev.order.coin, s)  # the block's last status of the order counts
        done = n if not self.streaming else n - 1  # streaming: a block is whole once a later one begins
        if done > self._status_done:
            self._status_done = done
        self._check_statuses()
        return None

    def _check_statuses(self) -> None:
        """Compare every block whose statuses are all read and that the book has passed."""
        books = self._books
        if books is None:
            return
        ready = self._depth_seen - 1 if self.streaming else self.height
        limit = min(self._status_done, ready)
        wait, marks = self._status_wait, self._marks
        for n in sorted(b for b in wait if b <= limit):
            statuses = wait.pop(n)
            changed = marks.get(n)
            if changed is None:  # the book never read that block (before its snapshot, or dropped)
                self.counts["status_blocks_unchecked"] += 1
                continue
            if not self.counts["statuses_checked"]:
                log.info("order statuses: checking them against the book from block %d on", n)
            since = self._since
            for oid, (coin, s) in statuses.items():
                book = books.get(coin)
                if book is None or n < since.get(coin, n + 1):
                    continue  # resyncing, or its book began after that block (added at runtime)
                self.counts["statuses_checked"] += 1
                if s == "open":
                    if oid not in changed:
                        self._status_mismatch("open", f"{coin} order {oid} open in block {n}, no book diff of it")
                elif s == "filled" or s == "canceled" or s.endswith("Canceled"):
                    if changed.get(oid, oid in book.orders):
                        self._status_mismatch("closed", f"{coin} order {oid} {s} in block {n}, still on the book")
        # marks of blocks whose statuses are read (compared, or none of our coins) are done with;
        # past MARK_BLOCKS the oldest go (statuses that late are not checked)
        keep = min([self._status_done + 1, *wait])
        for b in [b for b in marks if b < keep]:
            del marks[b]
        while len(marks) > MARK_BLOCKS:
            del marks[min(marks)]
        while len(wait) > WAIT_BLOCKS:
            del wait[min(wait)]
            self.counts["status_blocks_unchecked"] += 1

    def _status_mismatch(self, kind: str, what: str) -> None:
        self.counts["status_mismatches"] += 1
        if kind not in self._logged_status:
            self._logged_status.add(kind)
            log.warning("order statuses and book diffs disagree: %s (counted in status_mismatches; logged once "
                        "per kind)", what)

    # ------------------------------------------------------------------- fills
    def _fill_line(self, line: bytes, recv_ns: int):
        try:
            blk = _dec_fills.decode(line)
        except DECODE_ERRORS as exc:
            raise _malformed(f"fills line: {exc}", None) from None
        n = blk.block_number
        try:
            block_ns = node_time_ns(blk.block_time)
            self._lags(blk.local_time, block_ns, recv_ns)
        except ValueError as exc:
            raise _malformed(f"fills line: bad time: {exc}", None) from None
        if self.fills_block < 0 or n < self.fills_block or (n == self.fills_block and not self.streaming):
            return None  # before the first snapshot, or read already
        out = []
        if n > self.fills_block + 1 and not (self.streaming and n == self.fills_block):
            self.counts["fill_gaps"] += 1
            log.warning("fills jump from block %d to %d: trades of the blocks between are missing",
                        self.fills_block, n)
        if self.streaming:
            if self._fills_open and self._fills_open[0][0] != n:
                out = self._close_fills()
            ts_us = block_ns // 1000
            self._fills_open.extend((n, ts_us, recv_ns, f, user) for user, f in blk.events)
            self.fills_block = n
            return out or None
        self.fills_block = n
        ts_us = block_ns // 1000
        return self._trades([(n, ts_us, recv_ns, f, user) for user, f in blk.events]) or None

    def _close_fills(self) -> list:
        fills, self._fills_open = self._fills_open, []
        return self._trades(fills)

    def _trades(self, fills) -> list[TradeEvent | LiquidationEvent]:
        """Fills of one block -> one TradeEvent per ``tid`` (module docstring), and a
        LiquidationEvent when a side of it carries ``liquidation``: its side is the liquidated
        user's fill's (a liquidated long sells: "sell"; tardis' convention), its id the ``tid``."""
        by_tid: dict[int, list] = {}
        for item in fills:
            f = item[3]
            if f.coin in self._known:
                by_tid.setdefault(f.tid, []).append(item)
        out = []
        for tid, sides in by_tid.items():
            _, ts_us, recv_ns, f, _ = sides[0]
            taker = next((s[3] for s in sides if s[3].crossed), None)
            side = _TAKER.get(taker.side) if taker is not None else _OTHER.get(f.side)
            liq = next((s for s in sides if s[3].liquidation is not None), None)
            if not self._seen_tids[f.coin].add(tid):
                continue  # both sides were read in different batches: published already
            try:
                px, sz = float(f.px), float(f.sz)
            except ValueError:
                raise _malformed(f"fill px/sz {f.px!r}/{f.sz!r}", f.coin) from None
            if side is None or not (0 < px < float("inf") and 0 < sz < float("inf")):
                raise _malformed(f"fill tid {tid}: side {f.side!r}, px {f.px!r}, sz {f.sz!r}", f.coin)
            out.append(TradeEvent(f.coin, px, sz, side, str(tid), ts_us, recv_ns, liq is not None))
            if liq is not None:
                who = liq[3].liquidation.liquidatedUser
                liquidated = next((s[3] for s in sides if s[4] == who), liq[3])
                self.counts["liquidations"] += 1
                out.append(LiquidationEvent(f.coin, _TAKER.get(liquidated.side, side), px, sz, str(tid), ts_us,
                                            recv_ns))
        return out

    # ------------------------------------------------------------ the adapter contract
    def stream_groups(self) -> list[StreamGroup]:
        return []  # no WebSocket: the transport tails files (file_streams)

    # ------------------------------------------------------------ runtime streams
    # The files carry every coin: following one more is keeping its book too.  Its orders come
    # from a snapshot, so an added coin leaves the books short of one (``lost``): the transport
    # takes a fresh snapshot, which replaces the other books with the same levels (no resync for
    # them) and starts the new one.  A removed coin's book is dropped at once.

    def add_symbol(self, symbol: str) -> None:
        self.symbols = (*self.symbols, symbol)
        self._known = self._known | {symbol}
        self._seen_tids.setdefault(symbol, RecentKeys(self.TRADE_KEYS_PER_COIN))
        if self._books is not None and symbol not in self._books:
            # its diffs are kept from the first block not read yet (an open block's earlier
            # lines were skipped: it needs a snapshot at or after that block)
            self._pending[symbol] = PendingCoin(self.height + 1 if self._open is None else self._open + 1)

    def remove_symbol(self, symbol: str) -> None:
        self.symbols = tuple(s for s in self.symbols if s != symbol)
        self._known = self._known - {symbol}
        if self._books is not None:
            self._books.pop(symbol, None)
        self._l4.pop(symbol, None)
        self._pending.pop(symbol, None)

    def pending_coins(self) -> list[str]:
        """Coins added at runtime that wait for a snapshot (the transport takes one beside the
        tail, which reads on for the other coins)."""
        return [c for c, p in self._pending.items() if p.snapshot is None]

    def offer_coin_snapshot(self, height: int, books: dict[str, CoinBook], recv_ns: int) -> list[DepthSnapshot]:
        """A fresh snapshot for the pending coins: each one that the snapshot can start (its
        height is at or after the first block kept for it) holds its book until the diffs reach
        ``height``, then the kept diffs after it are applied (``_install_ready``); one older
        than that is dropped (counted: ``coin_snapshots_stale``; the transport asks again)."""
        for coin in self.pending_coins():
            p = self._pending[coin]
            if height < p.first_block - 1:
                self.counts["coin_snapshots_stale"] += 1
                continue
            book = books.get(coin)
            if book is None:
                log.warning("%s: not in the L4 snapshot at block %d: its book is empty", coin, height)
                book = CoinBook(height)
            p.snapshot, p.height = book, height
            p.diffs = [(n, ev) for n, ev in p.diffs if n > height]
        return self._install_ready(recv_ns)

    def _install_ready(self, recv_ns: int) -> list:
        """Pending coins whose snapshot the books have reached: snapshot + the kept diffs of
        the blocks read since = the coin's book at ``height``, published as its snapshot; the
        kept lines of a block still open (streaming) are applied after it, as part of that block."""
        if self._books is None:
            return []
        out: list = []
        for coin, p in list(self._pending.items()):
            if p.snapshot is None or p.height > self.height:
                continue
            book, now = p.snapshot, self.height
            l4, self.l4 = self.l4, False  # (the kept diffs are history: no l4 of them)
            try:
                ok = all(self._apply(book, coin, ev) for n, ev in p.diffs if n <= now)
            finally:
                self.l4 = l4
            if not ok:  # the snapshot and the kept diffs disagree: another snapshot
                self.counts["unknown_oid"] += 1
                log.warning("%s: an order of its kept diffs is not in its snapshot at %d: asking again", coin, p.height)
                p.snapshot, p.diffs = None, [(n, ev) for n, ev in p.diffs if n > now]
                continue
            del self._pending[coin]
            book.touched.clear()
            book.last_id = now
            bids, asks = book.levels()
            out.append(DepthSnapshot(coin, now, bids, asks, self._open_time[0], recv_ns))
            self._books[coin] = book
            self._since[coin] = now + 1 if self._open is None else self._open + 1  # (kept diffs: not marked)
            for n, ev in p.diffs:
                if n > now and not self._apply(book, coin, ev):  # lines of the open block
                    out.append(self._lose(coin, n, self._open_time[0], recv_ns, f"unknown oid {ev.oid}"))
                    break
            self.counts["coins_added"] += 1
            log.info("%s: book from its snapshot at %d + %d blocks of kept diffs", coin, p.height, now - p.height)
        return out

    def parse_frame(self, frame: bytes, recv_ns: int):
        raise UnknownFrame("the node source reads lines of files (parse_line), not frames")

    def snapshot_request(self, symbol: str) -> SnapshotRequest:
        """The full-depth order book lives in this process; the node's info server offers no
        per-coin L2 book of its own.  For ``pipeline book --rest-fallback``: the public API's."""
        body = msgspec.json.encode({"type": "l2Book", "coin": symbol})
        return SnapshotRequest("https://api.hyperliquid.xyz/info", 2, "POST", body)

    def parse_snapshot(self, symbol: str, body: bytes, recv_ns: int) -> DepthSnapshot:
        return HyperliquidAdapter.parse_snapshot(self, symbol, body, recv_ns)

    @staticmethod
    def check(ev: DepthDiff, book_id: int, first: bool) -> Verdict:
        """A block's diff applies when it chains from the book's block (``prev_id``); an
        older one is covered; anything else (``NO_CHAIN``: a gap or an unknown oid) is a gap."""
        if ev.prev_id == book_id:
            return APPLY
        if ev.last_id <= book_id and ev.prev_id != NO_CHAIN:
            return SKIP
        return GAP

    @staticmethod
    def snapshot_usable(snapshot_id: int, first_buffered: DepthDiff | None) -> bool:
        return True


__all__ = ["CoinBook", "HyperliquidNodeAdapter", "node_time_ns", "size_units"]
