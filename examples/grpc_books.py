"""A typed gRPC client of the pipeline: books kept from a snapshot and its deltas, and trades.

    python examples/grpc_books.py [--target 127.0.0.1:50051] [--token T] [--count N] EXCHANGE [SYMBOL...]

It subscribes to the books of EXCHANGE (every symbol when none is named) in DELTAS mode and to
their trades, keeps each book from its snapshot and the deltas that follow (a delta's seq is the
last one + 1; a snapshot replaces the book: the first one, after a restart of the ingest, or when
this client fell behind), and prints the best bid and ask after each book message and each
trade.  --count stops it after N book messages.  The contract is docs/grpc.md.
"""

from __future__ import annotations

import argparse
import threading

import grpc

from l2pipeline.v1 import marketdata_pb2 as pb
from l2pipeline.v1 import marketdata_pb2_grpc as rpc


class Book:
    """One symbol's book as the stream gives it: levels by price, and the (epoch, seq) it is at."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.epoch = 0
        self.seq = 0

    def apply(self, m: pb.BookMessage) -> None:
        if m.is_snapshot:
            self.bids.clear()
            self.asks.clear()
        elif (m.epoch, m.seq) != (self.epoch, self.seq + 1):  # the server never does this: say so if it did
            raise RuntimeError(f"{m.symbol}: delta {m.epoch}/{m.seq} after {self.epoch}/{self.seq}")
        for side, levels in ((self.bids, m.bids), (self.asks, m.asks)):
            for level in levels:
                if level.size > 0:
                    side[level.price] = level.size
                else:
                    side.pop(level.price, None)  # size 0: the level left the view
        self.epoch, self.seq = m.epoch, m.seq

    def best(self) -> tuple[float | None, float | None]:
        return max(self.bids, default=None), min(self.asks, default=None)


def print_trades(stub: rpc.MarketDataStub, exchange: str, symbols: list[str], metadata: list[tuple[str, str]],
                 calls: list[grpc.Future]) -> None:
    call = stub.SubscribeTrades(pb.SubscribeTradesRequest(exchange=exchange, symbols=symbols), metadata=metadata)
    calls.append(call)
    try:
        for t in call:
            side = pb.Trade.Side.Name(t.side).lower()
            print(f"trade {t.symbol} {side} {t.size} @ {t.price} (seq {t.seq})", flush=True)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            print(f"trades ended: {exc.code().name}: {exc.details()}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exchange")
    parser.add_argument("symbols", nargs="*")
    parser.add_argument("--target", default="127.0.0.1:50051", help="host:port of `pipeline grpc`")
    parser.add_argument("--token", default=None, help="bearer token, when [grpc] token is set")
    parser.add_argument("--count", type=int, default=0, help="stop after this many book messages (0: never)")
    args = parser.parse_args(argv)
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    with grpc.insecure_channel(args.target) as channel:
        stub = rpc.MarketDataStub(channel)
        calls: list[grpc.Future] = []
        threading.Thread(target=print_trades, args=(stub, args.exchange, args.symbols, metadata, calls),
                         daemon=True).start()
        books: dict[str, Book] = {}
        request = pb.SubscribeBooksRequest(exchange=args.exchange, symbols=args.symbols, depth=10,
                                           mode=pb.SubscribeBooksRequest.DELTAS)
        seen = 0
        try:
            for m in stub.SubscribeBooks(request, metadata=metadata):
                book = books.setdefault(m.symbol, Book())
                book.apply(m)
                bid, ask = book.best()
                kind = "snapshot" if m.is_snapshot else "delta"
                print(f"book  {m.symbol} {kind} seq {m.seq}: bid {bid} ask {ask} "
                      f"({pb.BookState.Name(m.state).removeprefix('BOOK_STATE_').lower()})", flush=True)
                seen += 1
                if args.count and seen >= args.count:
                    break
        except grpc.RpcError as exc:
            print(f"books ended: {exc.code().name}: {exc.details()}", flush=True)
            return 1
        except KeyboardInterrupt:
            pass
        for call in calls:
            call.cancel()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
