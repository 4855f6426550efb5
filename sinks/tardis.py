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
from decimal import Decimal
from typing import Iterable, Sequence

BOOK = "incremental_book_L2"
TRADES = "trades"
DATATYPES = (BOOK, TRADES)

BOOK_HEADER = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
TRADES_HEADER = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
HEADERS = {BOOK: BOOK_HEADER, TRADES: TRADES_HEADER}

# tardis.dev exchange ids for the config names people give their [exchanges.NAME]
# tables; any other name is used as it is (override with `tardis_exchange`).
TARDIS_IDS = {
    "binance": "binance",
    "binance_futures": "binance-futures",
    "binance-futures": "binance-futures",
    "binance_usdm": "binance-futures",
    "binance_delivery": "binance-delivery",
    "binance-delivery": "binance-delivery",
    "okx": "okex",
    "okex": "okex",
    "okx_swap": "okex-swap",
    "okex-swap": "okex-swap",
    "bybit": "bybit",
    "bybit_spot": "bybit-spot",
    "bybit-spot": "bybit-spot",
    "hyperliquid": "hyperliquid",
    "coinbase": "coinbase",
    "kraken": "kraken",
    "deribit": "deribit",
    "bitmex": "bitmex",
}

Level = tuple[float, float]


def exchange_id(name: str, override: str | None = None) -> str:
    """The ``exchange`` column value for config exchange ``name``."""
    return override or TARDIS_IDS.get(name, name)


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


def _field(text: str) -> str:
    """A CSV field, quoted only when it must be (RFC 4180)."""
    if "," in text or '"' in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


class RowWriter:
    """Rows of one (exchange, symbol): the fixed prefix is built once."""

    __slots__ = ("prefix",)

    def __init__(self, exchange: str, symbol: str):
        self.prefix = f"{_field(exchange)},{_field(symbol)},"

    def delta(self, ts_exchange: int, ts_received: int, bids: Sequence[Level], asks: Sequence[Level]) -> str:
        """Rows of one book delta: every changed level, amount 0 for a removed one."""
        head = f"{self.prefix}{ts_exchange or ts_received},{ts_received},false,"
        out = [f"{head}bid,{number(p)},{number(s)}\n" for p, s in bids]
        out += [f"{head}ask,{number(p)},{number(s)}\n" for p, s in asks]
        return "".join(out)

    def snapshot(self, ts_exchange: int, ts_received: int, bids: Iterable[Level], asks: Iterable[Level]) -> str:
        """A snapshot block of the whole view, best first, closed by a restating row.

        Returns "" for an empty book: a block needs at least one level (a reader
        cannot tell an empty block from no block).
        """
        head = f"{self.prefix}{ts_exchange or ts_received},{ts_received},"
        bids = sorted(bids, reverse=True)
        asks = sorted(asks)
        if not bids and not asks:
            return ""
        out = [f"{head}true,bid,{number(p)},{number(s)}\n" for p, s in bids]
        out += [f"{head}true,ask,{number(p)},{number(s)}\n" for p, s in asks]
        side, (p, s) = ("bid", bids[0]) if bids else ("ask", asks[0])
        out.append(f"{head}false,{side},{number(p)},{number(s)}\n")
        return "".join(out)

    def trade(self, ts_exchange: int, ts_received: int, trade_id: str, side: str, price: float, amount: float) -> str:
        """One trade row; side is the taker side (buy, sell or unknown)."""
        return (f"{self.prefix}{ts_exchange or ts_received},{ts_received},{_field(trade_id)},{side},"
                f"{number(price)},{number(amount)}\n")
