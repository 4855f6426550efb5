"""Print best bid/ask of every book and every trade, straight from the pipeline's bus.

Run the demo (`make run`), then in another terminal:

    .venv/bin/python examples/print_books.py                      # demo config, every symbol
    .venv/bin/python examples/print_books.py my.toml              # your config
    .venv/bin/python examples/print_books.py my.toml BTCUSDT      # only these whole symbols

Ctrl-C stops it.  The events are typed (a Trade or the Book that changed), so mypy checks this
file: `.venv/bin/mypy examples/print_books.py`.
"""

from __future__ import annotations

import sys
import time

from pipeline.config import load_config
from pipeline.consumer import Book, Consumer, Trade


def show_trade(trade: Trade) -> None:
    print(f"trade {trade.exchange} {trade.symbol} {trade.side:<4} {trade.amount} @ {trade.price}", flush=True)


def show_book(book: Book) -> None:
    bid, ask, mid = book.best_bid(), book.best_ask(), book.mid()
    top = f"bid {bid[0]} ask {ask[0]}  sizes {bid[1]} / {ask[1]}" if bid and ask else "a side is empty"
    print(f"book  {book.exchange} {book.symbol} [{book.state}] seq {book.seq}  {top}"
          + (f"  mid {mid}" if mid is not None else ""), flush=True)


def main(argv: list[str]) -> None:
    config = load_config(argv[0] if argv else None)
    symbols = argv[1:] or None
    last_print: dict[tuple[str, str], float] = {}
    with Consumer(config, symbols=symbols) as consumer:
        for event in consumer.events(timeout=1.0):
            if isinstance(event, Trade):
                show_trade(event)
                continue
            if not isinstance(event, Book):  # other kinds come only when asked for (kinds=[...])
                continue
            key = (event.exchange, event.symbol)
            now = time.monotonic()
            if now - last_print.get(key, 0.0) >= 1.0:  # a line per book per second
                last_print[key] = now
                show_book(event)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:  # Ctrl-C: the consumer is closed by its with-block; exit quietly
        pass
