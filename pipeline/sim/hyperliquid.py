"""``pipeline sim --protocol hyperliquid``: the seeded market over the Hyperliquid WebSocket and ``/info``.

What a Hyperliquid adapter sees (exchange-protocols.md §6; docs/sim.md, "Hyperliquid"):

- WebSocket ``/ws``; ``{"method":"subscribe","subscription":{"type":"l2Book"|"trades","coin":"BTC"}}``
  answered with ``{"channel":"subscriptionResponse","data":{"method","subscription"}}`` (errors:
  ``{"channel":"error","data":"<text>"}``); ``{"method":"ping"}`` gets ``{"channel":"pong"}``. A
  connection that was sent nothing for 60 s is closed.
- ``l2Book``: full top-20 snapshots ``{"channel":"l2Book","data":{"coin","time","levels":[bids, asks]}}``
  with levels ``{"px","sz","n"}``: one on subscribe, then one every ``book_interval`` (venue: 0.5 s)
  when the book changed. There are no sequence numbers; a dropped snapshot is harmless.
- ``trades``: ``{"channel":"trades","data":[{coin, side, px, sz, hash, time, tid, users}]}`` with ``side``
  ``B`` (taker buy) or ``A`` (taker sell). The first message after subscribing is a backlog of
  recent trades, which repeats trades an earlier connection saw (clients dedupe on
  ``(coin, time, tid)``).
- REST ``POST /info`` ``{"type":"l2Book","coin":..}`` -> the same shape as the WS ``data``.

Numbers are strings as the venue writes them: no trailing zeros but at least one decimal
(``"105055.0"``, ``"0.1428"``).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from aiohttp import web

from pipeline.sim.base import Connection, SimOptions, Topic, dumps
from pipeline.sim.feeds import BookFeed, Fill, TextFormat, VenueServer, hyperliquid_text, order_count
from pipeline.sim.market import Update

__all__ = ["HyperliquidServer"]

BOOK_DEPTH = 20
BOOK_INTERVAL = 0.5  # the venue pushes on a block at least 0.5 s after the last push (§6)
_BACKLOG = 30  # trades in the first trades message, as in the real capture
_IDLE = 60.0
_TID_MASK = (1 << 50) - 1


class HyperliquidServer(VenueServer):
    name = "hyperliquid"
    idle_out = _IDLE

    def __init__(self, options: SimOptions):
        super().__init__(options)
        self.requests.update({"info": 0})
        self.text = TextFormat(hyperliquid_text)
        self.interval = options.book_interval or BOOK_INTERVAL
        for symbol in self.market.symbols:
            self.trade_topics[("trades", symbol)] = Topic()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/ws", self.ws_handler)
        app.router.add_post("/info", self._rest_info)

    # -- frames --------------------------------------------------------------------------

    def _book(self, coin: str, bids: Any, asks: Any, event_ms: int) -> str:
        return dumps({"coin": coin, "time": event_ms, "levels": [
            [{"px": p, "sz": s, "n": order_count(s)} for p, s in bids],
            [{"px": p, "sz": s, "n": order_count(s)} for p, s in asks]]})

    def snapshot_frame(self, feed: BookFeed, conn: Connection | None, event_ms: int) -> str:
        return '{"channel":"l2Book","data":%s}' % self._book(
            feed.symbol, feed.bids.items(), feed.asks.items(), event_ms)

    def flush(self, feed: BookFeed, now: float, event_ms: int) -> None:
        """Every message is a full snapshot (§6 sync rule 1): no diff, just the new top 20."""
        feed.window = {}
        feed.bids, feed.asks = feed.top(self.market)
        self.publish_book(feed, self.snapshot_frame(feed, None, event_ms), now)

    def _trade(self, f: Fill, coin: str) -> dict[str, Any]:
        digest = hashlib.sha256(b"%s:%d" % (coin.encode(), f.trade_id)).hexdigest()
        maker, taker = "0x" + digest[:40], "0x" + digest[24:64]
        return {"coin": coin, "side": "B" if f.taker_buy else "A", "px": self.text(f.price),
                "sz": self.text(f.qty), "time": f.ms, "hash": "0x" + digest,
                "tid": (f.trade_id * 0x9E3779B97F4A7C15) & _TID_MASK,
                "users": [taker, maker] if f.taker_buy else [maker, taker]}  # [buyer, seller]

    def trade_frames(self, update: Update, fills: list[Fill], event_ms: int) -> None:
        topic = self.trade_topics[("trades", update.symbol)]
        if topic.conns:
            topic.publish(dumps({"channel": "trades", "data": [self._trade(f, update.symbol) for f in fills]}))
            self.counters["trade_frames"] += 1

    def malformed_text(self) -> str:
        return '{"channel":"l2Book","data":{"coin":"%s","time":17' % self.market.symbols[0]

    # -- messages ------------------------------------------------------------------------

    def on_text(self, conn: Connection, text: str) -> None:
        """``{"method":"ping"}`` or ``{"method":"subscribe"|"unsubscribe","subscription":{..}}`` (§6)."""
        try:
            req = json.loads(text)
        except ValueError:
            req = None
        method = req.get("method") if isinstance(req, dict) else None
        if method == "ping":
            self.send(conn, b'{"channel":"pong"}')
            return
        sub = req.get("subscription") if isinstance(req, dict) else None
        if method not in ("subscribe", "unsubscribe") or not isinstance(sub, dict):
            self._error(conn, f"Error parsing JSON into valid websocket request: {text[:200]}")
            return
        kind, coin = sub.get("type"), sub.get("coin")
        if kind not in ("l2Book", "trades"):
            self._error(conn, f"Invalid subscription type {kind!r}: this sim serves l2Book and trades")
            return
        if coin not in self.recent:
            self._error(conn, f"Invalid subscription: unknown coin {coin!r}")
            return
        key = (kind, coin)
        if method == "subscribe" and key in conn.streams:
            self._error(conn, f"Already subscribed: {dumps(sub)}")
            return
        if method == "unsubscribe" and key not in conn.streams:
            self._error(conn, f"Already unsubscribed: {dumps(sub)}")
            return
        self.send_json(conn, {"channel": "subscriptionResponse", "data": {"method": method, "subscription": sub}})
        if method == "unsubscribe":
            self.unsubscribe(conn, key)
        elif kind == "l2Book":
            self.subscribe_book(conn, self.book_feed(key, lambda: BookFeed(
                key, coin, BOOK_DEPTH, self.interval, self.text, self.text)))
        else:
            self.subscribe_topic(conn, key, self.trade_topics[key])
            backlog = list(self.recent[coin])[-_BACKLOG:]
            if backlog:  # the first trades message: recent trades, maybe seen before
                self.send_json(conn, {"channel": "trades", "data": [self._trade(f, coin) for f in backlog]})

    def _error(self, conn: Connection, text: str) -> None:
        self.counters["ws_errors"] += 1
        self.send_json(conn, {"channel": "error", "data": text})

    # -- REST ----------------------------------------------------------------------------

    async def _rest_info(self, request: web.Request) -> web.Response:
        """``POST /info {"type":"l2Book","coin":..}``: the top 20 now, as the WS ``data``."""
        self.requests["info"] += 1
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("type") != "l2Book":
            return web.Response(status=422, text="Failed to deserialize the JSON body into the target type")
        coin = body.get("coin")
        if coin not in self.recent:
            return web.Response(status=200, text="null", content_type="application/json")
        _, bids, asks = self.market.snapshot(coin, BOOK_DEPTH)
        t = self.text
        return web.Response(text=self._book(coin, [(t(p), t(s)) for p, s in bids],
                                            [(t(p), t(s)) for p, s in asks], int(time.time() * 1000)),
                            content_type="application/json")
