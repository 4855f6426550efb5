"""Print best bid/ask of every book and every trade, straight from the pipeline's bus.

Run the demo (`make run`), then in another terminal:

    .venv/bin/python examples/print_books.py            # demo config
    .venv/bin/python examples/print_books.py my.toml    # your config
"""

import sys
import time

from pipeline.config import load_config
from pipeline.consumer import Consumer


def main() -> None:
    config = load_config(sys.argv[1] if len(sys.argv) > 1 else None)
    last_print: dict[tuple[str, str], float] = {}
    with Consumer(config) as consumer:
        for kind, item in consumer.events(timeout=1.0):
            if kind == "trade":
                print(f"trade {item.exchange} {item.symbol} {item.side:<4} {item.amount:g} @ {item.price:g}")
                continue
            key = (item.exchange, item.symbol)
            now = time.monotonic()
            if now - last_print.get(key, 0) >= 1.0:  # a line per book per second
                last_print[key] = now
                print(f"book  {item.exchange} {item.symbol} [{item.state}] seq {item.seq} "
                      f"bid {item.best_bid()} ask {item.best_ask()}")


if __name__ == "__main__":
    main()
