"""``pipeline sim --protocol hyperliquid_node --out DIR``: a Hyperliquid node's output files.

What the ``hyperliquid_node`` source reads (shared/data/samples/README.md, hyperliquid_node;
docs/sim.md "Hyperliquid node"):

- Every ``block_interval`` (0.07 s, about the chain's) one block of the seeded market's changes,
  written under ``DIR`` in **both** layouts at once:
  ``node_raw_book_diffs_by_block/hourly/YYYYMMDD/H`` and ``node_fills_by_block/...`` (one line
  per block ``{"local_time","block_time","block_number","events"}``), and the same under
  ``*_streaming`` with one event per line (an empty block is one line with ``events: []``).
  Hours are not zero-padded.
- Orders: each level of the market is a queue of orders (``oid``); a level that grows gets a
  ``new`` order for the difference, one that shrinks loses orders from the back (``remove``, or
  ``update`` with ``origSz``/``newSz``), a trade takes from the front: a fill for the resting
  order (``crossed: false``) and one for the taker (``crossed: true``), sharing ``tid``.
- Order statuses (``node_order_statuses_*``, both layouts), as the real node's sample shows
  them: ``open`` for each new resting order, ``canceled`` for each one removed from the back,
  ``open`` then ``filled`` for each taker (it never rests: no diff), and a
  ``badAloPxRejected`` order per trade (no diff); a maker filled or trimmed has none.
- ``POST /info`` ``{"type":"fileSnapshot","request":{"type":"l4Snapshots",...},"outPath":P,
  "includeHeightInOutput":true}`` writes ``[height, [[coin, [[bids], [asks]]], ...]]`` (each
  order ``[user, {coin, side, limitPx, sz, oid, ...}]``, best price first) to ``P`` at the last
  written block and answers ``null``.
- Faults (``/sim/fault?name=``): ``rollover`` (the next block goes to the next hour's files),
  ``partial`` (the next block's diff lines are written in two parts, the second with the block
  after), ``block_gap`` (the next block is not written: its number is skipped), ``liquidation``
  (the next trade's taker fill carries a ``liquidation`` field), ``snapshot_delay seconds=S``
  (until ``clear``: each fileSnapshot is taken at once but written S seconds later, as a
  mainnet node's takes seconds; the blocks go on meanwhile).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from aiohttp import web

from pipeline.sim.base import BadFault, BaseServer, SimOptions, arg, dumps
from pipeline.sim.feeds import hyperliquid_text
from pipeline.sim.market import ZERO, Update

log = logging.getLogger(__name__)

__all__ = ["NodeServer"]

BLOCK_INTERVAL = 0.07
FIRST_BLOCK = 900_000_000
FIRST_OID = 400_000_000_000
_TID_MASK = (1 << 50) - 1
KINDS = ("node_raw_book_diffs", "node_fills", "node_order_statuses")


def units(s: str) -> int:
    whole, _, frac = s.partition(".")
    return int(whole) * 10 ** 8 + int(frac.ljust(8, "0")[:8] or "0")


def text(u: int) -> str:
    return hyperliquid_text(f"{u // 10 ** 8}.{u % 10 ** 8:08d}")


def node_time(t: float) -> str:
    """Seconds since the epoch -> the node's ``2026-05-05T17:39:13.394386432`` (UTC, ns)."""
    ns = int(t * 1e9)
    return datetime.fromtimestamp(ns // 10 ** 9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 10 ** 9:09d}"


def user_of(n: int) -> str:
    return "0x" + hashlib.sha256(b"user%d" % n).hexdigest()[:40]


class NodeServer(BaseServer):
    """The seeded market as a node's hourly files, and the node's info server (fileSnapshot)."""

    name = "hyperliquid_node"

    def __init__(self, options: SimOptions):
        super().__init__(options)
        self._oid = FIRST_OID
        if not options.out:
            raise ValueError("the hyperliquid_node sim needs --out DIR (the node's data directory)")
        self.out = Path(options.out)
        self.out.mkdir(parents=True, exist_ok=True)
        # (coin, side) -> price text -> [[oid, units, user], ...] oldest first
        self.levels: dict[tuple[str, str], dict[str, list[list]]] = {}
        for coin in self.market.symbols:
            _, bids, asks = self.market.snapshot(coin, 10 ** 6)
            for side, lv in (("B", bids), ("A", asks)):
                book = self.levels[(coin, side)] = {}
                for px, sz in lv:
                    book[hyperliquid_text(px)] = [[self._next_oid(), units(sz), user_of(len(book))]]
        self.block = FIRST_BLOCK
        self.diffs: list[dict] = []
        self.fills: list[list] = []
        self.statuses: list[dict] = []
        self.hour_offset = 0
        self.faults = {"partial": 0, "block_gap": 0, "liquidation": 0}
        self.held: dict[Path, bytes] = {}   # the second part of a line written in two (partial)
        self.counters.update({"blocks": 0, "blocks_skipped": 0, "snapshots": 0, "rollovers": 0,
                              "partial_lines": 0, "liquidations": 0})
        self._last_block = 0.0
        self.interval = BLOCK_INTERVAL
        self.snapshot_delay = 0.0

    def _next_oid(self) -> int:
        self._oid += 1
        return self._oid

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/info", self._info)

    # -- the market as orders -------------------------------------------------------------

    def _diff(self, coin: str, side: str, px: str, order: list, d: Any) -> None:
        self.diffs.append({"user": order[2], "oid": order[0], "coin": coin, "side": side, "px": px,
                           "raw_book_diff": d})

    def _status(self, status: str, coin: str, side: str, px: str, oid: int, sz: int, user: str, ms: int,
                tif: str = "Gtc") -> None:
        self.statuses.append({"user": user, "hash": None, "builder": None, "status": status,
                              "order": {"coin": coin, "side": side, "limitPx": px, "sz": text(sz), "oid": oid,
                                        "timestamp": ms, "triggerCondition": "N/A", "isTrigger": False,
                                        "triggerPx": "0.0", "children": [], "isPositionTpsl": False,
                                        "reduceOnly": False, "orderType": "Limit", "origSz": text(sz),
                                        "tif": tif, "cloid": None}})

    def on_update(self, update: Update, event_ms: int) -> None:
        coin = update.symbol
        if update.trade is not None:
            self._trade(update, event_ms)
        for side_ba, px8, sz8 in update.changes:
            side = "B" if side_ba == "b" else "A"
            px = hyperliquid_text(px8)
            level = self.levels[(coin, side)].setdefault(px, [])
            want = 0 if sz8 == ZERO else units(sz8)
            have = sum(o[1] for o in level)
            if want > have:
                order = [self._next_oid(), want - have, user_of(self._oid % 97)]
                level.append(order)
                self._status("open", coin, side, px, order[0], order[1], order[2], event_ms)
                self._diff(coin, side, px, order, {"new": {"sz": text(order[1])}})
            while have > want:  # from the back: the newest orders are cancelled first
                order = level[-1]
                if have - order[1] >= want:
                    level.pop()
                    have -= order[1]
                    self._status("canceled", coin, side, px, order[0], order[1], order[2], event_ms)
                    self._diff(coin, side, px, order, "remove")
                else:
                    new = order[1] - (have - want)
                    self._diff(coin, side, px, order, {"update": {"origSz": text(order[1]), "newSz": text(new)}})
                    order[1] = new
                    have = want
            if not level:
                del self.levels[(coin, side)][px]

    def _trade(self, update: Update, event_ms: int) -> None:
        """A taker order against the front of the best level: per trade id one maker and one
        taker fill (same ``tid``); the level's orders shrink from the front."""
        tr = update.trade
        coin = update.symbol
        passive = "A" if not tr.buyer_is_maker else "B"  # a taker buy hits the asks
        px = hyperliquid_text(tr.price)
        level = self.levels[(coin, passive)].get(px, [])
        for i, q8 in enumerate(tr.quantities):
            q = units(q8)
            maker = level[0] if level else [0, 0, user_of(0)]
            tid = ((tr.first_id + i) * 0x9E3779B97F4A7C15 + zlib.crc32(coin.encode())) & _TID_MASK
            common = {"coin": coin, "px": px, "sz": text(q), "time": event_ms, "hash": "0x" + "0" * 64,
                      "tid": tid, "feeToken": "USDC", "closedPnl": "0.0", "startPosition": "0.0"}
            taker = {**common, "side": "B" if passive == "A" else "A", "oid": self._next_oid(), "crossed": True,
                     "dir": "Open Long" if passive == "A" else "Open Short", "fee": "0.01"}
            for status in ("open", "filled"):  # a taker: placed and filled at once, never on the book
                self._status(status, coin, taker["side"], px, taker["oid"], q, user_of(7), event_ms, "Ioc")
            self._status("badAloPxRejected", coin, passive, px, self._next_oid(), q, user_of(8), event_ms, "Alo")
            if self.faults["liquidation"]:
                self.faults["liquidation"] -= 1
                self.counters["liquidations"] += 1
                taker["liquidation"] = {"liquidatedUser": user_of(1), "markPx": px, "method": "market"}
            self.fills.append([user_of(7), taker])
            self.fills.append([maker[2], {**common, "side": passive, "oid": maker[0], "crossed": False,
                                          "dir": "Open Short" if passive == "A" else "Open Long", "fee": "-0.001"}])
            # the resting orders give up q from the front
            while q > 0 and level:
                o = level[0]
                if o[1] <= q:
                    q -= o[1]
                    level.pop(0)
                    self._diff(coin, passive, px, o, "remove")
                else:
                    new = o[1] - q
                    self._diff(coin, passive, px, o, {"update": {"origSz": text(o[1]), "newSz": text(new)}})
                    o[1] = new
                    q = 0
        if not level:
            self.levels[(coin, passive)].pop(px, None)

    # -- blocks and files -----------------------------------------------------------------

    def on_tick(self, now: float, event_ms: int) -> None:
        if now - self._last_block >= self.interval:
            self._last_block = now
            self.write_block()

    def _path(self, kind: str, layout: str, t: float) -> Path:
        dt = datetime.fromtimestamp(t, timezone.utc) + timedelta(hours=self.hour_offset)
        return self.out / f"{kind}_{layout}" / "hourly" / dt.strftime("%Y%m%d") / str(dt.hour)

    def write_block(self) -> None:
        """The events since the last block as the next block, in both layouts."""
        self.block += 1
        diffs, fills, self.diffs, self.fills = self.diffs, self.fills, [], []
        statuses, self.statuses = self.statuses, []
        if self.faults["block_gap"]:
            self.faults["block_gap"] -= 1
            self.counters["blocks_skipped"] += 1
            return  # applied to the orders (the next snapshot has them), never written
        t = time.time()
        head = {"local_time": node_time(t + 0.0003), "block_time": node_time(t), "block_number": self.block}
        partial = self.faults["partial"] > 0
        if partial:
            self.faults["partial"] -= 1
            self.counters["partial_lines"] += 1
        for st in statuses:
            st["time"] = head["block_time"]
        for kind, events in (("node_raw_book_diffs", diffs), ("node_fills", fills), ("node_order_statuses", statuses)):
            by_block = (json.dumps({**head, "events": events}, separators=(",", ":")) + "\n").encode()
            streaming = "".join(json.dumps({**head, "events": [ev]}, separators=(",", ":")) + "\n"
                                for ev in events) if events else json.dumps({**head, "events": []},
                                                                            separators=(",", ":")) + "\n"
            for layout, data in (("by_block", by_block), ("streaming", streaming.encode())):
                self._append(self._path(kind, layout, t), data, partial and kind == "node_raw_book_diffs")
        self.counters["blocks"] += 1

    def _append(self, path: Path, data: bytes, split: bool) -> None:
        held = b""
        for p in list(self.held):  # the rest of a line written in two, in whichever hour file it began
            if p.parent.parent == path.parent.parent:
                with open(p, "ab") as f:
                    f.write(self.held.pop(p))
        if split:
            cut = max(1, len(data) // 2)
            data, held = data[:cut], data[cut:]
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write(data)
        if held:
            self.held[path] = held

    # -- the info server ------------------------------------------------------------------

    def snapshot(self) -> list:
        """``[height, [[coin, [[bids], [asks]]]]]`` at the last block written (pending events
        become a block first, so the files and the snapshot agree)."""
        if self.diffs or self.fills or self.statuses:
            self.write_block()
        coins = []
        for coin in self.market.symbols:
            sides = []
            for side in ("B", "A"):
                book = self.levels[(coin, side)]
                prices = sorted(book, key=float, reverse=side == "B")
                sides.append([[o[2], {"coin": coin, "side": side, "limitPx": px, "sz": text(o[1]), "oid": o[0],
                                      "timestamp": 0, "triggerCondition": "N/A", "isTrigger": False,
                                      "triggerPx": "0.0", "children": [], "isPositionTpsl": False,
                                      "reduceOnly": False, "orderType": "Limit", "origSz": text(o[1]),
                                      "tif": "Gtc", "cloid": None}]
                              for px in prices for o in book[px]])
            coins.append([coin, sides])
        return [self.block, coins]

    async def _info(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if (not isinstance(body, dict) or body.get("type") != "fileSnapshot"
                or not isinstance(body.get("request"), dict) or body["request"].get("type") != "l4Snapshots"
                or not isinstance(body.get("outPath"), str)):
            return web.Response(status=422, text="Failed to deserialize the JSON body into the target type")
        snap = self.snapshot() if body.get("includeHeightInOutput") else self.snapshot()[1]
        if self.snapshot_delay > 0:
            await asyncio.sleep(self.snapshot_delay)
        out = Path(body["outPath"])
        tmp = out.with_name(out.name + ".tmp")
        await asyncio.to_thread(tmp.write_text, dumps(snap))
        os.replace(tmp, out)
        self.counters["snapshots"] += 1
        return web.Response(text="null", content_type="application/json")

    # -- faults ---------------------------------------------------------------------------

    def venue_fault(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        if name == "rollover":
            self.hour_offset += 1
            self.counters["rollovers"] += 1
            return {"ok": True, "hour_offset": self.hour_offset}
        if name == "snapshot_delay":
            self.snapshot_delay = arg(params, "seconds", float)
            return {"ok": True, "snapshot_delay": self.snapshot_delay}
        if name in self.faults:
            self.faults[name] += 1
            return None
        raise BadFault(f"unknown fault {name!r} (hyperliquid_node: rollover, partial, block_gap, liquidation, "
                       "snapshot_delay)")

    def clear_faults(self) -> None:
        for k in self.faults:
            self.faults[k] = 0
        self.snapshot_delay = 0.0

    def state_extra(self) -> dict[str, Any]:
        return {"protocol": self.name, "block": self.block, "out": str(self.out), "hour_offset": self.hour_offset}
