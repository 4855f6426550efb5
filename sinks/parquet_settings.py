"""The Parquet sink's settings and its plugin object: what config loading and `pipeline status` need,
without importing pyarrow or the recording code (sinks/parquet_sink.py), which only `pipeline sink parquet` runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import (Config, SectionContext, check_keys, expect_number, expect_path, expect_pos_int,
                             expect_str, show)
from pipeline.errors import ConfigError
from sinks.status import sink_status

SINK_NAME = "parquet"  # [sinks.parquet], `pipeline sink parquet`, program sink-parquet
COMPRESSIONS = ("zstd", "snappy", "gzip", "lz4", "none")


@dataclass(frozen=True)
class ParquetSinkConfig:
    """``[sinks.parquet]``: hive-partitioned Parquet datasets of the tardis datatypes (docs/parquet.md)."""

    dir: Path = Path("data/parquet")
    flush_interval_s: float = 60.0  # a file is closed at least this often: what a crash can lose
    flush_rows: int = 1_000_000  # ... or once one file holds this many rows
    compression: str = "zstd"
    compression_level: int | None = None  # the codec's default when unset
    exchanges: tuple[str, ...] = ()  # exchanges to record; empty: all
    upload_url: str | None = None  # fsspec URL closed files are copied to (s3://bucket/prefix, file:///dir)
    upload_retries: int = 5  # attempts per file before it is given up (counted, logged)


def parse_parquet_config(t: dict, key: str, ctx: SectionContext) -> ParquetSinkConfig:
    """``[sinks.parquet]`` -> ParquetSinkConfig; ConfigError naming ``sinks.parquet.KEY``."""
    check_keys(t, set(ParquetSinkConfig.__dataclass_fields__), key)
    kw: dict[str, Any] = {
        "dir": expect_path(t.get("dir", str(ctx.data_dir / "parquet")), f"{key}.dir", ctx.base_dir)}
    if "flush_interval_s" in t:
        kw["flush_interval_s"] = expect_number(t["flush_interval_s"], f"{key}.flush_interval_s", positive=True)
    for name in ("flush_rows", "compression_level", "upload_retries"):
        if name in t:
            kw[name] = expect_pos_int(t[name], f"{key}.{name}")
    if "compression" in t:
        codec = t["compression"]
        if codec not in COMPRESSIONS:
            raise ConfigError(f"{key}.compression", f"expected one of {', '.join(COMPRESSIONS)}, got {show(codec)}")
        kw["compression"] = codec
    if "upload_url" in t:
        url = expect_str(t["upload_url"], f"{key}.upload_url")
        if "://" not in url:
            raise ConfigError(f"{key}.upload_url", f"expected an fsspec URL such as s3://bucket/prefix, got {show(url)}")
        kw["upload_url"] = url.rstrip("/")
    if "exchanges" in t:
        names = t["exchanges"]
        if not isinstance(names, list) or not names:
            raise ConfigError(f"{key}.exchanges", f"expected a non-empty list of exchange names, got {show(names)}")
        for i, name in enumerate(names):
            if name not in ctx.exchanges:
                raise ConfigError(f"{key}.exchanges[{i}]", f"no such exchange {show(name)} in [exchanges]")
        kw["exchanges"] = tuple(dict.fromkeys(names))
    return ParquetSinkConfig(**kw)


def parquet_config(config: Config) -> ParquetSinkConfig:
    """The ``[sinks.parquet]`` section (parsed here when the config was loaded by the core alone);
    defaults (files under data_dir/parquet) when the table is absent."""
    section = config.sinks.get(SINK_NAME)
    if isinstance(section, ParquetSinkConfig):
        return section
    ctx = SectionContext(base_dir=config.base_dir, data_dir=config.data_dir, exchanges=config.exchanges)
    return parse_parquet_config(section or {}, f"sinks.{SINK_NAME}", ctx)


class ParquetSinkPlugin:
    """The Parquet sink as a plugin (sinks/base.py; its line in sinks/__init__.py)."""

    def parse_config(self, table: dict, key: str, ctx: SectionContext) -> ParquetSinkConfig:
        return parse_parquet_config(table, key, ctx)

    def run(self, config: Config) -> None:
        from sinks.parquet_sink import run_sink  # pyarrow and the recording code, only in the sink process

        run_sink(config)

    def status(self, config: Config) -> dict[str, Any]:
        return sink_status(config, SINK_NAME, str(parquet_config(config).dir))


SINK = ParquetSinkPlugin()
