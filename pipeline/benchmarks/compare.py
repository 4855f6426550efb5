"""``pipeline bench compare``: the same capture through cryptofeed's Binance handler and ours.

One run, one capture (``--capture FILE``, or a synthetic one made with ``gen-capture``
for ``--messages N``), two measurements, one after the other so they do not share the
CPU:

1. cryptofeed: ``_cryptofeed_driver.py`` in a separate virtual environment (cryptofeed
   is never a dependency of this project), which feeds every frame to cryptofeed's own
   Binance ``message_handler`` (its book handler, its REST snapshot sync answered from
   the capture) with no-op callbacks and prints its msgs/s;
2. ours: ``pipeline bench ingest`` on the same file (adapter, sync, book, shm, bus).

Then the ratio of the rates (and of CPU per message) and whether both ended with the
same best bid and ask per symbol.

The environment is made once and cached (default ``~/.cache/l2pipeline/bench-cryptofeed-venv``):
Python >= 3.13 if one can be found (``python3.14``/``python3.13`` on PATH, pyenv's
versions, or ``uv python find``), else this interpreter's Python if cryptofeed installs
there.  ``--no-install`` never creates or installs anything (tests, offline CI): without
a ready environment the cryptofeed side is skipped with the reason, and ours still runs.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click

DEFAULT_VENV = Path.home() / ".cache" / "l2pipeline" / "bench-cryptofeed-venv"
DRIVER = Path(__file__).with_name("_cryptofeed_driver.py")
STAMP = ".cryptofeed-ready"
MIN_PY = (3, 13)


def _py_version(exe: str) -> tuple[int, int] | None:
    """(major, minor) of an interpreter that actually runs (a pyenv shim may not), else None."""
    try:
        out = subprocess.run([exe, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    try:
        major, minor = map(int, out.stdout.split())
    except ValueError:
        return None
    return major, minor


def find_python(log) -> str | None:
    """An interpreter >= 3.13 on this machine, or None."""
    candidates = [shutil.which(n) for n in ("python3.14", "python3.13")]
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates += sorted(glob.glob(f"{root}/versions/3.1[3-9]*/bin/python3"), reverse=True)
    for exe in filter(None, candidates):
        v = _py_version(exe)
        if v is not None and v >= MIN_PY:
            return exe
        log(f"  {exe}: not usable ({v})")
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if os.path.exists(uv):
        out = subprocess.run([uv, "python", "find", ">=3.13"], capture_output=True, text=True, timeout=60)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
        log(f"  uv python find: {out.stderr.strip()[:200]}")
    return None


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def venv_ready(venv: Path) -> bool:
    return (venv / STAMP).exists() and _venv_python(venv).exists()


def make_venv(venv: Path, log) -> str | None:
    """Create ``venv`` with cryptofeed; return None on success, else why it failed."""
    tried = []
    py = find_python(log)
    bases = ([py] if py else []) + [getattr(sys, "_base_executable", sys.executable)]
    for base in bases:
        log(f"creating {venv} with {base} and installing cryptofeed (once)...")
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([base, "-m", "venv", str(venv)], capture_output=True, text=True)
        if r.returncode != 0:
            tried.append(f"{base}: venv failed: {r.stderr.strip()[-200:]}")
            continue
        r = subprocess.run([str(_venv_python(venv)), "-m", "pip", "install", "--quiet", "cryptofeed"],
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            tried.append(f"{base}: pip install cryptofeed failed: {r.stderr.strip()[-300:]}")
            continue
        (venv / STAMP).write_text(f"{base}\n")
        return None
    shutil.rmtree(venv, ignore_errors=True)
    return "; ".join(tried) or "no interpreter"


def run_cryptofeed(venv: Path, capture: str) -> tuple[dict | None, str | None]:
    r = subprocess.run([str(_venv_python(venv)), str(DRIVER), capture], capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"driver failed: {r.stderr.strip()[-500:]}"
    try:
        return json.loads(r.stdout.strip().splitlines()[-1]), None
    except (ValueError, IndexError):
        return None, f"driver printed no JSON: {r.stdout[-300:]!r}"


def _median_run(runs: list[dict]) -> dict:
    """The run with the median msgs/s (CPU per message: the median over the runs)."""
    import statistics

    ordered = sorted(runs, key=lambda r: r["msgs_per_s"] or 0)
    out = dict(ordered[(len(ordered) - 1) // 2])
    out["cpu_us_per_msg"] = round(statistics.median(r["cpu_us_per_msg"] for r in runs), 3)
    if "main_thread_cpu_us_per_msg" in out:
        out["main_thread_cpu_us_per_msg"] = round(statistics.median(r["main_thread_cpu_us_per_msg"] for r in runs), 3)
    return out


def books_agree(ours: dict, theirs: dict) -> dict[str, bool]:
    """Per symbol: same best bid and ask (price and size) at the end of the capture."""
    out = {}
    for sym, b in ours.items():
        t = theirs.get(sym)
        if t is None:
            continue
        ob = b["bids"][0] if b["bids"] else None
        oa = b["asks"][0] if b["asks"] else None
        out[sym] = (ob == t["bid"] and oa == t["ask"])
    return out


@click.command(name="compare")
@click.option("--capture", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Capture to replay (default: a synthetic one, see --messages).")
@click.option("--messages", type=click.IntRange(min=1), default=200_000, show_default=True,
              help="Depth frames of the synthetic capture (without --capture).")
@click.option("--symbols", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--venv", "venv", type=click.Path(file_okay=False), default=str(DEFAULT_VENV), show_default=True,
              help="Where the cryptofeed environment lives (made once).")
@click.option("--no-install", is_flag=True, help="Never create the environment or install anything.")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs of each side, interleaved (cryptofeed, ours, cryptofeed, ...); medians reported.")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
def command(capture: str | None, messages: int, symbols: int, seed: int, venv: str, no_install: bool,
            repeat: int, as_json: bool) -> None:
    """cryptofeed's Binance handler vs `bench ingest` on the same capture: both rates and the ratio."""
    from pipeline.benchmarks.gen_capture import write_capture
    from pipeline.benchmarks.ingest import run_bench

    def log(msg: str) -> None:
        click.echo(msg, err=True)

    tmp = tempfile.mkdtemp(prefix="l2pcompare")
    try:
        if capture is None:
            capture_path = os.path.join(tmp, f"synthetic-{messages}-{symbols}-{seed}.jsonl")
            log(f"writing a synthetic capture: {messages:,} depth frames, {symbols} symbols, seed {seed}")
            write_capture(capture_path, symbols, messages, seed)
        else:
            capture_path = capture
        venv_path = Path(venv).expanduser()
        cf, skipped = None, None
        if not venv_ready(venv_path):
            if no_install:
                skipped = f"no cryptofeed environment at {venv_path} (--no-install: nothing installed)"
            else:
                why = make_venv(venv_path, log)
                if why is not None:
                    skipped = f"could not make a cryptofeed environment: {why}"
        cf_runs, our_runs = [], []
        dump = os.path.join(tmp, "books.json")
        for i in range(repeat):
            if skipped is None:
                log(f"cryptofeed: replaying (run {i + 1}/{repeat})...")
                cf, skipped = run_cryptofeed(venv_path, capture_path)
                if cf is not None:
                    cf_runs.append(cf)
            log(f"ours (bench ingest): replaying (run {i + 1}/{repeat})...")
            our_runs.append(run_bench(capture_path, stages=(i == repeat - 1), dump_books=dump))
        with open(dump) as fh:
            our_books = json.load(fh)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ours = _median_run(our_runs)
    ours["stages_us"] = our_runs[-1]["stages_us"]  # only the last run has the instrumented pass
    cf = _median_run(cf_runs) if cf_runs else None
    result = {"capture": capture if capture else f"synthetic ({messages} depth frames, {symbols} symbols, seed {seed})",
              "messages": ours["messages"],
              "ours": {k: ours[k] for k in ("msgs_per_s", "seconds", "cpu_us_per_msg", "main_thread_cpu_us_per_msg",
                                            "level_changes_per_s", "stages_us", "python", "book")},
              "cryptofeed": None, "cryptofeed_skipped": skipped, "ratio": None, "ratio_cpu": None}
    if repeat > 1:
        result["ours"]["runs_msgs_per_s"] = [r["msgs_per_s"] for r in our_runs]
        result["ours"]["runs_cpu_us_per_msg"] = [r["cpu_us_per_msg"] for r in our_runs]
    if cf is not None:
        result["cryptofeed"] = {k: v for k, v in cf.items() if k != "books"}
        if repeat > 1:
            result["cryptofeed"]["runs_msgs_per_s"] = [r["msgs_per_s"] for r in cf_runs]
            result["cryptofeed"]["runs_cpu_us_per_msg"] = [r["cpu_us_per_msg"] for r in cf_runs]
        if cf.get("msgs_per_s"):
            result["ratio"] = round(ours["msgs_per_s"] / cf["msgs_per_s"], 2)
        if ours["cpu_us_per_msg"]:
            result["ratio_cpu"] = round(cf["cpu_us_per_msg"] / ours["cpu_us_per_msg"], 2)
        result["books_agree"] = books_agree(our_books, cf.get("books", {}))
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"capture: {result['capture']}, {result['messages']:,} messages")
    o = result["ours"]
    click.echo(f"  ours (bench ingest, Python {o['python']}, book {o['book']}): {o['msgs_per_s']:,} msgs/s, "
               f"{o['cpu_us_per_msg']} us CPU/msg ({o['main_thread_cpu_us_per_msg']} in the main thread; "
               f"the rest is ZeroMQ's I/O thread)")
    if cf is None:
        click.echo(f"  cryptofeed: skipped: {skipped}")
        return
    c = result["cryptofeed"]
    click.echo(f"  cryptofeed {c['cryptofeed']} (Python {c['python']}): {c['msgs_per_s']:,} msgs/s, "
               f"{c['cpu_us_per_msg']} us CPU/msg")
    click.echo(f"  ratio ours/cryptofeed: {result['ratio']}x by rate, {result['ratio_cpu']}x by CPU per message "
               f"(cryptofeed keeps its book and calls a no-op callback; ours also writes shm and publishes)")
    agree = result["books_agree"]
    click.echo(f"  same best bid/ask at the end: {sum(agree.values())}/{len(agree)} symbols")
