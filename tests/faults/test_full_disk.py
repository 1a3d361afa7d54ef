"""A full disk: a run in a child process whose file size limit (`RLIMIT_FSIZE`, what `ulimit -f`
sets; SIGXFSZ ignored, so a write past it fails with EFBIG as on a full disk) stops it at its
first large write, leaves nothing of that stage marked or in place, and resumes without the limit
to end identical to an uninterrupted run.

The limit is set just under the largest file of a chosen stage of the uninterrupted run, so the
run fails exactly there (checked: every earlier file fits).
"""

from __future__ import annotations

import errno
import json
import resource
import signal
from pathlib import Path

import pytest
from fakes import artifacts, tiny_config

from faults.harness import in_child, resume_run, run_dir_of, start_run
from mbt_online.rundir import stage_dir


def largest_file(folder: Path) -> int:
    return max(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def limit_for(reference_run: Path, stage_key: str, completed: list[str]) -> int:
    """A size limit under which the run fails writing `stage_key` and nothing before it."""
    limit = largest_file(reference_run / stage_key) - 1
    before = completed[: completed.index(stage_key)]
    fits = [reference_run / k for k in before] + [reference_run / "config.yaml"]
    biggest = max(largest_file(p) if p.is_dir() else p.stat().st_size for p in fits)
    assert biggest <= limit, f"{stage_key}: an earlier file ({biggest} B) would fail first"
    return limit


def file_size_limit(limit: int):
    def setup() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing us
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    return setup


@pytest.mark.parametrize("stage_key", ["round-0/eval", "round-1/score"])
def test_a_run_that_fills_the_disk_resumes_to_the_uninterrupted_end(
    stage_key, reference_run, reference, tmp_path
):
    completed = reference["state"]["completed"]
    limit = limit_for(reference_run, stage_key, completed)
    cfg = tiny_config(tmp_path / "runs")
    run_dir = run_dir_of(cfg)

    full = in_child(lambda: start_run(cfg), tmp_path, setup=file_size_limit(limit))
    assert full.code == 3 and full.error == "OSError", full.describe()
    assert f"[Errno {errno.EFBIG}]" in full.result["message"] or "too large" in full.describe()
    state = json.loads((run_dir / "state.json").read_text())
    assert state["completed"] == completed[: completed.index(stage_key)]
    r, stage = int(stage_key.split("/")[0].removeprefix("round-")), stage_key.split("/")[1]
    assert not stage_dir(run_dir, r, stage).exists(), "no half-written stage folder in place"

    resumed = in_child(lambda: resume_run(cfg), tmp_path)
    assert resumed.code == 0, resumed.describe() + resumed.output[-2000:]
    assert artifacts(run_dir) == reference
