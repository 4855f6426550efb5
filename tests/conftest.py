import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from captures import SHARED  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if not SHARED.is_dir():
        skip = pytest.mark.skip(reason=f"shared data folder {SHARED} not present")
        for item in items:
            if "shared" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def shm_prefix(request):
    """A unique shared-memory prefix per test; segments are removed afterwards."""
    prefix = f"l2pt{os.getpid()}{abs(hash(request.node.nodeid)) % 10**6}"
    yield prefix
    for p in Path("/dev/shm").glob(prefix + "_*"):
        p.unlink(missing_ok=True)
