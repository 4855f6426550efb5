"""One staleness bound per venue (issues 11 and 19): ``AdapterTraits.stale_after_s`` is the depth
stream's cadence bound, ``[exchanges.X] stale_after_s`` overrides it for every adapter, and
``AdapterTraits.stale_watch`` says how it is watched: "change" (a book unchanged that long is
stale, a silent depth connection is reconnected) or "push" (Hyperliquid's l2Book pushes whole books
on a cadence: a book with no push that long is resubscribed alone)."""

from __future__ import annotations

import pytest

from feeds import Recorder
from ingest.adapters import create
from ingest.feed import FeedBooks
from pipeline.app.config import parse_config
from pipeline.config import ConfigError, ExchangeConfig
from pipeline.shm import BookWriter


@pytest.fixture
def feed_of(shm_prefix):
    writers = []

    def make(adapter: str, stale_after_s: float | None = None, **options) -> FeedBooks:
        cfg = ExchangeConfig(name="ex", adapter=adapter, symbols=("BTC",), depth=5, options=options,
                             stale_after_s=stale_after_s)
        w = BookWriter(shm_prefix, "ex", ["BTC"], 5, epoch=1)
        writers.append(w)
        return FeedBooks("ex", create(cfg), w, Recorder(), epoch=1, stale_after_s=cfg.stale_after_s)

    yield make
    for w in writers:
        w.close(unlink=True)


def test_hyperliquid_follows_its_cadence_by_push_and_the_config_key_overrides_it(feed_of):
    plain, fast, set_ = feed_of("hyperliquid"), feed_of("hyperliquid", fast=True), feed_of("hyperliquid", 7.5)
    assert (plain.push_stale_after_s, fast.push_stale_after_s, set_.push_stale_after_s) == (20.0, 2.0, 7.5)
    # watched by push only: an unchanged book is not stale while pushes come
    assert plain.stale_after_ms == fast.stale_after_ms == set_.stale_after_ms == 0
    # status shows the bound in force
    assert [f.feeds["BTC"].counts.stale_after_ms for f in (plain, fast, set_)] == [20_000, 2_000, 7_500]


def test_a_venue_that_sends_on_change_has_no_bound_unless_the_config_sets_one(feed_of):
    quiet, set_ = feed_of("binance"), feed_of("binance", 1.5)
    assert create(ExchangeConfig(name="ex", adapter="binance", symbols=("BTC",))).traits.stale_after_s is None
    assert (quiet.stale_after_ms, quiet.push_stale_after_s, quiet.feeds["BTC"].counts.stale_after_ms) == (0, 0.0, 0)
    # watched by change: check_ages and the runner's stalled-connection watchdog
    assert (set_.stale_after_ms, set_.push_stale_after_s, set_.feeds["BTC"].counts.stale_after_ms) == (1500, 0.0, 1500)


def test_the_key_is_the_core_one_for_every_adapter(tmp_path):
    base = '[exchanges.hl]\nadapter = "hyperliquid"\nsymbols = ["BTC"]\n'
    ex = parse_config(base + "stale_after_s = 7.5\nfast = true\n", tmp_path).exchanges["hl"]
    assert ex.stale_after_s == 7.5 and ex.options == {"fast": True}  # not an adapter option any more
    for adapter in ("hyperliquid", "binance"):
        with pytest.raises(ConfigError) as info:
            parse_config(base.replace('"hyperliquid"', f'"{adapter}"') + "stale_after_s = 0\n", tmp_path)
        assert info.value.key == "exchanges.hl.stale_after_s" and "expected a positive number" in info.value.reason
