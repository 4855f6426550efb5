"""Nothing local can forge a book (issue 19 item 6): shared-memory segments are ours alone.

Real segments in /dev/shm and the real CLI.  Another local user is played by chown to
``nobody`` (the tests that need it run as root, as CI does).
"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from helpers import PIPELINE, short_tmpdir
from pipeline.config import load_config
from pipeline.errors import SharedMemoryError
from pipeline.shm import DEV_SHM, BookReader, BookState, BookWriter, segment_name

pytestmark = pytest.mark.integration
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="playing another user needs chown (root, as in CI)")


@pytest.fixture
def config():
    workdir = short_tmpdir()
    path = workdir / "p.toml"
    path.write_text('[pipeline]\nrun_dir = "run"\n[exchanges.sim]\nadapter = "binance"\nsymbols = ["BTCUSDT"]\n'
                    'ws_url = "ws://127.0.0.1:9"\nrest_url = "http://127.0.0.1:9"\n')
    cfg = load_config(path)
    yield path, cfg
    try:
        os.unlink(DEV_SHM / segment_name(cfg.shm_prefix, "sim"))
    except FileNotFoundError:
        pass


def test_segments_are_created_owner_only_whatever_the_umask(config):
    _, cfg = config
    old = os.umask(0)
    try:
        writer = BookWriter(cfg.shm_prefix, "sim", ["BTCUSDT"], 5, epoch=1)
    finally:
        os.umask(old)
    try:
        st = os.stat(DEV_SHM / writer.name)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    finally:
        writer.close(unlink=True)


@as_root
def test_a_segment_another_user_created_is_refused_by_the_ingest_with_a_clear_error(config):
    path, cfg = config
    name = segment_name(cfg.shm_prefix, "sim")
    fd = os.open(DEV_SHM / name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
    os.ftruncate(fd, 4096)
    os.fchown(fd, NOBODY, NOBODY)
    os.close(fd)
    with pytest.raises(SharedMemoryError, match=f"belongs to uid {NOBODY}"):
        BookWriter(cfg.shm_prefix, "sim", ["BTCUSDT"], 5, epoch=1)
    out = subprocess.run(PIPELINE + ["--config", str(path), "ingest", "sim"], capture_output=True, text=True,
                         timeout=60, cwd=path.parent)
    assert out.returncode != 0
    assert f"belongs to uid {NOBODY}" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert os.stat(DEV_SHM / name).st_uid == NOBODY  # refused, not removed


@as_root
def test_readers_refuse_a_forged_book(config):
    # the run: as nobody, a forged segment was served as a live book by `pipeline book` and /health
    path, cfg = config
    writer = BookWriter(cfg.shm_prefix, "sim", ["BTCUSDT"], 5, epoch=1)
    writer.write_view(0, 1, BookState.LIVE, 1, 1, 1, [100.0], [1.0], [101.0], [1.0])
    try:
        with BookReader.open(cfg.shm_prefix, "sim") as reader:  # ours: read
            assert reader.read("BTCUSDT").state is BookState.LIVE
        os.chown(DEV_SHM / writer.name, NOBODY, NOBODY)  # now it is someone else's
        with pytest.raises(SharedMemoryError, match=f"belongs to uid {NOBODY}"):
            BookReader.open(cfg.shm_prefix, "sim")
        out = subprocess.run(PIPELINE + ["--config", str(path), "book", "sim", "BTCUSDT"], capture_output=True,
                             text=True, timeout=60, cwd=path.parent)
        assert out.returncode != 0 and f"belongs to uid {NOBODY}" in out.stderr, (out.stdout, out.stderr)
        os.chown(DEV_SHM / writer.name, os.geteuid(), os.getegid())
        os.chmod(DEV_SHM / writer.name, 0o666)  # ours, but anyone could have written it
        with pytest.raises(SharedMemoryError, match="writable by other users"):
            BookReader.open(cfg.shm_prefix, "sim")
    finally:
        os.chown(DEV_SHM / writer.name, os.geteuid(), os.getegid())
        writer.close(unlink=True)
