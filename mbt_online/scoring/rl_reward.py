"""The reward GRPO optimises: the scorer's components with their weights, guarded against what
reinforcement learning finds when it is given a reward to maximise.

SFT and DPO only *choose* among traces by the reward; GRPO climbs it, so every hole in it is
eventually found. The guards, each a named component so a run shows which one moved:
- `correct` is strict: exact match, or F1 at least `f1_threshold` with the gold. The scorer's cover
  match (a gold answer appears in the final answer) would pay a list of candidates ("Paris or
  London") as well as the answer, and RL would learn to list.
- `redundancy` and `over_budget` (token waste) are gated by correctness: a wrong answer neither
  pays them nor escapes them by being short, so it can never beat a correct one by brevity
  (`correct_margin` checks the weights keep every correct trace above every wrong one).
- `overlong`: a soft ramp from `overlong_start` of the token cap to the cap (DAPO's overlong
  shaping), before the collapse penalty (`degenerate`) that a truncated trace pays at the cap.
- `phases` (cue words) pays nothing unless `phase_bonus` is set: phases stay a metric, since a
  policy rewarded for them learns the words, not the behaviour.
Groups whose rewards are all equal carry no advantage (TRL #3857) and are dropped, counted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from mbt_online.config import RewardWeights
from mbt_online.scoring.rows import by_question

# The components of the RL reward, in the order they are logged (TRL logs one reward function each).
RL_COMPONENTS = (
    "correct",
    "format",
    "degenerate",
    "answer_inclusive",
    "redundancy",
    "over_budget",
    "overlong",
    "phases",
)


class RLRewardSettings(Protocol):
    """The guards' knobs (`train.grpo.reward`)."""

    f1_threshold: float
    overlong_start: float
    overlong_weight: float
    phase_bonus: bool


def rl_components(
    row: dict[str, Any], max_tokens: int, guard: RLRewardSettings
) -> dict[str, float]:
    """Each RL component of one scored row, in [0, 1] (the signs live in the weights)."""
    d = json.loads(row["diagnostics"])
    c = json.loads(row["components"])
    correct = 1.0 if d["em"] >= 1.0 or d["f1"] >= guard.f1_threshold else 0.0
    tokens = int(row["tokens"])
    return {
        "correct": correct,
        "format": c["format"],
        "degenerate": c["degenerate"],
        "answer_inclusive": c["answer_inclusive"],
        "redundancy": c["redundancy"] * correct,
        "over_budget": c["over_budget"] * correct,
        "overlong": overlong(tokens, max_tokens, guard.overlong_start),
        "phases": c["phases"] if guard.phase_bonus else 0.0,
    }


def overlong(tokens: int, max_tokens: int, start: float) -> float:
    """0 up to `start` x the cap, rising linearly to 1 at the cap."""
    begin = start * max_tokens
    if tokens <= begin or max_tokens <= begin:
        return 0.0
    return min(1.0, (tokens - begin) / (max_tokens - begin))


def rl_weights(weights: RewardWeights, guard: RLRewardSettings) -> dict[str, float]:
    """The weight of each RL component: the scorer's, plus the overlong ramp's."""
    w = weights.model_dump()
    return {
        name: float(guard.overlong_weight if name == "overlong" else w[name])
        for name in RL_COMPONENTS
    }


def rl_reward(components: dict[str, float], weights: dict[str, float]) -> float:
    return sum(weights[name] * components[name] for name in RL_COMPONENTS)


def correct_margin(weights: dict[str, float]) -> float:
    """How far the worst correct, untruncated trace sits above the best wrong one with the same
    format and phases: the correct weight less every penalty a correct trace can pay (the waste
    components and the overlong ramp), less every bonus only a wrong trace could have (none).
    Must be positive, or the reward can prefer a short wrong answer."""
    penalties = sum(-min(0.0, weights[k]) for k in ("redundancy", "over_budget", "overlong"))
    return weights["correct"] - penalties


def grpo_samples(
    scored: Sequence[dict[str, Any]],
    max_tokens: int,
    weights: RewardWeights,
    guard: RLRewardSettings,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """GRPO's training rows from scored samples that carry their token ids: one row per sample,
    grouped by question in sample order, each with its RL reward and components; groups whose
    rewards are all equal are dropped. Returns the rows and what was kept and dropped."""
    w = rl_weights(weights, guard)
    rows, groups, dropped = [], 0, 0
    for qid, group in by_question(list(scored)).items():
        group = sorted(group, key=lambda r: r["sample"])
        comps = [rl_components(r, max_tokens, guard) for r in group]
        rewards = [rl_reward(c, w) for c in comps]
        groups += 1
        if max(rewards) - min(rewards) < 1e-9:
            dropped += 1
            continue
        for r, c, total in zip(group, comps, rewards, strict=True):
            rows.append(
                {
                    "example_id": qid,
                    "sample": r["sample"],
                    "prompt": r["prompt"],
                    "prompt_ids": list(r["prompt_ids"]),
                    "completion_ids": list(r["completion_ids"]),
                    "logprobs": list(r["logprobs"]),
                    "rl_reward": total,
                    **{f"rl_{k}": v for k, v in c.items()},
                }
            )
    stats = {
        "train/grpo_groups": float(groups),
        "train/grpo_dropped_groups": float(dropped),
        "train/grpo_samples": float(len(rows)),
    }
    return rows, stats
