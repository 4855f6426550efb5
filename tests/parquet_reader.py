"""Reading the Parquet sink's datasets for tests, with pyarrow and pandas only (nothing from sinks/).

Files of one partition are read in name order (their names sort in time order) and their
rows in file order; the book rules are those of tests/tardis_reader.py: a run of
``is_snapshot`` rows replaces the book, every other row sets one level (0 removes it).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq


def files(root: Path, exchange: str, datatype: str) -> list[Path]:
    """The finished files of one dataset, oldest first (dates, then names)."""
    return sorted((Path(root) / f"exchange={exchange}" / f"datatype={datatype}").glob("date=*/part-*.parquet"))


def frame(root: Path, exchange: str, datatype: str, symbol: str | None = None) -> pd.DataFrame:
    """All rows of a dataset (of one symbol), in recording order, with an ``exchange`` column
    first as in the CSV files (hive readers add it from the path)."""
    parts = []
    for path in files(root, exchange, datatype):
        df = pq.read_table(path).to_pandas()
        df.insert(0, "exchange", exchange)
        df["file"] = path.name
        parts.append(df)
    if not parts:
        return pd.DataFrame()
    df = pd.concat(parts, ignore_index=True)
    df["symbol"] = df["symbol"].astype(str)
    if "side" in df:
        df["side"] = df["side"].astype(str)
    if symbol is not None:
        df = df[df["symbol"] == symbol].reset_index(drop=True)
    return df


def rebuild_book(df: pd.DataFrame) -> tuple[list[tuple[float, float]], list[tuple[float, float]], int]:
    """(bids best first, asks best first, snapshot blocks) from the rows of one symbol."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    blocks = 0
    in_block = False
    for snap, side, price, amount in zip(df["is_snapshot"], df["side"], df["price"], df["amount"]):
        if snap and not in_block:
            bids, asks = {}, {}
            blocks += 1
        in_block = bool(snap)
        levels = bids if side == "bid" else asks
        if amount == 0:
            levels.pop(price, None)
        else:
            levels[price] = amount
    return sorted(bids.items(), reverse=True), sorted(asks.items()), blocks


def files_start_with_blocks(root: Path, exchange: str, symbols) -> bool:
    """Every book file's rows of each symbol begin with a snapshot block."""
    for path in files(root, exchange, "incremental_book_L2"):
        df = pq.read_table(path).to_pandas()
        for sym in symbols:
            rows = df[df["symbol"].astype(str) == sym]
            if len(rows) and not bool(rows["is_snapshot"].iloc[0]):
                return False
    return True


def csv_frame(paths) -> pd.DataFrame:
    """The CSV sink's files as a frame typed like the Parquet columns (timestamps in UTC microseconds)."""
    parts = [pd.read_csv(p, dtype={"id": str, "symbol": str, "exchange": str}, keep_default_na=False) for p in paths]
    df = pd.concat(parts, ignore_index=True)
    for col in df.columns:
        if col in ("exchange", "symbol", "id", "side", "is_snapshot"):
            continue
        # numbers; an empty field (a value the venue has not stated) is a null, as in Parquet
        if not pd.api.types.is_numeric_dtype(df[col]):
            df[col] = pd.to_numeric(df[col].replace("", None))
        if col.endswith("timestamp"):
            df[col] = pd.to_datetime(df[col], unit="us", utc=True)
    if "is_snapshot" in df:
        df["is_snapshot"] = df["is_snapshot"].map({"true": True, "false": False, True: True, False: False})
    return df
