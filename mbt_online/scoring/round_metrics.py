"""A round's metrics from its rows: the eval/, rollout/, reward/ and teacher/ scalars, the few
completions shown per round, and the headline a reader looks at first.

The loop only collects: it hands rows here and writes what comes back (`metrics.jsonl`, wandb).
Per-trace diagnostics and AES/MQI themselves live in `scoring.metrics`.
"""

from __future__ import annotations

import json
from typing import Any

from mbt_online.config import Config
from mbt_online.scoring.behaviour import behaviour_metrics
from mbt_online.scoring.metrics import TraceDiagnostics, aes, aggregate, by_group, mqi

# (metric key, title): the round's headline, in the run log, the `train` command's table and the
# report's curves
HEADLINE = (
    ("eval/accuracy", "Accuracy"),
    ("eval/mean_tokens", "Mean tokens"),
    ("eval/degeneration_rate", "Degeneration rate"),
    ("eval/answer_inclusive_rate", "Answer-inclusive rate"),
    ("eval/aes", "AES (vs round 0)"),
)

# per benchmark: published numbers are per benchmark, so its official EM / F1 and the paper's cover
SOURCE_KEYS = (
    "accuracy",
    "cover_substring",
    "em",
    "f1",
    "mean_tokens",
    "tokens_per_correct",
    "degeneration_rate",
    "answer_inclusive_rate",
)


def summarize(rows: list[dict], cfg: Config, history: list[dict], prefix: str) -> dict[str, float]:
    """Aggregate diagnostics of one evaluation, with AES and MQI relative to round 0."""
    diags = [TraceDiagnostics(**json.loads(r["diagnostics"])) for r in rows]
    agg = aggregate(diags, [r["tier"] for r in rows])
    base = next((m for m in history if m.get("round") == 0), None)
    base_acc = base[f"{prefix}/accuracy"] if base else agg["accuracy"]
    base_tok = base[f"{prefix}/mean_tokens"] if base else agg["mean_tokens"]
    agg["aes"] = aes(
        agg["accuracy"], agg["mean_tokens"], base_acc, base_tok, cfg.aes.a, cfg.aes.b, cfg.aes.c
    )
    agg["mqi"] = mqi(agg["mqi_level"], base_tok, agg["mean_tokens"])
    out = {f"{prefix}/{k}": v for k, v in agg.items()}
    out.update(reward_means(rows, f"{prefix}_"))
    out.update(source_metrics(rows, diags, prefix))
    out.update(behaviour_metrics(rows, prefix))
    return out


def summarize_eval(
    rows: list[dict], cfg: Config, history: list[dict], prefix: str = "eval"
) -> dict[str, float]:
    """An evaluation's metrics: `summarize` as it always was with one seed
    (`eval.sampling.seeds` null), else each seed's metrics averaged over seeds, with every
    `<prefix>/<m>` carrying `_std` (over seeds), `_ci_low` / `_ci_high` (95%, `scoring.spread`)
    and `<prefix>/seeds`. Rows say their seed in a `seed` column."""
    seeds = cfg.eval.sampling.seeds
    if seeds is None:
        return summarize(rows, cfg, history, prefix)
    per_seed = [
        summarize([r for r in rows if r.get("seed") == s], cfg, history, prefix) for s in seeds
    ]
    return merge_seed_metrics(per_seed, rows, cfg, history, prefix)


def merge_seed_metrics(
    per_seed: list[dict[str, float]],
    rows: list[dict],
    cfg: Config,
    history: list[dict],
    prefix: str,
) -> dict[str, float]:
    """The mean over seeds of every key; each `<prefix>/` metric (but the trace count `n`) also
    gets its std over seeds and its interval over the pooled rows."""
    from mbt_online.scoring.spread import eval_intervals
    from mbt_online.scoring.stats import std

    out = {k: sum(m[k] for m in per_seed) / len(per_seed) for k in per_seed[0]}
    keys = [k for k in out if k.startswith(f"{prefix}/") and k != f"{prefix}/n"]
    base = next((m for m in history if m.get("round") == 0), None)
    base_pair = (base[f"{prefix}/accuracy"], base[f"{prefix}/mean_tokens"]) if base else None
    cis = eval_intervals(rows, keys, cfg, base_pair, prefix)
    for k in keys:
        out[f"{k}_std"] = std([m[k] for m in per_seed])
        if k in cis:
            out[f"{k}_ci_low"], out[f"{k}_ci_high"] = cis[k]
    out[f"{prefix}/n"] = sum(m[f"{prefix}/n"] for m in per_seed)
    out[f"{prefix}/seeds"] = len(per_seed)
    return out


def source_metrics(rows: list[dict], diags: list[Any], prefix: str) -> dict[str, float]:
    """<prefix>/<benchmark>/<metric> when the evaluation mixes benchmarks: targets are stated per
    benchmark, and a pooled mean hides one that gets worse."""
    sources = [r.get("source", "") for r in rows]
    if len(set(sources)) < 2:
        return {}
    return {f"{prefix}/{k}": v for k, v in by_group(diags, sources, SOURCE_KEYS).items()}


def reward_means(rows: list[dict], prefix: str = "") -> dict[str, float]:
    """Mean of every reward component and of the weighted total, as reward/<prefix><name>."""
    if not rows:
        return {}
    comps = [json.loads(r["components"]) for r in rows]
    out = {f"reward/{prefix}{key}": sum(c[key] for c in comps) / len(rows) for key in comps[0]}
    out[f"reward/{prefix}total"] = sum(r["reward"] for r in rows) / len(rows)
    return out


def rollout_metrics(scored: list[dict], taught: list[dict]) -> dict[str, float]:
    """rollout/, reward/ and teacher/ scalars of the training rollouts and the teacher."""
    n = max(len(scored), 1)
    out: dict[str, float] = {
        "rollout/samples": len(scored),
        "rollout/accuracy": sum(r["correct"] for r in scored) / n,
        "rollout/mean_tokens": sum(r["tokens"] for r in scored) / n,
        "rollout/degeneration_rate": sum(r["truncated"] for r in scored) / n,
        "rollout/answer_inclusive_rate": sum(r["answer_inclusive"] for r in scored) / n,
    }
    out.update(reward_means(scored))
    out.update(behaviour_metrics(scored, "rollout"))
    out.setdefault("reward/total", 0.0)
    out.update(teacher_metrics(taught))
    return out


def teacher_metrics(taught: list[dict]) -> dict[str, float]:
    """teacher/ scalars: requests, acceptance, tries, and rejections counted by reason."""
    out: dict[str, float] = {"teacher/requests": len(taught)}
    if not taught:
        return out
    out["teacher/accepted"] = sum(t["verified"] for t in taught)
    out["teacher/acceptance_rate"] = out["teacher/accepted"] / len(taught)
    out["teacher/mean_tries"] = sum(t["tries"] for t in taught) / len(taught)
    reasons: dict[str, int] = {}
    for t in taught:
        for reason in t["reasons"] if not t["verified"] else []:
            key = reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    out.update({f"teacher/rejected_{k}": v for k, v in reasons.items()})
    return out


def format_headline(metrics: dict[str, Any]) -> str:
    """The run log's one-line summary of a round."""
    return " ".join(
        f"{key.split('/')[1]}={metrics[key]:.3f}" for key, _ in HEADLINE if key in metrics
    )
