"""Pid files in run_dir: how `pipeline status` finds the processes of a pipeline."""

from __future__ import annotations

import os
from pathlib import Path


class PidFile:
    """Write ``path`` with our pid on enter; remove it on exit if it is still ours."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self) -> "PidFile":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, self.path)
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.path.read_text().strip() == str(os.getpid()):
                self.path.unlink()
        except FileNotFoundError:
            pass


def read_pid(path: Path) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: object) -> bool:
    """True when ``pid`` is a running process (or one we may not signal)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
