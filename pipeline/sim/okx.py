"""``pipeline sim --protocol okx``: the seeded market over the OKX v5 public WebSocket and REST.

What an OKX adapter sees (exchange-protocols.md §5; docs/sim.md, "OKX v5"):

- WebSocket ``/ws/v5/public``; ``{"op":"subscribe","args":[{"channel","instId"}],"id":..}`` answered
  per arg with ``{"id","event":"subscribe","arg","connId"}``, errors as
  ``{"id","event":"error","code","msg","connId"}``; ``unsubscribe`` likewise. The text ``ping``
  gets the text ``pong``. A connection that sends nothing for 30 s is closed.
- ``books`` (every 100 ms) and ``books-l2-tbt`` (every 10 ms): a 400-level ``snapshot`` with
  ``prevSeqId`` -1, then ``update`` frames with ``prevSeqId`` == the previous ``seqId`` (seqIds are
  increasing, not contiguous). Levels are ``[px, sz, "0", numOrders]``; a level that leaves the
  top 400 gets ``sz`` "0". ``checksum`` is the signed CRC32 of the top 25 interleaved levels after
  the update (§5 checksum), or 0 as OKX sends now (``checksum`` fault switch). After a quiet
  period a heartbeat update with no levels and ``seqId == prevSeqId`` is sent.
- ``trades``: one message per taker order: ``tradeId`` (the last fill's id), ``px``, ``sz`` (all its
  fills), ``side`` (taker ``buy``/``sell``), ``ts``, ``count``, ``source``, ``seqId``.
- REST ``GET /api/v5/market/books?instId=&sz=`` -> ``{"code":"0","msg":"","data":[{asks,bids,ts,seqId}]}``.
- other kinds (issue 13): ``bbo-tbt`` (any instrument: ``data[{asks,bids,ts,seqId}]`` with one
  level a side, sent on every change of the best bid or ask, ``seqId`` the market's update id);
  for ``-SWAP`` and dated futures instruments ``mark-price`` (``markPx``), ``funding-rate`` (swaps:
  ``fundingRate``, ``fundingTime`` the next 8-hourly funding, ``nextFundingRate`` empty as OKX
  sends it now), ``open-interest`` (``oi`` contracts), each once a second, ``index-tickers`` by
  index id (``BTC-USDT`` for ``BTC-USDT-SWAP``: ``idxPx``) and ``liquidation-orders`` by
  ``instType`` (``SWAP``/``FUTURES``; ``details[{side, posSide, sz, bkPx, bkLoss, ts}]``, ``side``
  the liquidation order's side).

Prices and sizes are strings without trailing zeros (``"8477"``, ``"8475.3"``); a ``-SWAP``
instrument's sizes are whole contracts.
"""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

from aiohttp import web

from pipeline.sim.base import BadFault, Connection, SimOptions, Topic, dumps
from pipeline.sim.feeds import BookFeed, Fill, TextFormat, VenueServer, number_text, order_count, stripped_text
from pipeline.sim.market import Update

__all__ = ["OkxServer", "okx_checksum"]

BOOK_CHANNELS = {"books": 0.1, "books-l2-tbt": 0.01}  # channel -> push period, s (§5 channels)
BOOK_DEPTH = 400
_QUIET_HEARTBEAT = 60.0  # seconds without a change before a heartbeat update (§5 sync rule 3)
_IDLE = 30.0
_EIGHT_HOURS_MS = 8 * 3600 * 1000
DERIVATIVE_CHANNELS = ("mark-price", "funding-rate", "open-interest")  # by instId, swaps and futures only


def inst_type(inst: str) -> str | None:
    """SWAP / FUTURES / None (spot) from an instrument id's shape."""
    parts = inst.split("-")
    if len(parts) == 3 and parts[2] == "SWAP":
        return "SWAP"
    if len(parts) == 3 and parts[2].isdigit():
        return "FUTURES"
    return None


def index_of(inst: str) -> str:
    """The index id of an instrument: ``BTC-USDT`` for ``BTC-USDT-SWAP``."""
    return "-".join(inst.split("-")[:2])


def okx_checksum(bids: list[tuple[str, str]] | list[list[str]], asks: list[tuple[str, str]] | list[list[str]]) -> int:
    """Signed CRC32 of ``bid1px:bid1sz:ask1px:ask1sz:...`` over the first 25 levels of each side (§5)."""
    parts: list[str] = []
    bids, asks = bids[:25], asks[:25]
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            parts += bids[i][:2]
        if i < len(asks):
            parts += asks[i][:2]
    value = zlib.crc32(":".join(parts).encode())
    return value - (1 << 32) if value >= 1 << 31 else value


class OkxServer(VenueServer):
    name = "okx"
    idle_in = _IDLE
    idle_close_code = 4004  # an application close code

    def __init__(self, options: SimOptions):
        super().__init__(options)
        self.requests.update({"books": 0})
        self.text = TextFormat(stripped_text)
        self.checksum_mode = "crc"  # or "zero", as OKX sends since 2026-06
        self.quiet_after = options.quiet_heartbeat or _QUIET_HEARTBEAT
        for symbol in self.market.symbols:
            self.trade_topics[("trades", symbol)] = Topic()
        self.indexes: dict[str, str] = {}  # index id -> the first instrument of it (its market gives the price)
        for symbol in self.market.symbols:
            if inst_type(symbol):
                self.indexes.setdefault(index_of(symbol), symbol)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/ws/v5/public", self.ws_handler)
        app.router.add_get("/api/v5/market/books", self._rest_books)
        app.router.add_get("/api/v5/public/instruments", self._rest_instruments)

    # -- frames --------------------------------------------------------------------------

    @staticmethod
    def _levels(levels: Any) -> list[list[str]]:
        return [[p, s, "0", "0" if s == "0" else str(order_count(s))] for p, s in levels]

    def _checksum(self, feed: BookFeed) -> int:
        if self.checksum_mode == "zero":
            return 0
        value = okx_checksum(list(feed.bids.items()), list(feed.asks.items()))
        if feed.extra:  # a bad_checksum fault is armed
            feed.extra = None
            value = value + 1 if value < (1 << 31) - 1 else value - 1
        return value

    def _book_frame(self, feed: BookFeed, action: str, asks: Any, bids: Any, prev: int, event_ms: int) -> str:
        channel, inst = feed.key
        data = dumps([{"asks": self._levels(asks), "bids": self._levels(bids), "ts": str(event_ms),
                       "checksum": self._checksum(feed), "prevSeqId": prev, "seqId": feed.seq}])
        return '{"arg":{"channel":"%s","instId":"%s"},"action":"%s","data":%s}' % (channel, inst, action, data)

    def init_view(self, feed: BookFeed) -> None:
        feed.seq = self.market.last_update_id(feed.symbol)

    def snapshot_frame(self, feed: BookFeed, conn: Connection | None, event_ms: int) -> str:
        return self._book_frame(feed, "snapshot", feed.asks.items(), feed.bids.items(), -1, event_ms)

    def delta_frame(self, feed: BookFeed, bids: list[list[str]], asks: list[list[str]], event_ms: int) -> str:
        prev = feed.seq
        feed.seq = self.market.last_update_id(feed.symbol)
        return self._book_frame(feed, "update", asks, bids, prev, event_ms)

    def quiet(self, feed: BookFeed, now: float, event_ms: int) -> None:
        if now - feed.last_publish >= self.quiet_after:
            self.counters["heartbeats"] += 1
            self.publish_book(feed, self._book_frame(feed, "update", (), (), feed.seq, event_ms), now)

    def trade_frames(self, update: Update, fills: list[Fill], event_ms: int) -> None:
        topic = self.trade_topics[("trades", update.symbol)]
        if not topic.conns:
            return
        trade = update.trade
        assert trade is not None
        topic.publish(dumps({"arg": {"channel": "trades", "instId": update.symbol}, "data": [{
            "instId": update.symbol, "tradeId": str(trade.last_id), "px": self.text(trade.price),
            "sz": self.text(trade.quantity), "side": "buy" if fills[0].taker_buy else "sell",
            "ts": str(event_ms), "count": str(len(fills)), "source": "0", "seqId": update.update_id}]}))
        self.counters["trade_frames"] += 1

    # -- other kinds ---------------------------------------------------------------------

    def _other_frame(self, channel: str, inst: str, data: Any) -> str:
        return '{"arg":{"channel":"%s","instId":"%s"},"data":%s}' % (channel, inst, dumps(data))

    def quote_frames(self, update: Update, event_ms: int) -> None:
        topic = self.other_topics.get(("bbo-tbt", update.symbol))
        if topic is None or not topic.conns:
            return
        b, bq, a, aq = update.bbo
        t = self.text
        topic.publish(self._other_frame("bbo-tbt", update.symbol, [{
            "asks": self._levels([(t(a), t(aq))]), "bids": self._levels([(t(b), t(bq))]), "ts": str(event_ms),
            "seqId": update.update_id}]))
        self.counters["other_frames"] += 1

    def ticker_frames(self, event_ms: int) -> None:
        next_funding = (event_ms // _EIGHT_HOURS_MS + 1) * _EIGHT_HOURS_MS
        ts = str(event_ms)
        for (channel, inst), topic in self.other_topics.items():
            if not topic.conns or channel in ("bbo-tbt", "liquidation-orders"):
                continue
            v = self.ticker(self.indexes[inst] if channel == "index-tickers" else inst)
            if channel == "mark-price":
                data = {"instType": inst_type(inst), "instId": inst, "markPx": number_text(v.mark), "ts": ts}
            elif channel == "index-tickers":
                px = number_text(v.index)
                data = {"instId": inst, "idxPx": px, "high24h": px, "low24h": px, "open24h": px, "sodUtc0": px,
                        "sodUtc8": px, "ts": ts}
            elif channel == "funding-rate":
                data = {"formulaType": "noRate", "fundingRate": number_text(v.funding_rate),
                        "fundingTime": str(next_funding), "instId": inst, "instType": "SWAP",
                        "method": "current_period", "nextFundingRate": "",
                        "nextFundingTime": str(next_funding + _EIGHT_HOURS_MS), "ts": ts}
            else:  # open-interest
                data = {"instType": inst_type(inst), "instId": inst, "oi": number_text(v.open_interest),
                        "oiCcy": number_text(v.open_interest / 100), "oiUsd": number_text(v.open_interest * v.mark),
                        "ts": ts}
            topic.publish(self._other_frame(channel, inst, [data]))
            self.counters["other_frames"] += 1

    def liquidation_frames(self, symbol: str, fills: list[Fill], event_ms: int) -> None:
        kind = inst_type(symbol)
        topic = self.other_topics.get(("liquidation-orders", kind))
        if kind is None or topic is None or not topic.conns:
            return
        buy = fills[0].taker_buy  # a taker buy is the liquidation of a short
        qty = sum(float(f.qty) for f in fills)
        family = index_of(symbol)
        topic.publish('{"arg":{"channel":"liquidation-orders","instType":"%s"},"data":%s}' % (kind, dumps([{
            "details": [{"bkLoss": "0", "bkPx": self.text(fills[0].price), "ccy": "",
                         "posSide": "short" if buy else "long", "side": "buy" if buy else "sell",
                         "sz": number_text(qty), "ts": str(event_ms)}],
            "instFamily": family, "instId": symbol, "instType": kind, "uly": family}])))
        self.counters["other_frames"] += 1

    def _other_key(self, channel: str, a: dict[str, Any]) -> tuple[tuple[str, str] | None, dict[str, str]]:
        """The topic key and echoed arg of a quote / ticker / liquidation subscription; key None if invalid."""
        if channel == "liquidation-orders":
            kind = a.get("instType")
            return (("liquidation-orders", kind) if kind in ("SWAP", "FUTURES") else None,
                    {"channel": channel, "instType": str(kind)})
        inst = a.get("instId")
        arg = {"channel": channel, "instId": str(inst)}
        if channel == "bbo-tbt":
            ok = inst in self.recent
        elif channel == "index-tickers":
            ok = inst in self.indexes
        else:
            ok = inst in self.recent and inst_type(inst) is not None and (
                channel != "funding-rate" or inst_type(inst) == "SWAP")
        return ((channel, inst) if ok else None), arg

    def malformed_text(self) -> str:
        return '{"arg":{"channel":"books","instId":"%s"},"action":"update","data":[{"asks":[["6' % (
            self.market.symbols[0])

    # -- messages ------------------------------------------------------------------------

    def on_text(self, conn: Connection, text: str) -> None:
        """Text ``ping``, or ``{"op":"subscribe"|"unsubscribe","args":[..],"id":..}`` (§5)."""
        if text == "ping":
            self.send(conn, b"pong")
            return
        try:
            req = json.loads(text)
        except ValueError:
            req = None
        rid = req.get("id") if isinstance(req, dict) else None
        head = {"id": rid} if rid is not None else {}
        op = req.get("op") if isinstance(req, dict) else None
        args = req.get("args") if isinstance(req, dict) else None
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list) or not args \
                or not all(isinstance(a, dict) for a in args):
            self._error(conn, head, "60012", f"Invalid request: {text[:200]}")
            return
        for a in args:
            channel, inst = a.get("channel"), a.get("instId")
            if channel in ("bbo-tbt", "index-tickers", "liquidation-orders", *DERIVATIVE_CHANNELS):
                other, arg = self._other_key(channel, a)
                if other is None:
                    self._error(conn, head, "60018", f"Wrong URL or channel:{channel},instId:{inst} doesn't exist.")
                    continue
                self.send_json(conn, {**head, "event": op, "arg": arg, "connId": conn.conn_id})
                if op == "unsubscribe":
                    self.unsubscribe(conn, other)
                elif other not in conn.streams:
                    self.subscribe_topic(conn, other, self.other_topic(other))
                continue
            if channel not in BOOK_CHANNELS and channel != "trades":
                self._error(conn, head, "60018", f"Wrong URL or channel:{channel},instId:{inst} doesn't exist.")
                continue
            if inst not in self.recent:
                self._error(conn, head, "60018", f"Wrong URL or channel:{channel},instId:{inst} doesn't exist.")
                continue
            key = (channel, inst)
            self.send_json(conn, {**head, "event": op, "arg": {"channel": channel, "instId": inst},
                                  "connId": conn.conn_id})
            if op == "unsubscribe":
                self.unsubscribe(conn, key)
            elif key in conn.streams:
                continue
            elif channel == "trades":
                self.subscribe_topic(conn, key, self.trade_topics[key])
            else:
                feed = self.book_feed(key, lambda: BookFeed(
                    key, inst, BOOK_DEPTH, BOOK_CHANNELS[channel], self.text, self.text, "0"))
                self.subscribe_book(conn, feed)

    def _error(self, conn: Connection, head: dict[str, Any], code: str, msg: str) -> None:
        self.counters["ws_errors"] += 1
        self.send_json(conn, {**head, "event": "error", "code": code, "msg": msg, "connId": conn.conn_id})

    # -- faults --------------------------------------------------------------------------

    def extra_faults(self) -> tuple[str, ...]:
        return ("bad_checksum",)

    def feed_fault(self, name: str, feed: BookFeed) -> None:
        feed.extra = "bad_checksum"

    def venue_fault(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        if name == "checksum":
            mode = params.get("mode")
            if mode not in ("crc", "zero"):
                raise BadFault(f"mode: expected 'crc' or 'zero', got {mode!r}")
            self.checksum_mode = mode
            return None
        return super().venue_fault(name, params)

    def clear_faults(self) -> None:
        super().clear_faults()
        for feed in self.book_feeds.values():
            feed.extra = None

    def state_extra(self) -> dict[str, Any]:
        return {**super().state_extra(), "checksum_mode": self.checksum_mode}

    # -- REST ----------------------------------------------------------------------------

    async def _rest_instruments(self, request: web.Request) -> web.Response:
        """``GET /api/v5/public/instruments?instType=&instId=`` (§5): the instruments this sim lists, as
        "live"; an unknown instId is code 51001, as on the venue."""
        self.requests["instruments"] = self.requests.get("instruments", 0) + 1
        inst_type, wanted = request.query.get("instType", ""), request.query.get("instId")
        if not inst_type:
            return self.json_response({"code": "50014", "msg": "Parameter instType can not be empty", "data": []})
        if wanted is not None and wanted not in self.recent:
            return self.json_response({"code": "51001", "msg": "Instrument ID does not exist", "data": []})
        rows = [{"instId": inst, "instType": inst_type, "state": "live"} for inst in self.recent
                if wanted is None or inst == wanted]
        return self.json_response({"code": "0", "msg": "", "data": rows})

    async def _rest_books(self, request: web.Request) -> web.Response:
        """``GET /api/v5/market/books?instId=&sz=`` (§5 REST snapshots: at most 400 a side)."""
        self.requests["books"] += 1
        inst = request.query.get("instId", "")
        if inst not in self.recent:
            return self.json_response({"code": "51001", "msg": "Instrument ID does not exist", "data": []})
        try:
            size = int(request.query.get("sz", "1"))
        except ValueError:
            size = 0
        if not 1 <= size <= BOOK_DEPTH:
            return self.json_response({"code": "51000", "msg": "Parameter sz error", "data": []})
        last_id, bids, asks = self.market.snapshot(inst, size)
        t = self.text
        return self.json_response({"code": "0", "msg": "", "data": [{
            "asks": self._levels((t(p), t(s)) for p, s in asks),
            "bids": self._levels((t(p), t(s)) for p, s in bids),
            "ts": str(int(time.time() * 1000)), "seqId": last_id}]})
