import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BookState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BOOK_STATE_UNSPECIFIED: _ClassVar[BookState]
    BOOK_STATE_SYNCING: _ClassVar[BookState]
    BOOK_STATE_LIVE: _ClassVar[BookState]
    BOOK_STATE_STALE: _ClassVar[BookState]
    BOOK_STATE_DOWN: _ClassVar[BookState]
    BOOK_STATE_REMOVED: _ClassVar[BookState]
BOOK_STATE_UNSPECIFIED: BookState
BOOK_STATE_SYNCING: BookState
BOOK_STATE_LIVE: BookState
BOOK_STATE_STALE: BookState
BOOK_STATE_DOWN: BookState
BOOK_STATE_REMOVED: BookState

class Level(_message.Message):
    __slots__ = ("price", "size")
    PRICE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    price: float
    size: float
    def __init__(self, price: _Optional[float] = ..., size: _Optional[float] = ...) -> None: ...

class GetBookRequest(_message.Message):
    __slots__ = ("exchange", "symbol", "depth")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbol: str
    depth: int
    def __init__(self, exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., depth: _Optional[int] = ...) -> None: ...

class Book(_message.Message):
    __slots__ = ("exchange", "symbol", "epoch", "seq", "state", "bids", "asks", "time_exchange", "time_received")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BIDS_FIELD_NUMBER: _ClassVar[int]
    ASKS_FIELD_NUMBER: _ClassVar[int]
    TIME_EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    TIME_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbol: str
    epoch: int
    seq: int
    state: BookState
    bids: _containers.RepeatedCompositeFieldContainer[Level]
    asks: _containers.RepeatedCompositeFieldContainer[Level]
    time_exchange: _timestamp_pb2.Timestamp
    time_received: _timestamp_pb2.Timestamp
    def __init__(self, exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., epoch: _Optional[int] = ..., seq: _Optional[int] = ..., state: _Optional[_Union[BookState, str]] = ..., bids: _Optional[_Iterable[_Union[Level, _Mapping]]] = ..., asks: _Optional[_Iterable[_Union[Level, _Mapping]]] = ..., time_exchange: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_received: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubscribeBooksRequest(_message.Message):
    __slots__ = ("exchange", "symbols", "depth", "mode", "interval_ms")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MODE_UNSPECIFIED: _ClassVar[SubscribeBooksRequest.Mode]
        DELTAS: _ClassVar[SubscribeBooksRequest.Mode]
        SNAPSHOTS: _ClassVar[SubscribeBooksRequest.Mode]
    MODE_UNSPECIFIED: SubscribeBooksRequest.Mode
    DELTAS: SubscribeBooksRequest.Mode
    SNAPSHOTS: SubscribeBooksRequest.Mode
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbols: _containers.RepeatedScalarFieldContainer[str]
    depth: int
    mode: SubscribeBooksRequest.Mode
    interval_ms: int
    def __init__(self, exchange: _Optional[str] = ..., symbols: _Optional[_Iterable[str]] = ..., depth: _Optional[int] = ..., mode: _Optional[_Union[SubscribeBooksRequest.Mode, str]] = ..., interval_ms: _Optional[int] = ...) -> None: ...

class BookMessage(_message.Message):
    __slots__ = ("exchange", "symbol", "epoch", "seq", "is_snapshot", "state", "bids", "asks", "time_exchange", "time_received")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    IS_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BIDS_FIELD_NUMBER: _ClassVar[int]
    ASKS_FIELD_NUMBER: _ClassVar[int]
    TIME_EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    TIME_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbol: str
    epoch: int
    seq: int
    is_snapshot: bool
    state: BookState
    bids: _containers.RepeatedCompositeFieldContainer[Level]
    asks: _containers.RepeatedCompositeFieldContainer[Level]
    time_exchange: _timestamp_pb2.Timestamp
    time_received: _timestamp_pb2.Timestamp
    def __init__(self, exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., epoch: _Optional[int] = ..., seq: _Optional[int] = ..., is_snapshot: _Optional[bool] = ..., state: _Optional[_Union[BookState, str]] = ..., bids: _Optional[_Iterable[_Union[Level, _Mapping]]] = ..., asks: _Optional[_Iterable[_Union[Level, _Mapping]]] = ..., time_exchange: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_received: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubscribeTradesRequest(_message.Message):
    __slots__ = ("exchange", "symbols")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, exchange: _Optional[str] = ..., symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class Trade(_message.Message):
    __slots__ = ("exchange", "symbol", "epoch", "seq", "trade_id", "price", "size", "side", "time_exchange", "time_received", "liquidation")
    class Side(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SIDE_UNKNOWN: _ClassVar[Trade.Side]
        BUY: _ClassVar[Trade.Side]
        SELL: _ClassVar[Trade.Side]
    SIDE_UNKNOWN: Trade.Side
    BUY: Trade.Side
    SELL: Trade.Side
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    TIME_EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    TIME_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    LIQUIDATION_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbol: str
    epoch: int
    seq: int
    trade_id: str
    price: float
    size: float
    side: Trade.Side
    time_exchange: _timestamp_pb2.Timestamp
    time_received: _timestamp_pb2.Timestamp
    liquidation: bool
    def __init__(self, exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., epoch: _Optional[int] = ..., seq: _Optional[int] = ..., trade_id: _Optional[str] = ..., price: _Optional[float] = ..., size: _Optional[float] = ..., side: _Optional[_Union[Trade.Side, str]] = ..., time_exchange: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_received: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., liquidation: _Optional[bool] = ...) -> None: ...

class ListFeedsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Feed(_message.Message):
    __slots__ = ("exchange", "symbol", "state", "epoch", "seq", "depth", "updates", "trades", "gaps", "resyncs", "age_s", "best_bid", "best_ask")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    TRADES_FIELD_NUMBER: _ClassVar[int]
    GAPS_FIELD_NUMBER: _ClassVar[int]
    RESYNCS_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    BEST_BID_FIELD_NUMBER: _ClassVar[int]
    BEST_ASK_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbol: str
    state: BookState
    epoch: int
    seq: int
    depth: int
    updates: int
    trades: int
    gaps: int
    resyncs: int
    age_s: float
    best_bid: Level
    best_ask: Level
    def __init__(self, exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., state: _Optional[_Union[BookState, str]] = ..., epoch: _Optional[int] = ..., seq: _Optional[int] = ..., depth: _Optional[int] = ..., updates: _Optional[int] = ..., trades: _Optional[int] = ..., gaps: _Optional[int] = ..., resyncs: _Optional[int] = ..., age_s: _Optional[float] = ..., best_bid: _Optional[_Union[Level, _Mapping]] = ..., best_ask: _Optional[_Union[Level, _Mapping]] = ...) -> None: ...

class ListFeedsResponse(_message.Message):
    __slots__ = ("feeds",)
    FEEDS_FIELD_NUMBER: _ClassVar[int]
    feeds: _containers.RepeatedCompositeFieldContainer[Feed]
    def __init__(self, feeds: _Optional[_Iterable[_Union[Feed, _Mapping]]] = ...) -> None: ...

class SubscribeQuotesRequest(_message.Message):
    __slots__ = ("exchange", "symbols")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, exchange: _Optional[str] = ..., symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class Quote(_message.Message):
    __slots__ = ("exchange", "symbol", "epoch", "seq", "bid_price", "bid_size", "ask_price", "ask_size", "update_id", "time_exchange", "time_received")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    BID_PRICE_FIELD_NUMBER: _ClassVar[int]
    BID_SIZE_FIELD_NUMBER: _ClassVar[int]
    ASK_PRICE_FIELD_NUMBER: _ClassVar[int]
    ASK_SIZE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    TIME_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbol: str
    epoch: int
    seq: int
    bid_price: float
    bid_size: float
    ask_price: float
    ask_size: float
    update_id: int
    time_exchange: _timestamp_pb2.Timestamp
    time_received: _timestamp_pb2.Timestamp
    def __init__(self, exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., epoch: _Optional[int] = ..., seq: _Optional[int] = ..., bid_price: _Optional[float] = ..., bid_size: _Optional[float] = ..., ask_price: _Optional[float] = ..., ask_size: _Optional[float] = ..., update_id: _Optional[int] = ..., time_exchange: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_received: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubscribeDerivativeTickersRequest(_message.Message):
    __slots__ = ("exchange", "symbols")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, exchange: _Optional[str] = ..., symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class DerivativeTicker(_message.Message):
    __slots__ = ("exchange", "symbol", "epoch", "seq", "mark_price", "index_price", "last_price", "funding_rate", "predicted_funding_rate", "funding_time", "open_interest", "time_exchange", "time_received")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    MARK_PRICE_FIELD_NUMBER: _ClassVar[int]
    INDEX_PRICE_FIELD_NUMBER: _ClassVar[int]
    LAST_PRICE_FIELD_NUMBER: _ClassVar[int]
    FUNDING_RATE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FUNDING_RATE_FIELD_NUMBER: _ClassVar[int]
    FUNDING_TIME_FIELD_NUMBER: _ClassVar[int]
    OPEN_INTEREST_FIELD_NUMBER: _ClassVar[int]
    TIME_EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    TIME_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbol: str
    epoch: int
    seq: int
    mark_price: float
    index_price: float
    last_price: float
    funding_rate: float
    predicted_funding_rate: float
    funding_time: _timestamp_pb2.Timestamp
    open_interest: float
    time_exchange: _timestamp_pb2.Timestamp
    time_received: _timestamp_pb2.Timestamp
    def __init__(self, exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., epoch: _Optional[int] = ..., seq: _Optional[int] = ..., mark_price: _Optional[float] = ..., index_price: _Optional[float] = ..., last_price: _Optional[float] = ..., funding_rate: _Optional[float] = ..., predicted_funding_rate: _Optional[float] = ..., funding_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., open_interest: _Optional[float] = ..., time_exchange: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_received: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubscribeLiquidationsRequest(_message.Message):
    __slots__ = ("exchange", "symbols")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, exchange: _Optional[str] = ..., symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class Liquidation(_message.Message):
    __slots__ = ("exchange", "symbol", "epoch", "seq", "liquidation_id", "price", "size", "side", "time_exchange", "time_received")
    class Side(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SIDE_UNKNOWN: _ClassVar[Liquidation.Side]
        BUY: _ClassVar[Liquidation.Side]
        SELL: _ClassVar[Liquidation.Side]
    SIDE_UNKNOWN: Liquidation.Side
    BUY: Liquidation.Side
    SELL: Liquidation.Side
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    LIQUIDATION_ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    TIME_EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    TIME_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbol: str
    epoch: int
    seq: int
    liquidation_id: str
    price: float
    size: float
    side: Liquidation.Side
    time_exchange: _timestamp_pb2.Timestamp
    time_received: _timestamp_pb2.Timestamp
    def __init__(self, exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., epoch: _Optional[int] = ..., seq: _Optional[int] = ..., liquidation_id: _Optional[str] = ..., price: _Optional[float] = ..., size: _Optional[float] = ..., side: _Optional[_Union[Liquidation.Side, str]] = ..., time_exchange: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_received: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
