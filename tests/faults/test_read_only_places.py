"""Shared and read-only places (issue 36, item 6): a wandb folder that cannot be written (read-only,
or a disk that is full there) leaves the run going with tracking off and one message saying so,
ending identical to an uninterrupted run; never a lost stage, never wandb's own silent fallback to
the system's temp folder.

Each run is a forked child in its own mount namespace (`mounts`): the read-only bind mount or the
small tmpfs over RUN/wandb exists for that child only.
"""

from __future__ import annotations

from pathlib import Path

from fakes import artifacts, tiny_config
from mounts import needs_mounts, private_namespace, read_only, small_disk

from faults.harness import in_child, run_dir_of, start_run
from mbt_online import tracking

pytestmark = needs_mounts


def offline_config(tmp: Path):
    return tiny_config(tmp / "runs", **{"tracking.wandb_mode": "offline"})


def tracking_off_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "tracking off" in line]


def wandb_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").rglob("offline-run-*"))


def test_a_read_only_wandb_folder_turns_tracking_off_and_the_run_goes_on(reference, tmp_path):
    cfg = offline_config(tmp_path)
    run_dir = run_dir_of(cfg)
    (run_dir / "wandb").mkdir(parents=True)

    def setup() -> None:
        private_namespace()
        read_only(run_dir / "wandb")

    child = in_child(lambda: start_run(cfg), tmp_path, setup=setup, env={"TMPDIR": str(tmp_path)})
    assert child.code == 0, child.describe() + child.output[-3000:]
    lines = tracking_off_lines(child.output)
    assert len(lines) == 1, child.output[-3000:]
    assert "wandb: cannot write" in lines[0] and "Read-only file system" in lines[0]
    assert str(run_dir / "wandb") in lines[0]
    assert "tracking off" in (run_dir / "run.log").read_text()  # said in the run's own log too
    assert not list(tmp_path.glob("wandb")), "wandb fell back to the temp folder"
    assert artifacts(run_dir) == reference


def test_a_full_disk_under_wandb_at_the_start_turns_tracking_off(reference, tmp_path):
    cfg = offline_config(tmp_path)
    run_dir = run_dir_of(cfg)
    (run_dir / "wandb").mkdir(parents=True)

    def setup() -> None:
        private_namespace()
        small_disk(run_dir / "wandb", 16)  # less than wandb's first files

    child = in_child(lambda: start_run(cfg), tmp_path, setup=setup, env={"TMPDIR": str(tmp_path)})
    assert child.code == 0, child.describe() + child.output[-3000:]
    lines = tracking_off_lines(child.output)
    assert len(lines) == 1 and "No space left on device" in lines[0], child.output[-3000:]
    assert artifacts(run_dir) == reference


def test_a_disk_that_fills_under_wandb_mid_run_turns_tracking_off(reference, tmp_path):
    """Room for wandb's start, not for the completions tables: the first round that cannot be
    logged turns tracking off; every stage is still committed."""
    cfg = tiny_config(
        tmp_path / "runs", **{"tracking.wandb_mode": "offline", "tracking.table_rows": 50}
    )
    run_dir = run_dir_of(cfg)
    (run_dir / "wandb").mkdir(parents=True)
    big = "x" * 4000

    def setup() -> None:
        private_namespace()
        small_disk(run_dir / "wandb", 96)
        original = tracking.completions_table

        def fat(rows, round_, n):  # tables as large as real completions get
            columns, data = original(rows, round_, n)
            return columns, [[*row[:-1], big * 8] for row in data]

        tracking.completions_table = fat

    child = in_child(lambda: start_run(cfg), tmp_path, setup=setup, env={"TMPDIR": str(tmp_path)})
    assert child.code == 0, child.describe() + child.output[-3000:]
    lines = tracking_off_lines(child.output)
    assert len(lines) == 1 and "No space left on device" in lines[0], child.output[-3000:]
    assert artifacts(run_dir) == reference
