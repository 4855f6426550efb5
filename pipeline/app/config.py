"""The config as every command loads it: the core's tables plus each plugin's own section.

The core (pipeline/config.py) names no plugin; here the registries are handed to it, so
``[sinks.NAME]`` is checked by that sink, ``[publisher]`` and ``[grpc]`` by those servers and
``exchanges.X.adapter`` against the adapter registry (ingest/adapters/__init__.py); an unknown
sink, adapter or top-level table is a config error naming the known ones.
"""

from __future__ import annotations

import os
from pathlib import Path

from ingest.adapters import ADAPTERS
from pipeline import config as core
from pipeline.config import Config, Plugins
from pipeline.sim import PROTOCOLS
from publisher import BRIDGES, SERVERS
from sinks import SINKS

PLUGINS = Plugins(sinks=SINKS, servers=SERVERS, adapters=ADAPTERS, sim_protocols=PROTOCOLS, bridges=BRIDGES)


def load_config(path: str | os.PathLike | None, plugins: Plugins = PLUGINS) -> Config:
    """The config file at ``path`` (None: the built-in demo), every table checked."""
    return core.load_config(path, plugins)


def parse_config(text: str, base_dir: Path, source: str = "<string>", plugins: Plugins = PLUGINS) -> Config:
    return core.parse_config(text, base_dir, source, plugins)
