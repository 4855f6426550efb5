"""``pipeline sim --protocol hyperliquid``: the seeded market over the Hyperliquid WebSocket and ``/info``.

What a Hyperliquid adapter sees (exchange-protocols.md §6; docs/sim.md, "Hyperliquid"):

- WebSocket ``/ws``; ``{"method":"subscribe","subscription":{"type":"l2Book"|"trades","coin":"BTC"}}``
  answered with ``{"channel":"subscriptionResponse","data":{"method","subscription"}}`` (errors:
  ``{"channel":"error","data":"<text>"}``); ``{"method":"ping"}`` gets ``{"channel":"pong"}``. A
  connection that was sent nothing for 60 s is closed.
- ``l2Book``: full snapshots ``{"channel":"l2Book","data":{"coin","time","levels":[bids, asks]}}``
  with levels ``{"px","sz","n"}``: one on subscribe, then one on every push, changed or not, at
  the venue's cadence since 2026-07-25: plain, 20 levels every 5 s (``book_interval`` sets it);
  with ``"fast": true`` in the subscription, 5 levels every 0.5 s.  ``book_speedup`` divides
  both (a test switch).  There are no sequence numbers; a dropped snapshot is harmless.
- ``trades``: ``{"channel":"trades","data":[{coin, side, px, sz, hash, time, tid, users}]}`` with ``side``
  ``B`` (taker buy) or ``A`` (taker sell). The first message after subscribing is a backlog of
  recent trades, which repeats trades an earlier connection saw (clients dedupe on
  ``(coin, time, tid)``).
- REST ``POST /info`` ``{"type":"l2Book","coin":..}`` -> the same shape as the WS ``data``;
  ``{"type":"meta"}`` -> ``{"universe":[{"name","szDecimals","maxLeverage"}]}`` (the sim's coins are
  perps), ``{"type":"spotMeta"}`` -> ``{"universe":[],"tokens":[]}``: the lists a client checks a
  new coin against.
- other kinds (issue 13): ``bbo`` ``{"channel":"bbo","data":{coin, time, bbo:[bid, ask]}}`` (levels
  ``{px, sz, n}``) on every change of the best bid or ask; ``activeAssetCtx``
  ``{"channel":"activeAssetCtx","data":{coin, ctx:{markPx, oraclePx, funding, openInterest, midPx,
  prevDayPx, dayNtlVlm, premium, impactPxs, dayBaseVlm}}}`` on subscribe and once a second (no
  time field, as on the venue). No liquidations: the venue's WebSocket has no public channel.

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
from pipeline.sim.feeds import BookFeed, Fill, TextFormat, VenueServer, hyperliquid_text, number_text, order_count
from pipeline.sim.market import Update

__all__ = ["HyperliquidServer"]

BOOK_DEPTH = 20
BOOK_INTERVAL = 5.0  # plain l2Book: 20 levels every 5 s (since the upgrade of 2026-07-25)
FAST_DEPTH = 5
FAST_INTERVAL = 0.5  # l2Book with "fast": true: 5 levels every 0.5 s
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
        speedup = options.book_speedup if options.book_speedup > 0 else 1.0
        self.interval = (options.book_interval or BOOK_INTERVAL) / speedup
        self.fast_interval = FAST_INTERVAL / speedup
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

    def quiet(self, feed: BookFeed, now: float, event_ms: int) -> None:
        """The venue pushes on its cadence whether the book changed or not (the real capture
        has identical consecutive frames): the same book again."""
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

    # -- other kinds ---------------------------------------------------------------------

    def quote_frames(self, update: Update, event_ms: int) -> None:
        topic = self.other_topics.get(("bbo", update.symbol))
        if topic is None or not topic.conns:
            return
        b, bq, a, aq = update.bbo
        t = self.text
        topic.publish(dumps({"channel": "bbo", "data": {"coin": update.symbol, "time": event_ms, "bbo": [
            {"px": t(b), "sz": t(bq), "n": order_count(bq)}, {"px": t(a), "sz": t(aq), "n": order_count(aq)}]}}))
        self.counters["other_frames"] += 1

    def _ctx_frame(self, coin: str) -> str:
        v = self.ticker(coin)
        t = self.text
        mark = t(f"{v.mark:.8f}")
        return dumps({"channel": "activeAssetCtx", "data": {"coin": coin, "ctx": {
            "dayNtlVlm": number_text(v.open_interest * v.mark), "prevDayPx": mark, "markPx": mark, "midPx": mark,
            "funding": number_text(v.funding_rate), "openInterest": number_text(v.open_interest),
            "oraclePx": t(f"{v.index:.8f}"), "premium": "0.0001", "impactPxs": [mark, mark],
            "dayBaseVlm": number_text(v.open_interest)}}})

    def ticker_frames(self, event_ms: int) -> None:
        for (kind, coin), topic in self.other_topics.items():
            if kind == "activeAssetCtx" and topic.conns:
                topic.publish(self._ctx_frame(coin))
                self.counters["other_frames"] += 1

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
        kind, coin, fast = sub.get("type"), sub.get("coin"), sub.get("fast", False)
        if kind not in ("l2Book", "trades", "bbo", "activeAssetCtx"):
            self._error(conn, f"Invalid subscription type {kind!r}: this sim serves l2Book, trades, bbo and "
                              "activeAssetCtx")
            return
        if coin not in self.recent:
            self._error(conn, f"Invalid subscription: unknown coin {coin!r}")
            return
        if not isinstance(fast, bool) or (fast and kind != "l2Book"):
            self._error(conn, f"Invalid subscription: fast must be true or false, on l2Book only: {dumps(sub)}")
            return
        key = (kind, coin, True) if fast else (kind, coin)
        if method == "subscribe" and key in conn.streams:
            self._error(conn, f"Already subscribed: {dumps(sub)}")
            return
        if method == "unsubscribe" and key not in conn.streams:
            self._error(conn, f"Already unsubscribed: {dumps(sub)}")
            return
        self.send_json(conn, {"channel": "subscriptionResponse", "data": {"method": method, "subscription": sub}})
        if method == "unsubscribe":
            self.unsubscribe(conn, key)
        elif kind in ("bbo", "activeAssetCtx"):
            self.subscribe_topic(conn, key, self.other_topic(key))
            if kind == "activeAssetCtx":  # the current context first, as the venue does
                self.send(conn, self._ctx_frame(coin).encode())
        elif kind == "l2Book":
            depth, interval = (FAST_DEPTH, self.fast_interval) if fast else (BOOK_DEPTH, self.interval)
            self.subscribe_book(conn, self.book_feed(key, lambda: BookFeed(
                key, coin, depth, interval, self.text, self.text)))
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
        """``POST /info``: ``l2Book`` (the top 20 now, as the WS ``data``), ``meta``, ``spotMeta``."""
        self.requests["info"] += 1
        try:
            body = await request.json()
        except ValueError:
            body = None
        kind = body.get("type") if isinstance(body, dict) else None
        if kind == "meta" and body.get("dex") in (None, ""):
            universe = [{"name": spec.symbol, "szDecimals": spec.step_decimals, "maxLeverage": 50}
                        for spec in self.market.specs]
            return web.json_response({"universe": universe, "marginTables": []})
        if kind == "meta":  # a HIP-3 dex the sim does not run
            return web.Response(status=200, text="null", content_type="application/json")
        if kind == "spotMeta":
            return web.json_response({"universe": [], "tokens": []})
        if kind != "l2Book":
            return web.Response(status=422, text="Failed to deserialize the JSON body into the target type")
        coin = body.get("coin")
        if coin not in self.recent:
            return web.Response(status=200, text="null", content_type="application/json")
        _, bids, asks = self.market.snapshot(coin, BOOK_DEPTH)
        t = self.text
        return web.Response(text=self._book(coin, [(t(p), t(s)) for p, s in bids],
                                            [(t(p), t(s)) for p, s in asks], int(time.time() * 1000)),
                            content_type="application/json")
