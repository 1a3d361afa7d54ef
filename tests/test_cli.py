"""The command line as a user meets it: help text, data inspect, teach."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import SHARED_DATA
from test_sweep import PAPER_NAMES

SAMPLES = {
    "hotpotqa": SHARED_DATA / "hotpotqa" / "hotpot_dev_distractor_sample.json",
    "musique": SHARED_DATA / "musique" / "musique_ans_v1.0_dev_sample.jsonl",
    "2wikimultihopqa": SHARED_DATA / "2wikimultihopqa" / "dev_sample.json",
}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mbt_online", *args], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "cmd",
    [
        [],
        ["train"],
        ["eval"],
        ["data", "inspect"],
        ["teach"],
        ["judge"],
        ["models", "fetch"],
        ["sweep"],
        ["report"],
    ],
)
def test_every_command_has_help(cmd):
    out = cli(*cmd, "--help")
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout


@pytest.mark.parametrize("dataset", sorted(SAMPLES))
def test_data_inspect_json(dataset):
    out = cli("data", "inspect", "--dataset", dataset, "--path", str(SAMPLES[dataset]), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["loaded"] == summary["total"] and summary["loaded"] >= 100
    assert summary["skipped"] == 0 and summary["skipped_reasons"] == {}
    assert sum(summary["tiers"].values()) == summary["loaded"]
    assert summary["prompt_words"]["max"] >= summary["prompt_words"]["mean"] > 50


def test_data_inspect_counts_malformed_rows(tmp_path):
    rows = json.loads(SAMPLES["hotpotqa"].read_text())[:5]
    del rows[1]["question"]
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    path = tmp_path / "hotpot.jsonl"
    path.write_text("\n".join(lines))
    out = cli("data", "inspect", "--dataset", "hotpotqa", "--path", str(path), "--json")
    summary = json.loads(out.stdout)
    assert summary["loaded"] == 4 and summary["skipped"] == 2
    assert summary["skipped_reasons"] == {"missing_question": 1, "bad_json": 1}


def test_data_inspect_bad_arguments(tmp_path):
    out = cli("data", "inspect", "--dataset", "squad", "--path", str(SAMPLES["hotpotqa"]))
    assert out.returncode == 2 and "hotpotqa, musique, 2wikimultihopqa" in out.stderr
    out = cli("data", "inspect", "--dataset", "hotpotqa", "--path", str(tmp_path / "nope.json"))
    assert out.returncode == 2 and "file not found" in out.stderr


def test_eval_bad_distractors_named_before_any_work(tmp_path):
    hotpot = str(SAMPLES["hotpotqa"])
    out = cli(
        "eval",
        "--run",
        str(tmp_path),
        "--dataset",
        "hotpotqa",
        "--path",
        hotpot,
        "--distractors",
        "some",
    )
    assert (
        out.returncode == 2 and "--distractors: expected a count or 'all', got 'some'" in out.stderr
    )


def test_eval_save_never_overwrites_an_earlier_evaluation(tmp_path):
    (tmp_path / "eval-r3").mkdir()
    out = cli("eval", "--run", str(tmp_path), "--save", str(tmp_path / "eval-r3"))
    message = " ".join(out.stderr.split())  # the console wraps long lines
    assert out.returncode == 2 and "eval-r3 already exists; pick a new folder" in message


@pytest.mark.parametrize("dataset", sorted(SAMPLES))
def test_teach_mbt_s_verifies_most_of_each_sample(dataset, tmp_path):
    from datasets import load_from_disk

    out = cli(
        "teach",
        "--dataset",
        dataset,
        "--path",
        str(SAMPLES[dataset]),
        "--mode",
        "mbt-s",
        "--out",
        str(tmp_path / "t"),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["verified"] >= 0.95 * summary["total"]
    ds = load_from_disk(str(tmp_path / "t"))
    assert len(ds) == summary["total"]
    assert sum(ds["verified"]) == summary["verified"]


def test_teach_mbt_r_needs_drafts(tmp_path):
    out = cli(
        "teach",
        "--dataset",
        "hotpotqa",
        "--path",
        str(SAMPLES["hotpotqa"]),
        "--mode",
        "mbt-r",
        "--out",
        str(tmp_path / "t"),
    )
    assert out.returncode == 2 and "--drafts" in out.stderr


def test_models_fetch_unknown_name():
    out = cli("models", "fetch", "gpt-17")
    assert out.returncode == 2 and "smollm2-135m-instruct" in out.stderr


def test_judge_rejects_unknown_judge(tmp_path):
    out = cli("judge", "--run", str(tmp_path), "--round", "0", "--judges", "correctness,vibes")
    assert out.returncode == 2 and "unknown vibes" in out.stderr


def test_sweep_dry_run_lists_the_paper_rows():
    out = cli(
        "sweep", "mbt_online/configs/sweeps/paper-baselines.yaml", "--dry-run", "loop.rounds=1"
    )
    assert out.returncode == 0, out.stderr
    names = [
        line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("- name")
    ]
    assert names == PAPER_NAMES
