"""Synthetic bus traffic for the benchmarks that stand in for an ingest (publisher-latency, bus-read).

Per symbol a 50-level book around 100.0 / 100.1; each L2 delta changes 1-3 random levels, a
snapshot sends the whole book; trades are fixed-size buys.  Seqs are contiguous per stream and the
random changes are seeded, so a run is repeatable.  Payloads are built with pipeline.schema.
"""

from __future__ import annotations

import random

from pipeline import schema


class SyntheticBus:
    """Topic and payload pairs for ``symbols`` on exchange ``sim``; ``rng`` is shared with callers that
    pick symbols, so one seed fixes the whole sequence."""

    def __init__(self, symbols: list[str], epoch: int, seed: int = 5):
        self.rng = random.Random(seed)
        self.epoch = epoch
        self.books = {s: ({round(100.0 - i * 0.1, 1): 1.0 for i in range(50)},
                          {round(100.1 + i * 0.1, 1): 1.0 for i in range(50)}) for s in symbols}
        self.l2_seq = {s: 0 for s in symbols}
        self.trade_seq = {s: 0 for s in symbols}

    def l2(self, symbol: str, snapshot: bool, now_us: int = 1, published_us: int = 0) -> tuple[bytes, bytes]:
        """The next L2 message of ``symbol``: its whole book, or a change of 1-3 random levels."""
        bids, asks = self.books[symbol]
        if snapshot:
            db, da = sorted(bids.items(), reverse=True), sorted(asks.items())
        else:
            db, da = [], []
            rng = self.rng
            for _ in range(rng.randrange(1, 4)):
                side, out, base, step = (bids, db, 100.0, -0.1) if rng.random() < 0.5 else (asks, da, 100.1, 0.1)
                price = round(base + step * rng.randrange(50), 1)
                size = round(rng.random() * 5 + 0.001, 3)
                side[price] = size
                out.append((price, size))
        self.l2_seq[symbol] += 1
        return schema.l2_topic("sim", symbol), schema.encode(schema.L2Update(
            exchange="sim", symbol=symbol, epoch=self.epoch, seq=self.l2_seq[symbol], ts_exchange=now_us,
            ts_received=now_us, ts_published=published_us, snapshot=snapshot, state="live", depth=50,
            bids=db, asks=da))

    def trade(self, symbol: str, now_us: int = 1, published_us: int = 0) -> tuple[bytes, bytes]:
        """The next trade of ``symbol`` (a 0.5 buy at 100.0)."""
        self.trade_seq[symbol] += 1
        seq = self.trade_seq[symbol]
        return schema.trade_topic("sim", symbol), schema.encode(schema.Trade(
            exchange="sim", symbol=symbol, epoch=self.epoch, seq=seq, ts_exchange=now_us, ts_received=now_us,
            ts_published=published_us, price=100.0, amount=0.5, side="buy", trade_id=str(seq)))
