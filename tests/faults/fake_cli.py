"""`mbt-online` with the fake drivers of tests/fakes.py (a script the fault tests run, not a test):
the real command line, lock, checks and loop in a process of its own, with nothing heavier than
the fakes behind them.

`MBT_FAULT_GATE=<folder>` makes a process that got the run's lock say so (`<folder>/locked-<pid>`)
and wait, lock held, until `<folder>/go` exists, so a test can run a second writer against it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))  # the fakes

from fakes import Fakes  # noqa: E402

from mbt_online import loop  # noqa: E402
from mbt_online.cli import main  # noqa: E402

GATE_ENV = "MBT_FAULT_GATE"


def with_fakes(real):
    def train(cfg, run_dir=None, resume=False, **kw):
        kw["drivers"] = lambda cfg, run_dir: Fakes(cfg).drivers(cfg, run_dir)
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


if __name__ == "__main__":
    loop.train = with_fakes(loop.train)
    if os.environ.get(GATE_ENV):
        loop.open_run = gated(loop.open_run, Path(os.environ[GATE_ENV]))
    main()
