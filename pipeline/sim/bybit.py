"""``pipeline sim --protocol bybit``: the seeded market over Bybit v5 public spot and linear.

What a Bybit adapter sees (exchange-protocols.md §4; docs/sim.md, "Bybit v5"):

- WebSocket ``/v5/public/spot`` and ``/v5/public/linear``; ``{"op":"subscribe","args":[..],"req_id":..}``
  with ``{"success","ret_msg","conn_id","req_id","op"}`` acks (spot: at most 10 args per request),
  ``unsubscribe``, and ``{"op":"ping"}`` answered with the spot or linear pong shape.
- ``orderbook.{1,50,200,1000}.{SYMBOL}`` every 10/20/100/200 ms: a ``snapshot`` of the top N, then
  ``delta`` frames whose ``u`` is the previous ``u`` + 1. A level that falls out of the top N gets
  no delete (the client trims to N), a level pulled into it appears as an insert. Depth 1 sends
  snapshots only, and repeats the last one with the same ``u`` after 3 s without a change.
  ``seq`` is the market's update id (a cross-sequence, not contiguous); ``ts`` the push time and
  ``cts`` the matching time.
- ``publicTrade.{SYMBOL}``: one frame per taker order, ``data`` an array of its fills with
  ``S`` the taker side (``Buy``/``Sell``), string id ``i``, ``T``, ``p``, ``v``, ``seq``, ``BT``, ``RPI``
  (linear adds the tick direction ``L``).
- REST ``GET /v5/market/orderbook?category=&symbol=&limit=`` -> ``{retCode, retMsg, result{s,b,a,ts,u,seq,cts}}``.
- other kinds (issue 13): quotes are ``orderbook.1`` above; linear ``tickers.{SYMBOL}``: a
  ``snapshot`` with every field on subscribe, then once a second a ``delta`` with the fields that
  changed (``markPrice``, ``indexPrice``, ``lastPrice``, ``openInterest``; funding fields when the
  funding time moves); linear ``allLiquidation.{SYMBOL}``: ``data`` ``[{T, s, S, v, p}]`` with ``S``
  the side of the liquidated *position* (a taker sell reports ``Buy``: a long was liquidated).

Numbers are strings: spot without trailing zeros (``"75845.4"``), linear with the tick and lot
precision (``"30247.20"``), as in the real frames in shared/data/samples/bybit/.
"""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

from aiohttp import web

from pipeline.sim.base import Connection, SimOptions, Topic, dumps
from pipeline.sim.feeds import BookFeed, Fill, TextFormat, VenueServer, fixed_text, number_text, stripped_text
from pipeline.sim.market import Update

__all__ = ["BybitServer"]

CATEGORIES = ("spot", "linear")
DEPTH_INTERVAL = {1: 0.01, 50: 0.02, 200: 0.1, 1000: 0.2}  # push period per depth, s (§4 streams)
_SPOT_MAX_ARGS = 10
_DEPTH1_REPEAT = 3.0  # orderbook.1 repeats its snapshot after this long without a change
_TRADE_ID_BASE = 2_200_000_000_000_000_000  # trade ids look like the real spot ones
_EIGHT_HOURS_MS = 8 * 3600 * 1000


class BybitServer(VenueServer):
    name = "bybit"
    delete_fallouts = False

    def __init__(self, options: SimOptions):
        super().__init__(options)
        self.requests.update({"orderbook": 0})
        spot_text = TextFormat(stripped_text)
        self.formats: dict[tuple[str, str], tuple[TextFormat, TextFormat]] = {}
        for spec in self.market.specs:
            self.formats[("spot", spec.symbol)] = (spot_text, spot_text)
            self.formats[("linear", spec.symbol)] = (TextFormat(fixed_text(spec.tick_decimals)),
                                                     TextFormat(fixed_text(spec.step_decimals)))
            for category in CATEGORIES:
                self.trade_topics[(category, spec.symbol)] = Topic()
        self.last_trade_price: dict[str, str] = {}
        self.ticker_state: dict[str, dict[str, str]] = {}  # symbol -> the tickers fields last sent

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v5/public/{category}", self.ws_handler)
        app.router.add_get("/v5/market/orderbook", self._rest_orderbook)
        app.router.add_get("/v5/market/instruments-info", self._rest_instruments)

    async def ws_handler(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["category"] not in CATEGORIES:
            return web.Response(status=404, text="unknown category; this sim serves /v5/public/spot and /linear")
        return await super().ws_handler(request)

    # -- topics ----------------------------------------------------------------------

    def _feed(self, category: str, topic: str) -> BookFeed | Topic | None:
        """The book feed or trade topic named ``topic`` on ``category``, or None if unknown."""
        parts = topic.split(".")
        if len(parts) == 3 and parts[0] == "orderbook" and parts[1].isdigit():
            depth, symbol = int(parts[1]), parts[2]
            if depth not in DEPTH_INTERVAL or (category, symbol) not in self.formats:
                return None
            price, size = self.formats[(category, symbol)]
            return self.book_feed((category, topic), lambda: BookFeed(
                (category, topic), symbol, depth, DEPTH_INTERVAL[depth], price, size, "0", category))
        if len(parts) == 2 and parts[0] == "publicTrade":
            return self.trade_topics.get((category, parts[1]))
        if len(parts) == 2 and parts[0] in ("tickers", "allLiquidation") and category == "linear" \
                and parts[1] in self.recent:
            return self.other_topic((category, topic))
        return None

    # -- tickers and liquidations (linear) ---------------------------------------------------

    def _ticker_fields(self, symbol: str, event_ms: int) -> dict[str, str]:
        v = self.ticker(symbol)
        price = self.formats[("linear", symbol)][0]
        fields = {"symbol": symbol, "markPrice": price(f"{v.mark:.8f}"), "indexPrice": price(f"{v.index:.8f}"),
                  "openInterest": number_text(v.open_interest), "fundingRate": number_text(v.funding_rate),
                  "nextFundingTime": str((event_ms // _EIGHT_HOURS_MS + 1) * _EIGHT_HOURS_MS)}
        if v.last is not None:
            fields["lastPrice"] = price(f"{v.last:.8f}")
        return fields

    def subscribe_ticker(self, conn: Connection, topic_name: str, topic: Topic) -> None:
        """A new subscriber gets a snapshot of every field; deltas follow once a second."""
        self.subscribe_topic(conn, topic_name, topic)
        symbol = topic_name.split(".", 1)[1]
        event_ms = int(time.time() * 1000)
        fields = self.ticker_state.get(symbol) or self._ticker_fields(symbol, event_ms)
        self.ticker_state[symbol] = fields
        self.send(conn, dumps({"topic": topic_name, "type": "snapshot", "data": fields, "cs": event_ms,
                               "ts": event_ms}).encode())

    def ticker_frames(self, event_ms: int) -> None:
        for spec in self.market.specs:
            topic = self.other_topics.get(("linear", "tickers." + spec.symbol))
            if topic is None or not topic.conns:
                continue
            new = self._ticker_fields(spec.symbol, event_ms)
            old = self.ticker_state.get(spec.symbol, {})
            delta = {k: v for k, v in new.items() if old.get(k) != v}
            self.ticker_state[spec.symbol] = new
            if delta:  # nothing changed: no frame
                delta["symbol"] = spec.symbol
                topic.publish(dumps({"topic": "tickers." + spec.symbol, "type": "delta", "data": delta,
                                     "cs": event_ms, "ts": event_ms}))
                self.counters["other_frames"] += 1

    def liquidation_frames(self, symbol: str, fills: list[Fill], event_ms: int) -> None:
        topic = self.other_topics.get(("linear", "allLiquidation." + symbol))
        if topic is None or not topic.conns:
            return
        price, size = self.formats[("linear", symbol)]
        qty = sum(float(f.qty) for f in fills)
        topic.publish(dumps({"topic": "allLiquidation." + symbol, "type": "snapshot", "ts": event_ms, "data": [{
            "T": event_ms, "s": symbol, "S": "Sell" if fills[0].taker_buy else "Buy",
            "v": size(f"{qty:.8f}"), "p": price(fills[0].price)}]}))
        self.counters["other_frames"] += 1

    def init_view(self, feed: BookFeed) -> None:
        if not feed.seq:  # u starts high and topic-specific, as on a venue that has run for a while
            feed.seq = 1_000_000 + zlib.crc32(repr(feed.key).encode()) % 9_000_000
        feed.offset = self.market.last_update_id(feed.symbol)

    def _book_frame(self, feed: BookFeed, kind: str, bids: Any, asks: Any, event_ms: int) -> str:
        topic = feed.key[1]
        data = dumps({"s": feed.symbol, "b": bids, "a": asks, "u": feed.seq, "seq": feed.offset})
        if feed.extra == "spot":  # spot puts ts before type (§4 gotchas)
            return '{"topic":"%s","ts":%d,"type":"%s","data":%s,"cts":%d}' % (topic, event_ms, kind, data, event_ms - 2)
        return '{"topic":"%s","type":"%s","ts":%d,"data":%s,"cts":%d}' % (topic, kind, event_ms, data, event_ms - 2)

    def snapshot_frame(self, feed: BookFeed, conn: Connection | None, event_ms: int) -> str:
        return self._book_frame(feed, "snapshot", [[p, q] for p, q in feed.bids.items()],
                                [[p, q] for p, q in feed.asks.items()], event_ms)

    def delta_frame(self, feed: BookFeed, bids: list[list[str]], asks: list[list[str]], event_ms: int) -> str:
        feed.seq += 1
        feed.offset = self.market.last_update_id(feed.symbol)
        if feed.depth == 1:  # orderbook.1 sends snapshots only
            return self.snapshot_frame(feed, None, event_ms)
        return self._book_frame(feed, "delta", bids, asks, event_ms)

    def quiet(self, feed: BookFeed, now: float, event_ms: int) -> None:
        if feed.depth == 1 and now - feed.last_publish >= _DEPTH1_REPEAT:
            self.publish_book(feed, self.snapshot_frame(feed, None, event_ms), now)

    def trade_frames(self, update: Update, fills: list[Fill], event_ms: int) -> None:
        symbol = update.symbol
        previous = self.last_trade_price.get(symbol)
        self.last_trade_price[symbol] = fills[0].price
        for category in CATEGORIES:
            topic = self.trade_topics[(category, symbol)]
            if not topic.conns:
                continue
            price, size = self.formats[(category, symbol)]
            data = []
            for f in fills:
                trade: dict[str, Any] = {"i": str(_TRADE_ID_BASE + f.trade_id), "T": f.ms, "p": price(f.price),
                                         "v": size(f.qty), "S": "Buy" if f.taker_buy else "Sell",
                                         "s": symbol, "BT": False, "RPI": False, "seq": f.update_id}
                if category == "linear":
                    trade["L"] = _tick_direction(previous, f.price)
                data.append(trade)
            topic.publish(dumps({"topic": "publicTrade." + symbol, "ts": event_ms, "type": "snapshot",
                                 "data": data}))
            self.counters["trade_frames"] += 1

    def malformed_text(self) -> str:
        return '{"topic":"orderbook.50.%s","ts":%d,"type":"delta","data":{"s":"BT' % (
            self.market.symbols[0], int(time.time() * 1000))

    # -- messages ----------------------------------------------------------------------

    def on_text(self, conn: Connection, text: str) -> None:
        """``op``: ``subscribe``, ``unsubscribe``, ``ping`` (§4 subscribe and heartbeat)."""
        category = conn.path.rsplit("/", 1)[-1]
        try:
            req = json.loads(text)
        except ValueError:
            req = None
        if not isinstance(req, dict):
            self.counters["ws_errors"] += 1
            self.send_json(conn, {"success": False, "ret_msg": "error:request not valid JSON object",
                                  "conn_id": conn.conn_id, "op": ""})
            return
        op = req.get("op")
        ack: dict[str, Any] = {"success": True, "ret_msg": "", "conn_id": conn.conn_id}
        if "req_id" in req:
            ack["req_id"] = req["req_id"]
        if op == "ping":
            ack["ret_msg"] = "pong"
            if category != "spot":
                ack.setdefault("req_id", "")
            ack["op"] = "ping"
            self.send_json(conn, ack)
            return
        ack["op"] = op
        args = req.get("args")
        error = None
        feeds: list[tuple[str, Any]] = []
        if op not in ("subscribe", "unsubscribe"):
            error = f"error:unknown op {op!r}"
        elif not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            error = "error:args must be a non-empty array of topic strings"
        elif category == "spot" and len(args) > _SPOT_MAX_ARGS:
            error = f"args size >{_SPOT_MAX_ARGS}"
        else:
            for topic in args:
                feed = self._feed(category, topic)
                if feed is None:
                    error = f"error:handler not found,topic:{topic}"
                    break
                if op == "subscribe" and topic in conn.streams:
                    error = f"error:already subscribed,topic:{topic}"
                    break
                feeds.append((topic, feed))
        if error is not None:
            self.counters["ws_errors"] += 1
            ack["success"] = False
            ack["ret_msg"] = error
            self.send_json(conn, ack)
            return
        self.send_json(conn, ack)
        for topic, feed in feeds:
            if op == "unsubscribe":
                self.unsubscribe(conn, topic)
            elif isinstance(feed, BookFeed):
                self.subscribe_book(conn, feed, topic)
            elif topic.startswith("tickers."):
                self.subscribe_ticker(conn, topic, feed)
            else:  # trades, allLiquidation
                self.subscribe_topic(conn, topic, feed)

    # -- REST ------------------------------------------------------------------------------

    async def _rest_orderbook(self, request: web.Request) -> web.Response:
        """``GET /v5/market/orderbook?category=&symbol=&limit=`` (§4 REST snapshot)."""
        self.requests["orderbook"] += 1
        q = request.query
        category, symbol = q.get("category", ""), q.get("symbol", "")
        now = int(time.time() * 1000)
        if category not in CATEGORIES:
            return self._error(10001, "Illegal category", now)
        if (category, symbol) not in self.formats:
            return self._error(10001, "params error: symbol invalid", now)
        try:
            limit = int(q.get("limit", "1" if category == "spot" else "25"))
        except ValueError:
            return self._error(10001, "params error: limit invalid", now)
        if not 1 <= limit <= 1000:
            return self._error(10001, "params error: limit must be 1..1000", now)
        last_id, bids, asks = self.market.snapshot(symbol, limit)
        price, size = self.formats[(category, symbol)]
        feed = self.book_feeds.get((category, f"orderbook.1000.{symbol}"))
        u = feed.seq if feed is not None and feed.active else last_id
        return self.json_response({
            "retCode": 0, "retMsg": "OK",
            "result": {"s": symbol, "a": [[price(p), size(s)] for p, s in asks],
                       "b": [[price(p), size(s)] for p, s in bids],
                       "ts": now, "u": u, "seq": last_id, "cts": now - 2},
            "retExtInfo": {}, "time": now})

    async def _rest_instruments(self, request: web.Request) -> web.Response:
        """``GET /v5/market/instruments-info?category=&symbol=`` (§4): the symbols this sim lists, as
        "Trading"; an unknown symbol gives an empty list (as the venue answers)."""
        self.requests["instruments"] = self.requests.get("instruments", 0) + 1
        q = request.query
        category, wanted = q.get("category", ""), q.get("symbol")
        now = int(time.time() * 1000)
        if category not in CATEGORIES:
            return self._error(10001, "Illegal category", now)
        rows = [{"symbol": spec.symbol, "status": "Trading", "baseCoin": spec.base_asset, "quoteCoin": spec.quote_asset}
                for spec in self.market.specs if wanted is None or spec.symbol == wanted]
        return self.json_response({"retCode": 0, "retMsg": "OK", "result": {"category": category, "list": rows},
                                   "retExtInfo": {}, "time": now})

    def _error(self, code: int, msg: str, now: int) -> web.Response:
        return self.json_response({"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": now})


def _tick_direction(previous: str | None, price: str) -> str:
    """Linear ``L``: PlusTick / MinusTick / ZeroPlusTick / ZeroMinusTick against the last trade."""
    if previous is None or previous == price:
        return "ZeroPlusTick"
    return "PlusTick" if float(price) > float(previous) else "MinusTick"
