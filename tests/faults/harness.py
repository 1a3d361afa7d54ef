"""The fault suite's machinery (a helper, not a test): run a piece of a run in a child process, and
the kill points a child can die at.

`in_child` forks: the child starts with everything the test process already imported (a fresh
interpreter costs more than the tiny run itself), runs one call and exits; a kill is a real
`SIGKILL` of that process, so nothing it had in memory, no `finally` and no lock survives it, as
with a killed cluster job. What the call returned (or raised) comes back as JSON.

A kill point is named in the child's environment (`MBT_FAULT_KILL`), `<where>:<stage>[@round]`
(round 1 unless given), and `install_kill_hook` arms it by wrapping the function the loop calls at
that point:
- `in:<stage>`: the stage's work is done in memory, nothing of it on disk (SFT rows written and
  DPO pairs not, for build; the model folder written and its metrics not, for train);
- `write:<stage>`: its output half-way to disk: the temp folder (a temp file, for train's
  metrics) filled, not yet renamed into place;
- `unmarked:<stage>`: its output in place, not marked done (for eval: after its metrics line);
- `saved:eval`: the eval rows in place, the round's metrics line not yet written;
- `marked:<stage>`: marked done, the next stage not started (a stage boundary);
- `finish`: every round done, `finished` not yet recorded.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

KILL_ENV = "MBT_FAULT_KILL"
STAGES = ("rollout", "score", "teach", "build", "train", "eval")


# ---------------------------------------------------------------------------------------------
# a call in a child process


@dataclass
class Child:
    """How a child process ended: its wait status, wall time, what it returned or raised, and
    what it printed."""

    pid: int
    status: int
    seconds: float
    result: dict[str, Any] = field(default_factory=dict)
    output: str = ""

    @property
    def killed(self) -> bool:
        return os.WIFSIGNALED(self.status) and os.WTERMSIG(self.status) == signal.SIGKILL

    @property
    def code(self) -> int | None:
        return os.WEXITSTATUS(self.status) if os.WIFEXITED(self.status) else None

    @property
    def value(self) -> Any:
        assert self.code == 0, f"child failed ({self.describe()}):\n{self.output[-3000:]}"
        return self.result["value"]

    @property
    def error(self) -> str:
        """The name of the exception the child's call raised ("" if none)."""
        return self.result.get("error", "")

    def describe(self) -> str:
        if os.WIFSIGNALED(self.status):
            return f"killed by signal {os.WTERMSIG(self.status)}"
        return f"exit {self.code}: {self.error} {self.result.get('message', '')}".strip()


def in_child(
    work: Callable[[], Any],
    tmp: Path,
    *,
    env: dict[str, str] | None = None,
    setup: Callable[[], None] | None = None,
    timeout_s: float = 60.0,
) -> Child:
    """Run `work()` in a forked child; `setup` first (a kill hook, a resource limit). The child's
    stdout and stderr go to a file read back into `Child.output`."""
    fd, result_path = tempfile.mkstemp(dir=tmp, prefix="child-", suffix=".json")
    os.close(fd)
    log_path = result_path.removesuffix(".json") + ".log"
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        _child_main(work, Path(result_path), Path(log_path), env or {}, setup)
    status = _wait(pid, timeout_s)
    seconds = time.monotonic() - start
    text = Path(result_path).read_text()
    return Child(pid, status, seconds, json.loads(text) if text else {}, Path(log_path).read_text())


def _child_main(
    work: Callable[[], Any],
    result_path: Path,
    log_path: Path,
    env: dict[str, str],
    setup: Callable[[], None] | None,
) -> NoReturn:
    code, trace = 70, ""
    try:
        out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        sys.stdout = sys.stderr = open(out, "w", buffering=1, closefd=False)  # noqa: SIM115
        for handler in logging.getLogger("mbt_online").handlers:  # the console ones, made here
            if type(handler) is logging.StreamHandler:
                handler.setStream(sys.stderr)
        os.environ.update(env)
        if setup is not None:
            setup()
        result: dict[str, Any] = {"value": work()}
        code = 0
    except BaseException as e:  # everything goes back to the test as data
        result = {"error": type(e).__name__, "message": str(e)[:1000]}
        code, trace = 3, traceback.format_exc()
    try:  # the result first, small: a child under a file size limit may write little more
        result_path.write_text(json.dumps(result, default=str))
        sys.stderr.write(trace)
        sys.stderr.flush()
    finally:
        os._exit(code)


def _wait(pid: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"child {pid} still running after {timeout_s} s")
        time.sleep(0.005)


# ---------------------------------------------------------------------------------------------
# a run with the fake drivers (what a child calls)


def run_dir_of(cfg: Any) -> Path:
    return Path(cfg.run.runs_dir) / cfg.run.name


def start_run(cfg: Any) -> list:
    """A new run with the fake drivers; the calls they saw."""
    from fakes import Fakes, run

    fakes = Fakes(cfg)
    run(cfg, fakes)
    return fakes.calls


def resume_run(cfg: Any) -> list:
    """`train --resume` of the run with the fake drivers (the run's own config.yaml, as the CLI
    does); the calls they saw."""
    from fakes import Fakes

    from mbt_online import loop

    fakes = Fakes(cfg)
    loop.train(None, run_dir_of(cfg), resume=True, drivers=fakes.drivers)
    return fakes.calls


# ---------------------------------------------------------------------------------------------
# kill points


def die() -> NoReturn:
    """SIGKILL this process: no cleanup, no flush, no exception to catch."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")  # pragma: no cover


def parse_point(point: str) -> tuple[str, str, int]:
    """`where:stage@round` as (where, stage, round); `finish` as ("finish", "", 0)."""
    if point == "finish":
        return "finish", "", 0
    where, _, rest = point.partition(":")
    stage, _, round_ = rest.partition("@")
    assert stage in STAGES, point
    return where, stage, int(round_ or 1)


def install_kill_hook() -> None:
    """Arm the kill point named in `MBT_FAULT_KILL` (in the child: it patches module state)."""
    point = os.environ.get(KILL_ENV, "")
    if point:
        where, stage, r = parse_point(point)
        _HOOKS[where](stage, r)


def _hook_mark(stage: str, r: int, after: bool) -> None:
    from mbt_online.rundir.state import RunState

    real = RunState.mark

    def mark(self: RunState, round_: int, stage_: str) -> None:
        hit = (round_, stage_) == (r, stage)
        if hit and not after:
            die()
        real(self, round_, stage_)
        if hit and after:
            die()

    RunState.mark = mark  # type: ignore[method-assign]


def _hook_finish(stage: str, r: int) -> None:
    from mbt_online.rundir.state import RunState

    real = RunState.save

    def save(self: RunState) -> None:
        if self.finished:
            die()
        real(self)

    RunState.save = save  # type: ignore[method-assign]


def _hook_write(stage: str, r: int) -> None:
    """Die with the stage's temp folder filled, before it is renamed into place."""
    from mbt_online import loop
    from mbt_online.rundir import stages

    if stage == "train":  # the train stage's own file is train_metrics.json
        _hook_write_train_metrics(r)
        return
    target = f"round-{r}/build/dpo" if stage == "build" else f"round-{r}/{stage}"
    real = stages.write_dir_atomic

    def write_dir_atomic(out: Path, write: Callable[[Path], Any]) -> Path:
        if str(out).endswith(target):
            return real(out, lambda tmp: (write(tmp), die()))
        return real(out, write)

    stages.write_dir_atomic = write_dir_atomic
    assert loop.save_rows is stages.save_rows  # the loop writes through the patched module


def _hook_write_train_metrics(r: int) -> None:
    from mbt_online import loop

    real = loop.write_json_atomic

    def write_json_atomic(path: Path, obj: Any, **kw: Any) -> Path:
        path = Path(path)
        if path.name == "train_metrics.json" and path.parent.parent.name == f"round-{r}":
            fd, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            text = json.dumps(obj)
            os.write(fd, text[: len(text) // 2].encode())  # half of it, as a kill leaves it
            die()
        return real(path, obj, **kw)

    loop.write_json_atomic = write_json_atomic


def _hook_in(stage: str, r: int) -> None:
    """Die once the stage's work is done in memory, before any of it reaches the disk."""
    from mbt_online import loop

    if stage == "build":  # SFT rows written, DPO pairs not
        real_save = loop.save_rows

        def save_rows(rows: list, out: Path) -> Path:
            if str(out).endswith(f"round-{r}/build/dpo"):
                die()
            return real_save(rows, out)

        loop.save_rows = save_rows
        return
    if stage == "train":  # the model folder written, its metrics and the mark not
        import fakes

        real_train = fakes.FakeTrainer.train

        def train(self: fakes.FakeTrainer, job: Any) -> Any:
            trained = real_train(self, job)
            if job.out_dir.parent.name == f"round-{r}":
                die()
            return trained

        fakes.FakeTrainer.train = train  # type: ignore[method-assign]
        return
    # the n-th call of the function the stage calls (eval also runs in round 0)
    name = {
        "rollout": "generate_rows",
        "score": "score_rows",
        "teach": "teach_rows",
        "eval": "evaluate_rows",
    }[stage]
    nth = r + 1 if stage == "eval" else r
    real, calls = getattr(loop, name), [0]

    def dying(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == nth:
            die()
        return out

    setattr(loop, name, dying)


def _hook_saved(stage: str, r: int) -> None:
    from mbt_online import loop

    assert stage == "eval"
    real = loop.write_round_metrics

    def write_round_metrics(run_dir: Path, metrics: dict) -> None:
        if metrics["round"] == r:
            die()
        real(run_dir, metrics)

    loop.write_round_metrics = write_round_metrics


_HOOKS: dict[str, Callable[[str, int], None]] = {
    "in": _hook_in,
    "write": _hook_write,
    "unmarked": lambda stage, r: _hook_mark(stage, r, after=False),
    "marked": lambda stage, r: _hook_mark(stage, r, after=True),
    "saved": _hook_saved,
    "finish": _hook_finish,
}
