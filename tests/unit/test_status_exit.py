"""`pipeline status` exit codes from its record (pipeline/app/status.py): 0 all well, 3 a book
not live, 4 something down; the table ends with the same verdict."""

from __future__ import annotations

import copy

from pipeline.app.status import EXIT_DOWN, EXIT_NOT_LIVE, EXIT_OK, exit_code, problems

HEALTHY = {
    "processes": [{"name": "ingest-sim", "state": "running"}, {"name": "publisher", "state": "running"}],
    "exchanges": [{"exchange": "sim", "state": "up"}],
    "feeds": [{"exchange": "sim", "symbol": "BTCUSDT", "state": "live"},
              {"exchange": "sim", "symbol": "ETHUSDT", "state": "removed"}],  # unsubscribed on purpose
}


def _with(**changes) -> dict:
    st = copy.deepcopy(HEALTHY)
    for path, value in changes.items():
        section, index, key = path.split("__")
        st[section][int(index)][key] = value
    return st


def test_all_running_and_live_is_0():
    assert exit_code(HEALTHY) == EXIT_OK == 0 and problems(HEALTHY) == ([], [])


def test_a_syncing_or_stale_book_is_3():
    for state in ("syncing", "stale"):
        st = _with(feeds__0__state=state)
        assert exit_code(st) == EXIT_NOT_LIVE == 3 and problems(st) == ([], [f"sim BTCUSDT {state}"])


def test_a_stopped_or_dead_process_or_a_missing_segment_is_4_even_with_books_not_live():
    st = _with(processes__1__state="stopped", feeds__0__state="stale")
    assert exit_code(st) == EXIT_DOWN == 4
    assert problems(st) == (["process publisher stopped"], ["sim BTCUSDT stale"])
    st = _with(processes__0__state="dead", exchanges__0__state="down", feeds__0__state="down")
    assert exit_code(st) == 4
    assert problems(st) == (["process ingest-sim dead", "exchange sim: no shared memory"], [])
