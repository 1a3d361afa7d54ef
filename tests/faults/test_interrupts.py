"""Ctrl-C and SIGTERM, through the real command line in a process of its own: at every stage (and
before the loop starts) the run stops within seconds, exits 130 (SIGINT) or 3 (SIGTERM) with one
line saying where it stopped and how to resume, leaves no process behind (stand-in `vllm serve`
servers, a staged TRAIN child and the rank it started), and `--resume` ends as an uninterrupted
run ends. A second Ctrl-C while the clean-up hangs, or a clean-up past its grace, stops at once,
still without a half-written stage.

The run is fake_cli.py's (the fake drivers), hanging at the point named in its environment as a
long stage would; the signal is a real one, sent to that process alone (as `kill` or a cluster
sends it; a terminal's Ctrl-C reaches its children too, which only helps).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import artifacts, tiny_config

from faults.harness import run_dir_of
from mbt_online import preemption
from mbt_online.config import dump_config

FAKE_CLI = Path(__file__).with_name("fake_cli.py")
BOUND_S = 6.0  # from the signal to the exit


def gone(pid: int) -> bool:
    """No such process, or only its zombie (reparented, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


def wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, f"exited {proc.returncode} before {path.name}"
        assert time.monotonic() < deadline, f"never reached {path.name}"
        time.sleep(0.02)


class Cli:
    """fake_cli.py runs in `tmp_path`: a config file of the tiny run, marks and output files."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.cfg = tiny_config(tmp_path / "runs")
        self.run_dir = run_dir_of(self.cfg)
        self.config = tmp_path / "tiny.yaml"
        dump_config(self.cfg, self.config)
        self.marks = tmp_path / "marks"
        self.marks.mkdir()
        self.n = 0

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        self.n += 1
        self.err = self.tmp / f"stderr-{self.n}"
        full = {**os.environ, "COLUMNS": "2000", "MBT_FAULT_MARKS": str(self.marks), **env}
        with open(self.tmp / f"stdout-{self.n}", "w") as out, open(self.err, "w") as err:
            return subprocess.Popen(
                [sys.executable, str(FAKE_CLI), *args], env=full, stdout=out, stderr=err
            )

    def train(self, **env: str) -> subprocess.Popen:
        return self.start("train", "--config", str(self.config), **env)

    def resume(self) -> subprocess.Popen:
        return self.start("train", "--resume", str(self.run_dir))

    def stderr_lines(self) -> list[str]:
        return [line for line in self.err.read_text().splitlines() if line.strip()]


def stop_line(cli: Cli) -> str:
    """The one line a stopped run prints, which is the last: no traceback before it either."""
    lines = cli.stderr_lines()
    said = [line for line in lines if "interrupted:" in line]
    assert len(said) == 1 and lines[-1] == said[0], "\n".join(lines[-15:])
    assert not any(line.startswith("Traceback") for line in lines), "\n".join(lines[-30:])
    return said[0]


def resumed_to_the_end(cli: Cli, reference: dict, new: bool = False) -> None:
    proc = cli.train() if new else cli.resume()
    assert proc.wait(timeout=120) == 0, cli.err.read_text()[-3000:]
    assert artifacts(cli.run_dir) == reference


SERVE, STAGED = {"MBT_FAULT_SERVE": "1"}, {"MBT_FAULT_STAGED": "1"}
# case -> (where the run hangs, the signal, what else runs, where the line says it stopped)
CASES = {
    "setup-TERM": ("setup", signal.SIGTERM, {}, "before the run started"),
    "rollout-INT-served": ("rollout", signal.SIGINT, SERVE, "in round 1, stage rollout"),
    "teach-TERM": ("teach", signal.SIGTERM, {}, "in round 1, stage teach"),
    "train-INT-staged": ("train", signal.SIGINT, STAGED, "in round 1, stage train"),
    "eval-TERM-served": ("eval", signal.SIGTERM, SERVE, "in round 1, stage eval"),
}


def started(cli: Cli, env: dict) -> list[int]:
    """The processes the run started that must not outlive it: the stand-in server's leader (its
    child is the leader's descendant), the TRAIN child and its rank."""
    pids = []
    if env.get("MBT_FAULT_SERVE"):
        pids.append(int((cli.marks / "serve-pid").read_text()))
    if env.get("MBT_FAULT_STAGED"):
        pids += [int(p) for p in (cli.marks / "train-pids").read_text().split()]
    return pids


@pytest.mark.parametrize("case", list(CASES))
def test_a_signal_at_any_stage_stops_the_run_within_seconds_with_one_line(
    case, reference, tmp_path
):
    point, sig, env, where = CASES[case]
    cli = Cli(tmp_path)
    proc = cli.train(MBT_FAULT_HANG=point, **env)
    try:
        hung = cli.marks / ("train-pids" if env.get("MBT_FAULT_STAGED") else f"hung-{point}")
        wait_for(hung, proc)
        below = preemption.descendants(proc.pid) + started(cli, env)
        assert bool(below) == bool(env), below
        sent = time.monotonic()
        os.kill(proc.pid, sig)
        code = proc.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert code == (130 if sig == signal.SIGINT else 3), cli.err.read_text()[-3000:]
    assert took < BOUND_S, f"{took:.1f} s from the signal to the exit"
    line = stop_line(cli)
    assert f"stopped on {sig.name} {where}" in line
    time.sleep(0.2)  # a killed group's last member, reaped
    assert [p for p in below if not gone(p)] == [], "a process outlived the run"
    if point == "setup":
        assert "run the same command again" in line
        assert not (cli.run_dir / "state.json").exists()
        resumed_to_the_end(cli, reference, new=True)
        return
    assert f"resume with `mbt-online train --resume {cli.run_dir}`" in line
    assert line in (cli.run_dir / "run.log").read_text()
    resumed_to_the_end(cli, reference)


@pytest.mark.parametrize("second", [True, False], ids=["second-ctrl-c", "grace-passed"])
def test_a_stuck_clean_up_is_cut_short_by_a_second_ctrl_c_or_the_grace(second, reference, tmp_path):
    """The generator's close hangs (a shutdown that never ends): a second SIGINT, or the grace
    (MBT_STOP_GRACE_S) passing, ends the process at once, its servers SIGKILLed."""
    cli = Cli(tmp_path)
    env = {"MBT_FAULT_SERVE": "1", "MBT_FAULT_STUCK_CLOSE": "1", "MBT_STOP_GRACE_S": "2"}
    if second:
        env["MBT_STOP_GRACE_S"] = "60"
    proc = cli.train(MBT_FAULT_HANG="teach", **env)
    try:
        wait_for(cli.marks / "hung-teach", proc)
        below = preemption.descendants(proc.pid)
        os.kill(proc.pid, signal.SIGINT)
        wait_for(cli.marks / "hung-close", proc, timeout_s=10)
        sent = time.monotonic()
        if second:
            os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert code == 130, cli.err.read_text()[-3000:]
    assert took < (2.0 if second else 4.0), f"{took:.1f} s"
    why = "a second SIGINT" if second else "clean-up past 2 s"
    line = stop_line(cli)
    assert "stopped on SIGINT in round 1, stage teach" in line and f"at once ({why})" in line
    assert len(below) >= 2 and [p for p in below if not gone(p)] == []
    resumed_to_the_end(cli, reference)
