"""Tracking: metrics.jsonl is replace-or-append per round; wandb offline runs are syncable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import ROUNDS, Fakes, FakeTrainer, Killed, quick_datasets, run, tiny_config  # noqa: F401
from tracking_runs import DPO_STEPS, SFT_STEPS, LoggingFakes, offline_config

from mbt_online.config import load_config
from mbt_online.rundir.metrics_file import read_metrics, write_round_metrics
from mbt_online.tracking import Tracker


def test_round_metrics_replace_not_duplicate(tmp_path):
    write_round_metrics(tmp_path, {"round": 1, "eval/accuracy": 0.5})
    write_round_metrics(tmp_path, {"round": 0, "eval/accuracy": 0.2})
    write_round_metrics(tmp_path, {"round": 1, "eval/accuracy": 0.6})  # a resumed round
    assert read_metrics(tmp_path) == [
        {"round": 0, "eval/accuracy": 0.2},
        {"round": 1, "eval/accuracy": 0.6},
    ]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [0, 1]


def test_torn_last_metrics_line_is_skipped_and_dropped_on_rewrite(tmp_path, caplog):
    write_round_metrics(tmp_path, {"round": 0, "eval/accuracy": 0.2})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"round": 1, "eval/accu')
    assert read_metrics(tmp_path) == [{"round": 0, "eval/accuracy": 0.2}]
    assert "torn last line" in caplog.text
    write_round_metrics(tmp_path, {"round": 1, "eval/accuracy": 0.6})
    assert [m["round"] for m in read_metrics(tmp_path)] == [0, 1]


def test_corrupt_metrics_line_before_the_end_is_an_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"round": 0}\n{"round": 1, "eval\n{"round": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON line"):
        read_metrics(tmp_path)
    with pytest.raises(ValueError, match="corrupt"):  # never rewritten around the bad line
        write_round_metrics(tmp_path, {"round": 3})


def test_offline_wandb_run_is_listed_by_sync_dry_run(tmp_path):
    cfg = load_config(None, ["run.name=t", "tracking.wandb_mode=offline", "tracking.tags=[a]"])
    tracker = Tracker(cfg, tmp_path)
    tracker.log_round(
        {"round": 0, "eval/accuracy": 0.25, "note": "skipped: not a number"},
        [{"example_id": "q", "completion": "x", "reward": 1.0, "phases": ["a"], "components": {}}],
    )
    run_id = (tmp_path / "wandb_id.txt").read_text()
    tracker.finish()
    runs = list((tmp_path / "wandb" / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1
    wandb_bin = Path(sys.executable).with_name("wandb")
    out = subprocess.run(
        [str(wandb_bin), "sync", "--dry-run", str(runs[0])], capture_output=True, text=True
    )
    assert f"run-{run_id}.wandb" in out.stdout + out.stderr

    # a resumed run keeps its wandb id, so `wandb sync` merges both halves into one run
    again = Tracker(cfg, tmp_path)
    assert again.run.id == run_id
    again.finish()


def test_disabled_tracking_writes_nothing(tmp_path):
    cfg = load_config(None, ["tracking.wandb_mode=disabled"])
    tracker = Tracker(cfg, tmp_path)
    tracker.log_round({"round": 0, "eval/accuracy": 1.0})
    tracker.finish()
    assert not (tmp_path / "wandb").exists()


# ---------------------------------------------------------------------------------------------
# the wandb mirror of a whole run (fake drivers: the loop's control flow without vLLM or TRL)


def offline_folders(run_dir: Path) -> list[Path]:
    run_id = (run_dir / "wandb_id.txt").read_text()
    return sorted((run_dir / "wandb" / "wandb").glob(f"offline-run-*-{run_id}"))


def read_offline(folder: Path) -> tuple[dict, list[dict], list]:
    """(run info, history rows, metric definitions) of an offline run, once wandb has flushed."""
    from mbt_online.report.wandb_log import read_wandb_file, wandb_records

    path = next(folder.glob("run-*.wandb"))
    deadline = time.monotonic() + 30
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(path)):
        assert time.monotonic() < deadline, f"{path}: wandb never wrote its exit record"
        time.sleep(0.1)
    info, history = read_wandb_file(path)
    metrics = [r.metric for r in wandb_records(path) if r.WhichOneof("record_type") == "metric"]
    tags = [list(r.run.tags) for r in wandb_records(path) if r.WhichOneof("record_type") == "run"]
    info["tags"] = tags[0] if tags else []
    return info, history, metrics


def test_offline_wandb_run_holds_train_steps_rounds_config_and_completions(tmp_path):
    cfg = offline_config(tmp_path)
    run_dir = run(cfg, LoggingFakes(cfg))
    [folder] = offline_folders(run_dir)
    info, history, metrics = read_offline(folder)
    # per-step TRL metrics against one global step: SFT then DPO, round after round
    sft = [(h["train/global_step"], h["train/sft/loss"]) for h in history if "train/sft/loss" in h]
    assert len(sft) == ROUNDS * SFT_STEPS > 3
    steps = [h["train/global_step"] for h in history if "train/global_step" in h]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert steps[: SFT_STEPS + DPO_STEPS] == list(range(1, SFT_STEPS + DPO_STEPS + 1))
    assert steps[SFT_STEPS + DPO_STEPS] == SFT_STEPS + DPO_STEPS + 1  # round 2 continues
    assert sft[0] == (1, 2.0)
    margins = [h["train/dpo/rewards/margins"] for h in history if "train/dpo/rewards/margins" in h]
    assert margins == pytest.approx([0.1, 0.2, 0.3] * ROUNDS)
    # TRL's end-of-stage summary joins the stage's last step instead of adding a point
    summary = [h for h in history if "train/dpo/train_runtime" in h]
    assert [h["train/dpo/rewards/margins"] for h in summary] == pytest.approx([0.3] * ROUNDS)
    by_name = {m.glob_name or m.name: m.step_metric for m in metrics}
    assert by_name["train/sft/*"] == by_name["train/dpo/*"] == "train/global_step"
    assert by_name["eval/accuracy"] == "round"
    # round metrics, once per round, with the loop's own numbers
    rounds = [h for h in history if "round" in h]
    assert [h["round"] for h in rounds] == list(range(ROUNDS + 1))
    local = read_metrics(run_dir)
    assert [h["eval/accuracy"] for h in rounds] == [m["eval/accuracy"] for m in local]
    # the resolved config and the sweep member's tags
    assert info["config"]["loop.rounds"] == ROUNDS and info["config"]["run.name"] == "flow"
    assert info["tags"] == ["paper", "mbt-r"]
    # the completions table: one increment per round, with the columns a reader filters on
    assert all(h["samples/completions/_type"] == "incremental-table-file" for h in rounds)
    assert [h["samples/completions/increment_num"] for h in rounds] == list(range(ROUNDS + 1))
    table = json.loads((folder / "files" / rounds[-1]["samples/completions/path"]).read_text())
    for col in ("round", "benchmark", "correct", "tokens", "finish_reason", "reward"):
        assert col in table["columns"]
    comps = [c for c in table["columns"] if c.startswith("reward/")]
    assert {"reward/correct", "reward/degenerate", "reward/phases"} <= set(comps)
    assert len(table["data"]) == cfg.tracking.table_rows
    assert {row[table["columns"].index("round")] for row in table["data"]} == {ROUNDS}


def test_killed_and_resumed_run_keeps_one_offline_folder_with_every_round(tmp_path):
    cfg = offline_config(tmp_path)
    killed = LoggingFakes(cfg, fail="trainer")
    with pytest.raises(Killed):
        run(cfg, killed)
    run_dir = Path(cfg.run.runs_dir) / cfg.run.name
    [first] = offline_folders(run_dir)
    _, history, _ = read_offline(first)
    assert [h["round"] for h in history if "round" in h] == [0]
    time.sleep(1.1)  # a new process's folder is named by its start second
    run(cfg, LoggingFakes(cfg), resume=True)
    folders = offline_folders(run_dir)
    assert len(folders) == 1 and folders[0] != first
    _, history, _ = read_offline(folders[0])
    assert [h["round"] for h in history if "round" in h] == list(range(ROUNDS + 1))
    assert len([h for h in history if "train/sft/loss" in h]) == ROUNDS * SFT_STEPS
    local = read_metrics(run_dir)
    rounds = [h for h in history if "round" in h]
    assert [h["eval/accuracy"] for h in rounds] == [m["eval/accuracy"] for m in local]


CHILD = """
import sys
sys.path[:0] = [{tests!r}, {faults!r}]
from harness import install_kill_hook
install_kill_hook()
from fakes import run
from tracking_runs import LoggingFakes, offline_config
from pathlib import Path
cfg = offline_config(Path({root!r}))
run(cfg, LoggingFakes(cfg), resume={resume})
"""


def test_sigkilled_process_then_resume_leaves_one_complete_offline_folder(tmp_path):
    """A real SIGKILL (in round 2's TRAIN, after rounds 0 and 1 reached wandb), then `--resume`
    in a fresh process: still one offline folder, and it covers every round and TRAIN step."""
    tests = Path(__file__).resolve().parent
    support = tests / "support"

    def child(resume: bool, kill: str = "") -> subprocess.CompletedProcess:
        code = CHILD.format(
            tests=str(support), faults=str(tests / "faults"), root=str(tmp_path), resume=resume
        )
        env = {**os.environ, "MBT_FAULT_KILL": kill, "OMP_NUM_THREADS": "1"}
        env.pop("WANDB_SERVICE", None)
        return subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )

    killed = child(False, "in:train@2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_dir = tmp_path / "flow"
    assert [m["round"] for m in read_metrics(run_dir)] == [0, 1]
    resumed = child(True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    [folder] = offline_folders(run_dir)
    _, history, _ = read_offline(folder)
    assert [h["round"] for h in history if "round" in h] == list(range(ROUNDS + 1))
    assert len([h for h in history if "train/sft/loss" in h]) == ROUNDS * SFT_STEPS
