"""Feed a capture to cryptofeed's own Binance message handler; print its rate as JSON.

Runs inside the separate virtual environment that ``pipeline bench compare`` makes
(cryptofeed is never a dependency of this project), so it imports only the standard
library and cryptofeed, never ``pipeline`` or ``ingest``::

    VENV/bin/python _cryptofeed_driver.py CAPTURE

What it drives (facts read from cryptofeed's installed source, 3.0.x): a ``Binance``
(spot) or ``BinanceFutures`` feed object subscribed to L2_BOOK and TRADES with no-op
async callbacks.  Each inbound WebSocket frame of the capture goes to the feed's
``message_handler(text, conn, timestamp)``, which decodes the combined-stream frame
(Decimal prices) and routes ``depthUpdate`` events to its book handler; the first depth
event of a symbol makes it fetch a REST snapshot through ``feed.http_conn.read(url)``:
that call is answered here with the capture's recorded body for the symbol, so the
book syncs exactly as live, with no network.  Symbol metadata (normally fetched from
exchangeInfo) is set from the capture's symbols before the feed is built.

cryptofeed's Binance handler routes ``aggTrade`` trades only; ``@trade`` frames fall
through to its "unexpected message" warning (silenced here) and are counted as
``unrouted``.  GC is left at Python's defaults: cryptofeed as its users run it.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import sys
import time
from urllib.parse import parse_qs, urlsplit

QUOTES = ("USDT", "USDC", "BUSD", "FDUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "DAI", "USD")


def read_capture(path: str):
    opener = gzip.open if path.endswith(".gz") else open
    frames: list[tuple[float, str]] = []
    rest: dict[str, list[str]] = {}
    with opener(path, "rt", encoding="utf-8") as fh:
        header = json.loads(fh.readline())
        for line in fh:
            if not line.strip():
                continue
            ev = json.loads(line)
            if ev["src"] == "ws":
                frames.append((float(ev["ts"]), ev["data"]))
            elif ev["src"] == "rest":
                parts = urlsplit(ev["url"])
                sym = parse_qs(parts.query).get("symbol")
                if parts.path.rstrip("/").endswith("/depth") and sym:
                    rest.setdefault(sym[0].upper(), []).append(ev["data"])
    return header, frames, rest


def split_symbol(sym: str) -> tuple[str, str]:
    for q in QUOTES:
        if sym.endswith(q) and len(sym) > len(q):
            return sym[: -len(q)], q
    return sym[:-4], sym[-4:]


class RecordedHTTP:
    """Stands in for the feed's HTTP connection: REST depth reads answered from the capture."""

    def __init__(self, bodies: dict[str, list[str]]):
        self.bodies = {k: list(v) for k, v in bodies.items()}
        self.reads = 0

    async def read(self, url, *args, **kwargs):
        sym = parse_qs(urlsplit(url).query)["symbol"][0].upper()
        left = self.bodies[sym]
        self.reads += 1
        return left.pop(0) if len(left) > 1 else left[0]

    async def close(self):
        pass


async def drive(header: dict, frames, rest) -> dict:
    import cryptofeed
    from cryptofeed.defines import L2_BOOK, TRADES
    from cryptofeed.exchanges import Binance, BinanceFutures
    from cryptofeed.symbols import Symbols

    futures = header.get("adapter") == "binance_futures"
    cls = BinanceFutures if futures else Binance
    symbols = list(header.get("symbols") or [])
    for _, text in frames:  # combined-stream names: "<symbol>@<stream>"
        if text.startswith('{"stream":"'):
            s = text[11:text.find("@", 11)].upper()
            if s not in symbols:
                symbols.append(s)
    for s in rest:
        if s not in symbols:
            symbols.append(s)
    info = {"symbols": []}
    for s in symbols:
        base, quote = split_symbol(s)
        entry = {"symbol": s, "baseAsset": base, "quoteAsset": quote, "status": "TRADING",
                 "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.00000001"}]}
        if futures:
            entry["contractType"] = "PERPETUAL"
        info["symbols"].append(entry)
    normalized, extra = cls._parse_symbol_data(info)
    Symbols.set(cls.id, normalized, extra)
    std = [n for n, ex in normalized.items() if ex in symbols]
    counts = {"books": 0, "trades": 0}

    async def on_book(book, receipt):
        counts["books"] += 1

    async def on_trade(trade, receipt):
        counts["trades"] += 1

    feed = cls(symbols=std, channels=[L2_BOOK, TRADES], callbacks={L2_BOOK: on_book, TRADES: on_trade})
    http = RecordedHTTP(rest)
    feed.http_conn = http
    handler = feed.message_handler
    errors = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for ts, text in frames:
        try:
            await handler(text, None, ts)
        except Exception:  # noqa: BLE001 - counted: a benchmark reports, it does not stop
            errors += 1
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = len(frames)
    books = {}
    for pair, book in feed._l2_book.items():
        bids, asks = book.book.bids, book.book.asks
        books[feed.std_symbol_to_exchange_symbol(pair)] = {
            "update_id": feed.last_update_id.get(pair),
            "bid": [float(x) for x in bids.index(0)] if len(bids) else None,
            "ask": [float(x) for x in asks.index(0)] if len(asks) else None,
            "bid_levels": len(bids), "ask_levels": len(asks)}
    return {"messages": n, "seconds": round(seconds, 4), "msgs_per_s": round(n / seconds) if seconds else None,
            "cpu_us_per_msg": round(cpu / max(n, 1) * 1e6, 3), "book_callbacks": counts["books"],
            "trade_callbacks": counts["trades"], "errors": errors, "snapshot_reads": http.reads,
            "cryptofeed": getattr(cryptofeed, "__version__", None) or _version("cryptofeed"),
            "python": sys.version.split()[0], "books": books}


def _version(dist: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001
        return None


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: _cryptofeed_driver.py CAPTURE")
    logging.getLogger("cryptofeed").setLevel(logging.ERROR)  # its per-frame warnings would dominate
    logging.getLogger("feedhandler").setLevel(logging.ERROR)
    header, frames, rest = read_capture(sys.argv[1])
    result = asyncio.run(drive(header, frames, rest))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
