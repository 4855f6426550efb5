"""The layer contracts (pyproject.toml, checked by `lint-imports` in `make test`) cover the whole core.

The forbidden contract lists the core's modules by name, so a new module under pipeline/ would escape
it unless it is listed: this test fails until it is.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERED = {"app", "benchmarks", "sim"}  # subpackages of pipeline/ above the core


def test_every_core_module_is_under_the_core_contract():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    core = next(c for c in contracts if c["type"] == "forbidden")
    on_disk = {f"pipeline.{p.stem}" for p in (ROOT / "pipeline").glob("*.py") if p.stem not in ("__init__", "__main__")}
    on_disk |= {f"pipeline.{p.name}" for p in (ROOT / "pipeline").iterdir()
                if p.is_dir() and (p / "__init__.py").exists() and p.name not in LAYERED}
    assert set(core["source_modules"]) == on_disk
    assert {"ingest", "publisher", "sinks"} <= set(core["forbidden_modules"])
    assert {f"pipeline.{name}" for name in LAYERED} <= set(core["forbidden_modules"])
