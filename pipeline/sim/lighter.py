"""``pipeline sim --protocol lighter``: the seeded market over the Lighter WebSocket and REST API.

What a Lighter adapter sees (exchange-protocols.md §7; docs/sim.md, "Lighter"):

- Markets: the sim's symbols (``ETH``, ``BTC``, ...) are market ids 0, 1, 2, ... in the order given,
  listed by ``GET /api/v1/orderBookDetails`` (``order_book_details`` with ``market_id``, ``symbol``,
  ``size_decimals``, ``price_decimals``, ``status``, ...).
- WebSocket ``/stream``; ``{"type":"subscribe","channel":"order_book/0"}`` (slash) while frames say
  ``"channel":"order_book:0"`` (colon); ``unsubscribe`` likewise; ``{"type":"ping"}`` gets
  ``{"type":"pong"}``. A connection that sends nothing for 2 minutes is closed.
- ``order_book/{id}``: ``subscribed/order_book`` (the whole book, ``begin_nonce`` 0), then every 50 ms
  with changes an ``update/order_book`` whose ``order_book.begin_nonce`` is the previous
  ``nonce``; ``offset`` increases but not contiguously. Levels are ``{"price","size"}``, and a size
  of ``"0.0000"`` deletes.
- ``trade/{id}``: ``subscribed/trade`` with recent trades (a backlog that may repeat earlier ones),
  then one ``update/trade`` per taker order; each trade has ``trade_id``, ``price``, ``size``,
  ``is_maker_ask`` (true: the taker bought), ``timestamp`` (ms), ``transaction_time`` (µs), ...
- REST ``GET /api/v1/orderBookOrders?market_id=&limit=``: resting orders, one per level here.
- other kinds (issue 13): ``ticker/{id}`` (``subscribed/ticker`` with the BBO, then an
  ``update/ticker`` ``{"ticker":{"s","a":{price,size},"b":{price,size},"last_updated_at"}}`` on every
  change of the best bid or ask; ``nonce`` the market's update id); ``market_stats/{id}``
  (``subscribed/market_stats`` then ``update/market_stats`` once a second: ``mark_price``,
  ``index_price``, ``last_trade_price``, ``open_interest``, ``funding_rate``, ``current_funding_rate``,
  ``funding_timestamp`` the next full hour in ms); and on ``trade/{id}``, every 25th taker order is
  also reported as a liquidation: an ``update/trade`` frame with ``trades`` empty and its fills
  in ``liquidation_trades`` (``type`` ``liquidation``).

Prices and sizes are strings with the market's fixed decimals (``"2325.00"``, ``"99.0000"``), as
in shared/data/samples/lighter/.
"""

from __future__ import annotations

import json
import time
import zlib
from decimal import Decimal
from typing import Any

from aiohttp import web

from pipeline.sim.base import Connection, SimOptions, Topic, dumps
from pipeline.sim.feeds import LIQUIDATION_EVERY, BookFeed, Fill, TextFormat, VenueServer, fixed_text, number_text
from pipeline.sim.market import ZERO, Update

__all__ = ["LighterServer"]

BOOK_INTERVAL = 0.05  # update/order_book batches, s (§7 channels)
FULL_DEPTH = 1_000_000  # the order_book channel carries the whole book
_BACKLOG = 20
_IDLE = 120.0  # "send something at least every 2 minutes" (§7 heartbeat)
_MAX_ORDERS = 250  # orderBookOrders limit
_HOUR_MS = 3_600_000


class LighterServer(VenueServer):
    name = "lighter"
    idle_in = _IDLE

    def __init__(self, options: SimOptions):
        super().__init__(options)
        self.requests.update({"orderBookDetails": 0, "orderBookOrders": 0})
        self.ids = {s: i for i, s in enumerate(self.market.symbols)}
        self.by_id = {i: s for s, i in self.ids.items()}
        self.formats: dict[str, tuple[TextFormat, TextFormat]] = {}
        self.liquidated: dict[str, int] = {}  # taker orders per symbol sent on the trade channel
        for spec in self.market.specs:
            self.formats[spec.symbol] = (TextFormat(fixed_text(spec.tick_decimals)),
                                         TextFormat(fixed_text(spec.step_decimals)))
            self.trade_topics[("trade", spec.symbol)] = Topic()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/stream", self.ws_handler)
        app.router.add_get("/api/v1/orderBookDetails", self._rest_details)
        app.router.add_get("/api/v1/orderBookOrders", self._rest_orders)

    # -- frames --------------------------------------------------------------------------

    def init_view(self, feed: BookFeed) -> None:
        feed.seq = self.market.last_update_id(feed.symbol)
        if not feed.offset:
            feed.offset = 1_000 + zlib.crc32(feed.symbol.encode()) % 1_000_000

    def _book_frame(self, feed: BookFeed, kind: str, asks: Any, bids: Any, begin: int, event_ms: int) -> str:
        channel = "order_book:%d" % self.ids[feed.symbol]
        us = event_ms * 1000
        book = dumps({"code": 0, "asks": [{"price": p, "size": s} for p, s in asks],
                      "bids": [{"price": p, "size": s} for p, s in bids], "offset": feed.offset,
                      "nonce": feed.seq, "last_updated_at": us, "begin_nonce": begin})
        return ('{"channel":"%s","last_updated_at":%d,"offset":%d,"order_book":%s,"timestamp":%d,"type":"%s"}'
                % (channel, us, feed.offset, book, event_ms, kind))

    def snapshot_frame(self, feed: BookFeed, conn: Connection | None, event_ms: int) -> str:
        return self._book_frame(feed, "subscribed/order_book", feed.asks.items(), feed.bids.items(), 0, event_ms)

    def delta_frame(self, feed: BookFeed, bids: list[list[str]], asks: list[list[str]], event_ms: int) -> str:
        begin = feed.seq
        feed.seq = self.market.last_update_id(feed.symbol)
        feed.offset += 1 + len(bids) + len(asks)  # increasing, not contiguous (§7 sync rule 3)
        return self._book_frame(feed, "update/order_book", asks, bids, begin, event_ms)

    def _trade(self, f: Fill, symbol: str) -> dict[str, Any]:
        price, size = self.formats[symbol]
        market_id = self.ids[symbol]
        ask_id = 281_474_976_710_656 + f.trade_id * 2
        bid_id = 562_949_953_421_312 + f.trade_id * 2 + 1
        usd = Decimal(f.price) * Decimal(f.qty)
        return {
            "trade_id": f.trade_id, "trade_id_str": str(f.trade_id),
            "tx_hash": "%080x" % (f.trade_id * 0x9E3779B97F4A7C15), "type": "trade", "market_id": market_id,
            "size": size(f.qty), "price": price(f.price), "usd_amount": "%.6f" % usd,
            "ask_id": ask_id, "ask_id_str": str(ask_id), "bid_id": bid_id, "bid_id_str": str(bid_id),
            "ask_client_id": 0, "ask_client_id_str": "0", "bid_client_id": 0, "bid_client_id_str": "0",
            "ask_account_id": 1000 + f.trade_id % 997, "bid_account_id": 2000 + f.trade_id % 991,
            "is_maker_ask": f.taker_buy,  # the maker was the ask <=> the taker bought (§7)
            "block_height": f.update_id // 8, "timestamp": f.ms, "taker_fee": 0, "maker_fee": 0,
            "transaction_time": f.ms * 1000 + f.trade_id % 1000,
        }

    def _trade_frame(self, symbol: str, kind: str, fills: list[Fill]) -> str:
        return dumps({"channel": "trade:%d" % self.ids[symbol], "liquidation_trades": [],
                      "nonce": self.market.last_update_id(symbol),
                      "trades": [self._trade(f, symbol) for f in fills], "type": kind})

    def trade_frames(self, update: Update, fills: list[Fill], event_ms: int) -> None:
        topic = self.trade_topics[("trade", update.symbol)]
        if topic.conns:
            topic.publish(self._trade_frame(update.symbol, "update/trade", fills))
            self.counters["trade_frames"] += 1
            n = self.liquidated[update.symbol] = self.liquidated.get(update.symbol, 0) + 1
            if n % LIQUIDATION_EVERY == 0:  # liquidations share the trade channel (no other_on gate)
                liqs = [{**self._trade(f, update.symbol), "type": "liquidation"} for f in fills]
                topic.publish(dumps({"channel": "trade:%d" % self.ids[update.symbol], "liquidation_trades": liqs,
                                     "nonce": self.market.last_update_id(update.symbol), "trades": [],
                                     "type": "update/trade"}))
                self.counters["other_frames"] += 1

    # -- other kinds ---------------------------------------------------------------------

    def _ticker_frame(self, symbol: str, kind: str, bbo: tuple[str, str, str, str], event_ms: int) -> str:
        price, size = self.formats[symbol]
        b, bq, a, aq = bbo
        us = event_ms * 1000
        return dumps({"channel": "ticker:%d" % self.ids[symbol], "last_updated_at": us,
                      "nonce": self.market.last_update_id(symbol),
                      "ticker": {"s": symbol, "a": {"price": price(a), "size": size(aq)},
                                 "b": {"price": price(b), "size": size(bq)}, "last_updated_at": us},
                      "timestamp": event_ms, "type": kind})

    def quote_frames(self, update: Update, event_ms: int) -> None:
        topic = self.other_topics.get(("ticker", update.symbol))
        if topic is not None and topic.conns:
            topic.publish(self._ticker_frame(update.symbol, "update/ticker", update.bbo, event_ms))
            self.counters["other_frames"] += 1

    def _stats_frame(self, symbol: str, kind: str, event_ms: int) -> str:
        v = self.ticker(symbol)
        price, size = self.formats[symbol]
        market_id = self.ids[symbol]
        stats: dict[str, Any] = {
            "market_id": market_id, "index_price": price(f"{v.index:.8f}"), "mark_price": price(f"{v.mark:.8f}"),
            "open_interest": number_text(v.open_interest), "current_funding_rate": number_text(v.funding_rate),
            "funding_rate": number_text(v.funding_rate), "funding_timestamp": (event_ms // _HOUR_MS + 1) * _HOUR_MS,
            "daily_base_token_volume": v.open_interest, "daily_quote_token_volume": v.open_interest * v.mark,
            "daily_price_low": v.mark, "daily_price_high": v.mark, "daily_price_change": 0.0}
        if v.last is not None:
            stats["last_trade_price"] = price(f"{v.last:.8f}")
        return dumps({"channel": "market_stats:%d" % market_id, "market_stats": stats, "type": kind})

    def ticker_frames(self, event_ms: int) -> None:
        for (name, symbol), topic in self.other_topics.items():
            if name == "market_stats" and topic.conns:
                topic.publish(self._stats_frame(symbol, "update/market_stats", event_ms))
                self.counters["other_frames"] += 1

    def malformed_text(self) -> str:
        return '{"channel":"order_book:0","offset":12,"order_book":{"code":0,"asks":[{"price":"30'

    # -- messages ------------------------------------------------------------------------

    def on_text(self, conn: Connection, text: str) -> None:
        """``{"type":"ping"}`` or ``{"type":"subscribe"|"unsubscribe","channel":"order_book/0"}`` (§7)."""
        try:
            req = json.loads(text)
        except ValueError:
            req = None
        kind = req.get("type") if isinstance(req, dict) else None
        if kind == "ping":
            self.send(conn, b'{"type":"pong"}')
            return
        if kind == "pong":
            return
        channel = req.get("channel") if isinstance(req, dict) else None
        if kind not in ("subscribe", "unsubscribe") or not isinstance(channel, str):
            self._error(conn, 30003, "Invalid Type")
            return
        name, _, market = channel.partition("/")
        symbol = self.by_id.get(int(market)) if market.isdigit() else None
        if name not in ("order_book", "trade", "ticker", "market_stats") or symbol is None:
            self._error(conn, 30005, f"Invalid Channel: {channel}")
            return
        key = (name, symbol)
        if kind == "unsubscribe":
            self.unsubscribe(conn, key)
        elif key in conn.streams:
            self._error(conn, 30006, f"Already Subscribed: {channel}")
        elif name in ("ticker", "market_stats"):
            self.subscribe_topic(conn, key, self.other_topic(key))
            now_ms = int(time.time() * 1000)
            first = (self._ticker_frame(symbol, "subscribed/ticker", self.market.bbo(symbol), now_ms)
                     if name == "ticker" else self._stats_frame(symbol, "subscribed/market_stats", now_ms))
            self.send(conn, first.encode())
        elif name == "order_book":
            price, size = self.formats[symbol]
            self.subscribe_book(conn, self.book_feed(key, lambda: BookFeed(
                key, symbol, FULL_DEPTH, BOOK_INTERVAL, price, size, size(ZERO))))
        else:
            self.subscribe_topic(conn, key, self.trade_topics[key])
            self.send(conn, self._trade_frame(symbol, "subscribed/trade",
                                              list(self.recent[symbol])[-_BACKLOG:]).encode())

    def _error(self, conn: Connection, code: int, message: str) -> None:
        self.counters["ws_errors"] += 1
        self.send_json(conn, {"error": {"code": code, "message": message}})

    # -- REST ----------------------------------------------------------------------------

    async def _rest_details(self, request: web.Request) -> web.Response:
        """``GET /api/v1/orderBookDetails[?market_id=N]``: the markets (§7 endpoints)."""
        self.requests["orderBookDetails"] += 1
        wanted = request.query.get("market_id")
        details = []
        for spec in self.market.specs:
            market_id = self.ids[spec.symbol]
            if wanted is not None and wanted != str(market_id):
                continue
            stats = self.market.stats(spec.symbol)
            price, _ = self.formats[spec.symbol]
            details.append({
                "symbol": spec.symbol, "market_id": market_id, "market_type": "perp",
                "base_asset_id": 0, "quote_asset_id": 0, "status": "active",
                "taker_fee": "0.0000", "maker_fee": "0.0000", "liquidation_fee": "1.0000",
                "min_base_amount": fixed_text(spec.step_decimals)(spec.step_size),
                "min_quote_amount": "10.000000",
                "supported_size_decimals": spec.step_decimals, "supported_price_decimals": spec.tick_decimals,
                "supported_quote_decimals": 6, "size_decimals": spec.step_decimals,
                "price_decimals": spec.tick_decimals, "quote_multiplier": 1,
                "last_trade_price": float(price(stats.best_bid)), "daily_trades_count": stats.trades,
            })
        return self.json_response({"code": 200, "order_book_details": details, "spot_order_book_details": []})

    async def _rest_orders(self, request: web.Request) -> web.Response:
        """``GET /api/v1/orderBookOrders?market_id=&limit=``: one resting order per level, best first."""
        self.requests["orderBookOrders"] += 1
        q = request.query
        market = q.get("market_id", "")
        symbol = self.by_id.get(int(market)) if market.isdigit() else None
        if symbol is None:
            return self.json_response({"code": 21100, "message": "invalid market id"}, status=400)
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= _MAX_ORDERS:
            return self.json_response({"code": 20001, "message": f"limit must be 1..{_MAX_ORDERS}"}, status=400)
        _, bids, asks = self.market.snapshot(symbol, limit)
        price, size = self.formats[symbol]

        def orders(levels: list[list[str]], base: int) -> list[dict[str, Any]]:
            out = []
            for i, (p, s) in enumerate(levels):
                index = base + zlib.crc32(p.encode())
                out.append({"order_index": index, "order_id": str(index), "owner_account_index": 1000 + i,
                            "initial_base_amount": size(s), "remaining_base_amount": size(s),
                            "price": price(p), "order_expiry": int(time.time() * 1000) + 86_400_000,
                            "transaction_time": 0})
            return out

        return self.json_response({"code": 200, "total_asks": len(asks), "asks": orders(asks, 281_474_976_710_656),
                                   "total_bids": len(bids), "bids": orders(bids, 562_949_953_421_312)})
