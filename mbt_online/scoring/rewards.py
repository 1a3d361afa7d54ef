"""Per-trace reward: named components from the diagnostics, and their weighted sum.

Components are kept separate (and logged separately) so a run shows which behaviour moved; the
signs live in the weights, so every component reads as "how much of this the trace has".
Pure functions: the same code scores training rollouts, DPO pair margins and evaluation.
"""

from __future__ import annotations

from mbt_online.config import RewardConfig, RewardWeights
from mbt_online.scoring.metrics import PHASES, TraceDiagnostics, diagnose
from mbt_online.tasks.base import Example


def reward_components(d: TraceDiagnostics) -> dict[str, float]:
    """Each component in [0, 1], named as the `RewardWeights` field that scales it.

    over_budget is capped at 1 so one runaway trace cannot outweigh being correct several times
    over; truncation already carries the collapse penalty.
    """
    return {
        "correct": float(d.correct),
        "format": 1.0 if d.has_answer_tag else 0.0,
        "degenerate": 1.0 if d.truncated else 0.0,
        "answer_inclusive": 1.0 if d.answer_inclusive_error else 0.0,
        "redundancy": float(d.redundancy),
        "over_budget": min(1.0, float(d.over_budget)),
        "phases": len(set(d.phases) & set(PHASES)) / len(PHASES),
    }


def total_reward(components: dict[str, float], weights: RewardWeights) -> float:
    """Sum of weight * component. A component with no weight is an error, not a silent zero:
    a renamed component must not drop out of the reward unnoticed."""
    w = weights.model_dump()
    unknown = sorted(set(components) - set(w))
    if unknown:
        raise KeyError(f"reward components without a weight: {unknown}; weights: {sorted(w)}")
    return sum(w[name] * value for name, value in components.items())


def score(
    text: str,
    finish_reason: str,
    n_tokens: int,
    example: Example,
    cfg: RewardConfig,
) -> tuple[TraceDiagnostics, dict[str, float], float]:
    """Diagnose one response for its question and reward it; the budget is the tier's, since a
    4-hop question deserves more tokens than a 2-hop one. The benchmark (`example.source`) picks
    the official EM / F1 rule of the reported metrics; the reward reads cover, not EM / F1."""
    budget = cfg.budgets.get(example.tier, cfg.default_budget)
    golds, ngram = example.answers, cfg.repetition_ngram
    d = diagnose(text, finish_reason, n_tokens, golds, budget, ngram, benchmark=example.source)
    components = reward_components(d)
    return d, components, total_reward(components, cfg.weights)
