"""tardis.dev layout: file names, headers, rows, snapshot blocks (sinks/tardis.py)."""

import csv
import io

import pytest

from sinks.tardis import (BOOK_HEADER, TRADES_HEADER, RowWriter, day_of, exchange_id, file_name, is_tardis_id,
                          next_midnight_us, number)


def test_file_names_follow_the_dataset_layout():
    assert file_name("binance", "incremental_book_L2", "2024-08-08", "BTCUSDT") == \
        "binance_incremental_book_L2_2024-08-08_BTCUSDT.csv"
    assert file_name("binance-futures", "trades", "2021-07-22", "SUSHIUSDT", gz=True) == \
        "binance-futures_trades_2021-07-22_SUSHIUSDT.csv.gz"
    assert file_name("okex", "trades", "2022-05-13", "BTC/USDT") == "okex_trades_2022-05-13_BTC-USDT.csv"
    with pytest.raises(ValueError):
        file_name("x", "book_ticker", "2024-01-01", "A")


def test_headers_are_the_tardis_columns():
    assert BOOK_HEADER == "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
    assert TRADES_HEADER == "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"


def test_exchange_ids_are_tardis_spellings_unless_overridden():
    assert exchange_id("binance") == "binance"
    assert exchange_id("binance_futures") == "binance-futures"
    assert exchange_id("okx") == "okex"
    assert exchange_id("hyperliquid") == "hyperliquid"
    assert exchange_id("sim") == "sim"
    assert exchange_id("aster", "aster-futures") == "aster-futures"
    # one name, two markets: the adapter decides (tardis: bybit-spot vs bybit derivatives)
    assert exchange_id("bybit", adapter="bybit") == "bybit-spot"
    assert exchange_id("bybit", adapter="bybit_linear") == "bybit"
    assert exchange_id("my_okx", adapter="okx") == "okex"
    assert exchange_id("lighter", adapter="lighter") == "lighter"


@pytest.mark.parametrize("name,adapter,expected", [
    ("binance_us", "binance", "binance-us"),
    ("binance_delivery", "binance_futures", "binance-delivery"),
    ("binance_usdm", "binance_futures", "binance-futures"),
    ("okx_swap", "okx", "okex-swap"),
    ("aster", "binance_futures", "aster"),  # not Binance USD-M data although the adapter is shared
    ("my_venue_2", "binance", "my-venue-2"),
    ("a__b-", "binance", "a-b"),
])
def test_derived_ids_are_tardis_style(name, adapter, expected):
    assert exchange_id(name, adapter=adapter) == expected
    assert is_tardis_id(expected)


def test_ids_that_are_not_tardis_style_are_refused():
    assert not any(is_tardis_id(t) for t in ("binance_us", "Binance", "binance--us", "-binance", "binance-", ""))
    with pytest.raises(ValueError):
        exchange_id("x", "binance_us")
    with pytest.raises(ValueError, match="tardis_exchange"):
        exchange_id("_", adapter="binance")


def test_utc_days_and_midnight():
    t = 1_723_161_599_999_999  # 2024-08-08T23:59:59.999999Z
    assert day_of(t) == "2024-08-08" and day_of(t + 1) == "2024-08-09"
    assert next_midnight_us(t) == t + 1 and next_midnight_us(t + 1) == t + 1 + 86_400_000_000


@pytest.mark.parametrize("value,text", [
    (0.1, "0.1"), (43000.0, "43000"), (43000.5, "43000.5"), (1e-05, "0.00001"), (6.37e-06, "0.00000637"),
    (1.5e16, "15000000000000000"), (0.0, "0"), (123456.78901234, "123456.78901234"),
])
def test_numbers_are_plain_decimals_that_read_back_exactly(value, text):
    assert number(value) == text
    assert float(number(value)) == value


def test_delta_rows_carry_both_timestamps_and_deletes_as_zero():
    rows = RowWriter("binance", "BTCUSDT").delta(1_000_000, 1_000_250, [(100.5, 2.0), (100.0, 0.0)], [(101.0, 0.5)])
    assert rows == ("binance,BTCUSDT,1000000,1000250,false,bid,100.5,2\n"
                    "binance,BTCUSDT,1000000,1000250,false,bid,100,0\n"
                    "binance,BTCUSDT,1000000,1000250,false,ask,101,0.5\n")


def test_missing_exchange_time_falls_back_to_the_receive_time():
    assert RowWriter("x", "S").delta(0, 77, [(1.0, 1.0)], []).startswith("x,S,77,77,false,")
    assert RowWriter("x", "S").trade(0, 77, "1", "buy", 1.0, 1.0).startswith("x,S,77,77,1,buy,")


def test_snapshot_block_lists_the_view_best_first_and_ends_with_a_restating_row():
    text = RowWriter("sim", "ETHUSDT").snapshot(5, 9, {99.0: 1.0, 100.0: 2.0}.items(), [(102.0, 4.0), (101.0, 3.0)])
    rows = list(csv.reader(io.StringIO(text)))
    assert [(r[4], r[5], r[6], r[7]) for r in rows] == [
        ("true", "bid", "100", "2"), ("true", "bid", "99", "1"),
        ("true", "ask", "101", "3"), ("true", "ask", "102", "4"),
        ("false", "bid", "100", "2"),  # restates the best bid: no change, but closes the block
    ]
    assert all(r[:4] == ["sim", "ETHUSDT", "5", "9"] for r in rows)


def test_snapshot_block_of_a_one_sided_book_restates_an_ask():
    text = RowWriter("x", "S").snapshot(1, 1, [], [(5.0, 1.0)])
    assert text.splitlines()[-1] == "x,S,1,1,false,ask,5,1"


def test_empty_book_has_no_block():
    assert RowWriter("x", "S").snapshot(1, 1, [], []) == ""


def test_trade_rows_quote_only_what_needs_quoting():
    w = RowWriter("binance", "BTCUSDT")
    assert w.trade(1, 2, "12345", "sell", 60000.1, 0.001) == "binance,BTCUSDT,1,2,12345,sell,60000.1,0.001\n"
    row = w.trade(1, 2, 'a,"b"', "unknown", 1.0, 1.0)
    assert next(csv.reader(io.StringIO(row)))[4] == 'a,"b"'


def _plain_rows(head: str, side: str, levels) -> str:
    return "".join(f"{head}{side},{number(p)},{number(s)}\n" for p, s in levels)


def test_cached_numbers_write_exactly_what_number_writes(monkeypatch):
    """The row writer's number cache changes no byte: zeros of either sign, exponents, NaN,
    values seen again after the cache was cleared."""
    import random

    from sinks import tardis
    monkeypatch.setattr(tardis._NumberCache, "MAX_CACHED", 64)  # forces clears during the test
    rng = random.Random(3)
    special = [0.0, -0.0, 1e-05, 2.5e-07, 1e16, 1.5e22, float("nan"), float("inf"), -1.0, 100.0]
    w = RowWriter("x", "S")
    for _ in range(300):
        bids = [(round(rng.uniform(1, 200), rng.randrange(6)), rng.choice(special + [round(rng.random(), 8)]))
                for _ in range(rng.randrange(4))]
        asks = [(rng.choice(special), rng.choice(special)) for _ in range(rng.randrange(3))]
        assert w.delta(5, 6, bids, asks) == _plain_rows("x,S,5,6,false,", "bid", bids) + \
            _plain_rows("x,S,5,6,false,", "ask", asks)
        price, amount = rng.choice(special), rng.choice(special)
        assert w.trade(5, 6, "7", "buy", price, amount) == f"x,S,5,6,7,buy,{number(price)},{number(amount)}\n"
    assert w.delta(1, 1, [(1.0, -0.0), (2.0, 0.0)], []) == "x,S,1,1,false,bid,1,-0\nx,S,1,1,false,bid,2,0\n"
