"""A run directory on a file system without `flock` (some NFS and Lustre mounts: ENOLCK), through
the real command line: the run lock falls back to an exclusive lock file holding PID and host and
says so once, instead of failing with a raw OS error. Of two racing resumes one proceeds and ends
like an uninterrupted run, the other exits 2 naming the winner and changing nothing; `sweep
status` sees the holder; a lock file left by a dead process of this host is taken over, one of
another host is refused naming the file to remove.

`flock` is made to fail in the child processes (fake_cli.py's MBT_FAULT_NO_FLOCK), and in this
one for the status probe.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import artifacts, tiny_config

from faults.harness import KILL_ENV, in_child, install_kill_hook, run_dir_of, start_run
from mbt_online.rundir.lock import EXCL_FILE, LOCK_FILE, is_held

FAKE_CLI = Path(__file__).with_name("fake_cli.py")
NOTICE = "on a file system without flock"


def killed_run(tmp_path: Path) -> Path:
    """A run SIGKILLed inside round 1's TEACH: unfinished, a resume would write at once."""
    cfg = tiny_config(tmp_path / "runs")
    child = in_child(
        lambda: start_run(cfg), tmp_path, env={KILL_ENV: "in:teach"}, setup=install_kill_hook
    )
    assert child.killed, child.describe()
    return run_dir_of(cfg)


def resume(run_dir: Path, **env: str) -> subprocess.Popen:
    full = {**os.environ, "COLUMNS": "2000", "MBT_FAULT_NO_FLOCK": "1", **env}
    return subprocess.Popen(
        [sys.executable, str(FAKE_CLI), "train", "--resume", str(run_dir)],
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def no_flock(fd, op):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name not in (LOCK_FILE, EXCL_FILE)
    }


def test_without_flock_one_of_two_resumes_proceeds_under_a_lock_file(
    reference, tmp_path, monkeypatch
):
    run_dir = killed_run(tmp_path)
    gate = tmp_path / "gate"
    gate.mkdir()
    before = snapshot(run_dir)
    procs = [resume(run_dir, MBT_FAULT_GATE=str(gate)) for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while not any(p.poll() is not None for p in procs):
            assert time.monotonic() < deadline, "neither writer exited"
            time.sleep(0.01)
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        err = loser.stderr.read()
        assert loser.returncode == 2, err
        text = " ".join(err.split())
        assert f"in use by process {winner.pid} (one writer per run)" in text
        assert text.count(NOTICE) == 1 and "Traceback" not in text and "[Errno" not in text
        while not list(gate.glob("locked-*")):
            assert winner.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        held = (run_dir / EXCL_FILE).read_text().split()
        assert held == [str(winner.pid), socket.gethostname()]
        monkeypatch.setattr(fcntl, "flock", no_flock)
        assert is_held(run_dir), "sweep status sees the holder through its lock file"
        monkeypatch.undo()
        assert snapshot(run_dir) == before, "the loser changed nothing"
        (gate / "go").touch()
        _, err = winner.communicate(timeout=120)
        assert winner.returncode == 0, err
        assert err.count(NOTICE) == 1, "said once"
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert not (run_dir / EXCL_FILE).exists(), "released"
    assert artifacts(run_dir) == reference


@pytest.mark.parametrize("host", ["here", "elsewhere"])
def test_a_lock_file_left_behind_is_taken_over_only_when_its_holder_is_known_gone(
    host, reference, tmp_path
):
    run_dir = killed_run(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()  # a PID of this host that is gone
    owner = socket.gethostname() if host == "here" else "node-elsewhere"
    (run_dir / EXCL_FILE).write_text(f"{dead.pid} {owner}\n")
    proc = resume(run_dir)
    _, err = proc.communicate(timeout=120)
    text = " ".join(err.split())
    assert "Traceback" not in text and text.count(NOTICE) == 1
    if host == "here":
        assert proc.returncode == 0, err
        assert f"took over {run_dir / EXCL_FILE}" in text
        assert artifacts(run_dir) == reference
        assert not (run_dir / EXCL_FILE).exists()
        return
    assert proc.returncode == 2, err
    assert f"in use by process {dead.pid} on node-elsewhere" in text
    assert f"if it is gone, remove {run_dir / EXCL_FILE}" in text
