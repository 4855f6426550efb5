"""Issue 19 item 5: trades a venue made that never reached us.  Where trade ids are contiguous
(Binance), a jump is counted, a ``trade_gap`` "missing" marker goes on the bus just before the
trade that revealed it, and the runner is asked for the missing ids over REST; what REST brings
goes out as ordinary trades (next seqs, id order) right after a "backfilled" marker naming their
seqs.  Every event goes in through ``FeedBooks.receive``, as the runner passes it."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs, urlparse

from feeds import FeedRun, Recorder
from ingest.adapters import create
from ingest.events import TradeEvent, TradesBackfill, TradesWanted
from ingest.feed import BusPublisher, FeedBooks
from ingest.runner import Runner
from pipeline import schema
from pipeline.config import ExchangeConfig
from pipeline.shm import BookWriter

SYM = "BTCUSDT"


class OrderedRecorder(Recorder):
    """Keeps the hot socket's order: trades and trade-gap markers as they were sent."""

    def __init__(self):
        super().__init__()
        self.hot: list = []

    def send_trade(self, topic, msg) -> None:
        super().send_trade(topic, msg)
        self.hot.append(msg)

    def send(self, kind, topic, msg) -> None:
        super().send(kind, topic, msg)
        if kind.socket is schema.Socket.HOT:
            self.hot.append(msg)


def _run(adapter="binance", trade_backfill_max=10_000, **cfg) -> FeedRun:
    run = FeedRun(create(ExchangeConfig(name="binance", adapter=adapter, symbols=(SYM,), depth=5, **cfg)), [SYM],
                  depth=5, exchange="binance", trade_backfill_max=trade_backfill_max)
    run.bus = run.feed.publisher = OrderedRecorder()
    return run


def _trade(tid: int, recv_ns: int = 0) -> TradeEvent:
    return TradeEvent(SYM, 100.0 + tid % 7, 0.5, "buy" if tid % 2 else "sell", str(tid), 1_700_000_000_000_000 + tid,
                      recv_ns or tid * 1000)


def _hot(run) -> list[tuple]:
    return [("trade", m.seq, m.trade_id) if isinstance(m, schema.Trade) else
            (m.state, m.seq, m.first_id, m.last_id, m.count, m.backfill, m.backfilled, m.first_seq, m.last_seq)
            for m in run.bus.hot]


def test_a_jump_in_trade_ids_is_a_marker_before_the_trade_and_a_backfill_request():
    run = _run()
    try:
        for tid in (100, 101, 105):
            run.receive(_trade(tid))
        assert _hot(run) == [("trade", 1, "100"), ("trade", 2, "101"),
                             ("missing", 1, 102, 104, 3, True, 0, 0, 0), ("trade", 3, "105")]
        gap = run.bus.hot[2]
        assert (gap.exchange, gap.symbol, gap.epoch, gap.ts_exchange, gap.ts_received) == (
            "binance", SYM, 1, 1_700_000_000_000_105, 105)  # the revealing trade's times
        assert run.requests == [TradesWanted(SYM, 102, 104)]
        c = run.counts(SYM)
        assert (c.trades, c.trades_missed, c.trade_id_gaps, c.trades_backfilled) == (3, 3, 1, 0)
        assert run.bus.kinds["trade_gap"] == [gap]  # on its own topic (Recorder checks the topic)

        # REST brings them in any order, with a duplicate and one outside the gap
        run.receive(TradesBackfill(SYM, 102, 104, [_trade(104, 9_000_000), _trade(102, 9_000_000),
                                                   _trade(103, 9_000_000), _trade(103, 9_000_000),
                                                   _trade(101, 9_000_000)], 9_000_000))
        assert _hot(run)[4:] == [("backfilled", 2, 102, 104, 3, False, 3, 4, 6),
                                 ("trade", 4, "102"), ("trade", 5, "103"), ("trade", 6, "104")]
        assert run.bus.hot[5].ts_received == 9_000  # the REST answer's receive time
        c = run.counts(SYM)
        assert (c.trades, c.trade_seq, c.trades_missed, c.trades_backfilled) == (6, 6, 3, 3)
        run.receive(TradesBackfill(SYM, 102, 104, [_trade(103)], 9_500_000))  # answered already: nothing
        run.receive(_trade(106))
        assert _hot(run)[-1] == ("trade", 7, "106")  # contiguous again: no marker
    finally:
        run.close()


def test_a_gap_larger_than_the_bound_asks_for_its_first_ids_and_says_how_many_came():
    run = _run(trade_backfill_max=4)
    try:
        run.receive(_trade(10))
        run.receive(_trade(21))
        assert run.requests == [TradesWanted(SYM, 11, 14)]
        run.receive(TradesBackfill(SYM, 11, 14, [_trade(i) for i in (11, 12, 13)], 5, "REST failed 4 times"))
        gap = run.bus.kinds["trade_gap"][-1]
        assert (gap.state, gap.first_id, gap.last_id, gap.count, gap.backfilled, gap.first_seq, gap.last_seq) == (
            "backfilled", 11, 20, 10, 3, 3, 5)
        assert run.counts(SYM).trades_backfilled == 3 and run.counts(SYM).trades_missed == 10
    finally:
        run.close()


def test_without_a_backfill_the_gap_is_reported_and_nothing_is_asked():
    for run in (_run(trade_backfill_max=0), _run("binance_futures", trade_stream="trade")):  # off; no keyless REST
        try:
            run.receive(_trade(7))
            run.receive(_trade(9))
            [gap] = run.bus.kinds["trade_gap"]
            assert (gap.state, gap.first_id, gap.last_id, gap.backfill) == ("missing", 8, 8, False)
            assert run.requests == [] and run.counts(SYM).trades_missed == 1
        finally:
            run.close()


def test_a_venue_without_contiguous_ids_never_reports_a_gap():
    run = FeedRun(create(ExchangeConfig(name="bybit", adapter="bybit", symbols=(SYM,), depth=5)), [SYM], depth=5,
                  exchange="bybit", trade_backfill_max=10_000)
    try:
        for tid in (1, 5, 9):
            run.receive(_trade(tid))
        assert "trade_gap" not in run.bus.kinds and run.requests == [] and run.counts(SYM).trades_missed == 0
    finally:
        run.close()


def test_binance_asks_the_endpoint_of_its_trade_streams_id_space():
    def url(adapter, **cfg):
        a = create(ExchangeConfig(name="x", adapter=adapter, symbols=(SYM,), **cfg))
        req = a.trades_request(SYM, 1234, 5000)
        return None if req is None else (req.url, req.weight, a.traits.trades_page)

    assert url("binance") == ("https://api.binance.com/api/v3/historicalTrades?symbol=BTCUSDT&fromId=1234&limit=1000",
                              25, 1000)
    assert url("binance", trade_stream="aggTrade") == (
        "https://api.binance.com/api/v3/aggTrades?symbol=BTCUSDT&fromId=1234&limit=1000", 4, 1000)
    assert url("binance_futures") == (
        "https://fapi.binance.com/fapi/v1/aggTrades?symbol=BTCUSDT&fromId=1234&limit=1000", 20, 1000)
    assert url("binance_futures", trade_stream="trade") is None  # historicalTrades needs an API key there
    assert url("binance_futures", rest_url="https://fapi.asterdex.com", rest_depth_path="/fapi/v3/depth")[0] == (
        "https://fapi.asterdex.com/fapi/v3/aggTrades?symbol=BTCUSDT&fromId=1234&limit=1000")


def test_binance_rest_trades_parse_as_the_stream_does():
    spot = create(ExchangeConfig(name="x", adapter="binance", symbols=(SYM,)))
    body = b'[{"id":28457,"price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012","time":1499865549590,' \
           b'"isBuyerMaker":true,"isBestMatch":true}]'
    assert spot.parse_trades(SYM, body, 7) == [TradeEvent(SYM, 4.000001, 12.0, "sell", "28457", 1499865549590000, 7)]
    agg = create(ExchangeConfig(name="x", adapter="binance_futures", symbols=(SYM,)))
    body = b'[{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,"T":1498793709153,"m":false,"M":true}]'
    assert agg.parse_trades(SYM, body, 8) == [TradeEvent(SYM, 0.01633102, 4.70443515, "buy", "26129",
                                                         1498793709153000, 8)]
    import pytest
    from pipeline.errors import MalformedFrame
    with pytest.raises(MalformedFrame):
        spot.parse_trades(SYM, b'{"code":-1121,"msg":"Invalid symbol."}', 9)


def test_the_runner_pages_a_gap_within_the_budget_and_hands_back_one_backfill(shm_prefix):
    """2,500 missing ids: three pages of at most 1,000 from fromId on; the feed publishes them all."""
    cfg = ExchangeConfig(name="ex", adapter="binance", symbols=(SYM,), depth=5)
    adapter = create(cfg)
    writer = BookWriter(shm_prefix, "ex", [SYM], 5, epoch=1)
    bus = OrderedRecorder()
    feed = FeedBooks("ex", adapter, writer, bus, epoch=1, trade_backfill_max=10_000)
    stop = asyncio.Event()
    r = Runner(cfg, adapter, feed, stop)
    asked = []

    async def rest(session, req, what):
        q = parse_qs(urlparse(req.url).query)
        start, limit = int(q["fromId"][0]), int(q["limit"][0])
        asked.append((start, limit, req.weight))
        return json.dumps([{"id": i, "price": "1.5", "qty": "2", "time": 1_700_000_000_000, "isBuyerMaker": False}
                           for i in range(start, start + limit)]).encode()

    r._rest = rest

    async def main():
        worker = asyncio.create_task(r._backfill_worker(None))
        r._carry_out(feed.receive(_trade(1)) or ())
        r._carry_out(feed.receive(_trade(2502)) or ())
        for _ in range(200):
            if feed.feeds[SYM].counts.trades_backfilled:
                break
            await asyncio.sleep(0.01)
        stop.set()
        r._gap_event.set()
        await worker

    try:
        asyncio.run(main())
        assert asked == [(2, 1000, 25), (1002, 1000, 25), (2002, 500, 25)]
        c = feed.feeds[SYM].counts
        assert (c.trades_missed, c.trades_backfilled, c.trades) == (2500, 2500, 2502)
        ids = [int(m.trade_id) for m in bus.hot if isinstance(m, schema.Trade)]
        assert ids == [1, 2502, *range(2, 2502)]
        assert [m.seq for m in bus.hot if isinstance(m, schema.Trade)] == list(range(1, 2503))
    finally:
        writer.close(unlink=True)


def test_a_restart_compares_the_first_trades_with_the_previous_runs_last_ids():
    run = _run()
    try:
        run.feed.resume_trade_ids({SYM: 100, "OTHER": 5}, backfill=True)
        for tid in (104, 106):
            run.receive(_trade(tid))
        gaps = run.bus.kinds["trade_gap"]
        assert [(g.first_id, g.last_id, g.restart, g.backfill) for g in gaps] == [(101, 103, True, True),
                                                                                  (105, 105, False, True)]
        assert run.requests == [TradesWanted(SYM, 101, 103), TradesWanted(SYM, 105, 105)]
        assert run.feed.trade_ids() == {SYM: 106}
    finally:
        run.close()


def test_a_restart_long_after_the_previous_run_is_reported_not_backfilled_and_no_gap_is_no_marker():
    run = _run()
    try:
        run.feed.resume_trade_ids({SYM: 100}, backfill=False)
        for tid in (150, 152):
            run.receive(_trade(tid))
        assert [(g.first_id, g.last_id, g.restart, g.backfill) for g in run.bus.kinds["trade_gap"]] == [
            (101, 149, True, False), (151, 151, False, True)]
        assert run.requests == [TradesWanted(SYM, 151, 151)]
    finally:
        run.close()
    run = _run()
    try:
        run.feed.resume_trade_ids({SYM: 100}, backfill=True)
        run.receive(_trade(101))  # it follows on: nothing was missed
        assert "trade_gap" not in run.bus.kinds and not run.feed.feeds[SYM].restart_gap
    finally:
        run.close()


def test_the_previous_runs_ids_come_from_its_ring_after_a_crash_and_from_its_file_after_a_stop(tmp_path):
    """A crashed run's trade ring holds every trade it published (backfilled ones after later live
    ones: the highest id counts); a clean stop saves them in run_dir, read once."""
    from ingest.main import previous_trade_ids, save_trade_ids
    from pipeline.app.config import parse_config
    from pipeline.trade_ring import TradeRingWriter

    config = parse_config("[pipeline]\nrun_dir = \"run\"\n[exchanges.ex]\nadapter = \"binance\"\nsymbols = [\"BTCUSDT\"]\n",
                          tmp_path)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    prefix = config.shm_prefix
    ring = TradeRingWriter(prefix, "ex", [SYM, "ETHUSDT"], 64, epoch=1)
    try:
        for seq, tid in enumerate((10, 11, 14, 15, 12, 13), 1):  # 12..13 backfilled after 14..15
            ring.append(0, seq, 1, 2_000, 1.0, 1.0, "buy", str(tid))
        ids, age = previous_trade_ids(config, "ex")
        assert ids == {SYM: 15} and age is not None  # (ETHUSDT had no trade)
    finally:
        ring.close(unlink=True)
    save_trade_ids(config.run_dir, "ex", {SYM: 77})
    ids, age = previous_trade_ids(config, "ex")
    assert ids == {SYM: 77} and 0 <= age < 60
    assert previous_trade_ids(config, "ex") == ({}, None)  # used once
