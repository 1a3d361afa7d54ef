"""Bounded inputs (issue 36, item 4): config and sweep values that would start absurd work are
refused at load, in well under a second, naming the key; every name that becomes a path stays one
folder under its parent; an output path never replaces what is not the command's own."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml
from paths import REPO

from mbt_online.config import ConfigError, load_config
from mbt_online.report import write_report
from mbt_online.rundir.names import check_output_file, check_output_folder
from mbt_online.sweeps.spec import MAX_MEMBERS, expand

ABSURD = {
    "loop.rounds": 10**9,
    "loop.questions_per_round": 10**12,
    "rollout.samples": 10**6,
    "rollout.max_tokens": 10**9,
    "eval.sampling.samples": 10**6,
    "eval.sampling.max_tokens": 10**9,
    "eval.sampling.seeds": list(range(1000)),
    "student.max_model_len": 10**9,
    "data.train.limit": 10**12,
    "data.eval.distractors": 10**9,
    "world.questions": 10**9,
    "world.entities_per_kind": 10**9,
    "world.distractors": 10**6,
    "bootstrap.worlds": 10**9,
    "bootstrap.questions_per_world": 10**9,
    "bootstrap.vocab_size": 10**9,
    "bootstrap.hidden_size": 10**7,
    "bootstrap.layers": 10**6,
    "bootstrap.heads": 10**6,
    "bootstrap.max_length": 10**9,
    "bootstrap.epochs": 10**9,
    "bootstrap.batch_size": 10**9,
    "train.sft.epochs": 10**6,
    "train.sft.batch_size": 10**9,
    "train.dpo.grad_accum": 10**9,
    "train.sft.global_batch_size": 10**9,
    "train.dpo.max_length": 10**9,
    "train.sft.max_rows_per_question": 10**6,
    "train.dpo.max_pairs_per_question": 10**6,
    "train.lora.r": 10**6,
    "train.grpo.num_train_epochs": 10**6,
    "train.grpo.num_iterations": 10**6,
    "train.grpo.gradient_accumulation_steps": 10**9,
    "teacher.max_tries": 10**6,
    "teacher.samples": 10**6,
    "teacher.concurrency": 10**6,
    "teacher.max_tokens": 10**9,
    "teacher.rewrites_per_question": 10**6,
    "reward.default_budget": 10**9,
}


@pytest.mark.parametrize("key", sorted(ABSURD))
def test_an_absurd_value_is_refused_at_load_naming_the_key(key):
    value = json.dumps(ABSURD[key])
    start = time.monotonic()
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"{key}={value}"])
    assert time.monotonic() - start < 2.0
    assert key in str(e.value), str(e.value)


def test_the_shipped_configs_are_within_the_bounds():
    from mbt_online.config import shipped_configs

    for name in shipped_configs():
        if not name.startswith(("sweeps/", "accelerate/")):
            load_config(name, [])


def sweep_file(tmp: Path, body: dict) -> Path:
    base = tmp / "base.yaml"
    base.write_text("loop:\n  rounds: 1\n")
    path = tmp / "s.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", **body}))
    return path


def test_a_grid_past_the_member_bound_is_refused_before_any_member_is_made(tmp_path):
    axis = list(range(1, 101))
    grid = {"run.seed": axis, "rollout.seed": axis, "eval.sampling.seed": axis}  # 10^6
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"grid: the sweep would have \d+ or more members"):
        expand(sweep_file(tmp_path, {"grid": grid}))
    assert time.monotonic() - start < 2.0
    small = {"eval.sampling.seed": list(range(1, 11))}
    assert len(expand(sweep_file(tmp_path, {"grid": small, "seeds": [0, 1]}))) == 20 <= MAX_MEMBERS


@pytest.mark.parametrize(
    "where,name",
    [
        ("name", "ok/../../escaped"),
        ("name", "/abs"),
        ("name", "a/b"),
        ("name", "trailing-newline\n"),  # `$` matches before a final newline: fullmatch does not
        ("member", "m/../../../x"),
        ("member", "m\\..\\x"),
    ],
)
def test_sweep_and_member_names_stay_one_folder(tmp_path, where, name):
    grid = {"eval.sampling.seed": [1, 2]}  # members named from the grid, not from the sweep
    body = {"name": name, "grid": grid} if where == "name" else {"members": [{"name": name}]}
    with pytest.raises(ConfigError, match="not a safe directory name"):
        expand(sweep_file(tmp_path, body))


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", ".hidden", ""])
def test_a_run_name_stays_one_folder(name):
    with pytest.raises(ConfigError, match="run.name"):
        load_config(None, [f"run.name={json.dumps(name)}"])


def test_teach_out_never_replaces_a_folder_it_did_not_write(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "state.json").write_text("{}")
    monkeypatch.chdir(tmp_path / "runs")
    for bad in (run, Path("."), Path(".."), Path(os.path.expanduser("~")), Path("/")):
        with pytest.raises(ValueError, match="--out"):
            check_output_folder(bad)
    assert check_output_folder(tmp_path / "new") == tmp_path / "new"
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "dataset_info.json").write_text("{}")
    assert check_output_folder(earlier) == earlier  # a datasets folder written before


def test_the_teach_command_refuses_a_run_directory_as_out(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "r"
    run.mkdir()
    (run / "state.json").write_text('{"keep": true}')
    sample = REPO / "mbt_online" / "samples" / "hotpotqa" / "hotpot_dev_distractor_sample.json"
    out = subprocess.run(
        [sys.executable, "-m", "mbt_online", "teach", "--dataset", "hotpotqa"]
        + ["--path", str(sample), "--out", str(run), "--limit", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "--out" in out.stderr, out.stderr
    assert (run / "state.json").read_text() == '{"keep": true}'


def test_report_out_is_an_html_file(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    for bad in (run / "state.json", run / "metrics.jsonl", run):
        with pytest.raises(ValueError, match="--out"):
            write_report([run], bad)
    assert check_output_file(tmp_path / "x.HTML", (".html",)) == tmp_path / "x.HTML"
