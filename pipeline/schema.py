"""The bus schema: topics and payloads, defined once, encode and decode side by side.

Every bus message is two ZeroMQ frames::

    frame 0  topic    b"trade.EXCHANGE.SYMBOL"  or  b"l2.EXCHANGE.SYMBOL"   (ascii)
    frame 1  payload  a msgpack map (below), self-describing; field "kind" tags it

Trade payload (kind "trade") -- one per venue trade, on the trades socket:
    exchange, symbol   str    config name of the exchange; venue-native symbol
    epoch              int    ingest process start id (changes on restart)
    seq                int    contiguous per (trade, exchange, symbol) stream, from 1
    ts_exchange        int    venue trade time, microseconds since the epoch (UTC)
    ts_received        int    local receive time of the frame, microseconds
    ts_published       int    local time the message was sent, microseconds
    price, amount      float
    side               str    taker side: "buy", "sell" or "unknown"
    trade_id           str    venue trade id
    instrument         map    {base, quote, kind}: what the native symbol trades, kind
                              "spot" | "perp" | "future" | "unknown" (absent: not known)

L2 payload (kind "l2") -- on the L2 socket:
    exchange, symbol, epoch, seq, ts_exchange, ts_received, ts_published   as above
    snapshot           bool   true: bids/asks are the whole top-N view (replace);
                              false: a delta of the view (apply; size 0 = delete)
    state              str    "syncing" | "live" | "stale"
    update_id          int    venue update id the view corresponds to (0 if none)
    depth              int    N of the top-N view
    bids, asks         [[price, size], ...]  (snapshot: best first)
    instrument         map    as for trades

A snapshot is published after every (re)sync, and when a book goes stale (with
state "stale" and its last levels, so consumers know not to trust it).  Deltas
follow with seq + 1 each.  Applying deltas in seq order to the latest snapshot
gives exactly the shared-memory view with the same seq.

msgspec Structs give the fastest encode/decode measured here
(building-block-costs.md section 4) while the wire stays plain msgpack: any
msgpack library decodes it into a map.
"""

from __future__ import annotations

from typing import Union

import msgspec

SCHEMA_VERSION = 1

TRADE_PREFIX = "trade"
L2_PREFIX = "l2"


def trade_topic(exchange: str, symbol: str) -> bytes:
    return f"{TRADE_PREFIX}.{exchange}.{symbol}".encode("ascii")


def l2_topic(exchange: str, symbol: str) -> bytes:
    return f"{L2_PREFIX}.{exchange}.{symbol}".encode("ascii")


def parse_topic(topic: bytes) -> tuple[str, str, str]:
    """``b"l2.sim.BTCUSDT"`` -> ``("l2", "sim", "BTCUSDT")``."""
    kind, exchange, symbol = topic.decode("ascii").split(".", 2)
    return kind, exchange, symbol


class Instrument(msgspec.Struct, frozen=True):
    """Normalized instrument of a venue-native symbol, for consumers that join venues."""

    base: str
    quote: str
    kind: str  # "spot" | "perp" | "future" | "unknown"


class Trade(msgspec.Struct, tag="trade", tag_field="kind", kw_only=True):
    exchange: str
    symbol: str
    epoch: int
    seq: int
    ts_exchange: int
    ts_received: int
    ts_published: int = 0
    price: float
    amount: float
    side: str
    trade_id: str
    instrument: Instrument | None = None


class L2Update(msgspec.Struct, tag="l2", tag_field="kind", kw_only=True):
    exchange: str
    symbol: str
    epoch: int
    seq: int
    ts_exchange: int
    ts_received: int
    ts_published: int = 0
    snapshot: bool
    state: str
    update_id: int = 0
    depth: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    instrument: Instrument | None = None


BusMessage = Union[Trade, L2Update]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(BusMessage)
_trade_decoder = msgspec.msgpack.Decoder(Trade)
_l2_decoder = msgspec.msgpack.Decoder(L2Update)


def encode(message: BusMessage) -> bytes:
    """Payload bytes of a Trade or L2Update."""
    return _encoder.encode(message)


def decode(payload: bytes) -> BusMessage:
    """Trade or L2Update from payload bytes. Raises msgspec.DecodeError / ValidationError."""
    return _decoder.decode(payload)


def decode_trade(payload: bytes) -> Trade:
    return _trade_decoder.decode(payload)


def decode_l2(payload: bytes) -> L2Update:
    return _l2_decoder.decode(payload)
