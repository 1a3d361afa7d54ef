"""Tracking: metrics.jsonl is replace-or-append per round; wandb offline runs are syncable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
        [{"example_id": "q", "completion": "x", "reward": 1.0, "phases": ["a"]}],
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
