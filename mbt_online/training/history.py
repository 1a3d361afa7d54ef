"""What training measured: the per-step log (`log_history.jsonl`), the `train/*` metrics the loop
logs, peak memory, and a progress line for runs without a terminal."""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_callback import TrainerCallback

from mbt_online.rundir.atomic import write_text_atomic
from mbt_online.rundir.live_steps import append_step, live_path
from mbt_online.scoring.stats import mean

log = logging.getLogger("mbt_online")


class ProgressLog(TrainerCallback):
    """A log line every `every_s` seconds and at the last step, for runs without a terminal.

    Without a TTY the trainer's progress bar is off (it would fill log files with redraws), and a
    SmolLM2 stage on a CPU trains for 20 minutes: `run.log` should still say how far it is.
    """

    def __init__(self, stage: str, every_s: float = 60.0) -> None:
        self.stage, self.every_s = stage, every_s
        self.start = self.last = time.perf_counter()

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any
    ) -> None:
        now, step, total = time.perf_counter(), state.global_step, state.max_steps
        if not logs or "loss" not in logs or (now - self.last < self.every_s and step < total):
            return
        self.last, elapsed = now, now - self.start
        eta = elapsed / step * (total - step) if step else float("nan")
        log.info(
            "%s step %d/%d loss %.4f (%.0fs, about %.0fs left)",
            self.stage,
            step,
            total,
            logs["loss"],
            elapsed,
            eta,
        )


class LiveLog(TrainerCallback):
    """Each TRL log event appended to `live_<stage>.jsonl` in `job_dir` as it happens (world rank 0
    only), the row `history_rows` makes of it: what the wandb mirror streams while TRAIN runs."""

    def __init__(self, stage: str, job_dir: Path) -> None:
        self.stage, self.path = stage, live_path(job_dir, stage)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any
    ) -> None:
        if logs and state.is_world_process_zero:
            append_step(self.path, {"stage": self.stage, "step": state.global_step, **logs})


def history_rows(stage: str, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TRL's `log_history` as the contract's rows: each event with its stage, `step` first (the
    global optimizer step within the stage; a resumed stage's history includes the steps before
    the kill, restored from its checkpoint)."""
    return [
        {
            "stage": stage,
            "step": int(h.get("step", 0)),
            **{k: v for k, v in h.items() if k != "step"},
        }
        for h in history
    ]


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows))


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float:
    """CUDA's peak allocated memory since the last reset, or on a CPU the process's peak RSS
    (which cannot be reset: the largest of the process's life so far)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kib / (2**30 if sys.platform == "darwin" else 2**20)


def fit_metrics(stage: str, n_rows: int, trainer: Any, out: Any, seconds: float) -> dict:
    return {
        f"train/{stage}_rows": float(n_rows),
        f"train/{stage}_steps": float(trainer.state.global_step),
        f"train/{stage}_seconds": seconds,
        f"train/{stage}_loss": float(out.training_loss),
    }


def step_logs(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step entries of `log_history` (the final summary entry has no `loss`)."""
    return [h for h in history if "loss" in h]


def _mean(logs: list[dict[str, Any]], key: str) -> float:
    """NaN when no step logged `key`: a missing quantity, not a zero."""
    return mean((float(h[key]) for h in logs if key in h), empty=float("nan"))


def sft_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
    steps = step_logs(history)
    return {
        "train/sft_loss_first": float(steps[0]["loss"]),
        "train/sft_loss_last": float(steps[-1]["loss"]),
        "train/sft_token_accuracy": _mean(steps[-1:], "mean_token_accuracy"),
        "train/sft_tokens": _mean(steps[-1:], "num_tokens"),
    }


def dpo_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
    """Run means of TRL's per-step DPO stats (rewards: beta-scaled log-ratios vs the reference)."""
    steps = step_logs(history)
    return {
        "train/dpo_loss_first": float(steps[0]["loss"]),
        "train/dpo_loss_last": float(steps[-1]["loss"]),
        "train/dpo_reward_margin": _mean(steps, "rewards/margins"),
        "train/dpo_reward_margin_last": _mean(steps[-1:], "rewards/margins"),
        "train/dpo_accuracy": _mean(steps, "rewards/accuracies"),
        "train/dpo_reward_chosen": _mean(steps, "rewards/chosen"),
        "train/dpo_reward_rejected": _mean(steps, "rewards/rejected"),
    }


def grpo_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
    """GRPO's round summary from TRL's per-step log: the reward at the first and last step (it
    should rise), its spread, KL (with a reference), entropy, clipped and truncated shares, and
    each reward component's mean (TRL logs `rewards/<component>/mean` per step)."""
    steps = step_logs(history)
    out = {
        "train/grpo_loss_first": float(steps[0]["loss"]),
        "train/grpo_loss_last": float(steps[-1]["loss"]),
        "train/grpo_reward_first": _mean(steps[:1], "reward"),
        "train/grpo_reward_last": _mean(steps[-1:], "reward"),
        "train/grpo_reward": _mean(steps, "reward"),
        "train/grpo_reward_std": _mean(steps, "reward_std"),
        "train/grpo_kl": _mean(steps, "kl"),
        "train/grpo_entropy": _mean(steps, "entropy"),
        "train/grpo_clip_ratio": _mean(steps, "clip_ratio/region_mean"),
        "train/grpo_truncated_share": _mean(steps, "completions/clipped_ratio"),
        "train/grpo_mean_length": _mean(steps, "completions/mean_length"),
    }
    names = sorted({k.split("/")[1] for h in steps for k in h if k.startswith("rewards/")})
    for name in names:
        out[f"train/grpo_reward_{name}"] = _mean(steps, f"rewards/{name}/mean")
    return out
