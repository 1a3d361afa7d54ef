"""TRL's arguments for a stage: batch sizes from the world size, the platform's defaults (bf16,
gradient checkpointing, optimizer), logging, and in-stage checkpoints."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig as PeftLoraConfig
from trl import DPOConfig as TrlDPOConfig
from trl import GRPOConfig as TrlGRPOConfig
from trl import SFTConfig as TrlSFTConfig

from mbt_online.config import ConfigError, LoraConfig, TrainConfig
from mbt_online.config.learning import grad_accum_for


def world_size() -> int:
    """Processes training together: `WORLD_SIZE`, set by `accelerate launch` and torchrun (read
    from the environment so no process group is needed to know it); 1 in-process."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def grad_accum(cfg: TrainConfig, stage: str) -> int:
    """The stage's accumulation steps in this launch (see `grad_accum_for`); a global batch the
    launch's world size does not divide is a `ConfigError` naming the key."""
    try:
        return grad_accum_for(getattr(cfg, stage), world_size(), f"train.{stage}")
    except ValueError as e:
        raise ConfigError(str(e)) from e


def step_args(cfg: TrainConfig, stage: str) -> dict[str, Any]:
    """The arguments SFT and DPO set alike from their `StepConfig`."""
    hp = getattr(cfg, stage)
    return dict(
        learning_rate=hp.learning_rate,
        num_train_epochs=hp.epochs,
        per_device_train_batch_size=hp.batch_size,
        gradient_accumulation_steps=grad_accum(cfg, stage),
        max_grad_norm=hp.max_grad_norm,
        max_length=hp.max_length,
    )


def sft_args(cfg: TrainConfig, seed: int, output_dir: str | Path, bf16: bool) -> TrlSFTConfig:
    """TRL's SFT arguments: the project's, then `train.sft.trl` (TRL's other fields by their own
    names, checked at config load never to name one of the project's)."""
    return TrlSFTConfig(
        **common_args(cfg, output_dir, seed, bf16),
        **step_args(cfg, "sft"),
        warmup_steps=warmup(cfg.sft.warmup_ratio),
        lr_scheduler_type=cfg.sft.lr_scheduler,
        # TRL's default (None) already means completion-only for prompt/completion data;
        # pinning it keeps prompts out of the loss if that default ever changes.
        completion_only_loss=True,
        **cfg.sft.trl,
    )


def dpo_args(cfg: TrainConfig, seed: int, output_dir: str | Path, bf16: bool) -> TrlDPOConfig:
    """TRL's DPO arguments: the project's, then `train.dpo.trl`; a `loss_type` there replaces
    the one `sft_weight` sets (the config refuses both)."""
    loss = {} if "loss_type" in cfg.dpo.trl else dpo_loss(cfg.dpo.sft_weight)
    return TrlDPOConfig(
        **common_args(cfg, output_dir, seed, bf16),
        **step_args(cfg, "dpo"),
        beta=cfg.dpo.beta,
        precompute_ref_log_probs=cfg.dpo.precompute_ref_log_probs,
        **loss,
        **cfg.dpo.trl,
    )


def grpo_args(
    cfg: TrainConfig,
    seed: int,
    output_dir: str | Path,
    bf16: bool,
    num_generations: int,
    max_completion_length: int,
    temperature: float,
    questions: int | None = None,
) -> TrlGRPOConfig:
    """TRL's GRPO arguments from `train.grpo` and the round's sampling: the trainer's log-probs
    are taken at the engine's temperature, over completions as long as the engine's cap. With
    `questions` (the groups kept this round), the batch is fitted to them (`whole_groups`)."""
    g = cfg.grpo
    per_device = g.per_device_train_batch_size or 4 * num_generations
    accum = g.gradient_accumulation_steps
    if per_device * accum % num_generations:
        raise ConfigError(
            f"train.grpo.per_device_train_batch_size x gradient_accumulation_steps ({per_device} x "
            f"{accum}) must be a multiple of rollout.samples ({num_generations}): TRL draws "
            "whole groups for each optimizer step"
        )
    if questions:
        per_device, accum = whole_groups(questions, per_device, accum, num_generations)
    return TrlGRPOConfig(
        **common_args(cfg, output_dir, seed, bf16),
        learning_rate=g.learning_rate,
        num_train_epochs=g.num_train_epochs,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum,
        max_grad_norm=g.max_grad_norm,
        num_generations=num_generations,
        max_completion_length=max_completion_length,
        temperature=temperature,
        loss_type=g.loss_type,
        beta=g.beta,
        epsilon=g.epsilon,
        epsilon_high=g.epsilon_high,
        scale_rewards=g.scale_rewards,
        num_iterations=g.num_iterations,
        mask_truncated_completions=g.mask_truncated_completions,
        vllm_importance_sampling_mode=g.importance_sampling_mode,
        vllm_importance_sampling_clip_max=g.importance_sampling_clip_max,
        use_vllm=False,  # the samples come from the round's engine (`training.grpo`)
        log_completions=False,
        shuffle_dataset=True,
        **g.trl,
    )


def whole_groups(questions: int, per_device: int, accum: int, k: int) -> tuple[int, int]:
    """A batch that trains every kept question: TRL's sampler deals whole optimizer steps of
    `per_device x accum / k` questions and drops a last, incomplete one (and trains nothing when
    fewer questions are kept than one step takes). When the step does not divide the questions,
    one micro batch per step of the largest divisor of `questions` that fits is used instead."""
    per_step = per_device * accum // k
    if questions % per_step == 0:
        return per_device, accum
    fits = max(d for d in range(1, min(per_step, questions) + 1) if questions % d == 0)
    return fits * k, 1


def dpo_loss(sft_weight: float) -> dict[str, Any]:
    """TRL's loss settings: plain DPO, or DPO plus NLL on the chosen trace (RPO) when weighted."""
    if sft_weight <= 0:
        return {"loss_type": ["sigmoid"]}
    return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, sft_weight]}


def common_args(cfg: TrainConfig, output_dir: str | Path, seed: int, bf16: bool) -> dict[str, Any]:
    """Arguments shared by SFT, DPO and GRPO: no reporting, a log line per step, checkpoints only
    with `train.save_steps`, and the platform's defaults where the config leaves them null."""
    cuda = torch.cuda.is_available()
    checkpointing = cuda if cfg.gradient_checkpointing is None else cfg.gradient_checkpointing
    args: dict[str, Any] = {
        "output_dir": str(output_dir),
        "seed": seed,
        "data_seed": seed,
        # TRL defaults bf16 to True; here it is opt-in and only where the hardware has it.
        "bf16": bf16 and bf16_supported(),
        "use_cpu": not cuda,
        # Checkpointing buys GPU memory with ~20-30% more compute; CPU runs have RAM to spare.
        # Non-reentrant: the reentrant variant breaks with frozen inputs (LoRA) and under FSDP.
        "gradient_checkpointing": checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False} if checkpointing else None,
        "report_to": [],
        "logging_steps": 1,  # per-step history: first/last/mean loss come from it
        "disable_tqdm": not sys.stderr.isatty(),
        "dataloader_num_workers": 0,
        **checkpoint_args(cfg.save_steps),
    }
    if cfg.optim is not None:
        args["optim"] = cfg.optim
    return args


def checkpoint_args(save_steps: int | None) -> dict[str, Any]:
    """Two checkpoints kept: the newest may be the one a kill interrupted (`last_checkpoint`
    skips it then). Model weights go in as saved by the trainer, sharded or not."""
    if save_steps is None:
        return {"save_strategy": "no"}
    return {"save_strategy": "steps", "save_steps": save_steps, "save_total_limit": 2}


def bf16_supported() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return True  # CPU autocast has bf16 kernels (fast with AVX-512 BF16 / AMX, correct anywhere)


def warmup(ratio: float) -> float:
    """transformers 5 reads a float warmup in [0, 1) as a ratio of steps; 1.0 would mean 1 step."""
    return min(ratio, 0.999)


def peft_config(lora: LoraConfig) -> PeftLoraConfig:
    """PEFT's LoRA config: the adapter's shape, then `train.lora.peft` (PEFT's other fields)."""
    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
        **lora.peft,
    )
