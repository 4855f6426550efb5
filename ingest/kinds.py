"""The kinds beside trades and books, per symbol: quotes, derivative tickers, liquidations,
and the two kinds derived from trades, CVD and trade bars.  Pure: events in, bus payloads out
(pipeline/schema.py); the feed (ingest/feed.py) sends them and keeps one ``SymbolKinds`` per
symbol.

Each stream (kind, exchange, symbol) has its own contiguous ``seq`` from 1 within the ingest's
epoch, as trades do.

Why CVD and bars are computed here, in the ingest process: it is the one place that sees every
trade of the symbol in order, with its seq, before any subscriber could have missed one.  A
client that sums trades itself gets a different CVD after every reconnect or HWM drop; here
each figure names the seq of the last trade it covers (``Cvd.trade_seq``,
``TradeBar.last_trade_seq``), so a consumer can check it against the trades it saw.  The cost
on the trade path is a few additions per trade; the messages go out once per batch (CVD) or
once per closed bar, on the L2 socket, so they never delay a trade (bench figures:
/work/notes/issue-13.md and docs/bus.md).
"""

from __future__ import annotations

from pipeline import schema

DAY_US = 86_400_000_000
DEFAULT_BAR_INTERVALS = ("1s", "1m")
_UNITS = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}


def parse_interval(text: str) -> int:
    """``"1s"`` / ``"5m"`` / ``"1h"`` -> microseconds.  Raises ValueError with the reason."""
    if not isinstance(text, str) or len(text) < 2 or text[-1] not in _UNITS or not text[:-1].isdigit():
        raise ValueError(f"expected a whole number of s, m or h such as '1s' or '5m', got {text!r}")
    n = int(text[:-1])
    if n <= 0:
        raise ValueError(f"expected a positive interval, got {text!r}")
    iv = n * _UNITS[text[-1]]
    if DAY_US % iv:
        raise ValueError(f"{text!r} does not divide a day, so its bars could not stay aligned to UTC midnight")
    return iv


class _Bar:
    """One interval's bar being built (open_time -1: none open)."""

    __slots__ = ("interval", "interval_us", "open_time", "open", "high", "low", "close", "volume", "buy",
                 "sell", "trades", "first_seq", "last_seq", "last_recv_us", "closed_until", "late")

    def __init__(self, interval: str, interval_us: int):
        self.interval, self.interval_us = interval, interval_us
        self.open_time = -1
        self.open = self.high = self.low = self.close = self.volume = self.buy = self.sell = 0.0
        self.trades = self.first_seq = self.last_seq = self.last_recv_us = 0
        self.closed_until = 0  # end of the last closed bar: trades before it are late
        self.late = 0          # trades that came after their interval closed (in no bar)


class SymbolKinds:
    """Seqs and states of one symbol's other kinds (module docstring)."""

    __slots__ = ("exchange", "symbol", "quote_seq", "ticker_seq", "liq_seq", "cvd_seq", "bar_seq", "ticker",
                 "cvd_buy", "cvd_sell", "cvd_since", "cvd_trade_seq", "cvd_ts", "cvd_recv_us", "cvd_dirty",
                 "bars", "quote_topic", "ticker_topic", "liq_topic", "cvd_topic", "bar_topic")

    def __init__(self, exchange: str, symbol: str, bar_intervals: tuple[str, ...] = DEFAULT_BAR_INTERVALS):
        self.exchange, self.symbol = exchange, symbol
        self.quote_seq = self.ticker_seq = self.liq_seq = self.cvd_seq = self.bar_seq = 0
        self.ticker: dict[str, float | int | None] = dict.fromkeys(schema.TICKER_FIELDS)
        self.cvd_buy = self.cvd_sell = 0.0
        self.cvd_since = -1
        self.cvd_trade_seq = self.cvd_ts = self.cvd_recv_us = 0
        self.cvd_dirty = False
        self.bars = [_Bar(iv, parse_interval(iv)) for iv in bar_intervals]
        self.quote_topic = schema.QUOTE.topic(exchange, symbol)
        self.ticker_topic = schema.DERIVATIVE_TICKER.topic(exchange, symbol)
        self.liq_topic = schema.LIQUIDATION.topic(exchange, symbol)
        self.cvd_topic = schema.CVD.topic(exchange, symbol)
        self.bar_topic = schema.TRADE_BAR.topic(exchange, symbol)

    # ------------------------------------------------------------ venue kinds
    def quote(self, ev, epoch: int, instrument) -> schema.Quote:
        """A BboEvent -> the next quote of this stream."""
        self.quote_seq = seq = self.quote_seq + 1
        recv_us = ev.recv_ns // 1000
        return schema.Quote(exchange=self.exchange, symbol=self.symbol, epoch=epoch, seq=seq,
                            ts_exchange=ev.ts_exchange_us or recv_us, ts_received=recv_us,
                            bid_price=ev.bid_price, bid_amount=ev.bid_size, ask_price=ev.ask_price,
                            ask_amount=ev.ask_size, update_id=ev.update_id, instrument=instrument)

    def ticker_update(self, ev, epoch: int, instrument) -> schema.DerivativeTicker | None:
        """Merge a TickerEvent's stated fields into the state; the whole state when it changed
        (None when the event repeated what the state says)."""
        state = self.ticker
        changed = False
        for name in schema.TICKER_FIELDS:
            value = getattr(ev, name)
            if value is not None and state[name] != value:
                state[name] = value
                changed = True
        if not changed:
            return None
        self.ticker_seq = seq = self.ticker_seq + 1
        recv_us = ev.recv_ns // 1000
        return schema.DerivativeTicker(exchange=self.exchange, symbol=self.symbol, epoch=epoch, seq=seq,
                                       ts_exchange=ev.ts_exchange_us or recv_us, ts_received=recv_us,
                                       instrument=instrument, **state)  # type: ignore[arg-type]

    def liquidation(self, ev, epoch: int, instrument) -> schema.Liquidation:
        self.liq_seq = seq = self.liq_seq + 1
        recv_us = ev.recv_ns // 1000
        return schema.Liquidation(exchange=self.exchange, symbol=self.symbol, epoch=epoch, seq=seq,
                                  ts_exchange=ev.ts_exchange_us or recv_us, ts_received=recv_us, side=ev.side,
                                  price=ev.price, amount=ev.amount, liquidation_id=ev.liquidation_id,
                                  instrument=instrument)

    # ------------------------------------------------------------ derived from trades
    def add_trade(self, seq: int, ts_us: int, recv_us: int, price: float, amount: float, side: str,
                  epoch: int, instrument) -> list[schema.TradeBar] | None:
        """Count one published trade in the CVD and the bars; returns the bars it closed (or None).

        The CVD is marked dirty; ``cvd_message`` builds it once per batch."""
        since = ts_us - ts_us % DAY_US
        if since != self.cvd_since:
            if since > self.cvd_since:  # a new UTC day (exchange time): the sums start again
                self.cvd_since = since
                self.cvd_buy = self.cvd_sell = 0.0
            # an out-of-order trade from the previous day stays in the current day's sums
        if side == "buy":
            self.cvd_buy += amount
        elif side == "sell":
            self.cvd_sell += amount
        self.cvd_trade_seq, self.cvd_ts, self.cvd_recv_us = seq, ts_us, recv_us
        self.cvd_dirty = True
        closed = None
        for bar in self.bars:
            open_time = ts_us - ts_us % bar.interval_us
            if open_time != bar.open_time:
                if open_time < bar.open_time or open_time < bar.closed_until:
                    bar.late += 1  # its interval is closed (or a later one is open): in no bar
                    continue
                if bar.open_time >= 0:
                    closed = closed or []
                    closed.append(self._close(bar, epoch, instrument, recv_us))
                bar.open_time = open_time
                bar.open = bar.high = bar.low = price
                bar.volume = bar.buy = bar.sell = 0.0
                bar.trades = 0
                bar.first_seq = seq
            if price > bar.high:
                bar.high = price
            elif price < bar.low:
                bar.low = price
            bar.close = price
            bar.volume += amount
            if side == "buy":
                bar.buy += amount
            elif side == "sell":
                bar.sell += amount
            bar.trades += 1
            bar.last_seq = seq
            bar.last_recv_us = recv_us
        return closed

    def cvd_message(self, epoch: int, instrument) -> schema.Cvd:
        """The CVD after the trades counted so far (clears the dirty mark)."""
        self.cvd_dirty = False
        self.cvd_seq = seq = self.cvd_seq + 1
        return schema.Cvd(exchange=self.exchange, symbol=self.symbol, epoch=epoch, seq=seq, ts_exchange=self.cvd_ts,
                          ts_received=self.cvd_recv_us, cvd=self.cvd_buy - self.cvd_sell, buy_volume=self.cvd_buy,
                          sell_volume=self.cvd_sell, since=self.cvd_since, trade_seq=self.cvd_trade_seq,
                          instrument=instrument)

    def close_due(self, now_us: int, grace_us: int, epoch: int, instrument) -> list[schema.TradeBar]:
        """Bars whose interval ended more than ``grace_us`` before local time ``now_us``: closed
        now, so a quiet symbol's last bar does not wait for its next trade."""
        out = []
        for bar in self.bars:
            if bar.open_time >= 0 and bar.open_time + bar.interval_us + grace_us <= now_us:
                out.append(self._close(bar, epoch, instrument, now_us))
        return out

    def _close(self, bar: _Bar, epoch: int, instrument, recv_us: int) -> schema.TradeBar:
        """The bar's message; the bar is closed (a trade of its interval arriving later is late)."""
        self.bar_seq = seq = self.bar_seq + 1
        open_time = bar.open_time
        bar.closed_until = open_time + bar.interval_us
        bar.open_time = -1
        return schema.TradeBar(exchange=self.exchange, symbol=self.symbol, epoch=epoch, seq=seq,
                               ts_exchange=open_time + bar.interval_us, ts_received=recv_us,
                               interval=bar.interval, interval_us=bar.interval_us, open_time=open_time,
                               open=bar.open, high=bar.high, low=bar.low, close=bar.close, volume=bar.volume,
                               buy_volume=bar.buy, sell_volume=bar.sell, trades=bar.trades,
                               first_trade_seq=bar.first_seq, last_trade_seq=bar.last_seq, instrument=instrument)
