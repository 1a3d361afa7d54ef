"""Runs a resume must refuse, through the real command line in a process of its own: a
`config.yaml` cut short, a `state.json` torn, emptied or of the wrong shape (exit 2 naming the
file, nothing in the run changed, and the run resumable once the file is put back), and two
`train --resume` processes racing for one run (one proceeds and ends like an uninterrupted run; the
other exits 2 naming the winner's PID having changed nothing).

The run is one killed inside TEACH (an unfinished run: a resume would write at once if let in).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import artifacts, tiny_config

from faults.harness import KILL_ENV, in_child, install_kill_hook, resume_run, run_dir_of, start_run
from mbt_online.rundir.lock import LOCK_FILE

FAKE_CLI = Path(__file__).with_name("fake_cli.py")


def killed_run(tmp_path: Path):
    """A run SIGKILLed inside round 1's TEACH; its config."""
    cfg = tiny_config(tmp_path / "runs")
    child = in_child(
        lambda: start_run(cfg), tmp_path, env={KILL_ENV: "in:teach"}, setup=install_kill_hook
    )
    assert child.killed, child.describe()
    return cfg


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


def one_line(text: str) -> str:
    """Console output with its wrapping undone."""
    return " ".join(text.split())


def cut_lines(text: bytes) -> bytes:
    lines = text.splitlines(keepends=True)
    return b"".join(lines[: int(len(lines) * 0.6)])


DAMAGE = {  # file -> how it is damaged
    "config.yaml cut to 60% of its lines": ("config.yaml", cut_lines),
    "state.json torn mid-write": ("state.json", lambda b: b[: int(len(b) * 0.6)]),
    "state.json empty": ("state.json", lambda b: b""),
    "state.json of the wrong shape": ("state.json", lambda b: b'{"completed": "round-1/score"}'),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_run_is_refused_naming_the_file_and_left_resumable(damage, reference, tmp_path):
    name, spoil = DAMAGE[damage]
    cfg = killed_run(tmp_path)
    run_dir = run_dir_of(cfg)
    path = run_dir / name
    good = path.read_bytes()
    path.write_bytes(spoil(good))
    before = snapshot(run_dir)

    out = subprocess.run(
        [sys.executable, "-m", "mbt_online", "train", "--resume", str(run_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "2000"},  # no wrapping inside the path
    )
    assert out.returncode == 2, out.stderr
    assert str(path) in one_line(out.stderr)
    assert snapshot(run_dir) == before, "a refused resume changes nothing"

    path.write_bytes(good)  # put back, the run resumes to where an uninterrupted run ends
    assert in_child(lambda: resume_run(cfg), tmp_path).code == 0
    assert artifacts(run_dir) == reference


def test_of_two_concurrent_resumes_one_proceeds_and_the_other_changes_nothing(reference, tmp_path):
    cfg = killed_run(tmp_path)
    run_dir = run_dir_of(cfg)
    gate = tmp_path / "gate"
    gate.mkdir()
    before = snapshot(run_dir)
    env = {**os.environ, "MBT_FAULT_GATE": str(gate), "COLUMNS": "2000"}
    args = [sys.executable, str(FAKE_CLI), "train", "--resume", str(run_dir)]
    procs = [
        subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        loser = first_to_exit(procs, timeout_s=60)
        winner = next(p for p in procs if p is not loser)
        _, err = loser.communicate()
        assert loser.returncode == 2, err
        assert f"in use by process {winner.pid}" in one_line(err)
        assert sorted(p.name for p in gate.iterdir()) == [f"locked-{winner.pid}"]
        assert snapshot(run_dir) == before, "the loser changed nothing (the winner waits)"
        (gate / "go").touch()
        _, err = winner.communicate(timeout=60)
        assert winner.returncode == 0, err
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert artifacts(run_dir) == reference
    assert json.loads((run_dir / "state.json").read_text())["finished"]


def first_to_exit(procs: list[subprocess.Popen], timeout_s: float) -> subprocess.Popen:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                return p
        time.sleep(0.01)
    raise TimeoutError("neither writer exited")
