"""Nothing local can forge a book (issue 19 item 6): shared-memory segments are ours alone.

Real segments in /dev/shm, real ingest processes and the real CLI.  Another local user is played
by chown to ``nobody``, or by a forked child that became ``nobody`` (the tests that need it run as
root, as CI does, and skip otherwise saying so).
"""

from __future__ import annotations

import grp
import json
import os
import re
import shutil
import signal
import stat
import subprocess

import pytest

from helpers import PIPELINE, Procs, eventually, short_tmpdir
from pipeline.config import load_config
from pipeline.errors import ConfigError, SharedMemoryError
from pipeline.shm import DEV_SHM, BookReader, BookState, BookWriter, find_segment

pytestmark = pytest.mark.integration
NOBODY = 65534  # nobody:nogroup
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="playing another user needs chown/setuid (root, as in CI)")
TOML = ('[pipeline]\nrun_dir = "run"\n{extra}[exchanges.sim]\nadapter = "binance"\nsymbols = ["BTCUSDT"]\n'
        'ws_url = "ws://127.0.0.1:9"\nrest_url = "http://127.0.0.1:9"\n')


def _config(extra: str = ""):
    workdir = short_tmpdir()
    path = workdir / "p.toml"
    path.write_text(TOML.format(extra=extra))
    return path, load_config(path)


def _cleanup(path, cfg) -> None:
    for p in DEV_SHM.glob(f"{cfg.shm_prefix}*"):  # ours, and what a test made "another user's"
        p.unlink(missing_ok=True)
    shutil.rmtree(path.parent, ignore_errors=True)


@pytest.fixture
def config():
    path, cfg = _config()
    yield path, cfg
    _cleanup(path, cfg)


def _book(path, *args):
    return subprocess.run(PIPELINE + ["--config", str(path), "book", "sim", "BTCUSDT", *args], capture_output=True,
                          text=True, timeout=60, cwd=path.parent)


def _as_nobody(fn) -> tuple[int, str]:
    """Run ``fn()`` in a forked child that became nobody:nogroup; (exit code, what it printed or raised)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code, out = 0, ""
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out = str(fn())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            code, out = 1, f"{type(exc).__name__}: {exc}"
        finally:
            os.write(w, out.encode()[:60000])
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


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
        names = cfg.run_dir / "shm"
        assert stat.S_IMODE(os.stat(names).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(names / "sim").st_mode) == 0o600
    finally:
        writer.close(unlink=True)


def test_segment_names_are_unpredictable_and_readers_find_them_through_run_dir(config):
    path, cfg = config
    seen = []
    for epoch in (1, 2):
        writer = BookWriter(cfg.shm_prefix, "sim", ["BTCUSDT"], 5, epoch=epoch)
        try:
            writer.write_view(0, 1, BookState.LIVE, 1, 1, 1, [100.0 + epoch], [1.0], [101.0 + epoch], [1.0])
            assert re.fullmatch(rf"{cfg.shm_prefix}_sim_[0-9a-f]{{16}}", writer.name), writer.name
            assert (cfg.run_dir / "shm" / "sim").read_text().strip() == writer.name  # published under run_dir
            assert not (DEV_SHM / f"{cfg.shm_prefix}_sim").exists()  # nothing under the old predictable name
            out = _book(path, "--json")  # a reader in another process finds it there
            assert json.loads(out.stdout)["bids"][0][0] == 100.0 + epoch, (out.stdout, out.stderr)
            seen.append(writer.name)
        finally:
            writer.close(unlink=True)
        assert not (DEV_SHM / writer.name).exists() and not (cfg.run_dir / "shm" / "sim").exists()
    assert seen[0] != seen[1]


def test_a_killed_ingest_leaves_a_stale_name_and_the_next_one_publishes_a_new_segment(config):
    path, cfg = config
    procs = Procs(path.parent)
    names = cfg.run_dir / "shm"
    try:
        first = procs.start("ingest", PIPELINE + ["--config", str(path), "ingest", "sim"])
        eventually(lambda: (names / "sim_trades").exists(), 30, 0.1, "the first ingest's names published")
        old, old_ring = find_segment(cfg.shm_prefix, "sim"), find_segment(cfg.shm_prefix, "sim_trades")
        with BookReader.open(cfg.shm_prefix, "sim") as r:
            old_epoch = r.epoch
        procs.stop(first, signal.SIGKILL)
        assert (DEV_SHM / old).exists() and find_segment(cfg.shm_prefix, "sim") == old  # stale: left as it was
        second = procs.start("ingest2", PIPELINE + ["--config", str(path), "ingest", "sim"])
        eventually(lambda: (names / "sim").exists() and find_segment(cfg.shm_prefix, "sim") != old, 30, 0.1,
                   "the second ingest's name published")
        with BookReader.open(cfg.shm_prefix, "sim") as r:  # readers reopen on the new epoch and find it
            assert r.epoch != old_epoch and r.pid == second.pid
        assert not (DEV_SHM / old).exists() and not (DEV_SHM / old_ring).exists()  # the dead one's removed
        assert procs.stop(second) == 0
        assert not list(DEV_SHM.glob(f"{cfg.shm_prefix}*")) and not list(names.iterdir())
    finally:
        procs.stop_all()


@as_root
def test_a_segment_pre_created_under_the_old_predictable_name_does_not_block_the_ingest(config):
    # the run: as nobody, a segment pre-created under the ingest's name blocked the ingest
    path, cfg = config
    squatted = DEV_SHM / f"{cfg.shm_prefix}_sim"
    fd = os.open(squatted, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
    os.ftruncate(fd, 4096)
    os.fchown(fd, NOBODY, NOBODY)
    os.close(fd)
    procs = Procs(path.parent)
    try:
        ingest = procs.start("ingest", PIPELINE + ["--config", str(path), "ingest", "sim"])
        eventually(lambda: (cfg.run_dir / "shm" / "sim").exists() or ingest.poll() is not None, 30, 0.1,
                   "the ingest's segment published")
        assert ingest.poll() is None, procs.log("ingest")
        out = _book(path, "--json")
        assert json.loads(out.stdout)["state"] == "syncing", (out.stdout, out.stderr)  # no venue at port 9
        assert procs.stop(ingest) == 0
    finally:
        procs.stop_all()
    assert os.stat(squatted).st_uid == NOBODY  # another user's: left alone, never used
    assert [p.name for p in DEV_SHM.glob(f"{cfg.shm_prefix}*")] == [squatted.name]


@as_root
def test_a_random_name_taken_by_another_user_is_refused_with_a_clear_error(config, monkeypatch):
    _, cfg = config
    monkeypatch.setattr("secrets.token_hex", lambda n: "ab" * n)  # the name another user guessed
    taken = DEV_SHM / f"{cfg.shm_prefix}_sim_{'ab' * 8}"
    fd = os.open(taken, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
    os.fchown(fd, NOBODY, NOBODY)
    os.close(fd)
    with pytest.raises(SharedMemoryError, match=f"belongs to uid {NOBODY}"):
        BookWriter(cfg.shm_prefix, "sim", ["BTCUSDT"], 5, epoch=1)
    assert os.stat(taken).st_uid == NOBODY  # refused, not removed


@as_root
def test_the_ingest_refuses_a_name_directory_of_another_user_with_a_clear_error(config):
    path, cfg = config
    (cfg.run_dir / "shm").mkdir(parents=True)
    os.chown(cfg.run_dir / "shm", NOBODY, NOBODY)
    out = subprocess.run(PIPELINE + ["--config", str(path), "ingest", "sim"], capture_output=True, text=True,
                         timeout=60, cwd=path.parent)
    assert out.returncode != 0
    assert f"belongs to uid {NOBODY}" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not list(DEV_SHM.glob(f"{cfg.shm_prefix}*"))  # the segment it made first is removed


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
        out = _book(path)
        assert out.returncode != 0 and f"belongs to uid {NOBODY}" in out.stderr, (out.stdout, out.stderr)
        os.chown(DEV_SHM / writer.name, os.geteuid(), os.getegid())
        os.chmod(DEV_SHM / writer.name, 0o666)  # ours, but anyone could have written it
        with pytest.raises(SharedMemoryError, match="writable by other users"):
            BookReader.open(cfg.shm_prefix, "sim")
    finally:
        os.chown(DEV_SHM / writer.name, os.geteuid(), os.getegid())
        writer.close(unlink=True)


@as_root
def test_a_name_file_pointing_at_another_users_segment_is_refused_with_a_clear_error(config):
    path, cfg = config
    writer = BookWriter(cfg.shm_prefix, "sim", ["BTCUSDT"], 5, epoch=1)
    writer.write_view(0, 1, BookState.LIVE, 1, 1, 1, [100.0], [1.0], [101.0], [1.0])
    forged = f"{cfg.shm_prefix}_sim_{'0' * 16}"
    try:
        shutil.copyfile(DEV_SHM / writer.name, DEV_SHM / forged)  # a valid-looking live book ...
        os.chown(DEV_SHM / forged, NOBODY, NOBODY)  # ... of another user
        (cfg.run_dir / "shm" / "sim").write_text(forged + "\n")
        with pytest.raises(SharedMemoryError, match=rf"belongs to uid {NOBODY}.*named in {cfg.run_dir}/shm/sim"):
            BookReader.open(cfg.shm_prefix, "sim")
        out = _book(path)
        assert out.returncode != 0 and f"belongs to uid {NOBODY}" in out.stderr, (out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
        os.chown(cfg.run_dir / "shm" / "sim", NOBODY, NOBODY)  # the name file itself another user's
        with pytest.raises(SharedMemoryError, match=f"segment name file .* belongs to uid {NOBODY}"):
            BookReader.open(cfg.shm_prefix, "sim")
    finally:
        writer.close(unlink=True)


def test_a_name_file_that_is_not_the_pipelines_is_refused(config):
    _, cfg = config
    writer = BookWriter(cfg.shm_prefix, "sim", ["BTCUSDT"], 5, epoch=1)
    name_file = cfg.run_dir / "shm" / "sim"
    try:
        for forged in ("../../etc/passwd", f"l2p_0000000000_sim_{'0' * 16}", f"{cfg.shm_prefix}_sim"):
            name_file.write_text(forged + "\n")
            with pytest.raises(SharedMemoryError, match="not a name of this pipeline's segment 'sim'"):
                BookReader.open(cfg.shm_prefix, "sim")
        name_file.write_text(writer.name + "\n")
        name_file.chmod(0o666)
        with pytest.raises(SharedMemoryError, match="writable by other users"):
            BookReader.open(cfg.shm_prefix, "sim")
        name_file.unlink()
        name_file.symlink_to(cfg.run_dir / "elsewhere")
        with pytest.raises(SharedMemoryError, match="cannot be opened"):
            BookReader.open(cfg.shm_prefix, "sim")
    finally:
        writer.close(unlink=True)


def test_with_a_group_segments_and_names_are_readable_by_it_and_writable_by_no_one_else():
    group = grp.getgrgid(os.getegid()).gr_name  # a group this user may give files to, root or not
    path, cfg = _config(f'shm_group = "{group}"\n')
    try:
        writer = BookWriter(cfg.shm_prefix, "sim", ["BTCUSDT"], 5, epoch=1)
        try:
            for p, mode in ((DEV_SHM / writer.name, 0o640), (cfg.run_dir / "shm" / "sim", 0o640),
                            (cfg.run_dir / "shm", 0o750)):
                st = os.stat(p)
                assert (stat.S_IMODE(st.st_mode), st.st_gid) == (mode, os.getegid()), p
            assert os.stat(cfg.run_dir).st_mode & 0o077 == 0o010  # the group may pass through run_dir only
            with BookReader.open(cfg.shm_prefix, "sim") as r:
                assert r.read("BTCUSDT").state is BookState.SYNCING
        finally:
            writer.close(unlink=True)
    finally:
        _cleanup(path, cfg)


@as_root
def test_a_member_of_the_configured_group_reads_the_book_and_cannot_write_it():
    path, cfg = _config('shm_group = "nogroup"\n')
    private_path, private = _config()
    try:
        os.chmod(path.parent, 0o711)  # the parents of run_dir must let the group through (docs/operations.md)
        os.chmod(private_path.parent, 0o711)
        writer = BookWriter(cfg.shm_prefix, "sim", ["BTCUSDT"], 5, epoch=1)
        mine = BookWriter(private.shm_prefix, "sim", ["BTCUSDT"], 5, epoch=1)
        writer.write_view(0, 3, BookState.LIVE, 1, 1, 1, [100.0], [1.0], [101.0], [1.0])
        try:
            def read(c):
                with BookReader.open(c.shm_prefix, "sim") as r:  # run_dir's owner (root) is the pipeline's user
                    return r.read("BTCUSDT").bids.tolist()

            assert _as_nobody(lambda: read(cfg)) == (0, "[[100.0, 1.0]]")

            def forge():
                name = find_segment(cfg.shm_prefix, "sim")
                for p in (DEV_SHM / name, cfg.run_dir / "shm" / "sim"):
                    try:
                        os.open(p, os.O_RDWR)
                    except PermissionError:
                        continue
                    return f"{p} opened for writing"
                try:
                    (cfg.run_dir / "shm" / "forged").write_text("x")
                except PermissionError:
                    return "refused"
                return "wrote in the names directory"

            assert _as_nobody(forge) == (0, "refused")
            code, out = _as_nobody(lambda: read(private))  # no group configured: nobody else reads
            assert code == 1 and "SharedMemoryError" in out and "Permission denied" in out, out
        finally:
            writer.close(unlink=True)
            mine.close(unlink=True)
    finally:
        _cleanup(path, cfg)
        _cleanup(private_path, private)


def test_an_unknown_group_or_owner_is_a_config_error(tmp_path):
    for extra, key in (('shm_group = "no-such-group-l2p"\n', "pipeline.shm_group"),
                       ('shm_owner = "no-such-user-l2p"\n', "pipeline.shm_owner"),
                       ("shm_group = true\n", "pipeline.shm_group")):
        f = tmp_path / "p.toml"
        f.write_text(TOML.format(extra=extra))
        with pytest.raises(ConfigError, match=key):
            load_config(f)
