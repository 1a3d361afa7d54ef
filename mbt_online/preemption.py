"""Stopping on request: SLURM's warning at the next safe point, Ctrl-C and SIGTERM within seconds.

Three signals stop a run (`handling()`, around `train`, `sweep` and `sweep-member`):

- SIGUSR1 (the warning SLURM sends `--signal=B:USR1@<secs>` before the time limit, which the
  sweep's batch script also forwards for a SIGTERM) sets a flag; the loop calls `check()` at its
  safe points (before each stage's work, between rounds; the trainer at a checkpoint), so the stage
  in flight finishes and is committed, then `Preempted` ends the run (`PREEMPTED_EXIT`, requeued).
- SIGINT (Ctrl-C) and SIGTERM stop the stage in flight: the handler raises `Interrupted` in the
  main thread at once, wherever it is (before the loop starts too: config load, data, model
  resolution). Nothing is half-written by that: every stage commits atomically (a temp folder
  renamed into place, then marked in `state.json`), so a stage cut short is simply not there and
  `--resume` runs it again, as after a SIGKILL. The `finally` blocks on the way out stop what the
  run started (the generator's engine or `vllm serve` processes, a staged TRAIN child: each in
  its own session, stopped as a group), and the CLI prints one line saying where the run stopped
  and how to resume, exiting `INTERRUPTED_EXIT` (130) for SIGINT, `PREEMPTED_EXIT` for SIGTERM.
- A second SIGINT or SIGTERM, or a clean-up still running `grace_s()` seconds after the first,
  stops at once (`hard_stop`): every descendant process is SIGKILLed, the same line printed, and
  the process exits with the same code without running anything else. A watcher thread notices
  the signal through `signal.set_wakeup_fd`, so this works while the main thread is blocked in C.

`writing(run_dir)` (held by `rundir.lock.run_lock`) tells the messages which run is in flight.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

log = logging.getLogger("mbt_online")

# The exit status of a run stopped on request (the sweep's batch script requeues on it; 2 is a
# usage or config error, 1 a failed stage, an outage or a crash: `cli.common.EXIT_CODES`).
PREEMPTED_EXIT = 3
INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for Ctrl-C: not requeued
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
AT_ONCE = (signal.SIGINT, signal.SIGTERM)  # stop the stage in flight, not at the next safe point
GRACE_ENV = "MBT_STOP_GRACE_S"  # seconds the clean-up after a first SIGINT / SIGTERM may take
GRACE_S = 10.0
STOP_WAIT_S = 3.0  # how long a child group gets for SIGTERM while a stop is acted on
TRAIN_RESUME = "resume with `mbt-online train --resume {run}`"

_requested: list[str] = []  # names of the signals received, in order
_interrupts: list[str] = []  # the SIGINT / SIGTERM among them
# the run directories this process writes now (innermost last), each with how to say where in it
_runs: list[tuple[Path, Callable[[Path], str]]] = []
_how: list[str] = [TRAIN_RESUME]  # how to resume, as `handling` was told
_deadline: list[float] = []  # when a clean-up after a first interrupt is cut short
_entered: list[Path] = []  # the runs `handling`'s block has written (a sweep's members)
_hard = threading.Lock()


class Preempted(Exception):  # noqa: N818 - the run was preempted; not an error of the run
    """The run stopped at a safe point because it was asked to (its finished stages are kept)."""

    def __init__(self, where: str, signal_name: str) -> None:
        self.where, self.signal_name = where, signal_name
        self.run_dir: Path | None = None  # the run it stopped (set by `writing`)
        self.how = ""  # how to resume it, as `handling` was told (set by `writing`)
        super().__init__(f"stopped on {signal_name} before {where}; resume to continue")


class Interrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt: no `except Exception`
    """SIGINT or SIGTERM stopped the run where it was: the stage in flight is not committed."""

    def __init__(self, signal_name: str) -> None:
        self.signal_name = signal_name
        self.run_dir: Path | None = None  # the run it stopped and where in it (set by `writing`)
        self.where = self.how = ""
        super().__init__(f"stopped on {signal_name}")


def exit_code(signal_name: str) -> int:
    return INTERRUPTED_EXIT if signal_name == "SIGINT" else PREEMPTED_EXIT


def requested() -> str | None:
    """The first stop signal received since `handling()` began (None when none)."""
    return _requested[0] if _requested else None


def check(where: str) -> None:
    """A safe point: raise `Preempted` when a stop was requested. `where` names what comes next."""
    name = requested()
    if name is not None:
        log.warning("preempted (%s): stopping before %s; every finished stage is kept", name, where)
        raise Preempted(where, name)


def request(signal_name: str = "SIGUSR1") -> None:
    """Ask for a stop without a signal (what the handler does; tests and embedders call it)."""
    _requested.append(signal_name)


def reset() -> None:
    _requested.clear()
    _interrupts.clear()
    _deadline.clear()


def grace_s() -> float:
    try:
        return float(os.environ.get(GRACE_ENV, GRACE_S))
    except ValueError:
        return GRACE_S


def stopping() -> bool:
    """Whether a SIGINT / SIGTERM is being acted on: clean-up should not wait long."""
    return bool(_interrupts)


# ---------------------------------------------------------------------------------------------
# what the line says


def stop_line(e: Preempted | Interrupted, at_once: str = "") -> str:
    """The one line the CLI prints for a stopped run: the signal, where, how to resume."""
    if isinstance(e, Preempted):
        head = f"preempted: stopped on {e.signal_name} before {e.where} (finished stages kept)"
    else:
        before = "before the run started (nothing was written)"
        where = e.where or ("between runs (none was being written)" if _entered else before)
        head = f"interrupted: stopped on {e.signal_name} {where}"
        head += f", at once ({at_once})" if at_once else ""
    if e.run_dir is None:
        return f"{head}; run the same command again"
    how = (e.how or _how[-1]).format(run=e.run_dir)
    return f"{head}: {how}"


@contextlib.contextmanager
def writing(run_dir: Path, where: Callable[[Path], str] = str) -> Iterator[None]:
    """The block writes `run_dir`: a stop that passes through names it and `where(run_dir)` (the
    round and stage it stopped in), and run.log records it."""
    _runs.append((Path(run_dir), where))
    _entered.append(Path(run_dir))
    try:
        yield
    except (Preempted, Interrupted) as e:
        if e.run_dir is None:
            _locate(e, Path(run_dir), where)
            _note(Path(run_dir), stop_line(e))
        raise
    finally:
        _runs.pop()


def _locate(e: Preempted | Interrupted, run_dir: Path, where: Callable[[Path], str]) -> None:
    e.run_dir, e.how = run_dir, _how[-1]
    if isinstance(e, Interrupted):
        try:
            e.where = where(run_dir)
        except Exception:  # noqa: BLE001 - the line must come out whatever the run holds
            e.where = f"in {run_dir}"


def _note(run_dir: Path, line: str) -> None:
    try:
        with open(run_dir / "run.log", "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} WARNING {line}\n")
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# the handlers


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if signum not in AT_ONCE:
        log.warning("received %s: the run stops at its next safe point", name)
        request(name)
        return
    if _interrupts:  # the second: now
        hard_stop(_interrupts[0], f"a second {name}")
    _interrupts.append(name)
    request(name)
    if not _deadline:
        _deadline.append(time.monotonic() + grace_s())
    raise Interrupted(name)


def hard_stop(signal_name: str, why: str) -> None:
    """Stop now: every descendant process SIGKILLed, the line written, exit without clean-up.
    Stages commit atomically, so what is on disk is what a SIGKILL would have left."""
    if not _hard.acquire(blocking=False):  # the watcher and the handler both got here
        time.sleep(3600)
    kill_descendants()
    e = Interrupted(signal_name)
    try:
        if _runs:
            _locate(e, *_runs[-1])
        line = stop_line(e, at_once=why)
        if e.run_dir is not None:
            _note(e.run_dir, line)
        os.write(2, f"\n{line}\n".encode(errors="replace"))
    finally:
        os._exit(exit_code(signal_name))


def kill_descendants() -> None:
    """SIGKILL every process below this one (twice: one forked meanwhile goes too)."""
    for _ in range(2):
        for pid in descendants(os.getpid()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def descendants(root: int) -> list[int]:
    """The processes below `root`, from /proc (Linux; none elsewhere)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            out.append(pid)
            todo.append(pid)
    return out


class _Watcher:
    """A thread that sees each signal through the wakeup fd (even while the main thread is stuck
    in C): the second SIGINT / SIGTERM, or a clean-up past its grace, stops the process at once."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)
        self.seen: list[int] = []
        threading.Thread(target=self._run, name="mbt-stop-watcher", daemon=True).start()

    def _run(self) -> None:
        while True:
            timeout = max(0.0, _deadline[0] - time.monotonic()) if _deadline else None
            ready, _, _ = select.select([self.read_fd], [], [], timeout)
            if not ready:
                if _deadline and time.monotonic() >= _deadline[0] and _interrupts:
                    hard_stop(_interrupts[0], f"clean-up past {grace_s():g} s")
                continue
            for signum in os.read(self.read_fd, 64):
                if signum in AT_ONCE:
                    self.seen.append(signum)
                    if len(self.seen) >= 2:
                        name = signal.Signals(signum).name
                        hard_stop(signal.Signals(self.seen[0]).name, f"a second {name}")
                    if not _deadline:
                        _deadline.append(time.monotonic() + grace_s())


_watchers: list[_Watcher] = []


def _watcher() -> _Watcher:
    """This process's watcher (a forked child starts its own: threads and pipes stay behind)."""
    if not _watchers or _watchers[-1].pid != os.getpid():
        _watchers.append(_Watcher())
    return _watchers[-1]


@contextlib.contextmanager
def handling(resume: str = TRAIN_RESUME) -> Iterator[None]:
    """Stop signals act as above for the block (main thread only); the old handlers after.
    `resume` says how to resume (`{run}`: the run directory), for the line a stop prints."""
    reset()
    _entered.clear()
    watcher = _watcher()
    watcher.seen.clear()
    old = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
    old_fd = signal.set_wakeup_fd(watcher.write_fd, warn_on_full_buffer=False)
    _how.append(resume)
    try:
        yield
    finally:
        _how.pop()
        signal.set_wakeup_fd(old_fd)
        for s, handler in old.items():
            signal.signal(s, handler)
        interrupted = bool(_interrupts)
        _requested.clear()
        if not interrupted:  # after an interrupt the grace stays armed until the process exits
            reset()


def stop_group(proc: subprocess.Popen, wait_s: float = 30.0) -> None:
    """End `proc` (started in its own session) and every process of its group; safe to call
    twice. SIGTERM first, SIGKILL to whatever is left after `wait_s` (a few seconds while a stop
    is being acted on), the leader's exit included: a child that outlived it goes too."""
    if stopping():
        wait_s = min(wait_s, STOP_WAIT_S)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not group_alive(proc):
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while group_alive(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
    proc.wait()


def group_alive(proc: subprocess.Popen) -> bool:
    """Whether any process of `proc`'s group is still there (the leader reaped first, so that
    its zombie does not count)."""
    proc.poll()
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent() -> None:
    """In a child, before exec: SIGTERM it when this process dies, however it dies (a SIGKILL
    runs no clean-up). A child in its own session gets no signal from the terminal otherwise, and
    would keep its devices and port. Linux only (prctl)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
