"""Sinks: processes that record the bus (sinks/base.py has their shape).

``SINKS`` is the registry: a new sink is its module and one line here.  Modules are imported
only when a config names the sink."""

from pipeline.plugins import Plugin, Registry

SINKS = Registry("sink", [
    Plugin("csv", "sinks.csv_settings:SINK",
           summary="Record trades and books as tardis-format daily CSV files under [sinks.csv] dir (docs/csv.md)."),
    Plugin("parquet", "sinks.parquet_settings:SINK",
           summary="Record the tardis datatypes as hive-partitioned Parquet datasets under [sinks.parquet] dir "
                   "(docs/parquet.md)."),
    Plugin("raw", "sinks.raw_settings:SINK", in_ingest=True,
           summary="Each ingest records the frames, REST bodies and subscribe requests it sees as pipeline-capture "
                   "files under [sinks.raw] dir, for `pipeline replay` (docs/operations.md)."),
])
