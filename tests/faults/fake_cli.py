"""`mbt-online` with the fake drivers of tests/fakes.py (a script the fault tests run, not a test):
the real command line, lock, checks and loop in a process of its own, with nothing heavier than
the fakes behind them.

`MBT_FAULT_GATE=<folder>` makes a process that got the run's lock say so (`<folder>/locked-<pid>`)
and wait, lock held, until `<folder>/go` exists, so a test can run a second writer against it (a
new run waits before it creates anything, a resume before it checks the run).

`MBT_FAULT_HANG=<point>` makes the process hang at a point, as a long stage does, saying so with
`<MBT_FAULT_MARKS>/hung-<point>`, so a test can signal it there: `setup` (resolving the student,
before the run directory exists), `rollout`, `teach`, `train` or `eval` (round 1's). With
`MBT_FAULT_SERVE=1` the generator also runs stand-in `vllm serve` processes (tests/support/
stand_in_serve.py: a leader and its child), with `MBT_FAULT_STAGED=1` TRAIN is a real
`StagedTrainer` whose child (a stand-in for `accelerate launch`) starts a rank of its own and
hangs, writing both PIDs to `<marks>/train-pids`; `MBT_FAULT_STUCK_CLOSE=1` makes the
generator's close hang (a shutdown that never ends). `MBT_FAULT_NO_FLOCK=1`: `flock` fails with
ENOLCK, as on a file system without it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))  # the fakes

import fakes  # noqa: E402
from fakes import Fakes  # noqa: E402

from mbt_online import loop  # noqa: E402
from mbt_online.cli import main  # noqa: E402

GATE_ENV = "MBT_FAULT_GATE"
SUPPORT = Path(__file__).resolve().parents[1] / "support"
STAGED_CHILD = """
import os, subprocess, sys, time
rank = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.path.join(sys.argv[1], "train-pids.tmp"), "w") as f:
    f.write(f"{os.getpid()} {rank.pid}")
os.rename(os.path.join(sys.argv[1], "train-pids.tmp"), os.path.join(sys.argv[1], "train-pids"))
time.sleep(600)
"""


def with_fakes(real):
    def train(cfg, run_dir=None, resume=False, **kw):
        drivers = lambda cfg, run_dir: Fakes(cfg).drivers(cfg, run_dir)  # noqa: E731
        staged = os.environ.get("MBT_FAULT_STAGED")
        kw["drivers"] = staged_trainer(drivers) if staged else drivers
        return real(cfg, run_dir, resume, **kw)

    return train


def gated(real, gate: Path):
    """`open_run`, called with the lock held: announce it, then wait at the gate."""

    def open_run(run_dir, *args, **kw):
        (gate / f"locked-{os.getpid()}").touch()
        deadline = time.monotonic() + 60
        while not (gate / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return real(run_dir, *args, **kw)

    return open_run


def hang(point: str) -> None:
    (Path(os.environ["MBT_FAULT_MARKS"]) / f"hung-{point}").touch()
    time.sleep(600)


def hang_in(name: str, nth: int, point: str) -> None:
    """`loop.<name>` hangs at its nth call."""
    real, calls = getattr(loop, name), [0]

    def hanging(*args, **kw):
        calls[0] += 1
        if calls[0] == nth:
            hang(point)
        return real(*args, **kw)

    setattr(loop, name, hanging)


def install_hang(point: str) -> None:
    if point == "setup":
        loop._check_models = lambda cfg: hang("setup")
    elif point in ("rollout", "teach"):
        hang_in({"rollout": "generate_rows", "teach": "teach_rows"}[point], 1, point)
    elif point == "eval":
        hang_in("evaluate_rows", 2, "eval")  # round 0's, then round 1's
    elif point == "train" and not os.environ.get("MBT_FAULT_STAGED"):
        fakes.FakeTrainer.train = lambda self, job: hang("train")


class ServedGenerator(fakes.FakeGenerator):
    """The fake generator, running stand-in `vllm serve` processes while it lives."""

    def __init__(self, *args, **kw):
        from mbt_online.generation import vllm_servers as servers

        super().__init__(*args, **kw)
        env = {"PYTHONPATH": os.pathsep.join([str(SUPPORT), *sys.path])}
        spec = servers.ServeSpec(flags=[], env=env, module="stand_in_serve")
        marks = Path(os.environ["MBT_FAULT_MARKS"])
        self.servers = servers.start_servers(spec, "fake-student", marks / "serve", 0)
        (marks / "serve-pid").write_text(str(self.servers.proc.pid))

    def close(self):
        super().close()
        if os.environ.get("MBT_FAULT_STUCK_CLOSE"):
            hang("close")
        self.servers.stop()


def staged_trainer(real_drivers):
    """TRAIN as a real `StagedTrainer` whose child is the STAGED_CHILD stand-in."""
    from mbt_online.training import staged

    marks = os.environ["MBT_FAULT_MARKS"]
    staged.trainer_command = lambda cfg, job_file, world: [
        sys.executable,
        "-c",
        STAGED_CHILD,
        marks,
    ]

    def drivers(cfg, run_dir):
        d = real_drivers(cfg, run_dir)
        d.make_trainer = lambda: staged.StagedTrainer(cfg, run_dir)
        return d

    return drivers


def no_flock(fd, op):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))


def quick_datasets() -> None:
    """As the suite's fixture of that name: stage folders without hashing every row."""
    import datasets
    from datasets.fingerprint import generate_random_fingerprint

    datasets.arrow_dataset.generate_fingerprint = lambda _: generate_random_fingerprint()
    datasets.disable_progress_bars()


if __name__ == "__main__":
    quick_datasets()
    loop.train = with_fakes(loop.train)
    if os.environ.get(GATE_ENV):
        loop.open_run = gated(loop.open_run, Path(os.environ[GATE_ENV]))
        loop.prepare_run_dir = gated(loop.prepare_run_dir, Path(os.environ[GATE_ENV]))
    if os.environ.get("MBT_FAULT_HANG"):
        install_hang(os.environ["MBT_FAULT_HANG"])
    if os.environ.get("MBT_FAULT_SERVE"):
        fakes.FakeGenerator = ServedGenerator
    if os.environ.get("MBT_FAULT_NO_FLOCK"):
        fcntl.flock = no_flock
    main()
