"""The consumer library is typed: mypy passes on examples/print_books.py and catches misuse in user code.

Issue 16: events were ``tuple[str, object]``, so a type checker knew nothing of a trade's price or a
book's best bid.  mypy's settings are in pyproject.toml ``[tool.mypy]``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("mypy")

USER_CODE = '''
from pipeline.config import load_config
from pipeline.consumer import Book, Consumer, Trade

def spreads(consumer: Consumer) -> list[float]:
    out: list[float] = []
    for event in consumer.poll(1.0):
        if isinstance(event, Book):
            s = event.spread()
            if s is not None:
                out.append(s)
        elif isinstance(event, Trade):
            out.append(event.price)  # narrowed to Trade (other kinds come with kinds=[...])
    return out

def wrong(consumer: Consumer) -> float:
    event = consumer.poll(1.0)[0]
    return event.price  # a Book has no price: mypy must say so
'''


def _mypy(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_mypy_passes_on_the_example_and_the_consumer_library():
    result = _mypy()  # files from pyproject.toml: the example, consumer, schema, bus
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_follows_events_in_user_code(tmp_path):
    user = tmp_path / "strategy.py"
    user.write_text(USER_CODE)
    result = _mypy("--follow-imports=silent", str(user))
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    line = USER_CODE.splitlines().index("    return event.price  # a Book has no price: mypy must say so") + 1
    assert errors and all(f"strategy.py:{line}: error:" in e for e in errors), result.stdout + result.stderr
    assert any('"Book"' in e and '"price"' in e for e in errors), errors
