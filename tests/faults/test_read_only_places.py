"""Shared and read-only places (issue 36, item 6): a wandb folder that cannot be written (read-only,
or a disk that is full there) leaves the run going with tracking off and one message saying so,
ending identical to an uninterrupted run; never a lost stage, never wandb's own silent fallback to
the system's temp folder. A shared hub cache that is read-only or full, with HF_HUB_OFFLINE=1:
the model is read from it, a data set is prepared elsewhere with one message, and where nothing
can be written the run is refused before its directory exists, with one message.

Each run is a forked child in its own mount namespace (`mounts`): the read-only bind mount or the
small tmpfs over RUN/wandb exists for that child only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import artifacts, tiny_config
from mounts import needs_mounts, private_namespace, read_only, small_disk

from faults.harness import in_child, run_dir_of, start_run
from mbt_online import tracking
from mbt_online.cli.common import console_logging

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


# ---------------------------------------------------------------------------------------------
# a shared hub cache, read-only or full, with HF_HUB_OFFLINE=1

REPO_ID = "shared-org/tiny-student"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def shared_hf_home(tmp: Path, model_dir: Path) -> Path:
    """HF_HOME as an admin filled it: the student in the hub cache, an empty datasets cache."""
    import shutil

    home = tmp / "hf-shared"
    repo = home / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (home / "datasets").mkdir(parents=True)
    return home


def hub_layout_eval(tmp: Path) -> Path:
    """A data set in the hub's layout (a local repo folder: `datasets` prepares it in its cache)."""
    import datasets
    from paths import HUB_ROWS

    rows = json.loads((HUB_ROWS / "hotpotqa.json").read_text())
    repo = tmp / "hotpot-repo"
    (repo / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows).to_parquet(str(repo / "data" / "validation-0.parquet"))
    return repo


def hub_config(tmp: Path, repo: Path):
    return tiny_config(
        tmp / "runs",
        **{
            "student.model": REPO_ID,
            "data.eval.dataset": "hotpotqa",
            "data.eval.hub": str(repo),
            "data.eval.hub_split": "validation",
            "data.eval.shuffle": "false",
            "data.eval.limit": 3,
        },
    )


def cache_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "the datasets cache" in line]


@pytest.mark.parametrize("place", ["read-only", "full"])
def test_a_shared_cache_that_cannot_be_written_is_read_and_the_run_goes_on(
    place, tmp_path, tiny_model_dir
):
    home = shared_hf_home(tmp_path, tiny_model_dir)
    cfg = hub_config(tmp_path, hub_layout_eval(tmp_path))
    own = tmp_path / "own-cache"
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "MBT_ONLINE_CACHE": str(own)}

    def setup() -> None:
        console_logging()  # as the CLI's commands: the warning comes before the run's run.log
        private_namespace()
        if place == "read-only":
            read_only(home)
        else:
            small_disk(home / "datasets", 8)

    child = in_child(lambda: start_run(cfg), tmp_path, setup=setup, env=env)
    assert child.code == 0, child.describe() + child.output[-3000:]
    lines = cache_lines(child.output)
    assert len(lines) == 1, child.output[-3000:]
    cause = "Read-only file system" if place == "read-only" else "No space left on device"
    assert cause in lines[0] and str(home / "datasets") in lines[0]
    assert str(own / "datasets") in lines[0]
    state = json.loads((run_dir_of(cfg) / "state.json").read_text())
    assert state["finished"]


def test_no_writable_place_for_a_data_set_is_one_clear_refusal(tmp_path, tiny_model_dir):
    home = shared_hf_home(tmp_path, tiny_model_dir)
    cfg = hub_config(tmp_path, hub_layout_eval(tmp_path))
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    env = {
        "HF_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "MBT_ONLINE_CACHE": str(nowhere / "cache"),
        "TMPDIR": str(nowhere),
    }

    def setup() -> None:
        import tempfile

        private_namespace()
        read_only(home)
        read_only(nowhere)
        tempfile.tempdir = str(nowhere)  # the temp folder too

    child = in_child(lambda: start_run(cfg), tmp_path, setup=setup, env=env)
    assert child.error == "ConfigError", child.describe()
    message = child.result["message"]
    assert "cannot be written (Read-only file system)" in message and "HF_DATASETS_CACHE" in message
    assert str(home / "datasets") in message and str(nowhere) in message
    assert not run_dir_of(cfg).exists()  # refused before the run directory


# ---------------------------------------------------------------------------------------------
# the user-level model cache (MBT_ONLINE_CACHE), read-only or full, where a student is built

TINY_STUDENT = {
    "world.entities_per_kind": 8,
    "student.max_model_len": 512,
    "bootstrap.worlds": 1,
    "bootstrap.questions_per_world": 8,
    "bootstrap.vocab_size": 500,
    "bootstrap.hidden_size": 64,
    "bootstrap.layers": 2,
    "bootstrap.heads": 2,
    "bootstrap.max_length": 320,
    "bootstrap.batch_size": 4,
    "bootstrap.epochs": 0.1,
}


@pytest.mark.parametrize("place", ["read-only", "full"])
def test_a_model_cache_that_cannot_be_written_is_one_config_error(place, tmp_path):
    from mbt_online.config import load_config
    from mbt_online.models.pretrained import resolve_student

    cache = tmp_path / "model-cache"
    cache.mkdir()
    cfg = load_config(None, [f"{k}={v}" for k, v in TINY_STUDENT.items()])

    def setup() -> None:
        private_namespace()
        if place == "read-only":
            read_only(cache)
        else:
            small_disk(cache, 16)

    child = in_child(
        lambda: resolve_student(cfg), tmp_path, setup=setup, env={"MBT_ONLINE_CACHE": str(cache)}
    )
    assert child.error == "ConfigError", child.describe() + child.output[-2000:]
    message = child.result["message"]
    cause = "Read-only file system" if place == "read-only" else "No space left on device"
    assert f"model cache {cache}, which cannot be written ({cause})" in message, message
    assert "MBT_ONLINE_CACHE" in message and message.startswith("student.model: 'bootstrap'")
