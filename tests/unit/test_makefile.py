"""`make run` installs what running needs, `make test` adds the test extras (DESIGN.md contract 1).

Dry runs (`make -n`) of the real Makefile in a scratch copy of the project's top files, so
nothing is installed: the commands make would run are the thing checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")


def dry_run(tmp: Path, target: str) -> list[str]:
    # as a user runs it: not a sub-make of `make test` (whose MAKELEVEL adds "Entering/Leaving directory" lines)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    out = subprocess.run(["make", "-n", target], cwd=tmp, capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def installs(lines: list[str]) -> list[str]:
    return [line for line in lines if "pip install" in line and "--upgrade pip" not in line]


@pytest.fixture
def clone(tmp_path) -> Path:
    for name in ("Makefile", "pyproject.toml", "setup.py", "pipeline/_cbook.pyx"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def fake_venv(clone: Path, *stamps: str) -> None:
    """A .venv as an earlier `make run` / `make test` left it: its python and install stamps."""
    bin_dir = clone / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text("#!/bin/sh\n")
    (bin_dir / "python").chmod(0o755)
    later = time.time() + 60  # newer than pyproject.toml
    for stamp in stamps:
        (clone / ".venv" / stamp).touch()
        os.utime(clone / ".venv" / stamp, (later, later))


def test_run_creates_the_venv_and_installs_without_the_test_extras(clone):
    lines = dry_run(clone, "run")
    assert any("-m venv .venv" in line for line in lines)
    (install,) = installs(lines)
    assert install.endswith("-e .") and "[test]" not in install
    assert lines[-1] == ".venv/bin/pipeline run"


def test_test_creates_the_venv_and_installs_the_test_extras(clone):
    lines = dry_run(clone, "test")
    assert any("-m venv .venv" in line for line in lines)
    (install,) = installs(lines)
    assert "-e '.[test]'" in install
    assert ".venv/bin/python -m pytest -q" in lines


def test_test_after_run_adds_the_extras_and_nothing_is_installed_twice(clone):
    fake_venv(clone, ".installed-run")
    assert installs(dry_run(clone, "run")) == []
    (install,) = installs(dry_run(clone, "test"))
    assert "[test]" in install

    shutil.rmtree(clone / ".venv")
    fake_venv(clone, ".installed", ".installed-run")  # as `make test` leaves it
    assert installs(dry_run(clone, "test")) == []
    assert installs(dry_run(clone, "run")) == []


def test_an_edited_compiled_book_source_is_rebuilt_by_make_test(clone):
    """The stamp depends on pipeline/_cbook.pyx, so `make test` recompiles it (a stale build is refused)."""
    fake_venv(clone, ".installed", ".installed-run")
    assert installs(dry_run(clone, "test")) == []
    later = time.time() + 120
    os.utime(clone / "pipeline" / "_cbook.pyx", (later, later))
    (install,) = installs(dry_run(clone, "test"))
    assert "[test]" in install


def test_bench_e2e_in_a_venv_without_the_test_extras_says_what_to_install_at_once(tmp_path):
    """matplotlib is a test extra; `pipeline bench e2e` needs it only for its plot, after minutes of work."""
    blocked = tmp_path / "blocked" / "matplotlib"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('not installed (test)')\n")
    out = subprocess.run([sys.executable, "-m", "pipeline", "bench", "e2e", "--out", str(tmp_path / "out"),
                          "--results", str(tmp_path / "RESULTS.md"),
                          "--rates", "500", "--seconds", "0.5", "--clients", "1", "--symbols", "1"],  # small if it runs
                         env={**os.environ, "PYTHONPATH": str(blocked.parent)}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "pip install matplotlib" in out.stderr, out.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "RESULTS.md").exists()


def test_ci_runs_make_test():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make test" in lines
