"""tardis.dev CSV layout: file names, headers and rows.  Pure: no I/O, no clock.

The layout is tardis.dev's downloadable dataset format (the one hftbacktest's
``hftbacktest.data.utils.tardis.convert`` reads):

- files ``EXCHANGE_DATATYPE_YYYY-MM-DD_SYMBOL.csv`` (``.csv.gz`` once compressed),
  one per UTC day, DATATYPE ``incremental_book_L2`` or ``trades``;
- ``incremental_book_L2`` columns
  ``exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount``:
  side ``bid``/``ask``, ``amount`` the new absolute size, 0 deletes the level;
  consecutive ``is_snapshot=true`` rows form one snapshot block that replaces the
  whole book;
- ``trades`` columns ``exchange,symbol,timestamp,local_timestamp,id,side,price,amount``:
  side the taker side ``buy``/``sell``, or ``unknown``;
- ``quotes`` columns ``exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount``
  (an empty side: empty fields); ``derivative_ticker`` columns ``exchange,symbol,timestamp,
  local_timestamp,funding_timestamp,funding_rate,predicted_funding_rate,open_interest,last_price,
  index_price,mark_price`` (a value the venue has not stated: empty, never 0; funding_timestamp in
  µs); ``liquidations`` columns ``exchange,symbol,timestamp,local_timestamp,id,side,price,amount``
  (side of the liquidation order);
- ``timestamp`` the exchange time and ``local_timestamp`` the local receive time,
  both integer microseconds since the Unix epoch; a missing exchange time falls
  back to the receive time, as tardis does.

Snapshot blocks list the whole view best first (bids descending, then asks
ascending) and end with one non-snapshot row restating the block's first level
at the same timestamps.  That row changes nothing for any reader, but
hftbacktest 2.4.4 applies a snapshot block only once a non-snapshot row follows
it, so without it a block at the end of a file would be lost there.

Numbers are written in plain decimal notation (never ``1e-05``), as the shortest
text that reads back to the same float.
"""

from __future__ import annotations

import datetime as _dt
import re

from pipeline.config import TARDIS_ID
from decimal import Decimal
from typing import Iterable, Sequence

from pipeline import schema

BOOK = schema.L2.tardis_datatype        # "incremental_book_L2"
TRADES = schema.TRADE.tardis_datatype   # "trades"
QUOTES = schema.QUOTE.tardis_datatype   # "quotes"
TICKER = schema.DERIVATIVE_TICKER.tardis_datatype  # "derivative_ticker"
LIQUIDATIONS = schema.LIQUIDATION.tardis_datatype  # "liquidations"
DATATYPES = tuple(k.tardis_datatype for k in schema.KINDS.values() if k.tardis_datatype is not None)
# the kinds besides trades and books that have a tardis datatype: bus kind -> (datatype, the
# RowWriter/TupleRows method writing its row); no snapshot repairs them, a seq gap is only counted
OTHER_KINDS = {schema.QUOTE: (QUOTES, "quote"), schema.DERIVATIVE_TICKER: (TICKER, "ticker"),
               schema.LIQUIDATION: (LIQUIDATIONS, "liquidation")}

# The columns of each datatype, in file order: the CSV header, and the Parquet sink's schema
# (sinks/parquet_sink.py types them by name).
COLUMNS = {
    BOOK: ("exchange", "symbol", "timestamp", "local_timestamp", "is_snapshot", "side", "price", "amount"),
    TRADES: ("exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price", "amount"),
    QUOTES: ("exchange", "symbol", "timestamp", "local_timestamp", "ask_amount", "ask_price", "bid_price", "bid_amount"),
    TICKER: ("exchange", "symbol", "timestamp", "local_timestamp", "funding_timestamp", "funding_rate",
             "predicted_funding_rate", "open_interest", "last_price", "index_price", "mark_price"),
    LIQUIDATIONS: ("exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price", "amount"),
}
HEADERS = {dt: ",".join(cols) + "\n" for dt, cols in COLUMNS.items()}
BOOK_HEADER = HEADERS[BOOK]
TRADES_HEADER = HEADERS[TRADES]
QUOTES_HEADER = HEADERS[QUOTES]
TICKER_HEADER = HEADERS[TICKER]
LIQUIDATIONS_HEADER = HEADERS[LIQUIDATIONS]

Level = tuple[float, float]


# Exchange ids (the `exchange` column and the file-name prefix).  tardis.dev spells
# them as lowercase words joined by "-" ("binance-us", "binance-delivery", "okex-swap"),
# and strict readers reject anything else, so every id written is of that form:
#
# 1. `tardis_exchange` in the config, when set (the config loader checks it against TARDIS_ID);
# 2. Bybit: the adapter, because tardis.dev names its two markets apart ("bybit-spot"
#    for spot, "bybit" for derivatives), whatever the table is called;
# 3. a config name that is another spelling of a tardis.dev id (TARDIS_ALIASES, after
#    "_" -> "-": `okx` -> "okex", `binance_usdm` -> "binance-futures");
# 4. an adapter that speaks one venue only (ADAPTER_IDS): that venue, whatever the
#    table is called and wherever its URLs point (a testnet or replay of OKX is OKX data);
# 5. otherwise the config name with "_" turned into "-": `binance_us` -> "binance-us",
#    `aster` -> "aster" (the `binance_futures` adapter also speaks Aster, so it names no
#    venue), the demo's `sim` -> "sim".
TARDIS_ALIASES = {
    "okx": "okex",
    "okx-spot": "okex",
    "okx-swap": "okex-swap",
    "okx-futures": "okex-futures",
    "okx-options": "okex-options",
    "binance-spot": "binance",
    "binance-usdm": "binance-futures",
    "binance-usd-m": "binance-futures",
    "binance-coinm": "binance-delivery",
    "binance-coin-m": "binance-delivery",
    "bybit-linear": "bybit",
    "gateio": "gate-io",
    "gate": "gate-io",
    "cryptocom": "crypto-com",
}

BYBIT_IDS = {"bybit": "bybit-spot", "bybit_linear": "bybit"}

ADAPTER_IDS = {
    "okx": "okex",
    "hyperliquid": "hyperliquid",
    "hyperliquid_node": "hyperliquid",  # a node's own books of the same venue
    "lighter": "lighter",
}


def is_tardis_id(text: str) -> bool:
    """True for lowercase letters and digits in words joined by single ``-``."""
    return TARDIS_ID.fullmatch(text) is not None


def exchange_id(name: str, override: str | None = None, adapter: str | None = None) -> str:
    """The ``exchange`` column value for config exchange ``name`` (rules above).

    Raises ValueError when nothing tardis-style can be derived (a name with no letter or digit).
    """
    if override:
        if not is_tardis_id(override):
            raise ValueError(f"{override!r} is not a tardis-style exchange id")
        return override
    if adapter in BYBIT_IDS:
        return BYBIT_IDS[adapter]
    spelled = "-".join(re.findall(r"[a-z0-9]+", name.lower()))
    if spelled in TARDIS_ALIASES:
        return TARDIS_ALIASES[spelled]
    if adapter in ADAPTER_IDS:
        return ADAPTER_IDS[adapter]
    if not spelled:
        raise ValueError(f"no tardis-style exchange id in the name {name!r}: set tardis_exchange")
    return spelled


def day_of(ts_us: int) -> str:
    """UTC day ``YYYY-MM-DD`` of a microsecond timestamp."""
    return _dt.datetime.fromtimestamp(ts_us // 1_000_000, _dt.timezone.utc).strftime("%Y-%m-%d")


def next_midnight_us(ts_us: int) -> int:
    """The first microsecond of the UTC day after ``ts_us``."""
    day = 86_400_000_000
    return (ts_us // day + 1) * day


def _file_symbol(symbol: str) -> str:
    return symbol.replace("/", "-").replace(":", "-").replace(" ", "-")


def file_name(exchange: str, datatype: str, day: str, symbol: str, gz: bool = False) -> str:
    """``EXCHANGE_DATATYPE_YYYY-MM-DD_SYMBOL.csv`` (``/`` and ``:`` in symbols become ``-``)."""
    if datatype not in DATATYPES:
        raise ValueError(f"unknown datatype {datatype!r}")
    return f"{exchange}_{datatype}_{day}_{_file_symbol(symbol)}.csv" + (".gz" if gz else "")


def number(x: float) -> str:
    """Shortest decimal text of a float, without an exponent."""
    text = repr(x)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    if text.endswith(".0"):
        text = text[:-2]
    return text


class _NumberCache(dict):
    """float -> ``number(float)``, filled on first use: a hit is one C-level dict lookup.

    Book prices and sizes repeat a lot (the same levels change again and again), so
    most values of a row are hits.  Zero is never stored: 0.0 and -0.0 are equal keys
    but write differently, so the row code formats a zero itself (``repr(s)[:-2]``).
    NaN is not stored either (it never equals itself: every lookup would add a key).
    The cache is cleared when it reaches MAX_CACHED values, which bounds its memory.
    """

    __slots__ = ()
    MAX_CACHED = 1 << 17

    def __missing__(self, x: float) -> str:
        text = number(x)
        if x == x and x != 0.0:
            if len(self) >= self.MAX_CACHED:
                self.clear()
            self[x] = text
        return text


def _field(text: str) -> str:
    """A CSV field, quoted only when it must be (RFC 4180)."""
    if "," in text or '"' in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def snapshot_levels(bids: Iterable[Level], asks: Iterable[Level]) -> tuple[list[Level], list[Level], tuple]:
    """What a snapshot block lists: (bids best first, asks best first, the restating row's
    (side, level)); the restating row is None for an empty book (no block is written)."""
    bids = sorted(bids, reverse=True)
    asks = sorted(asks)
    restate = ("bid", bids[0]) if bids else ("ask", asks[0]) if asks else None
    return bids, asks, restate


class RowWriter:
    """Rows of one (exchange, symbol) as CSV text: the fixed prefix is built once, numbers come from a cache.

    ``TupleRows`` below writes the same rows as tuples (the Parquet sink); the streams of
    sinks/recorder.py take either, and put their results together with ``join``.
    """

    __slots__ = ("prefix", "_num")
    join = staticmethod("".join)

    def __init__(self, exchange: str, symbol: str):
        self.prefix = f"{_field(exchange)},{_field(symbol)},"
        self._num = _NumberCache()

    def delta(self, ts_exchange: int, ts_received: int, bids: Sequence[Level], asks: Sequence[Level]) -> str:
        """Rows of one book delta: every changed level, amount 0 for a removed one."""
        head = f"{self.prefix}{ts_exchange or ts_received},{ts_received},false,"
        n = self._num
        # (a zero size is a removed level: formatted here, see _NumberCache)
        if bids:
            hb = head + "bid,"
            text = "".join([f"{hb}{n[p]},{n[s] if s else repr(s)[:-2]}\n" for p, s in bids])
            if not asks:
                return text
        else:
            text = ""
        ha = head + "ask,"
        return text + "".join([f"{ha}{n[p]},{n[s] if s else repr(s)[:-2]}\n" for p, s in asks])

    def snapshot(self, ts_exchange: int, ts_received: int, bids: Iterable[Level], asks: Iterable[Level]) -> str:
        """A snapshot block of the whole view, best first, closed by a restating row.

        Returns "" for an empty book: a block needs at least one level (a reader
        cannot tell an empty block from no block).
        """
        head = f"{self.prefix}{ts_exchange or ts_received},{ts_received},"
        bids, asks, restate = snapshot_levels(bids, asks)
        if restate is None:
            return ""
        n = self._num
        hb, ha = head + "true,bid,", head + "true,ask,"
        out = [f"{hb}{n[p]},{n[s] if s else repr(s)[:-2]}\n" for p, s in bids]
        out += [f"{ha}{n[p]},{n[s] if s else repr(s)[:-2]}\n" for p, s in asks]
        side, (p, s) = restate
        out.append(f"{head}false,{side},{number(p)},{number(s)}\n")
        return "".join(out)

    def trade(self, ts_exchange: int, ts_received: int, trade_id: str, side: str, price: float, amount: float) -> str:
        """One trade row; side is the taker side (buy, sell or unknown)."""
        n = self._num
        return (f"{self.prefix}{ts_exchange or ts_received},{ts_received},{_field(trade_id)},{side},"
                f"{n[price]},{n[amount] if amount else repr(amount)[:-2]}\n")

    def quote(self, q: schema.Quote) -> str:
        """One quotes row (tardis column order: ask before bid); an empty side's fields are empty."""
        return (f"{self.prefix}{q.ts_exchange or q.ts_received},{q.ts_received},{self._opt(q.ask_amount)},"
                f"{self._opt(q.ask_price)},{self._opt(q.bid_price)},{self._opt(q.bid_amount)}\n")

    def ticker(self, t: schema.DerivativeTicker) -> str:
        """One derivative_ticker row; a value the venue has not stated is an empty field."""
        funding = "" if t.funding_timestamp is None else str(t.funding_timestamp)
        return (f"{self.prefix}{t.ts_exchange or t.ts_received},{t.ts_received},{funding},{self._opt(t.funding_rate)},"
                f"{self._opt(t.predicted_funding_rate)},{self._opt(t.open_interest)},{self._opt(t.last_price)},"
                f"{self._opt(t.index_price)},{self._opt(t.mark_price)}\n")

    def liquidation(self, x: schema.Liquidation) -> str:
        n = self._num
        return (f"{self.prefix}{x.ts_exchange or x.ts_received},{x.ts_received},{_field(x.liquidation_id)},{x.side},"
                f"{n[x.price]},{n[x.amount] if x.amount else repr(x.amount)[:-2]}\n")

    def _opt(self, x: float | None) -> str:
        if x is None:
            return ""
        return self._num[x] if x else repr(float(x))[:-2]

def _join_tuples(parts) -> list:
    out: list = []
    for part in parts:
        if part:
            out.extend(part)
    return out


class TupleRows:
    """The rows ``RowWriter`` writes, as tuples of typed values instead of text (the Parquet sink).

    The same rules, shared where they are more than a line (``snapshot_levels``): the exchange
    time falls back to the receive time, a snapshot block lists the view best first and ends
    with the restating row.  Each tuple is one row without its ``exchange`` and ``symbol``
    columns (the same for every row of one writer):

    - book rows ``(timestamp, local_timestamp, is_snapshot, side, price, amount)``;
    - trade rows ``(timestamp, local_timestamp, id, side, price, amount)``;
    - quotes, derivative_ticker and liquidations rows: their ``COLUMNS`` after ``symbol``, a value
      the venue has not stated as None (an empty CSV field, a Parquet null).
    """

    __slots__ = ("exchange", "symbol")
    join = staticmethod(_join_tuples)

    def __init__(self, exchange: str, symbol: str):
        self.exchange, self.symbol = exchange, symbol

    def delta(self, ts_exchange: int, ts_received: int, bids: Sequence[Level], asks: Sequence[Level]) -> list:
        ts = ts_exchange or ts_received
        return ([(ts, ts_received, False, "bid", p, s) for p, s in bids]
                + [(ts, ts_received, False, "ask", p, s) for p, s in asks])

    def snapshot(self, ts_exchange: int, ts_received: int, bids: Iterable[Level], asks: Iterable[Level]) -> list:
        bids, asks, restate = snapshot_levels(bids, asks)
        if restate is None:
            return []
        ts = ts_exchange or ts_received
        out = [(ts, ts_received, True, "bid", p, s) for p, s in bids]
        out += [(ts, ts_received, True, "ask", p, s) for p, s in asks]
        side, (p, s) = restate
        out.append((ts, ts_received, False, side, p, s))
        return out

    def trade(self, ts_exchange: int, ts_received: int, trade_id: str, side: str, price: float, amount: float) -> list:
        return [(ts_exchange or ts_received, ts_received, trade_id, side, price, amount)]

    @staticmethod
    def quote(q: schema.Quote) -> list:
        return [(q.ts_exchange or q.ts_received, q.ts_received, q.ask_amount, q.ask_price, q.bid_price, q.bid_amount)]

    @staticmethod
    def ticker(t: schema.DerivativeTicker) -> list:
        return [(t.ts_exchange or t.ts_received, t.ts_received, t.funding_timestamp, t.funding_rate,
                 t.predicted_funding_rate, t.open_interest, t.last_price, t.index_price, t.mark_price)]

    @staticmethod
    def liquidation(x: schema.Liquidation) -> list:
        return [(x.ts_exchange or x.ts_received, x.ts_received, x.liquidation_id, x.side, x.price, x.amount)]
