"""An independent reader of tardis-format CSV files, for tests: the plainest rules.

A run of ``is_snapshot=true`` rows replaces the whole book; every other row sets
one level (amount 0 removes it).  Written apart from sinks/ on purpose.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path


def _open(path: Path):
    return gzip.open(path, "rt", newline="") if str(path).endswith(".gz") else open(path, newline="")


def read_rows(path: Path) -> tuple[list[str], list[dict]]:
    """(header fields, rows as dicts); asserts there is no blank or partial line."""
    with _open(path) as fh:
        text = fh.read()
    assert text.endswith("\n"), f"{path}: last line is partial"
    assert "\n\n" not in text and not text.startswith("\n"), f"{path}: blank line"
    reader = csv.reader(text.splitlines())
    header = next(reader)
    rows = [dict(zip(header, r)) for r in reader]
    assert all(len(r) == len(header) for r in rows), f"{path}: a row with the wrong number of fields"
    return header, rows


def rebuild_book(paths) -> tuple[list[tuple[float, float]], list[tuple[float, float]], int]:
    """Apply book files in order; returns (bids best first, asks best first, snapshot blocks seen)."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    blocks = 0
    for path in paths:
        in_block = False
        for row in read_rows(path)[1]:
            snap = row["is_snapshot"] == "true"
            assert row["is_snapshot"] in ("true", "false")
            if snap and not in_block:
                bids, asks = {}, {}
                blocks += 1
            in_block = snap
            assert row["side"] in ("bid", "ask")
            side = bids if row["side"] == "bid" else asks
            price, amount = float(row["price"]), float(row["amount"])
            if amount == 0:
                side.pop(price, None)
            else:
                side[price] = amount
    return sorted(bids.items(), reverse=True), sorted(asks.items()), blocks


def first_rows_are_a_block(path: Path) -> bool:
    rows = read_rows(path)[1]
    return bool(rows) and rows[0]["is_snapshot"] == "true"
