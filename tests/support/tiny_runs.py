"""The tiny real-data run the loop's integration tests share: its overrides, the one-round
reference config (`clean_tiny_run` in conftest.py), and how its outputs are read."""

from __future__ import annotations

import json
import os
from pathlib import Path

from paths import SAMPLES

MUSIQUE = SAMPLES["musique"]
HOTPOT = SAMPLES["hotpotqa"]


def tiny_overrides(model_dir: Path, runs_dir: Path, **extra: str) -> list[str]:
    """Two rounds on a small slice of MuSiQue with the structured teacher: a real-data run that
    finishes in well under a minute with a 2-layer student."""
    base = {
        "run.name": "tiny",
        "run.runs_dir": str(runs_dir),
        "run.seed": 0,
        "data.train.dataset": "musique",
        "data.train.path": str(MUSIQUE),
        "data.train.limit": 8,
        "data.train.distractors": 1,
        "data.eval.dataset": "musique",
        "data.eval.path": str(MUSIQUE),
        "data.eval.offset": 90,
        "data.eval.limit": 6,
        "data.eval.distractors": 1,
        "student.model": str(model_dir),
        "student.max_model_len": 1536,
        "rollout.samples": 2,
        "rollout.max_tokens": 48,
        "rollout.temperature": 1.0,
        "eval.sampling.max_tokens": 48,
        "loop.rounds": 2,
        "reward.default_budget": 400,
        "teacher.budget_tokens": 4000,
        "train.sft.batch_size": 4,
        "train.sft.max_length": 1536,
        "train.sft.epochs": 1,
        "train.dpo.batch_size": 4,
        "train.dpo.max_length": 1536,
        "train.dpo.margin": 0.1,
        "tracking.wandb_mode": "offline",
        "tracking.table_rows": 4,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


# One round on 4 training questions (8 SFT rows, 4 DPO pairs), one training thread (the same
# floating-point sums in every process), no wandb: the config of the uninterrupted reference run
# (`clean_tiny_run` in conftest.py) that a killed and resumed run here, and a staged run in
# test_staged, must each reproduce exactly.
ONE_ROUND = {
    "loop.rounds": 1,
    "data.train.limit": 4,
    "train.threads": 1,
    "tracking.wandb_mode": "disabled",
}
CLEAN_RUN = {**ONE_ROUND, "runtime.mode": "inproc"}


def cli_env() -> dict[str, str]:
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


# wall-clock numbers, and the training process's peak memory (an RSS high-water mark on CPU, which
# depends on the process's history; a child's differs), are measurements, not results: a resumed,
# staged or replayed run never reproduces them
NOT_REPLAYED = ("timing/", "train/peak_memory")


def without_timing(rows: list[dict]) -> list[dict]:
    """Metric rows without what a resumed run does not replay (`NOT_REPLAYED`)."""
    return [{k: v for k, v in r.items() if not k.startswith(NOT_REPLAYED)} for r in rows]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
