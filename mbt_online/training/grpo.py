"""GRPO on samples the round's own engine drew: TRL's `GRPOTrainer`, fed the stored samples.

TRL's trainer normally samples for itself (transformers' `generate`, or its own vLLM). Here the
samples come from the round's engine (the one place that samples the student, whichever backend)
and reach TRL through its `rollout_func` hook: for each prompt TRL's sampler hands out (every
question `num_generations` times in a row), the next stored sample of that question, with the
token ids the engine sampled (so nothing is re-tokenised and the end-of-turn token stays) and
the log-probabilities the engine reported. The reward of each sample was computed beforehand
(`scoring.rl_reward`), one TRL reward function per component so TRL logs each one's mean and
spread, weighted by TRL's `reward_weights`.

With `importance_sampling_correction`, TRL's vLLM importance-sampling correction runs on the
stored log-probabilities: the trainer's own log-probabilities of the sampled tokens against the
engine's, per token or per sequence as `importance_sampling_mode` says (TRL gates that code on
`use_vllm`; `StoredSampleGRPOTrainer` opens the gate with a weight sync that does nothing,
since the samples were drawn before training from the weights it starts from).

Everything else is TRL's: `loss_type`, `beta` (a reference model only when > 0), `epsilon` /
`epsilon_high`, `scale_rewards`, `num_iterations`, `mask_truncated_completions`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import Dataset
from trl import GRPOTrainer

from mbt_online.config import TrainConfig
from mbt_online.scoring.rl_reward import RL_COMPONENTS, correct_margin, rl_weights
from mbt_online.training.args import grpo_args, peft_config
from mbt_online.training.history import grpo_metrics
from mbt_online.training.saving import dist_state, last_checkpoint, trainer_dir
from mbt_online.training.steps import (
    TrainResult,
    finish,
    finished,
    fit,
    free_memory,
    fused_head,
    load_policy,
    nothing_to_train,
    torch_threads,
)
from mbt_online.versions import WrittenFor

if TYPE_CHECKING:
    from mbt_online.config import Config

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental


@dataclass(frozen=True)
class GRPOSampling:
    """How the round's GRPO samples were drawn and weighed: TRL's group size, completion cap and
    temperature (its log-probs are taken at the engine's), and each reward component's weight."""

    num_generations: int
    max_completion_length: int
    temperature: float
    weights: dict[str, float]


def grpo_sampling(cfg: Config) -> GRPOSampling:
    """The run's GRPO settings: rollout.samples per question at rollout's temperature and cap,
    the scorer's weights with the overlong ramp's (`scoring.rl_reward`)."""
    weights = rl_weights(cfg.reward.weights, cfg.train.grpo.reward)
    return GRPOSampling(
        num_generations=cfg.rollout.samples,
        max_completion_length=cfg.rollout.max_tokens,
        temperature=cfg.rollout.temperature,
        weights=weights,
    )


class StoredSamples:
    """The round's samples by prompt, handed out in sample order as TRL asks for completions.

    TRL's sampler repeats each question `num_generations` times in a row; the i-th copy of a
    prompt in one request gets that question's sample i (mod K). Two questions with the same
    prompt draw from the same policy distribution, so sharing a key only mixes their groups."""

    def __init__(self, rows: Dataset | list[dict[str, Any]]) -> None:
        self.groups: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
        by_question: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_question[row["example_id"]].append(row)
        self.prompts = {qid: json.loads(g[0]["prompt"]) for qid, g in by_question.items()}
        for qid, group in by_question.items():
            key = prompt_key(self.prompts[qid])
            self.groups[key].append(sorted(group, key=lambda r: r["sample"]))
        self.served: list[tuple[str, int]] = []  # (example_id, sample) in the order handed out

    def rollout(self, prompts: list[Any], trainer: Any = None) -> dict[str, list]:
        """TRL's `rollout_func`: prompt ids, completion ids, sampling log-probs and each reward
        component (forwarded to the reward functions) for each prompt of the batch."""
        seen: dict[str, int] = defaultdict(int)
        out: dict[str, list] = defaultdict(list)
        for prompt in prompts:
            key = prompt_key(prompt)
            groups, i = self.groups[key], seen[key]
            seen[key] += 1
            group = groups[(i // len(groups[0])) % len(groups)]
            row = group[i % len(group)]
            self.served.append((row["example_id"], row["sample"]))
            out["prompt_ids"].append(list(row["prompt_ids"]))
            out["completion_ids"].append(list(row["completion_ids"]))
            out["logprobs"].append([float(x) for x in row["logprobs"]])
            for name in RL_COMPONENTS:
                out[f"rl_{name}"].append(float(row[f"rl_{name}"]))
        return dict(out)


def prompt_key(prompt: Any) -> str:
    return json.dumps(prompt, sort_keys=True)


def component_reward(name: str) -> Callable[..., list[float]]:
    """A TRL reward function returning one stored component (named so TRL logs it by name)."""

    def reward(prompts: list, completions: list, **kw: Any) -> list[float]:
        return [float(v) for v in kw[f"rl_{name}"]]

    reward.__name__ = name
    return reward


class _NoWeightSync:
    """What TRL's rollout path calls to refresh its vLLM: the stored samples need nothing."""

    def sync_weights(self) -> None:
        return None


# TRL's private state that `StoredSampleGRPOTrainer` sets to run the correction without a vLLM
IMPORTANCE_SAMPLING = WrittenFor(
    "trl",
    ">=1.16,<1.17",
    "the importance-sampling correction on stored samples (GRPOTrainer's use_vllm, "
    "vllm_generation and _last_loaded_step set)",
    "TRL's GRPOTrainer trains on the stored samples without the correction",
)


class StoredSampleGRPOTrainer(GRPOTrainer):
    """TRL's GRPO trainer on stored samples, with TRL's sampler-mismatch correction available
    (on the TRL releases `IMPORTANCE_SAMPLING` names)."""

    def __init__(self, *args: Any, importance_sampling_correction: bool = True, **kw: Any) -> None:
        super().__init__(*args, **kw)
        if importance_sampling_correction and IMPORTANCE_SAMPLING.holds():
            # TRL reads the engine's log-probs only under use_vllm; no vLLM is started here.
            self.use_vllm = True
            self.vllm_generation = _NoWeightSync()
            self._last_loaded_step = 0
            self.vllm_importance_sampling_correction = True


def grpo_trainer(
    model_dir: str | Path,
    samples: Dataset | list[dict[str, Any]],
    cfg: TrainConfig,
    seed: int,
    output_dir: str | Path,
    sampling: GRPOSampling,
    *,
    bf16: bool = False,
    chat_template: str = "model",
) -> StoredSampleGRPOTrainer:
    """The configured GRPO trainer (not yet run) over `samples`, one row per stored sample (its
    `prompt` column holds the chat the engine rendered: TRL's dataset rows)."""
    if correct_margin(sampling.weights) <= 0:
        raise ValueError(
            f"the RL reward's weights {sampling.weights} let a short wrong answer score as high as "
            "a correct one: the correct weight must exceed the waste and overlong penalties"
        )
    store = StoredSamples(samples)
    args = grpo_args(
        cfg,
        seed,
        output_dir,
        bf16,
        sampling.num_generations,
        sampling.max_completion_length,
        sampling.temperature,
        questions=len(store.prompts),
    )
    args.reward_weights = [sampling.weights[name] for name in RL_COMPONENTS]
    fused_head(cfg)
    model, tokenizer = load_policy(model_dir, chat_template, cfg.attn_implementation)
    dataset = Dataset.from_list(
        [{"prompt": store.prompts[q], "example_id": q} for q in sorted(store.prompts)]
    )
    trainer = StoredSampleGRPOTrainer(
        model=model,
        reward_funcs=[component_reward(name) for name in RL_COMPONENTS],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(cfg.lora) if cfg.method == "lora" else None,
        rollout_func=store.rollout,
        importance_sampling_correction=cfg.grpo.importance_sampling_correction,
    )
    trainer.stored_samples = store
    return trainer


def train_grpo(
    model_dir: str | Path,
    samples: Dataset | list[dict[str, Any]],
    out_dir: str | Path,
    cfg: TrainConfig,
    seed: int,
    sampling: GRPOSampling,
    **opts: Any,
) -> TrainResult:
    """GRPO from `model_dir` on the stored samples; one model folder out (see `training.steps`).
    A resumed stage continues from its last checkpoint (`train.save_steps`)."""
    out_dir = Path(out_dir)
    if len(samples) == 0:
        return nothing_to_train(model_dir, out_dir, "grpo")
    if cfg.save_steps and (done := finished(out_dir)) is not None:
        return done
    state = dist_state()
    with torch_threads(cfg.threads), trainer_dir(out_dir, cfg.save_steps, state) as work:
        trainer = grpo_trainer(model_dir, samples, cfg, seed, work, sampling, **opts)
        metrics = fit(trainer, "grpo", len(samples), last_checkpoint(work))
        metrics.update(grpo_metrics(trainer.state.log_history))
        result = finish(trainer, model_dir, out_dir, metrics)
        del trainer
    free_memory()
    return result
