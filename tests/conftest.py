import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from captures import SHARED  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests draw the same examples on every run (`make test` and CI must not depend on
# the luck of a seed); explore new ones with `pytest --hypothesis-profile explore`.
settings.register_profile("default", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_collection_modifyitems(config, items):
    if not SHARED.is_dir():
        skip = pytest.mark.skip(reason=f"shared data folder {SHARED} not present")
        for item in items:
            if "shared" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def shm_prefix(request):
    """A unique shared-memory namespace per test (pipeline.shm.ShmSpace: a prefix, and a run_dir of its own
    where writers publish the segments' names); segments and the directory are removed afterwards."""
    import shutil
    import tempfile

    from pipeline.shm import NAMES_DIR, ShmSpace

    run_dir = Path(tempfile.mkdtemp(prefix="l2ps", dir="/tmp"))
    prefix = ShmSpace(f"l2pt{os.getpid()}{abs(hash(request.node.nodeid)) % 10**6}", run_dir / NAMES_DIR)
    yield prefix
    for p in Path("/dev/shm").glob(prefix + "_*"):
        p.unlink(missing_ok=True)
    shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def own_default_run_dir(monkeypatch, tmp_path_factory):
    """A config without run_dir (the demo) uses the per-user default; tests get their own, so a test
    never meets the user's running pipeline (the variable reaches the processes a test starts)."""
    import tempfile

    run_dir = Path(tempfile.mkdtemp(prefix="l2pr", dir="/tmp"))
    monkeypatch.setenv("PIPELINE_RUN_DIR", str(run_dir))
    yield run_dir
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def twin_books(request, monkeypatch):
    """Replay and fuzz tests run the feed on both books at once (tests/twinbook.py): the
    compiled one drives the feed and must equal pipeline/book.py's on every call."""
    name = request.module.__name__
    if ("replay" in name or "fuzz" in name or "feed" in name) and request.config.getoption("twin_books"):
        from pipeline.book import CompiledViewBook
        from twinbook import TwinBook

        if CompiledViewBook is not None:
            monkeypatch.setattr("ingest.feed.ViewBook", TwinBook)


def pytest_addoption(parser):
    parser.addoption("--no-twin-books", dest="twin_books", action="store_false", default=True,
                     help="replay/fuzz tests on the default book only, not both books compared")
