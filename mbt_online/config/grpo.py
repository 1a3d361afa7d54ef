"""`train.grpo`: reinforcement on the MBT rewards (GRPO, after SFT and DPO or alone), with TRL's
names for TRL's knobs and the reward guards of `scoring.rl_reward`.

Its own module beside `learning.py` because it is the one step whose samples come from the
engine during TRAIN (`round-<r>/grpo_rollout`), and its reward has knobs the other steps lack.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from mbt_online.config.passthrough import LibraryNamed
from mbt_online.config.section import Section


class GRPORewardConfig(Section):
    """Guards on the reward GRPO optimises (`scoring.rl_reward`); the components' weights are
    `reward.weights`."""

    f1_threshold: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="An answer is correct for RL when it matches a gold answer exactly or "
        "reaches this F1 with it: a list of candidate answers (which the scorer's cover match "
        "pays) stays below it.",
    )
    overlong_start: float = Field(
        default=0.8,
        ge=0,
        lt=1,
        description="Where the soft length penalty starts, as a share of rollout.max_tokens; it "
        "rises linearly to 1 at the cap, where the collapse penalty (degenerate) also applies.",
    )
    overlong_weight: float = Field(
        default=-0.2,
        le=0,
        description="Weight of the soft length penalty (0 turns it off).",
    )
    phase_bonus: bool = Field(
        default=False,
        description="Pay reward.weights.phases for phase cue words in the RL reward too. Off: "
        "a policy rewarded for cue words learns the words; phases stay a metric.",
    )


class GRPOConfig(LibraryNamed):
    """GRPO with TRL's GRPOTrainer on samples the round's engine drew (rollout.samples per
    question). Field names follow TRL's GRPOConfig where TRL has the knob (TRL's `vllm_` names of
    the importance-sampling knobs are accepted too); `trl` sets any other field of TRL's
    GRPOConfig by its own name."""

    ALIASES: ClassVar[dict[str, str]] = {
        f"vllm_importance_sampling_{knob}": f"importance_sampling_{knob}"
        for knob in ("correction", "mode", "clip_max")
    }
    PASSTHROUGH: ClassVar[tuple[str, str] | None] = ("trl", "trl.GRPOConfig")

    enabled: bool = Field(
        default=False,
        description="Run GRPO each round, after SFT and DPO when they train (the round then "
        "rolls out again from the new weights before GRPO), or alone on the round's ROLLOUT.",
    )
    learning_rate: float = Field(default=1e-6, gt=0, description="Peak learning rate (TRL).")
    num_train_epochs: float = Field(
        default=1.0, gt=0, le=1000, description="Passes over the round's samples (TRL)."
    )
    per_device_train_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=10**6,
        description="Completions per device and micro batch (TRL); with "
        "gradient_accumulation_steps a multiple of rollout.samples (whole groups per optimizer "
        "step). null = 4 questions' samples.",
    )
    gradient_accumulation_steps: int = Field(
        default=1,
        ge=1,
        le=10**6,
        description="Gradient accumulation steps per optimizer step (TRL).",
    )
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm (TRL).")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"] = (
        Field(
            default="dapo",
            description="TRL's loss aggregation: dapo (TRL's default: token-level over the batch), "
            "grpo (per-sequence mean: favours short wrong answers' tokens), dr_grpo (a constant "
            "normaliser), bnpo, cispo, sapo, luspo, vespo.",
        )
    )
    beta: float = Field(
        default=0.0,
        ge=0,
        description="KL coefficient against the reference (the step's start model); 0 loads no "
        "reference model (TRL's default).",
    )
    epsilon: float = Field(default=0.2, gt=0, description="Lower clipping range (TRL).")
    epsilon_high: float | None = Field(
        default=None,
        gt=0,
        description="Upper clipping range (DAPO's clip-higher, e.g. 0.28); null = epsilon.",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        default="group",
        description="Divide advantages by the group's reward std (group), the batch's (batch) "
        "or not at all (none: Dr. GRPO's advice against per-group length bias).",
    )
    num_iterations: int = Field(
        default=1, ge=1, le=1000, description="Optimisation passes per batch of samples (TRL's mu)."
    )
    mask_truncated_completions: bool = Field(
        default=False,
        description="Leave samples cut at the token cap out of the loss (TRL). Off: their "
        "collapse penalty is what teaches the policy to stop.",
    )
    importance_sampling_correction: bool = Field(
        default=True,
        description="Correct for the engine/trainer mismatch with the log-probabilities the "
        "engine reported (TRL's vllm_importance_sampling_correction).",
    )
    importance_sampling_mode: Literal[
        "token_truncate", "token_mask", "sequence_truncate", "sequence_mask"
    ] = Field(
        default="token_truncate",
        description="How the correction's ratios are bounded (TRL's "
        "vllm_importance_sampling_mode; TRL's default is sequence_mask). Per token here: with "
        "top-k / top-p sampling every ratio is at most 1 (the engine's log-probs are over the "
        "kept tokens, the trainer's over the vocabulary), and a sequence's product of them "
        "vanishes with its length (1e-22 measured on a 16-token tiny-model sample).",
    )
    importance_sampling_clip_max: float = Field(
        default=3.0,
        gt=1,
        description="Largest importance ratio kept or truncated to (TRL's "
        "vllm_importance_sampling_clip_max).",
    )
    reward: GRPORewardConfig = Field(
        default=GRPORewardConfig(), description="Guards on the reward GRPO optimises."
    )
    trl: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other field of TRL's GRPOConfig by its own name, e.g. "
        "{weight_decay: 0.1}; checked at load (unknown names, fields the project or the round's "
        "sampling sets, wrong types refused).",
    )

    @model_validator(mode="after")
    def _clip_range(self) -> GRPOConfig:
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            raise ValueError(
                f"epsilon_high ({self.epsilon_high}) must be at least epsilon ({self.epsilon})"
            )
        return self
