"""Preemption: a run asked to stop (SLURM's warning signal, a cancel) stops at its next safe point.

A cluster preempts or times out a job by signalling it; killing the run at once would throw away
the stage in flight. Instead `handling()` turns SIGUSR1 (the warning SLURM sends
`--signal=B:USR1@<secs>` before the time limit, forwarded by the sweep's batch script) and SIGTERM
into a stop flag, and the loop calls `check()` at its safe points (before each stage, between
rounds; the trainer at a checkpoint). There `Preempted` ends the run with every finished stage
committed, the CLI exits with `PREEMPTED_EXIT`, and the batch script requeues the task, whose
resume redoes nothing that was done. A second SIGTERM means "now": the default action runs.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger("mbt_online")

# The exit status of a run stopped on request (the sweep's batch script requeues on it; 2 is a
# usage or config error, 1 a failed stage, an outage or a crash: `cli.common.EXIT_CODES`).
PREEMPTED_EXIT = 3
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

_requested: list[str] = []  # names of the signals received, in order


class Preempted(Exception):  # noqa: N818 - the run was preempted; not an error of the run
    """The run stopped at a safe point because it was asked to (its finished stages are kept)."""

    def __init__(self, where: str, signal_name: str) -> None:
        self.where, self.signal_name = where, signal_name
        super().__init__(f"stopped on {signal_name} before {where}; resume to continue")


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


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if signum == signal.SIGTERM and signal.Signals.SIGTERM.name in _requested:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the second TERM: die as asked
        signal.raise_signal(signal.SIGTERM)
        return
    log.warning("received %s: the run stops at its next safe point", name)
    request(name)


@contextmanager
def handling() -> Iterator[None]:
    """Stop signals set the flag for the block (main thread only); the old handlers after."""
    reset()
    old = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        reset()
