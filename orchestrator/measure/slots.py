"""The machine-wide trainer slot: at most N trainers at once across every campaign of a state dir.

Each slot is a file lock (flock), so a holder that dies, even by SIGKILL, frees it at once.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class Stopped(Exception):
    """Raised while waiting for a slot when the campaign was asked to stop."""


def try_lock(path: Path):
    """An open, exclusively locked file, or None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def holder(path: Path) -> int | None:
    """The pid written by whoever holds the lock at `path`, if it is held (asking creates nothing)."""
    if not path.exists():
        return None
    f = try_lock(path)
    if f is not None:
        f.close()
        return None
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


@contextmanager
def trainer_slot(
    state_dir: Path,
    slots: int,
    should_stop: Callable[[], bool] = lambda: False,
    on_wait: Callable[[], None] = lambda: None,
) -> Iterator[int]:
    waited = False
    while True:
        for i in range(slots):
            f = try_lock(state_dir / "slots" / f"slot{i}.lock")
            if f is not None:
                try:
                    yield i
                finally:
                    f.close()
                return
        if should_stop():
            raise Stopped()
        if not waited:
            on_wait()
            waited = True
        time.sleep(0.5)
