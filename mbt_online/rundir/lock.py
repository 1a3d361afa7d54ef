"""One writer per run: an exclusive lock on `RUN/.lock` for as long as a process writes the run.

`train` (new and resumed), `judge` and `eval --save` hold it for the whole process, so two
processes can never interleave stage outputs, `state.json` or `metrics.jsonl` (read-modify-write).
The lock is `flock` on the file, which the kernel releases when its holder dies, however it dies:
a SIGKILLed run never blocks the next one and there is no stale lock to clean up. The holder
writes its PID into the file, so a second process can say who holds the run.

Within one process the lock is re-entrant (`train --resume --rounds N` extends the run, then
trains it, under one hold).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mbt_online.config import ConfigError

LOCK_FILE = ".lock"

_held: dict[str, list[int]] = {}  # real path of the run directory -> [fd, depth]
_guard = threading.Lock()


class RunLockedError(ConfigError):
    """Another live process holds the run directory."""

    def __init__(self, run_dir: Path, pid: int | None) -> None:
        self.run_dir, self.pid = run_dir, pid
        who = f"process {pid}" if pid else "another process"
        super().__init__(
            f"run directory {run_dir} is in use by {who} (one writer per run): wait for it to "
            "finish or stop it, then try again"
        )


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the run's lock for the block; a `RunLockedError` naming the holder's PID at once
    when another process holds it. The run directory must exist."""
    key = os.path.realpath(run_dir)
    with _guard:
        if key in _held:
            _held[key][1] += 1
        else:
            _held[key] = [_acquire(Path(run_dir)), 1]
    try:
        yield
    finally:
        with _guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                _release(_held.pop(key)[0])


def holder_pid(run_dir: str | Path) -> int | None:
    """The PID written by the lock's last holder (None when there is none)."""
    try:
        text = (Path(run_dir) / LOCK_FILE).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _acquire(run_dir: Path) -> int:
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ConfigError(f"run directory {run_dir}: cannot open its lock ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLockedError(run_dir, _wait_for_holder(run_dir)) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _wait_for_holder(run_dir: Path, timeout_s: float = 1.0) -> int | None:
    """The holder's PID, waiting briefly for it: a holder writes its PID just after it takes the
    lock, and a process refused in between would otherwise say only 'another process'."""
    deadline = time.monotonic() + timeout_s
    while (pid := holder_pid(run_dir)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return pid


def _release(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)  # no stale PID for the next reader
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
