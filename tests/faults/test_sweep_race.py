"""Two processes on one sweep directory, through the real command line: two `mbt-online sweep`
commands, or a sweep beside a `train --resume` of one member. Each member runs once, in one
process (its run.log says `starting` once, `resuming` only where it was resumed); both processes
exit 0 with every member finished (metrics.jsonl holds each round once); and `sweep status` is
right throughout: a member a process holds is running, none is ever reported failed.

Each process that takes a member's lock waits at the gate (fake_cli.py's MBT_FAULT_GATE) until
the test opens it, so both hold a member at once, whatever the machine's speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from fakes import tiny_config

from mbt_online.config import dump_config
from mbt_online.rundir import read_metrics
from mbt_online.sweeps.status import sweep_status

FAKE_CLI = Path(__file__).with_name("fake_cli.py")
MEMBERS = ("a", "b")


def make_sweep(tmp_path: Path) -> tuple[Path, Path]:
    """A sweep of two members of the tiny run (another rollout seed for b); its directory."""
    dump_config(tiny_config(tmp_path / "unused"), tmp_path / "base.yaml")
    body = {
        "name": "race",
        "base": "base.yaml",
        "members": [{"name": "a"}, {"name": "b", "overrides": ["rollout.seed=5"]}],
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path, tmp_path / "out"


def cli(tmp_path: Path, name: str, *args: str, **env: str) -> subprocess.Popen:
    full = {**os.environ, "COLUMNS": "2000", "MBT_FAULT_MARKS": str(tmp_path), **env}
    with open(tmp_path / f"{name}.err", "w") as err:
        return subprocess.Popen(
            [sys.executable, str(FAKE_CLI), *args], env=full, stdout=subprocess.DEVNULL, stderr=err
        )


def status(out: Path) -> dict[str, str]:
    res = subprocess.run(
        [sys.executable, "-m", "mbt_online", "sweep", "status", str(out), "--json"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    return {m["name"]: m["state"] for m in json.loads(res.stdout)["members"]}


class Watch:
    """`sweep status` asked over and over while the processes run (in this process: the command
    is asked before and after): every answer it gave."""

    def __init__(self, out: Path) -> None:
        self.out, self.seen, self.done = out, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.2):
            states = sweep_status(self.out)["members"]  # what the command prints, asked here
            self.seen.append({m["name"]: m["state"] for m in states})

    def stop(self) -> list[dict[str, str]]:
        self.done.set()
        self.thread.join()
        return self.seen


def wait_gated(gate: Path, n: int, procs: list[subprocess.Popen], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while len(list(gate.glob("locked-*"))) < n:
        for p in procs:
            assert p.poll() is None, f"a process exited {p.returncode} before the gate"
        assert time.monotonic() < deadline, "the processes never both held a member"
        time.sleep(0.02)


def finish(procs: list[subprocess.Popen], tmp_path: Path, names: list[str]) -> None:
    try:
        for p, name in zip(procs, names, strict=True):
            assert p.wait(timeout=120) == 0, (tmp_path / f"{name}.err").read_text()[-3000:]
    finally:
        for p in procs:
            p.kill()


def ran_once(out: Path, resumed: tuple[str, ...] = ()) -> None:
    for m in MEMBERS:
        assert [r["round"] for r in read_metrics(out / m)] == [0, 1, 2], m
        log = (out / m / "run.log").read_text()
        assert log.count(": starting, 2 rounds") == 1, m
        assert log.count(": resuming, 2 rounds") == (m in resumed), m


def test_two_sweeps_on_one_directory_run_each_member_once(tmp_path):
    path, out = make_sweep(tmp_path)
    gate = tmp_path / "gate"
    gate.mkdir()
    args = ("sweep", str(path), "--sweep-dir", str(out))
    procs = [cli(tmp_path, f"sweep{i}", *args, MBT_FAULT_GATE=str(gate)) for i in (1, 2)]
    watch = None
    try:
        wait_gated(gate, 2, procs)
        assert status(out) == {"a": "running", "b": "running"}
        watch = Watch(out)
        (gate / "go").touch()
        finish(procs, tmp_path, ["sweep1", "sweep2"])
    finally:
        seen = watch.stop() if watch else []
    assert seen and all(set(s.values()) <= {"running", "finished"} for s in seen), seen
    assert status(out) == {"a": "finished", "b": "finished"}
    ran_once(out)
    said = (tmp_path / "sweep1.err").read_text() + (tmp_path / "sweep2.err").read_text()
    assert "run by process" in said  # one passed over the member the other held


def test_a_sweep_beside_a_resume_of_its_member_runs_each_member_once(tmp_path):
    path, out = make_sweep(tmp_path)
    args = ("sweep", str(path), "--sweep-dir", str(out))
    first = cli(tmp_path, "cut", *args, MBT_FAULT_HANG="teach")  # member a, stopped in TEACH
    deadline = time.monotonic() + 60
    while not (tmp_path / "hung-teach").exists():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 3
    line = (tmp_path / "cut.err").read_text().strip().splitlines()[-1]
    assert line.startswith("interrupted: stopped on SIGTERM in round 1, stage teach"), line
    assert line.endswith(
        f"run the same `mbt-online sweep` command again to resume (member {out / 'a'})"
    )
    assert status(out) == {"a": "failed", "b": "not_started"}  # stopped, nobody running it

    gate = tmp_path / "gate"
    gate.mkdir()
    resume = cli(tmp_path, "resume", "train", "--resume", str(out / "a"), MBT_FAULT_GATE=str(gate))
    wait_gated(gate, 1, [resume])
    sweep = cli(tmp_path, "sweep", *args, MBT_FAULT_GATE=str(gate))
    watch = None
    try:
        wait_gated(gate, 2, [resume, sweep])
        assert status(out) == {"a": "running", "b": "running"}
        watch = Watch(out)
        (gate / "go").touch()
        finish([resume, sweep], tmp_path, ["resume", "sweep"])
    finally:
        seen = watch.stop() if watch else []
    assert seen and all(set(s.values()) <= {"running", "finished"} for s in seen), seen
    assert status(out) == {"a": "finished", "b": "finished"}
    ran_once(out, resumed=("a",))
    assert "run by process" in (tmp_path / "sweep.err").read_text()
