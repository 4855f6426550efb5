"""Named plugins of the layers above the core (sinks, servers, venue adapters), by registry.

A registry maps a name to ``"module:ATTRIBUTE"`` and imports that module only when the
plugin is used, so validating a config or listing the names imports nothing else.  The
core owns the mechanism and names no plugin: each registry lives in the package of its
plugins (``sinks.SINKS``, ``publisher.SERVERS``) and the composition root hands them to
the config loader (pipeline/app/config.py), which gives each plugin its own table to
validate::

    [sinks.csv]      -> SINKS["csv"].load().parse_config(table, "sinks.csv", ctx)
    [publisher]      -> SERVERS["publisher"].load().parse_config(table, "publisher", ctx)

A new sink or server is then one module and one line in its registry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Protocol

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.config import SectionContext


class ConfigSection(Protocol):
    """What a plugin gives the config loader: the check of its own table."""

    def parse_config(self, table: dict, key: str, ctx: "SectionContext") -> Any:
        """``table`` (TOML, unvalidated) -> the plugin's frozen settings; ConfigError naming ``key.FIELD``."""


@dataclass(frozen=True)
class Plugin:
    """One registry line: a name, where its code is, and what the CLI and supervision need to know."""

    name: str
    target: str  # "package.module:ATTRIBUTE", imported on first use
    summary: str = ""  # one line for --help
    command: str | None = None  # CLI word when it differs from the name (the WebSocket server: `publish`)
    default_on: bool = False  # servers: runs without a config table of its own (defaults)
    in_ingest: bool = False  # sinks: runs inside each ingest process, not as a program of its own

    def load(self) -> Any:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


class Registry:
    """Plugins of one kind ("sink", "server", "adapter") by name, in registration order."""

    def __init__(self, kind: str, plugins: list[Plugin]):
        self.kind = kind
        self._plugins: dict[str, Plugin] = {}
        for p in plugins:
            if p.name in self._plugins:
                raise ValueError(f"two {kind}s named {p.name!r}")
            if ":" not in p.target:
                raise ValueError(f"{kind} {p.name!r}: target {p.target!r} is not 'module:attribute'")
            self._plugins[p.name] = p

    def __iter__(self) -> Iterator[Plugin]:
        return iter(self._plugins.values())

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def __len__(self) -> int:
        return len(self._plugins)

    def names(self) -> list[str]:
        return list(self._plugins)

    def get(self, name: str, key: str | None = None) -> Plugin:
        """The plugin called ``name``; ConfigError at ``key`` naming the known ones otherwise."""
        try:
            return self._plugins[name]
        except KeyError:
            known = ", ".join(sorted(self._plugins)) or "none"
            raise ConfigError(key or self.kind, f'unknown {self.kind} "{name}" (known: {known})') from None

    def with_plugin(self, plugin: Plugin) -> "Registry":
        """A copy with one more plugin (tests, out-of-tree plugins wired by a composition root)."""
        return Registry(self.kind, [*self._plugins.values(), plugin])
