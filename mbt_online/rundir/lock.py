"""One writer per run: an exclusive lock on `RUN/.lock` for as long as a process writes the run.

`train` (new and resumed), `judge` and `eval --save` hold it for the whole process, so two
processes can never interleave stage outputs, `state.json` or `metrics.jsonl` (read-modify-write).
The lock is `flock` on the file, which the kernel releases when its holder dies, however it dies:
a SIGKILLed run never blocks the next one and there is no stale lock to clean up. The holder
writes its PID into the file, so a second process can say who holds the run.

Some file systems (NFS and Lustre mounts without lock support) refuse `flock` (ENOLCK,
EOPNOTSUPP). There the lock falls back to a lock file created exclusively (`O_CREAT|O_EXCL`,
atomic on NFSv3 and later), `RUN/.lock.excl`, holding the holder's PID and host and removed on
release; it says so once per process. No kernel drops that file for a dead holder: a process that
finds it takes it over when it names a PID of this host that is gone, and otherwise refuses,
naming the holder (on another host it cannot tell: the message says which file to remove).

Within one process the lock is re-entrant (`train --resume --rounds N` extends the run, then
trains it, under one hold).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from mbt_online import preemption
from mbt_online.config import ConfigError
from mbt_online.rundir.atomic import pid_alive
from mbt_online.rundir.position import where_stopped

LOCK_FILE = ".lock"
EXCL_FILE = ".lock.excl"  # the fallback where flock is refused: "<pid> <host>"
NO_FLOCK = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})

log = logging.getLogger("mbt_online")
_held: dict[str, list] = {}  # real path of the run directory -> [(kind, fd or path), depth]
_guard = threading.Lock()
_said: list[str] = []  # the fallback is announced once per process


class RunLockedError(ConfigError):
    """Another live process holds the run directory."""

    def __init__(
        self, run_dir: Path, pid: int | None, host: str | None = None, path: Path | None = None
    ) -> None:
        self.run_dir, self.pid, self.host = run_dir, pid, host
        who = f"process {pid}" if pid else "another process"
        if host and host != socket.gethostname():
            who += f" on {host}"
        gone = f"; if it is gone, remove {path}" if path and host != socket.gethostname() else ""
        super().__init__(
            f"run directory {run_dir} is in use by {who} (one writer per run): wait for it to "
            f"finish or stop it, then try again{gone}"
        )


@contextlib.contextmanager
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
        with preemption.writing(Path(run_dir), where_stopped):  # a stop names the run, stage
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
        text = ""
    if text.isdigit():
        return int(text)
    owner = _owner(Path(run_dir) / EXCL_FILE)
    return owner[0] if owner else None


def is_held(run_dir: str | Path) -> bool:
    """Whether a live process holds the run's lock, asked without taking it (flock probed with a
    shared lock, never created; where flock is refused, the lock file and its holder)."""
    run_dir = Path(run_dir)
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        fd = None
    if fd is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False  # closing drops the probe's own lock at once
        except BlockingIOError:
            return True
        except OSError as e:
            if e.errno not in NO_FLOCK:
                return False
        finally:
            os.close(fd)
    owner = _owner(run_dir / EXCL_FILE)
    return owner is not None and not _stale(owner)


def _acquire(run_dir: Path) -> tuple[str, int | Path]:
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ConfigError(f"run directory {run_dir}: cannot open its lock ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLockedError(run_dir, _wait_for_holder(run_dir)) from None
    except OSError as e:
        os.close(fd)
        if e.errno not in NO_FLOCK:
            raise ConfigError(f"run directory {run_dir}: cannot lock it ({e.strerror})") from None
        _say_once(run_dir, e)
        return "file", _acquire_file(run_dir)
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return "flock", fd


def _say_once(run_dir: Path, e: OSError) -> None:
    if not _said:
        _said.append(str(run_dir))
        log.warning(
            "run lock: %s is on a file system without flock (%s): using an exclusive lock file "
            "(%s, holding PID and host) instead",
            run_dir,
            e.strerror or errno.errorcode.get(e.errno or 0, "?"),
            EXCL_FILE,
        )


def _me() -> str:
    return f"{os.getpid()} {socket.gethostname()}\n"


def _acquire_file(run_dir: Path) -> Path:
    """The fallback: `EXCL_FILE` created exclusively with this PID and host; a stale one (a PID
    of this host that is gone, or a file left empty by a holder killed while writing it) is taken
    over."""
    path = run_dir / EXCL_FILE
    for _ in range(5):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            text = _read(path, wait_s=1.0)
            if text is None:
                continue  # released meanwhile: try again
            owner = _parse(text)
            if owner is None or _stale(owner):
                _break(path, text)
                continue
            raise RunLockedError(run_dir, owner[0], owner[1], path) from None
        except OSError as e:
            raise ConfigError(f"run directory {run_dir}: cannot lock it ({e.strerror})") from None
        try:
            os.write(fd, _me().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return path
    raise RunLockedError(run_dir, holder_pid(run_dir), None, path)


def _read(path: Path, wait_s: float = 0.0) -> str | None:
    """The lock file's text (None when there is no file), waiting up to `wait_s` for a holder
    that created it to write its PID."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError:
            text = ""
        if text.strip() or time.monotonic() >= deadline:
            return text
        time.sleep(0.02)


def _parse(text: str) -> tuple[int, str] | None:
    pid, _, host = text.strip().partition(" ")
    return (int(pid), host) if pid.isdigit() and host else None


def _owner(path: Path) -> tuple[int, str] | None:
    text = _read(path)
    return _parse(text) if text else None


def _stale(owner: tuple[int, str]) -> bool:
    pid, host = owner
    return host == socket.gethostname() and not pid_alive(pid)


def _break(path: Path, seen: str) -> None:
    """Remove a stale lock file, but only the one judged stale: it is renamed aside first, and
    put back when another process replaced it in between."""
    aside = path.with_name(f"{EXCL_FILE}.stale-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    try:
        if aside.read_text() != seen:
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
    finally:
        aside.unlink(missing_ok=True)
    log.warning("run lock: took over %s, left by %s", path, seen.strip() or "a holder killed")


def _wait_for_holder(run_dir: Path, timeout_s: float = 1.0) -> int | None:
    """The holder's PID, waiting briefly for it: a holder writes its PID just after it takes the
    lock, and a process refused in between would otherwise say only 'another process'."""
    deadline = time.monotonic() + timeout_s
    while (pid := holder_pid(run_dir)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return pid


def _release(handle: tuple[str, int | Path]) -> None:
    kind, what = handle
    if kind == "file":
        path = Path(str(what))
        if _read(path) == _me():  # never another holder's file
            path.unlink(missing_ok=True)
        return
    fd = int(what)
    try:
        os.ftruncate(fd, 0)  # no stale PID for the next reader
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
