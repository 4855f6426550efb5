"""Runtime streams, the pure and in-process parts (issue 14): the state file's changes, symbol checks,
max_symbols in the config, slots renamed in shared memory, the sync machine's REMOVED state, and the
feed adding and removing symbols (seq continued, removed published, slot reused)."""

from __future__ import annotations

import pytest

from ingest.adapters.binance import BinanceSpotAdapter
from ingest.events import DepthConnected, DepthDiff, DepthSnapshot, TradeEvent
from ingest.feed import BusPublisher, FeedBooks
from ingest.sync import NOTHING, PUBLISH, BookSync, SyncState
from pipeline.config import ExchangeConfig, parse_config
from pipeline.errors import ConfigError, StreamError, StreamsFull
from pipeline.shm import BookReader, BookState, BookWriter
from pipeline.streams import Changes, check_symbols, load_changes, save_changes, state_path
from pipeline.trade_ring import TradeRingReader, TradeRingWriter


def test_changes_apply_on_top_of_the_config_and_are_derived_back():
    changes = Changes(added=("ETHUSDT",), removed=("SOLUSDT",))
    assert changes.apply(("BTCUSDT", "SOLUSDT")) == ("BTCUSDT", "ETHUSDT")
    assert Changes.between(("BTCUSDT", "SOLUSDT"), ("BTCUSDT", "ETHUSDT")) == changes
    assert not Changes.between(("A", "B"), ("B", "A"))


def test_state_file_round_trip_and_no_changes_means_no_file(tmp_path):
    save_changes(tmp_path, "sim", Changes(("ETHUSDT",), ()))
    assert load_changes(tmp_path, "sim") == Changes(("ETHUSDT",), ())
    save_changes(tmp_path, "sim", Changes())
    assert not state_path(tmp_path, "sim").exists() and load_changes(tmp_path, "sim") == Changes()


def test_an_unreadable_state_file_is_an_error_naming_it(tmp_path):
    state_path(tmp_path, "sim").write_text("{not json")
    with pytest.raises(StreamError, match="streams-sim.json"):
        load_changes(tmp_path, "sim")


@pytest.mark.parametrize("symbols,reason", [
    ("ETHUSDT", "expected a list"), ([], "1 to 100"), (["bad name"], "at most 31"), (["X" * 32], "at most 31"),
    ([3], "expected a symbol name")])
def test_bad_symbol_lists_are_refused(symbols, reason):
    with pytest.raises(StreamError, match=reason):
        check_symbols(symbols)
    assert check_symbols(["PURR/USDC", "@107", "BTC-USDT", "BTC-USDT"]) == ("PURR/USDC", "@107", "BTC-USDT")


def test_max_symbols_defaults_and_is_checked():
    def ex(extra: str) -> ExchangeConfig:
        text = f'[exchanges.sim]\nadapter = "binance"\nsymbols = ["A", "B", "C"]\n{extra}'
        return parse_config(text, base_dir=__import__("pathlib").Path(".")).exchanges["sim"]
    assert ex("").slots == 64 and ex("max_symbols = 5").slots == 5
    with pytest.raises(ConfigError, match=r"exchanges\.sim\.max_symbols: expected at least the 3"):
        ex("max_symbols = 2")


def test_a_renamed_slot_is_seen_by_a_reader_that_opened_before(shm_prefix):
    w = BookWriter(shm_prefix, "sim", ["BTCUSDT"], 5, 1, capacity=3)
    try:
        r = BookReader.open(shm_prefix, "sim")
        assert r.symbols == ("BTCUSDT",) and r.capacity == 3
        w.assign(1, "ETHUSDT", seq=7)
        snap = r.read("ETHUSDT")
        assert r.symbols == ("BTCUSDT", "ETHUSDT") and (snap.seq, snap.state) == (7, BookState.SYNCING)
        w.write_view(1, 8, BookState.REMOVED, 0, 0, 0, [1.0], [2.0], [3.0], [4.0])
        w.assign(1, "SOLUSDT")
        with pytest.raises(Exception, match="not in"):
            r.read("ETHUSDT")  # never the new symbol's view under the old name
        assert r.read("SOLUSDT").bids.size == 0
        r.close()
    finally:
        w.close()


def test_a_reused_trade_ring_stream_holds_no_trade_of_the_old_symbol(shm_prefix):
    w = TradeRingWriter(shm_prefix, "sim", ["BTCUSDT"], 8, 1, n_slots=2)
    try:
        w.append(0, 1, 1, 1, 100.0, 1.0, "buy", "t1")
        r = TradeRingReader.open(shm_prefix, "sim")
        w.assign(0, "ETHUSDT")
        assert r.read("ETHUSDT", 1) is None and r.head("ETHUSDT") == 0
        r.close()
    finally:
        w.close()


def test_removed_is_final_and_ignores_everything_after():
    s = BookSync("X", BinanceSpotAdapter.check, BinanceSpotAdapter.snapshot_usable)
    s.connected()
    assert s.removed() == PUBLISH and s.book_state is BookState.REMOVED
    assert s.diff_received(DepthDiff("X", 1, 2, -1, [], [], 0, 0)) == NOTHING
    assert s.snapshot_received(DepthSnapshot("X", 5, [], [], 0, 0)) == NOTHING
    assert s.disconnected() == NOTHING and s.connected() == NOTHING
    assert s.state is SyncState.REMOVED


class Recorder(BusPublisher):
    def __init__(self):
        super().__init__(None, None)
        self.sent = []

    def send_trade(self, topic, msg):
        self.sent.append(msg)

    def send_l2(self, topic, msg):
        self.sent.append(msg)


def test_the_feed_adds_removes_and_reuses_slots_with_seqs_continued(shm_prefix):
    config = ExchangeConfig("sim", "binance", ("BTCUSDT",))
    adapter = BinanceSpotAdapter(config)
    writer = BookWriter(shm_prefix, "sim", ["BTCUSDT"], 5, 1, capacity=2)
    pub = Recorder()
    try:
        feed = FeedBooks("sim", adapter, writer, pub, 1)
        adapter.add_symbol("ETHUSDT")
        feed.add_symbol("ETHUSDT", 1)
        feed.receive(DepthConnected(("ETHUSDT",)))
        feed.receive(TradeEvent("ETHUSDT", 10.0, 1.0, "buy", "1", 0, 0))
        with pytest.raises(StreamsFull):
            feed.add_symbol("SOLUSDT", 2)
        feed.remove_symbol("ETHUSDT", 3)
        removed = [m for m in pub.sent if getattr(m, "state", None) == "removed"]
        assert len(removed) == 1 and removed[0].snapshot
        assert BookReader.open(shm_prefix, "sim").read("ETHUSDT").state is BookState.REMOVED
        feed.receive(TradeEvent("ETHUSDT", 10.0, 1.0, "buy", "2", 0, 0))  # in flight: ignored
        assert feed.feeds["ETHUSDT"].counts.trades == 1
        assert feed.symbols() == ["BTCUSDT"] and feed.free_slots() == 1
        feed.add_symbol("ETHUSDT", 4)  # back again: its seqs go on
        f = feed.feeds["ETHUSDT"]
        assert (f.counts.trade_seq, f.counts.l2_seq) == (1, removed[0].seq)
        feed.remove_symbol("ETHUSDT", 5)
        feed.add_symbol("SOLUSDT", 6)  # takes ETHUSDT's slot
        assert writer.symbols == ["BTCUSDT", "SOLUSDT"] and feed.feeds["ETHUSDT"].index == -1
        feed.copy_stats()
    finally:
        writer.close()
