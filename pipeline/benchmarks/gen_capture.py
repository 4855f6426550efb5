"""``pipeline bench gen-capture``: a seeded synthetic Binance spot capture for benchmarks.

Writes a capture in format v1 (shared/docs/capture-format.md): a header line, then one
REST depth snapshot body per symbol (``src: "rest"``, ``/api/v3/depth?symbol=..&limit=..``)
recorded before the first diff, then combined-stream WebSocket frames as Binance spot
sends them (exchange-protocols.md section 1): ``{"stream":"btcusdt@depth@100ms","data":
{"e":"depthUpdate",...}}`` diffs and ``@trade`` frames (about one per ten diffs).

Why a generator and not pipeline/sim/market.py: the sim changes one level per update id
and aggregates them by time; a benchmark wants a fixed number of frames of realistic size
(5-40 level changes each, as Binance's 100 ms diffs of liquid symbols), made fast (200k
frames in seconds), with the same bytes for the same seed.

What holds in every capture (the smoke tests check it):
- update ids per symbol chain by the spot rule: each diff's ``U`` is the previous ``u + 1``,
  and the snapshot's ``lastUpdateId`` is the first diff's ``U - 1``;
- prices and sizes are strings with 8 decimals, on each symbol's tick and lot grid;
  a price appears at most once per side in a diff; size ``"0.00000000"`` deletes a level
  the book has; the book never crosses (every bid < every ask) and no side empties;
- frames follow symbols round-robin, 100 ms apart per symbol (``@depth@100ms``);
- deterministic: the output depends only on the options (gzip output too: no file name
  or time in the gzip header).

The book is kept as integer ticks and lots; text is made only when a frame is written.
"""

from __future__ import annotations

import bisect
import gzip
import json
import random
import time
from dataclasses import dataclass, field
from typing import Iterator

import click

from pipeline.sim.market import format_units

CAPTURE_FORMAT = "pipeline-capture/1"
WS_BASE = "wss://stream.binance.com:9443"
REST_BASE = "https://api.binance.com"
T0 = 1767225600.0  # 2026-01-01T00:00:00Z: fixed, so the bytes do not depend on the clock
FRAME_INTERVAL_S = 0.1  # @depth@100ms: one diff per symbol per 100 ms
TRADE_SHARE = 0.1  # trade frames per depth frame
MIN_CHANGES, MAX_CHANGES = 5, 40
ZERO = "0.00000000"

# symbol, start price in ticks, tick decimals, lot decimals, typical level size in lots
_SPECS = (
    ("BTCUSDT", 6_512_345, 2, 5, 40_000),
    ("ETHUSDT", 321_055, 2, 4, 30_000),
    ("SOLUSDT", 15_012, 2, 3, 40_000),
    ("BNBUSDT", 59_030, 2, 3, 8_000),
    ("XRPUSDT", 5_213, 4, 0, 3_000),
    ("DOGEUSDT", 15_123, 5, 0, 20_000),
    ("ADAUSDT", 4_512, 4, 1, 9_000),
    ("LTCUSDT", 8_011, 2, 3, 20_000),
)


@dataclass(frozen=True)
class Spec:
    symbol: str
    start_tick: int
    tick_decimals: int
    lot_decimals: int
    lots: int


def specs(k: int) -> list[Spec]:
    """K symbols: the named ones first, then SYMnnUSDT at 10.00."""
    out = [Spec(*s) for s in _SPECS[:k]]
    for i in range(len(out), k):
        out.append(Spec(f"SYM{i:02d}USDT", 1_000, 2, 2, 5_000))
    return out


@dataclass
class _Book:
    """One symbol's generated book: ticks ascending per side (best bid last, best ask first)."""

    spec: Spec
    bid_ticks: list[int] = field(default_factory=list)
    ask_ticks: list[int] = field(default_factory=list)
    bid_lots: dict[int, int] = field(default_factory=dict)
    ask_lots: dict[int, int] = field(default_factory=dict)
    next_id: int = 0
    trade_id: int = 0
    lot_table: list[int] = field(default_factory=list)   # sizes to draw from (getrandbits(12))
    price_text: dict[int, str] = field(default_factory=dict)  # caches of units_text
    size_text: dict[int, str] = field(default_factory=dict)

    def ptext(self, tick: int) -> str:
        s = self.price_text.get(tick)
        if s is None:
            s = self.price_text[tick] = format_units(tick, self.spec.tick_decimals)
        return s

    def stext(self, lots: int) -> str:
        s = self.size_text.get(lots)
        if s is None:
            s = self.size_text[lots] = format_units(lots, self.spec.lot_decimals) if lots else ZERO
        return s


class Generator:
    """The market behind one capture; ``frames()`` yields capture lines in order."""

    def __init__(self, symbols: int = 4, messages: int = 200_000, seed: int = 1, levels: int = 1000,
                 trade_stream: str = "aggTrade"):
        if symbols < 1 or messages < 0 or levels < 20:
            raise ValueError("symbols >= 1, messages >= 0 and levels >= 20 expected")
        if trade_stream not in ("trade", "aggTrade"):
            raise ValueError(f"trade_stream: 'trade' or 'aggTrade', got {trade_stream!r}")
        self.rng = random.Random(seed)
        self.seed, self.messages, self.levels, self.trade_stream = seed, messages, levels, trade_stream
        self.specs = specs(symbols)
        rng = self.rng
        # pre-drawn tables (index with getrandbits(12)): distance from the best in levels,
        # mostly near the top with a long tail, and level sizes as multiples of the typical size
        self._dist = [min(int(rng.expovariate(1 / 12.0)), levels - 1) if rng.random() < 0.75
                      else rng.randrange(levels) for _ in range(4096)]
        self._size = [max(0.02, rng.lognormvariate(0.0, 1.0)) for _ in range(4096)]
        self._gap = [1 + int(rng.expovariate(1 / 1.5)) for _ in range(4096)]
        self.books = [self._initial_book(s, i) for i, s in enumerate(self.specs)]

    # ------------------------------------------------------------------ the market
    def _initial_book(self, spec: Spec, index: int) -> _Book:
        b = _Book(spec)
        b.lot_table = [max(1, int(spec.lots * x)) for x in self._size]
        b.next_id = 10_000_000_000 + index * 1_000_000_000 + self.rng.randrange(1_000_000)
        b.trade_id = 3_000_000_000 + index * 100_000_000
        gap = self._gap
        t = spec.start_tick - 1
        for _ in range(self.levels):
            b.bid_ticks.append(t)
            b.bid_lots[t] = b.lot_table[self.rng.getrandbits(12)]
            t -= gap[self.rng.getrandbits(12)]
        b.bid_ticks.reverse()
        t = spec.start_tick + 1
        for _ in range(self.levels):
            b.ask_ticks.append(t)
            b.ask_lots[t] = b.lot_table[self.rng.getrandbits(12)]
            t += gap[self.rng.getrandbits(12)]
        return b

    def _change_side(self, b: _Book, bid: bool, n: int) -> dict[int, int]:
        """``n`` level changes on one side -> {tick: new lots (0 = delete)}, one per price."""
        rng = self.rng
        getbits = rng.getrandbits
        dist, gap, lot_table = self._dist, self._gap, b.lot_table
        ticks, lots = (b.bid_ticks, b.bid_lots) if bid else (b.ask_ticks, b.ask_lots)
        out: dict[int, int] = {}
        target = self.levels
        for _ in range(n):
            size = len(ticks)
            k = dist[getbits(12)]
            if k >= size:
                k = size - 1
            at = size - 1 - k if bid else k  # index of the level k from the best
            r = rng.random()
            p_insert = 0.3 if size < target else 0.1  # depth held near ``levels``
            p_delete = 0.3 if size > target else 0.1
            if r < p_insert:
                # a new price just behind the k-th level, or inside the spread near the top
                if k == 0 and r < p_insert * 0.3:
                    inside = b.ask_ticks[0] - b.bid_ticks[-1] - 1
                    if inside <= 0:
                        continue
                    g = 1 + getbits(12) % inside
                    tick = b.bid_ticks[-1] + g if bid else b.ask_ticks[0] - g
                else:
                    g = gap[getbits(12)]
                    tick = ticks[at] - g if bid else ticks[at] + g
                if tick <= 0 or tick in out:
                    continue
                new = lot_table[getbits(12)]
                if tick not in lots:
                    bisect.insort(ticks, tick)
                lots[tick] = new
                out[tick] = new
            elif r < p_insert + p_delete and size > 10:
                tick = ticks[at]
                if tick in out:
                    continue
                del ticks[at]
                del lots[tick]
                out[tick] = 0
            else:
                tick = ticks[at]
                if tick in out:
                    continue
                new = lot_table[getbits(12)]
                lots[tick] = new
                out[tick] = new
        return out

    # ------------------------------------------------------------------ the text
    def header(self) -> dict:
        return {"format": CAPTURE_FORMAT, "exchange": "binance", "adapter": "binance",
                "source": "pipeline bench gen-capture (synthetic)", "seed": self.seed,
                "symbols": [s.symbol for s in self.specs], "messages": self.messages, "levels": self.levels,
                "trade_stream": self.trade_stream}

    def ws_url(self) -> str:
        streams = []
        for s in self.specs:
            streams += [f"{s.symbol.lower()}@depth@100ms", f"{s.symbol.lower()}@{self.trade_stream}"]
        return f"{WS_BASE}/stream?streams={'/'.join(streams)}"

    def snapshot_body(self, b: _Book) -> str:
        """The REST depth body: the whole generated book, best first, lastUpdateId = next U - 1."""
        td, ld = b.spec.tick_decimals, b.spec.lot_decimals
        bids = [[format_units(t, td), format_units(b.bid_lots[t], ld)] for t in reversed(b.bid_ticks)]
        asks = [[format_units(t, td), format_units(b.ask_lots[t], ld)] for t in b.ask_ticks]
        return json.dumps({"lastUpdateId": b.next_id - 1, "bids": bids, "asks": asks}, separators=(",", ":"))

    def lines(self) -> Iterator[str]:
        """Every line of the capture, each without its newline."""
        yield json.dumps(self.header())
        for b in self.books:
            limit = 1000 if self.levels <= 1000 else 5000
            url = f"{REST_BASE}/api/v3/depth?symbol={b.spec.symbol}&limit={limit}"
            yield json.dumps({"ts": T0, "src": "rest", "url": url, "data": self.snapshot_body(b)})
        url = self.ws_url()
        head = '{"ts":%.6f,"src":"ws","url":"' + url + '","data":"%s"}'
        rng = self.rng
        nsym = len(self.books)
        streams = [(s.symbol.lower() + "@depth@100ms", s.symbol.lower() + "@" + self.trade_stream)
                   for s in self.specs]
        trade_kind = self.trade_stream
        for i in range(self.messages):
            j = i % nsym
            b = self.books[j]
            spec = b.spec
            ts = T0 + 0.001 + (i // nsym) * FRAME_INTERVAL_S + j * 0.0007 + rng.random() * 0.0005
            n = rng.randint(MIN_CHANGES, MAX_CHANGES)
            nb = rng.randint(0, n)
            bids = self._change_side(b, True, nb)
            asks = self._change_side(b, False, n - nb)
            if not bids and not asks:  # every draw collided: change the best bid's size
                t = b.bid_ticks[-1]
                b.bid_lots[t] = bids[t] = b.lot_table[rng.getrandbits(12)]
            first = b.next_id
            last = first + rng.randint(len(bids) + len(asks) - 1, 2 * (len(bids) + len(asks)))
            b.next_id = last + 1
            e_ms = int(ts * 1000) - 3
            pt, st = b.ptext, b.stext
            btxt = ",".join([f'["{pt(t)}","{st(q)}"]' for t, q in sorted(bids.items(), reverse=True)])
            atxt = ",".join([f'["{pt(t)}","{st(q)}"]' for t, q in sorted(asks.items())])
            frame = (f'{{"stream":"{streams[j][0]}","data":{{"e":"depthUpdate","E":{e_ms},"s":"{spec.symbol}",'
                     f'"U":{first},"u":{last},"b":[{btxt}],"a":[{atxt}]}}}}')
            yield head % (ts, frame.replace('"', '\\"'))
            if rng.random() < TRADE_SHARE:
                yield head % (ts + 0.0002, self._trade_frame(b, streams[j][1], trade_kind, e_ms + 1)
                              .replace('"', '\\"'))

    def _trade_frame(self, b: _Book, stream: str, kind: str, e_ms: int) -> str:
        rng = self.rng
        spec = b.spec
        taker_buys = rng.random() < 0.5
        tick = b.ask_ticks[0] if taker_buys else b.bid_ticks[-1]  # a taker buy lifts the best ask
        qty = max(1, b.lot_table[rng.getrandbits(12)] // 8)
        b.trade_id += 1
        price, amount = format_units(tick, spec.tick_decimals), format_units(qty, spec.lot_decimals)
        m = "false" if taker_buys else "true"  # m: buyer is maker (section 1)
        if kind == "trade":
            data = (f'{{"e":"trade","E":{e_ms},"s":"{spec.symbol}","t":{b.trade_id},"p":"{price}",'
                    f'"q":"{amount}","T":{e_ms - 1},"m":{m},"M":true}}')
        else:
            data = (f'{{"e":"aggTrade","E":{e_ms},"s":"{spec.symbol}","a":{b.trade_id},"p":"{price}",'
                    f'"q":"{amount}","f":{b.trade_id * 2},"l":{b.trade_id * 2},"T":{e_ms - 1},"m":{m},"M":true}}')
        return f'{{"stream":"{stream}","data":{data}}}'


def write_capture(path: str, symbols: int = 4, messages: int = 200_000, seed: int = 1, levels: int = 1000,
                  trade_stream: str = "aggTrade") -> dict:
    """Write the capture to ``path`` (gzip when it ends in .gz); return counts."""
    gen = Generator(symbols, messages, seed, levels, trade_stream)
    if path.endswith(".gz"):
        raw = open(path, "wb")
        fh = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
    else:
        raw = None
        fh = open(path, "wb")
    lines = 0
    try:
        batch: list[str] = []
        for line in gen.lines():
            batch.append(line)
            if len(batch) >= 8192:
                fh.write(("\n".join(batch) + "\n").encode())
                lines += len(batch)
                batch = []
        if batch:
            fh.write(("\n".join(batch) + "\n").encode())
            lines += len(batch)
    finally:
        fh.close()
        if raw is not None:
            raw.close()
    return {"path": path, "symbols": [s.symbol for s in gen.specs], "depth_messages": messages,
            "lines": lines, "trades": lines - 1 - len(gen.specs) - messages}


@click.command(name="gen-capture")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Capture file to write (.jsonl, or .jsonl.gz for gzip).")
@click.option("--symbols", type=click.IntRange(min=1, max=200), default=4, show_default=True)
@click.option("--messages", type=click.IntRange(min=0), default=200_000, show_default=True,
              help="Depth frames (trades come on top, ~10% of these).")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--levels", type=click.IntRange(min=20), default=1000, show_default=True,
              help="Book levels per side (the REST snapshot holds them all).")
@click.option("--trade-stream", type=click.Choice(["trade", "aggTrade"]), default="aggTrade", show_default=True,
              help="aggTrade by default: cryptofeed's Binance handler (bench compare) reads aggTrade and "
                   "skips @trade, so both sides then do the same work.")
def command(out: str, symbols: int, messages: int, seed: int, levels: int, trade_stream: str) -> None:
    """Write a seeded synthetic Binance spot capture (format v1) for `pipeline bench ingest`."""
    t0 = time.perf_counter()
    info = write_capture(out, symbols, messages, seed, levels, trade_stream)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    click.echo(json.dumps(info))
