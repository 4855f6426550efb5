"""The CSV sink's settings and its plugin object: what config loading and `pipeline status` need,
without importing the recording code (sinks/csv_sink.py), which only `pipeline sink csv` runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Config, SectionContext, check_keys, expect_bool, expect_number, expect_path, show
from pipeline.errors import ConfigError
from sinks.status import sink_status

SINK_NAME = "csv"  # [sinks.csv], `pipeline sink csv`, program sink-csv


@dataclass(frozen=True)
class CsvSinkConfig:
    """``[sinks.csv]``: tardis-format CSV files (docs/csv.md)."""

    dir: Path = Path("data/csv")
    gzip: bool = False  # gzip each day's files once the day is over
    flush_interval_s: float = 1.0  # buffered rows reach the files at least this often
    exchanges: tuple[str, ...] = ()  # exchanges to record; empty: all


def parse_csv_config(t: dict, key: str, ctx: SectionContext) -> CsvSinkConfig:
    """``[sinks.csv]`` -> CsvSinkConfig; ConfigError naming ``sinks.csv.KEY``."""
    check_keys(t, set(CsvSinkConfig.__dataclass_fields__), key)
    kw: dict[str, Any] = {"dir": expect_path(t.get("dir", str(ctx.data_dir / "csv")), f"{key}.dir", ctx.base_dir)}
    if "gzip" in t:
        kw["gzip"] = expect_bool(t["gzip"], f"{key}.gzip")
    if "flush_interval_s" in t:
        kw["flush_interval_s"] = expect_number(t["flush_interval_s"], f"{key}.flush_interval_s", positive=True)
    if "exchanges" in t:
        names = t["exchanges"]
        if not isinstance(names, list) or not names:
            raise ConfigError(f"{key}.exchanges", f"expected a non-empty list of exchange names, got {show(names)}")
        for i, name in enumerate(names):
            if name not in ctx.exchanges:
                raise ConfigError(f"{key}.exchanges[{i}]", f"no such exchange {show(name)} in [exchanges]")
        kw["exchanges"] = tuple(dict.fromkeys(names))
    return CsvSinkConfig(**kw)


def csv_config(config: Config) -> CsvSinkConfig:
    """The ``[sinks.csv]`` section (parsed here when the config was loaded by the core alone);
    defaults (files under data_dir/csv) when the table is absent."""
    section = config.sinks.get("csv")
    if isinstance(section, CsvSinkConfig):
        return section
    ctx = SectionContext(base_dir=config.base_dir, data_dir=config.data_dir, exchanges=config.exchanges)
    return parse_csv_config(section or {}, "sinks.csv", ctx)


class CsvSinkPlugin:
    """The CSV sink as a plugin (sinks/base.py; its line in sinks/__init__.py)."""

    def parse_config(self, table: dict, key: str, ctx: SectionContext) -> CsvSinkConfig:
        return parse_csv_config(table, key, ctx)

    def run(self, config: Config) -> None:
        from sinks.csv_sink import run_sink  # the recording code, imported only by the sink process

        run_sink(config)

    def status(self, config: Config) -> dict[str, Any]:
        return sink_status(config, SINK_NAME, str(csv_config(config).dir))


SINK = CsvSinkPlugin()
