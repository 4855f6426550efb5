"""Normalized instruments: what a venue-native symbol trades (base, quote, kind).

The bus keeps each venue's native ``symbol`` (``BTCUSDT``, ``BTC-USDT-SWAP``, ``BTC``) and
adds ``instrument`` for consumers that join venues.  Adapters know their venue's naming;
the helpers here cover the shapes several venues share.
"""

from __future__ import annotations

from pipeline.schema import Instrument

# Quote assets recognised at the end of concatenated symbols (Binance, Bybit, Aster),
# longest first so that "FDUSD" wins over "USD".
QUOTES = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "USDE", "DAI", "EUR", "TRY", "BRL", "JPY", "GBP",
          "BTC", "ETH", "BNB", "USD")


def split_concatenated(symbol: str, kind: str) -> Instrument:
    """``BTCUSDT`` -> BTC/USDT.  A symbol with no known quote suffix keeps the whole name
    as base and an empty quote (consumers see it is not normalized)."""
    s = symbol.upper()
    for q in QUOTES:
        if s.endswith(q) and len(s) > len(q):
            return Instrument(s[:-len(q)], q, kind)
    return Instrument(s, "", kind)


def split_dashed(symbol: str) -> Instrument:
    """OKX-style ``BASE-QUOTE[-SWAP|-YYMMDD]`` -> spot, perp (SWAP) or future (dated)."""
    parts = symbol.upper().split("-")
    if len(parts) < 2:
        return Instrument(symbol.upper(), "", "unknown")
    base, quote = parts[0], parts[1]
    if len(parts) == 2:
        return Instrument(base, quote, "spot")
    if parts[2] == "SWAP":
        return Instrument(base, quote, "perp")
    if parts[2].isdigit():
        return Instrument(base, quote, "future")
    return Instrument(base, quote, "unknown")
